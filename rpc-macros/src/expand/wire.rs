//! The serializability check. Every place the generated code hands a user type to
//! serde (encoding arguments, decoding them, encoding and decoding results) passes
//! the value through `__RpcWire::<Ty>::must_be_serializable`, spanned at the type as the user
//! wrote it.
//!
//! That function lives in an impl bounded by `Serialize + DeserializeOwned + Send +
//! 'static`, so for a type that is not one, the call fails to resolve (E0599) and
//! the value becomes an error: the serde calls after it raise nothing more, and
//! every failing check has the same span and text, which rustc reports once. One
//! missing derive is one error, pointing at the type, listing what is missing.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::Type;
use syn::spanned::Spanned;

/// The gate, emitted once per service inside the `const _` block that holds the
/// impls using it.
pub fn def() -> TokenStream {
    quote! {
        struct __RpcWire<T>(::core::marker::PhantomData<T>);

        impl<T> __RpcWire<T>
        where
            T: ::rpc_core::__private::serde::Serialize
                + ::rpc_core::__private::serde::de::DeserializeOwned
                + ::core::marker::Send
                + 'static,
        {
            /// `value`, unchanged, if `T` can cross the wire.
            #[inline(always)]
            fn must_be_serializable<V>(value: V) -> V {
                value
            }
        }
    }
}

/// `expr` (a `T`, `&T` or a value later unified with `T`) through the gate of `ty`.
pub fn check(ty: &Type, expr: TokenStream) -> TokenStream {
    quote_spanned!(ty.span()=> __RpcWire::<#ty>::must_be_serializable(#expr))
}
