//! The trait, parsed into plain structs, with every problem reported as a spanned
//! error (all of them at once, combined). Second step of the pipeline, after `attr`.
//!
//! [`Service::lenient`] is the forgiving twin used after an error: it keeps what the
//! fallback stubs need and reports nothing.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{
    Attribute, FnArg, GenericArgument, Ident, ItemTrait, Pat, PathArguments, ReturnType, TraitItem,
    TraitItemFn, Type, TypeParamBound, Visibility,
};

use crate::attr::Attr;

/// A service trait.
#[derive(Clone)]
pub struct Service {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub ident: Ident,
    pub supertraits: Vec<TypeParamBound>,
    /// The queue: from the attribute, else the trait name in snake_case.
    pub queue: String,
    pub methods: Vec<Method>,
}

/// One `async fn` of the trait.
#[derive(Clone)]
pub struct Method {
    pub attrs: Vec<Attribute>,
    pub ident: Ident,
    pub args: Vec<Arg>,
    pub output: Output,
}

/// One argument after `&self`.
#[derive(Clone)]
pub struct Arg {
    pub ident: Ident,
    pub ty: Type,
}

/// What a method returns.
#[derive(Clone)]
#[allow(clippy::large_enum_variant)] // a handful per trait, at compile time
pub enum Output {
    /// `T` (including `()`): replies are always `ok`.
    Value(Type),
    /// `Result<T, E>`: `Ok` replies `ok`, `Err` replies `error` with `E`.
    Result { ok: Type, err: Type },
}

impl Output {
    /// The type the handler returns.
    pub fn handler_type(&self) -> proc_macro2::TokenStream {
        match self {
            Output::Value(t) => quote::quote!(#t),
            Output::Result { ok, err } => quote::quote!(::core::result::Result<#ok, #err>),
        }
    }
}

/// Collects errors so the user sees all of them in one build.
#[derive(Default)]
pub struct Errors(Option<syn::Error>);

impl Errors {
    pub fn push(&mut self, span: Span, message: impl std::fmt::Display) {
        let e = syn::Error::new(span, message);
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    pub fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

impl Service {
    /// Parses the trait.
    pub fn parse(attr: Attr, item: ItemTrait) -> syn::Result<Service> {
        let mut errors = Errors::default();
        if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
            errors.push(
                item.generics.span(),
                "a #[service] trait cannot be generic: the wire needs concrete types",
            );
        }
        if let Some(unsafety) = &item.unsafety {
            errors.push(unsafety.span(), "a #[service] trait cannot be `unsafe`");
        }
        let mut methods = Vec::new();
        for trait_item in &item.items {
            match trait_item {
                TraitItem::Fn(f) => {
                    if let Some(m) = Method::parse(f, &mut errors) {
                        methods.push(m);
                    }
                }
                other => errors.push(
                    other.span(),
                    "a #[service] trait may only contain `async fn` methods",
                ),
            }
        }
        if item.items.is_empty() {
            errors.push(
                item.ident.span(),
                "a #[service] trait needs at least one method",
            );
        }
        errors.finish()?;
        let queue = attr
            .queue
            .map(|l| l.value())
            .unwrap_or_else(|| snake_case(&item.ident.to_string()));
        Ok(Service {
            attrs: item.attrs,
            vis: item.vis,
            ident: item.ident,
            supertraits: item.supertraits.into_iter().collect(),
            queue,
            methods,
        })
    }
}

impl Service {
    /// What the fallback stubs are made of, from a trait that did not pass: every
    /// method, as far as its signature goes.
    pub fn lenient(attr: Attr, item: &ItemTrait) -> Service {
        let methods = item
            .items
            .iter()
            .filter_map(|i| match i {
                TraitItem::Fn(f) => Some(Method::lenient(f)),
                _ => None,
            })
            .collect();
        let queue = attr
            .queue
            .map(|l| l.value())
            .unwrap_or_else(|| snake_case(&item.ident.to_string()));
        Service {
            attrs: item.attrs.clone(),
            vis: item.vis.clone(),
            ident: item.ident.clone(),
            supertraits: Vec::new(),
            queue,
            methods,
        }
    }
}

impl Method {
    /// A method as the stubs see it: any receiver, arguments named `__argN` where
    /// the pattern is not a plain name, an `impl Trait` result as `Infallible` (a
    /// stub body cannot produce one; `Infallible` has most traits one may name).
    fn lenient(f: &TraitItemFn) -> Method {
        let sig = &f.sig;
        let args = sig
            .inputs
            .iter()
            .filter_map(|i| match i {
                FnArg::Typed(pt) => Some(pt),
                FnArg::Receiver(_) => None,
            })
            .enumerate()
            .map(|(n, pt)| Arg {
                ident: match &*pt.pat {
                    Pat::Ident(p) => p.ident.clone(),
                    _ => quote::format_ident!("__arg{}", n),
                },
                ty: (*pt.ty).clone(),
            })
            .collect();
        let output = match &sig.output {
            ReturnType::Default => Output::Value(syn::parse_quote!(())),
            ReturnType::Type(_, ty) if matches!(**ty, Type::ImplTrait(_)) => {
                Output::Value(syn::parse_quote!(::core::convert::Infallible))
            }
            ReturnType::Type(_, ty) => split_result(ty),
        };
        Method {
            attrs: f.attrs.clone(),
            ident: sig.ident.clone(),
            args,
            output,
        }
    }

    fn parse(f: &TraitItemFn, errors: &mut Errors) -> Option<Method> {
        let sig = &f.sig;
        let before = errors.0.is_some();
        if sig.asyncness.is_none() {
            errors.push(
                sig.fn_token.span(),
                format!(
                    "RPC methods must be `async fn`: write `async fn {}(&self, ...)`",
                    sig.ident
                ),
            );
        }
        if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
            errors.push(sig.generics.span(), "RPC methods cannot be generic");
        }
        if let Some(body) = &f.default {
            errors.push(body.span(), "RPC methods cannot have a default body");
        }
        if let Some(v) = &sig.variadic {
            errors.push(v.span(), "RPC methods cannot be variadic");
        }
        let mut inputs = sig.inputs.iter();
        check_receiver(sig, inputs.next(), errors);
        let args = parse_args(inputs, errors);
        let output = match &sig.output {
            ReturnType::Default => Output::Value(syn::parse_quote!(())),
            ReturnType::Type(_, ty) => {
                if let Some(span) = borrowed(ty) {
                    errors.push(span, "RPC results must be owned types");
                }
                split_result(ty)
            }
        };
        if errors.0.is_some() && !before {
            return None;
        }
        Some(Method {
            attrs: f.attrs.clone(),
            ident: sig.ident.clone(),
            args,
            output,
        })
    }
}

/// The receiver must be `&self`: handlers run concurrently.
fn check_receiver(sig: &syn::Signature, first: Option<&FnArg>, errors: &mut Errors) {
    match first {
        Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none() => {}
        Some(FnArg::Receiver(r)) => errors.push(
            r.span(),
            "RPC methods take `&self`: handlers run concurrently, so they cannot take `self` or `&mut self`",
        ),
        Some(FnArg::Typed(t)) => errors.push(
            t.span(),
            format!("RPC methods take `&self` first: write `async fn {}(&self, ...)`", sig.ident),
        ),
        None => errors.push(
            sig.paren_token.span.join(),
            format!("RPC methods take `&self` first: write `async fn {}(&self, ...)`", sig.ident),
        ),
    }
}

/// The arguments after the receiver: plain names of owned types.
fn parse_args<'a>(inputs: impl Iterator<Item = &'a FnArg>, errors: &mut Errors) -> Vec<Arg> {
    let mut args = Vec::new();
    for input in inputs {
        let FnArg::Typed(pt) = input else {
            continue;
        };
        let ident = match &*pt.pat {
            Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => p.ident.clone(),
            other => {
                errors.push(
                    other.span(),
                    "RPC arguments must be plain names (the name is the field on the wire)",
                );
                continue;
            }
        };
        if let Some(span) = borrowed(&pt.ty) {
            errors.push(
                span,
                "RPC arguments must be owned types (they are decoded from the request): use `String` for `&str`, `Vec<T>` for `&[T]`",
            );
            continue;
        }
        args.push(Arg {
            ident,
            ty: (*pt.ty).clone(),
        });
    }
    args
}

/// The span of a borrowed or `impl Trait` type, if `ty` is one.
pub fn borrowed(ty: &Type) -> Option<Span> {
    match ty {
        Type::Reference(r) => Some(r.span()),
        Type::ImplTrait(i) => Some(i.span()),
        Type::Paren(p) => borrowed(&p.elem),
        Type::Group(g) => borrowed(&g.elem),
        _ => None,
    }
}

/// `Result<T, E>` (by its last path segment, with two type arguments) splits into
/// its parts; anything else is a plain value.
fn split_result(ty: &Type) -> Output {
    if let Type::Path(p) = ty
        && p.qself.is_none()
        && let Some(last) = p.path.segments.last()
        && last.ident == "Result"
        && let PathArguments::AngleBracketed(args) = &last.arguments
    {
        let types: Vec<&Type> = args
            .args
            .iter()
            .filter_map(|a| match a {
                GenericArgument::Type(t) => Some(t),
                _ => None,
            })
            .collect();
        if let [ok, err] = types.as_slice() {
            return Output::Result {
                ok: (*ok).clone(),
                err: (*err).clone(),
            };
        }
    }
    Output::Value(ty.clone())
}

/// `FibService` -> `fib_service`.
pub fn snake_case(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 && !out.ends_with('_') {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// `add_two` -> `AddTwo`.
pub fn upper_camel(s: &str) -> String {
    s.trim_start_matches("r#")
        .split('_')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut cs = p.chars();
            cs.next()
                .map(|f| f.to_uppercase().chain(cs).collect::<String>())
                .unwrap_or_default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_convert() {
        assert_eq!(snake_case("Fib"), "fib");
        assert_eq!(snake_case("HttpCalculator"), "http_calculator");
        assert_eq!(upper_camel("fib"), "Fib");
        assert_eq!(upper_camel("add_two"), "AddTwo");
    }
}
