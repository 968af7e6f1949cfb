//! The trait itself, rewritten so its futures are `Send` (handlers run on a
//! multi-threaded runtime); implementors still write `async fn`. That its types can
//! cross the wire is checked where they are used (`wire`).

use proc_macro2::TokenStream;
use quote::quote;

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
    }
}
