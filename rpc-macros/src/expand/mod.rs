//! Code generation, the last step of the pipeline: one function per emitted item,
//! one module per generated type.

mod client;
mod fallback;
mod request;
mod server;
mod trait_def;
mod wire;

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::Ident;

use crate::ast::{Service, upper_camel};

/// Everything `#[service]` emits for one trait: the types and their own API, then
/// the impls that touch the user's types in a `const _` block beside the
/// serializability gate they use (`wire`).
pub fn service(s: &Service) -> TokenStream {
    let items = [
        trait_def::expand(s),
        request::def(s),
        client::def(s),
        client::common(s),
        server::def(s),
        server::common(s),
    ];
    let impls = [
        wire::def(),
        request::service_request(s),
        request::decode(s),
        client::methods(s),
        server::dispatch(s),
    ];
    quote! {
        #(#items)*
        const _: () = {
            #(#impls)*
        };
    }
}

/// The stubs emitted beside the errors when the trait does not pass.
pub fn fallback(s: &Service) -> TokenStream {
    fallback::expand(s)
}

/// The names a trait method must not take: the client's own inherent items and the
/// methods of the traits it derives. The generator emits these names from the same
/// constants.
pub fn reserved() -> impl Iterator<Item = &'static str> {
    client::INHERENT
        .iter()
        .copied()
        .chain(client::DERIVES.iter().map(|(_, method)| *method))
}

/// `{Trait}Request`.
fn request_ident(s: &Service) -> Ident {
    format_ident!("{}Request", s.ident)
}

/// `{Trait}Client`.
fn client_ident(s: &Service) -> Ident {
    format_ident!("{}Client", s.ident)
}

/// `{Trait}Server`.
fn server_ident(s: &Service) -> Ident {
    format_ident!("{}Server", s.ident)
}

/// The request variant of a method.
fn variant_ident(m: &crate::ast::Method) -> Ident {
    Ident::new(&upper_camel(&m.ident.to_string()), m.ident.span())
}

/// The wire name of a method (its Rust name without `r#`).
fn wire_name(m: &crate::ast::Method) -> String {
    m.ident.to_string().trim_start_matches("r#").to_owned()
}

/// The conditions a method exists under: its `#[cfg]`s, and its `#[cfg_attr]`s cut
/// down to the `cfg`s they may expand to. Every per-method item carries them, so a
/// method cfg'd out of the trait is gone from the request, client and server too.
fn cfgs(attrs: &[syn::Attribute]) -> Vec<TokenStream> {
    attrs
        .iter()
        .filter_map(|a| cfg_of(&a.meta))
        .map(|meta| quote!(#[#meta]))
        .collect()
}

/// `cfg(..)` as is; `cfg_attr(pred, ..)` keeping only its `cfg`s (and nested
/// `cfg_attr`s that hold one); anything else is `None`.
fn cfg_of(meta: &syn::Meta) -> Option<TokenStream> {
    if meta.path().is_ident("cfg") {
        return Some(quote!(#meta));
    }
    if !meta.path().is_ident("cfg_attr") {
        return None;
    }
    let list = meta.require_list().ok()?;
    let parts = list
        .parse_args_with(syn::punctuated::Punctuated::<syn::Meta, syn::Token![,]>::parse_terminated)
        .ok()?;
    let mut parts = parts.into_iter();
    let pred = parts.next()?;
    let kept: Vec<TokenStream> = parts.filter_map(|m| cfg_of(&m)).collect();
    if kept.is_empty() {
        return None;
    }
    Some(quote!(cfg_attr(#pred, #(#kept),*)))
}

/// `#[doc]` attributes only (other attributes stay on the trait method).
fn docs(attrs: &[syn::Attribute]) -> Vec<&syn::Attribute> {
    attrs.iter().filter(|a| a.path().is_ident("doc")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names of the fns and consts in the inherent impls of `ty`, looking into
    /// `const _: () = { .. };` blocks too.
    fn inherent_items(items: &[syn::Item], ty: &str, out: &mut Vec<String>) {
        for item in items {
            match item {
                syn::Item::Impl(i) if i.trait_.is_none() => {
                    let syn::Type::Path(p) = &*i.self_ty else {
                        continue;
                    };
                    if p.path.segments.last().is_some_and(|s| s.ident == ty) {
                        for it in &i.items {
                            match it {
                                syn::ImplItem::Fn(f) => out.push(f.sig.ident.to_string()),
                                syn::ImplItem::Const(c) => out.push(c.ident.to_string()),
                                _ => {}
                            }
                        }
                    }
                }
                syn::Item::Const(c) => {
                    if let syn::Expr::Block(b) = &*c.expr {
                        let nested: Vec<syn::Item> = b
                            .block
                            .stmts
                            .iter()
                            .filter_map(|s| match s {
                                syn::Stmt::Item(i) => Some(i.clone()),
                                _ => None,
                            })
                            .collect();
                        inherent_items(&nested, ty, out);
                    }
                }
                _ => {}
            }
        }
    }

    #[test]
    fn every_generated_client_item_is_reserved() {
        let item: syn::ItemTrait = syn::parse_quote! {
            pub trait Sample {
                async fn one(&self, n: u64) -> u64;
                async fn two(&self, a: String, b: u8) -> Result<(), String>;
            }
        };
        let service = crate::ast::Service::parse(crate::attr::Attr::default(), item)
            .expect("the sample parses");
        let file: syn::File = syn::parse2(super::service(&service)).expect("the output parses");
        let mut names = Vec::new();
        inherent_items(&file.items, "SampleClient", &mut names);
        let own: Vec<&String> = names
            .iter()
            .filter(|n| *n != "one" && *n != "two")
            .collect();
        assert!(own.len() >= 8, "found only {own:?}");
        for name in own {
            assert!(
                reserved().any(|r| r == name),
                "`SampleClient::{name}` is generated but not in expand::reserved()"
            );
        }
        assert!(reserved().any(|r| r == "clone") && reserved().any(|r| r == "fmt"));
    }
}
