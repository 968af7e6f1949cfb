//! The part of dispatching that every generated `{Trait}Server` shares: refuse a
//! request that is past its deadline, run the handler with its [`Context`] as the
//! task-local context, and turn a panic into an `internal` reply.

use std::any::Any;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;

use super::request::Response;
use crate::codec::{Codec, CodecError};
use crate::context::Context;
use crate::wire::Status;

/// Why a request did not decode into a method call.
#[derive(Debug)]
#[non_exhaustive]
pub enum DecodeError {
    /// No method of this name (empty: the request named none and the service has
    /// more than one method).
    UnknownMethod(String),
    /// The arguments did not decode.
    BadRequest(CodecError),
}

impl DecodeError {
    /// The reply for this error.
    pub fn into_response(self, codec: Codec) -> Response {
        match self {
            DecodeError::UnknownMethod(m) => Response::message(Status::UnknownMethod, codec, &m),
            DecodeError::BadRequest(e) => {
                Response::message(Status::BadRequest, codec, &e.to_string())
            }
        }
    }
}

/// Runs one handler call: refuses it if the deadline has passed, else polls `fut`
/// inside `ctx` and catches a panic. `finish` encodes the handler's output.
pub async fn run_handler<F, O>(
    ctx: Context,
    codec: Codec,
    fut: F,
    finish: impl FnOnce(O) -> Response,
) -> Response
where
    F: Future<Output = O>,
{
    if ctx.is_expired() {
        tracing::debug!("deadline passed before start; not running the handler");
        return Response::message(
            Status::DeadlineExceeded,
            codec,
            "the deadline passed before the server started the call",
        );
    }
    match ctx.scope(AssertUnwindSafe(fut).catch_unwind()).await {
        Ok(out) => finish(out),
        Err(panic) => {
            let message = panic_message(panic.as_ref());
            tracing::error!(%message, "handler panicked");
            Response::message(Status::Internal, codec, &message)
        }
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "the handler panicked".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[tokio::test]
    async fn panics_become_internal_replies() {
        let r = run_handler(
            Context::default(),
            Codec::Json,
            async { panic!("kaboom {}", 1) },
            |(): ()| Response::ok(Codec::Json, &()),
        )
        .await;
        assert_eq!(r.status, Status::Internal);
        assert_eq!(Codec::Json.decode_message(&r.body), "kaboom 1");
    }

    #[tokio::test]
    async fn expired_requests_are_not_started() {
        let mut delivery = lapin::message::Delivery::mock(1, "".into(), "q".into(), false, vec![]);
        let mut headers = lapin::types::FieldTable::default();
        headers.insert(
            crate::wire::DEADLINE_HEADER.into(),
            lapin::types::AMQPValue::LongLongInt(crate::wire::unix_millis(
                SystemTime::now() - Duration::from_secs(1),
            )),
        );
        delivery.properties = lapin::BasicProperties::default().with_headers(headers);
        let ctx = Context::from_delivery(&delivery);
        let started = std::sync::atomic::AtomicBool::new(false);
        let r = run_handler(
            ctx,
            Codec::MsgPack,
            async { started.store(true, std::sync::atomic::Ordering::SeqCst) },
            |()| Response::ok(Codec::MsgPack, &()),
        )
        .await;
        assert_eq!(r.status, Status::DeadlineExceeded);
        assert!(!started.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test]
    async fn the_handler_sees_its_context() {
        let r = run_handler(
            Context::default(),
            Codec::Json,
            async { Context::current().is_some() },
            |seen| Response::ok(Codec::Json, &seen),
        )
        .await;
        assert_eq!(r.body, b"true");
    }
}
