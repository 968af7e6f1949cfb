//! Code generation: one function per emitted item.

mod client;
mod request;
mod server;
mod trait_def;

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::Ident;

use crate::ast::{Service, upper_camel};

/// Everything `#[service]` emits for one trait.
pub fn service(s: &Service) -> TokenStream {
    let items = [
        trait_def::expand(s),
        request::expand(s),
        client::expand(s),
        server::expand(s),
    ];
    quote!(#(#items)*)
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

/// `#[doc]` attributes only (other attributes stay on the trait method).
fn docs(attrs: &[syn::Attribute]) -> Vec<&syn::Attribute> {
    attrs.iter().filter(|a| a.path().is_ident("doc")).collect()
}
