// The generated code names everything by absolute path, so user items called like
// what it uses (prelude types, `serde`, `core`, its own generic parameters and
// local variables) change nothing.

#![allow(non_camel_case_types, clippy::all)]

pub struct Ok;
pub struct Err;
pub struct Some;
pub struct None;
pub struct Vec;
pub struct Box;
pub struct String;
pub type Option = ();
pub type Result = ();
pub trait Send {}
pub trait Sync {}
pub trait Clone {}
pub trait Future {}
mod serde {}
mod core {}
mod std {}

/// Named like the client's and server's type parameters.
#[derive(::serde::Serialize, ::serde::Deserialize, Debug, PartialEq)]
pub struct T(u8);
#[derive(::serde::Serialize, ::serde::Deserialize, Debug, PartialEq)]
pub struct H(u8);

#[rpc_core::service]
pub trait Tricky {
    async fn echo(&self, t: T, h: H) -> H;
    async fn locals(
        &self,
        codec: u8,
        ctx: u8,
        handler: u8,
        body: u8,
        method: u8,
        value: u8,
        other: u8,
    ) -> ::core::result::Result<u8, u8>;
    async fn r#type(&self, r#in: u8) -> u8;
}

struct Impl;

impl Tricky for Impl {
    async fn echo(&self, t: T, _h: H) -> H {
        H(t.0)
    }

    async fn locals(
        &self,
        codec: u8,
        ctx: u8,
        handler: u8,
        body: u8,
        method: u8,
        value: u8,
        other: u8,
    ) -> ::core::result::Result<u8, u8> {
        ::core::result::Result::Ok(codec + ctx + handler + body + method + value + other)
    }

    async fn r#type(&self, r#in: u8) -> u8 {
        r#in
    }
}

fn main() {
    let _server = TrickyServer::new(Impl);
    let _ = TrickyClient::<rpc_core::Transport>::QUEUE;
    let request = TrickyRequest::Echo { t: T(1), h: H(2) };
    let encoded = rpc_core::__private::ServiceRequest::encode(&request, rpc_core::Codec::Json)
        .expect("encodes");
    let decoded = TrickyRequest::decode(::core::option::Option::Some("echo"), rpc_core::Codec::Json, &encoded)
        .expect("decodes");
    assert!(matches!(decoded, TrickyRequest::Echo { t: T(1), h: H(2) }));
}
