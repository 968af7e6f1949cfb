//! The trait itself, rewritten so its futures are `Send` (handlers run on a
//! multi-threaded runtime); implementors still write `async fn`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use super::cfgs;
use crate::ast::Service;

pub fn expand(s: &Service) -> TokenStream {
    let Service {
        attrs,
        vis,
        ident,
        supertraits,
        ..
    } = s;
    let methods = s.methods.iter().map(|m| {
        let attrs = &m.attrs;
        let name = &m.ident;
        let args = m.args.iter().map(|a| {
            let (id, ty) = (&a.ident, &a.ty);
            quote!(#id: #ty)
        });
        let ret = m.output.handler_type();
        quote! {
            #(#attrs)*
            fn #name(&self, #(#args),*)
                -> impl ::core::future::Future<Output = #ret> + ::core::marker::Send;
        }
    });
    // Every argument and result type must cross the wire; say so at the type.
    let asserts = s.methods.iter().flat_map(|m| {
        let cfgs = cfgs(&m.attrs);
        let arg_types = m.args.iter().map(|a| &a.ty);
        let out_types: Vec<&syn::Type> = match &m.output {
            crate::ast::Output::Value(t) => vec![t],
            crate::ast::Output::Result { ok, err } => vec![ok, err],
        };
        arg_types
            .chain(out_types)
            .map(|ty| {
                quote_spanned! {ty.span()=>
                    #(#cfgs)*
                    const _: () = ::rpc_core::__private::assert_wire::<#ty>();
                }
            })
            .collect::<Vec<_>>()
    });
    let plus = if supertraits.is_empty() {
        quote!()
    } else {
        quote!(+)
    };
    quote! {
        #(#attrs)*
        #vis trait #ident: #(#supertraits)+* #plus ::core::marker::Send + ::core::marker::Sync + 'static {
            #(#methods)*
        }
        #(#asserts)*
    }
}
