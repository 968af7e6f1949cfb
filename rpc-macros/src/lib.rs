//! The `#[service]` attribute: a trait of async methods becomes a typed AMQP RPC
//! client and server. Use it through `rpc_core::service`, which documents what it
//! generates.
//!
//! # Layout
//!
//! The macro is a small pipeline, one module per step:
//! - `attr`: parses the attribute's arguments (`queue = "..."`);
//! - `ast`: parses the trait into plain structs (`ast::Service`, `ast::Method`),
//!   collecting every problem as a spanned error;
//! - `valid`: checks the rules that need the whole picture (reserved names,
//!   clashing variant names);
//! - `expand`: one generator function per emitted item (the trait, the request
//!   enum, the client, the server), with `expand::wire`, the gate every user type
//!   passes on its way to serde (one error per type that cannot cross the wire),
//!   and `expand::fallback`, the stubs emitted when an earlier step fails.
//!
//! On any error the original trait is emitted unchanged beside the errors, with
//! stub `{Trait}Request`, `{Trait}Client` and `{Trait}Server` items
//! (`expand::fallback`), so the user sees the macro's message rather than a
//! cascade of "cannot find type" from the code that names them.

mod ast;
mod attr;
mod expand;
mod valid;

use proc_macro::TokenStream;

/// Turns a trait of `async fn(&self, ...)` methods into an RPC service: generates
/// `{Trait}Request`, `{Trait}Client` and `{Trait}Server`. See `rpc_core` for the
/// full description.
#[proc_macro_attribute]
pub fn service(args: TokenStream, input: TokenStream) -> TokenStream {
    let args: proc_macro2::TokenStream = args.into();
    let item: proc_macro2::TokenStream = input.into();
    match run(args.clone(), item.clone()) {
        Ok(tokens) => tokens.into(),
        Err(err) => {
            let errors = err.to_compile_error();
            let stubs = fallback(args, &item);
            quote::quote!(#errors #item #stubs).into()
        }
    }
}

/// The stubs for a trait that did not pass; nothing if it is not a trait at all.
fn fallback(
    args: proc_macro2::TokenStream,
    item: &proc_macro2::TokenStream,
) -> proc_macro2::TokenStream {
    match syn::parse2::<syn::ItemTrait>(item.clone()) {
        Ok(item) => {
            let attr = attr::parse(args).unwrap_or_default();
            expand::fallback(&ast::Service::lenient(attr, &item))
        }
        Err(_) => proc_macro2::TokenStream::new(),
    }
}

fn run(
    args: proc_macro2::TokenStream,
    item: proc_macro2::TokenStream,
) -> syn::Result<proc_macro2::TokenStream> {
    let attr = attr::parse(args);
    let item = syn::parse2::<syn::ItemTrait>(item);
    let (attr, item) = match (attr, item) {
        (Ok(a), Ok(i)) => (a, i),
        (Err(mut a), Err(i)) => {
            a.combine(i);
            return Err(a);
        }
        (Err(e), _) | (_, Err(e)) => return Err(e),
    };
    let service = ast::Service::parse(attr, item)?;
    valid::check(&service)?;
    Ok(expand::service(&service))
}
