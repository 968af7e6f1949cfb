//! What the server's tower stack sees: a [`Request`] in, a [`Response`] out.
//!
//! The serve loop builds the request from a delivery; the generated dispatcher
//! (`{Trait}Server`) decodes it, runs the handler and encodes the response; the loop
//! publishes the response as the reply.

use crate::codec::Codec;
use crate::context::Context;
use crate::wire::Status;

/// A request as the server's tower stack sees it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Request {
    /// The method name (`type` property); `None` for seed-protocol requests.
    pub method: Option<String>,
    /// The codec of the body, from `content_type`; the reply uses it too.
    pub codec: Codec,
    /// The encoded arguments.
    pub body: Vec<u8>,
    /// Deadline, correlation id, `redelivered`, headers.
    pub context: Context,
}

impl Request {
    /// A request (for tests and custom transports).
    pub fn new(method: Option<String>, codec: Codec, body: Vec<u8>, context: Context) -> Self {
        Request {
            method,
            codec,
            body,
            context,
        }
    }
}

/// A response: the reply's status and body (encoded in the request's codec).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Response {
    /// The `x-status` header of the reply.
    pub status: Status,
    /// The reply body.
    pub body: Vec<u8>,
}

impl Response {
    /// A response with an encoded body.
    pub fn new(status: Status, body: Vec<u8>) -> Self {
        Response { status, body }
    }

    /// A response whose body is a human-readable message (every status but `ok`
    /// and `error`).
    pub fn message(status: Status, codec: Codec, message: &str) -> Self {
        Response {
            status,
            body: codec.encode_message(message),
        }
    }

    /// `ok` with `value` encoded, or `bad_reply` if it does not encode.
    pub fn ok<T: serde::Serialize>(codec: Codec, value: &T) -> Self {
        match codec.encode(value) {
            Ok(body) => Response::new(Status::Ok, body),
            Err(e) => Response::message(Status::BadReply, codec, &e.to_string()),
        }
    }

    /// `error` with the handler's error encoded, or `bad_reply` if it does not encode.
    pub fn error<E: serde::Serialize>(codec: Codec, error: &E) -> Self {
        match codec.encode(error) {
            Ok(body) => Response::new(Status::Error, body),
            Err(e) => Response::message(Status::BadReply, codec, &e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::error::RpcError;

    #[test]
    fn a_reply_that_does_not_encode_is_not_reported_as_a_panic() {
        // JSON object keys must be strings: this value cannot be encoded as JSON.
        let value: BTreeMap<(u8, u8), u8> = BTreeMap::from([((1, 2), 3)]);
        for r in [
            Response::ok(Codec::Json, &value),
            Response::error(Codec::Json, &value),
        ] {
            assert_eq!(r.status, Status::BadReply);
            let message = Codec::Json.decode_message(&r.body);
            let e: RpcError = RpcError::from_status(r.status, message);
            assert!(
                matches!(&e, RpcError::BadReply { message } if message.contains("key")),
                "{e:?}"
            );
        }
    }
}
