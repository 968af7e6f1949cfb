//! What `#[service]` emits beside its errors (as thiserror's `fallback.rs` does):
//! `{Trait}Request`, `{Trait}Client` and `{Trait}Server` with the API the real ones
//! have and bodies that never run, so code elsewhere in the crate that names them
//! compiles and the user sees only the real error.
//!
//! Nothing here may produce an error of its own: the stubs name no user type that
//! the real error may concern beyond the method signatures, never require the
//! trait (it may be generic or broken), and skip methods that would clash.

use std::collections::HashSet;

use proc_macro2::TokenStream;
use quote::quote;

use super::{cfgs, client, docs, request, reserved, server, variant_ident};
use crate::ast::{Method, Output, Service, borrowed};

/// The stubs for a service parsed with [`Service::lenient`].
pub fn expand(s: &Service) -> TokenStream {
    let s = &usable(s);
    let items = [
        request::def(&owned_fields(s)),
        client::def(s),
        client::common(s),
        client_methods(s),
        server::def(s),
        server_common(s),
        server_dispatch(s),
    ];
    quote!(#(#items)*)
}

/// The methods that can be stubbed once: not named like a client item, not a
/// second method with the same request variant.
fn usable(s: &Service) -> Service {
    let mut variants = HashSet::new();
    let mut s = s.clone();
    s.methods.retain(|m| {
        let name = m.ident.to_string();
        !reserved().any(|r| r == name) && variants.insert(variant_ident(m).to_string())
    });
    s
}

/// The request variants keep only owned fields (a borrowed one needs a lifetime).
fn owned_fields(s: &Service) -> Service {
    let mut s = s.clone();
    for m in &mut s.methods {
        m.args.retain(|a| borrowed(&a.ty).is_none());
    }
    s
}

/// One stub per method, with the real signature.
fn client_methods(s: &Service) -> TokenStream {
    let ident = super::client_ident(s);
    let methods = s.methods.iter().map(|m| client_method(s, m));
    // `__T`, not `T`: the trait's own parameters may appear in the signatures.
    quote! {
        impl<__T> #ident<__T> {
            #(#methods)*
        }
    }
}

/// A client method that never runs.
fn client_method(s: &Service, m: &Method) -> TokenStream {
    let vis = &s.vis;
    let (cfgs, docs) = (cfgs(&m.attrs), docs(&m.attrs));
    let name = &m.ident;
    let args = m.args.iter().map(|a| {
        let (id, ty) = (&a.ident, &a.ty);
        quote!(#id: #ty)
    });
    let (ok, err) = match &m.output {
        Output::Value(t) => (quote!(#t), quote!(::core::convert::Infallible)),
        Output::Result { ok, err } => (quote!(#ok), quote!(#err)),
    };
    quote! {
        #(#cfgs)*
        #(#docs)*
        #[allow(unused_variables)]
        #vis async fn #name(&self, #(#args),*)
            -> ::core::result::Result<#ok, ::rpc_core::RpcError<#err>>
        {
            ::core::unreachable!("#[service] failed to compile")
        }
    }
}

/// The server's own API, for any handler, with bodies that never run.
fn server_common(s: &Service) -> TokenStream {
    let stub = || quote!(::core::unreachable!("#[service] failed to compile"));
    let bodies = server::Bodies {
        into_server: stub(),
        serve: stub(),
        start: stub(),
    };
    server::inherent(s, quote!(H), bodies)
}

/// `tower::Service<Request>`, for any handler, so the server fits in a stack.
fn server_dispatch(s: &Service) -> TokenStream {
    server::service_impl(
        s,
        quote!(__H),
        quote!(::core::unreachable!("#[service] failed to compile")),
    )
}
