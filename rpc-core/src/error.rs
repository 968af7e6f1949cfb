//! The error a call returns: one variant per failure a caller can act on.
//!
//! The transport ([`crate::Transport`]) fails with [`RpcError`]`<Infallible>`
//! (nothing routed, no server, timeout, connection trouble); the typed client turns
//! the reply's status into the remaining variants and, for methods that return
//! `Result<T, E>`, the handler's own `E` into [`RpcError::Handler`].

use std::convert::Infallible;

use crate::codec::CodecError;
use crate::wire::Status;

/// A boxed error, as tower middleware produces them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a call failed. `E` is the service method's own error type (`Infallible` for
/// methods that do not return a `Result`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError<E = Infallible> {
    /// The handler ran and returned `Err(e)`.
    #[error("the handler returned an error: {0}")]
    Handler(E),
    /// The broker returned the request (`basic.return`, 312 NO_ROUTE) or the service
    /// queue does not exist: no server has ever declared it.
    #[error("no route to queue {queue:?}: no server has declared it")]
    NoRoute {
        /// The service queue.
        queue: String,
    },
    /// The service queue exists but nothing consumes it: no server is running.
    #[error("no server is consuming queue {queue:?}")]
    NoServer {
        /// The service queue.
        queue: String,
    },
    /// The client's deadline passed before a reply arrived.
    #[error("no reply before the deadline")]
    Timeout,
    /// The server got the request after its deadline and did not start it.
    #[error("the server received the request after its deadline and did not run it")]
    DeadlineExceeded,
    /// The handler panicked; the server caught it and lives on.
    #[error("the handler panicked: {message}")]
    Panicked {
        /// The panic message.
        message: String,
    },
    /// The server has no method of this name.
    #[error("the server has no method {method:?}")]
    UnknownMethod {
        /// The method name the server saw (empty when the request had none).
        method: String,
    },
    /// The server could not decode the arguments (or their content type).
    #[error("the server rejected the request: {message}")]
    BadRequest {
        /// The server's explanation.
        message: String,
    },
    /// A server middleware refused the request (load shedding, overload).
    #[error("the server is unavailable: {message}")]
    Unavailable {
        /// The server's explanation.
        message: String,
    },
    /// The arguments could not be encoded, or the reply could not be decoded.
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    /// An AMQP operation failed (connect, open a channel, publish).
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    /// The connection or channel closed while the call waited for its reply.
    #[error("the connection closed before the reply arrived")]
    Disconnected,
    /// The connection dropped while the call was in flight: the request may or may
    /// not have run (`outcome` says what is known). The call fails at once instead of
    /// waiting for its deadline; retry it only if the method is safe to run twice.
    #[error(
        "the connection was lost while the call was in flight; the request may or may not have run"
    )]
    ConnectionLost {
        /// What is known of the request's fate.
        outcome: Outcome,
    },
    /// The call could not be sent before its deadline: the broker was unreachable
    /// (the connection was down and did not come back in time). The request never
    /// left this process.
    #[error("the broker was unreachable: {message}")]
    Unreachable {
        /// The last connection error.
        message: String,
    },
    /// The handler ran, but the server could not encode its reply in the request's
    /// codec (a value serde cannot represent there, such as a map with non-string
    /// keys in JSON). The handler's effects happened; retrying will fail the same way.
    #[error("the handler ran but its reply did not encode: {message}")]
    BadReply {
        /// The encoder's message.
        message: String,
    },
    /// A broker URL (or list of node URLs) the entry point was given cannot be used:
    /// unparsable, or nodes of one list differing in scheme, user or vhost.
    #[error("invalid broker URL: {message}")]
    InvalidUrl {
        /// What is wrong with it.
        message: String,
    },
    /// A client middleware layer failed (rate limit, concurrency limit, retry, ...).
    #[error("client middleware: {0}")]
    Middleware(#[source] BoxError),
}

/// What is known of a request whose connection dropped before its reply came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// It was published; it may have run, may run later (the broker redelivers an
    /// unacked request), or may never run.
    Unknown,
}

impl RpcError<Infallible> {
    /// Re-types a transport error for a method with error type `E`.
    pub fn cast<E>(self) -> RpcError<E> {
        match self {
            RpcError::Handler(never) => match never {},
            RpcError::NoRoute { queue } => RpcError::NoRoute { queue },
            RpcError::NoServer { queue } => RpcError::NoServer { queue },
            RpcError::Timeout => RpcError::Timeout,
            RpcError::DeadlineExceeded => RpcError::DeadlineExceeded,
            RpcError::Panicked { message } => RpcError::Panicked { message },
            RpcError::UnknownMethod { method } => RpcError::UnknownMethod { method },
            RpcError::BadRequest { message } => RpcError::BadRequest { message },
            RpcError::Unavailable { message } => RpcError::Unavailable { message },
            RpcError::Codec(e) => RpcError::Codec(e),
            RpcError::Amqp(e) => RpcError::Amqp(e),
            RpcError::Disconnected => RpcError::Disconnected,
            RpcError::ConnectionLost { outcome } => RpcError::ConnectionLost { outcome },
            RpcError::Unreachable { message } => RpcError::Unreachable { message },
            RpcError::InvalidUrl { message } => RpcError::InvalidUrl { message },
            RpcError::BadReply { message } => RpcError::BadReply { message },
            RpcError::Middleware(e) => RpcError::Middleware(e),
        }
    }

    /// Recovers the error from a tower stack's boxed error: our own transport errors
    /// come back as they were, tower's `Elapsed` (a `TimeoutLayer`) becomes
    /// [`RpcError::Timeout`], anything else is [`RpcError::Middleware`].
    pub fn from_box(err: BoxError) -> Self {
        let err = match err.downcast::<RpcError>() {
            Ok(e) => return *e,
            Err(other) => other,
        };
        if err.is::<tower::timeout::error::Elapsed>() {
            return RpcError::Timeout;
        }
        RpcError::Middleware(err)
    }
}

impl<E> RpcError<E> {
    /// The error for a reply status other than `ok` and `error`, with the message the
    /// server sent.
    pub fn from_status(status: Status, message: String) -> Self {
        match status {
            Status::BadRequest => RpcError::BadRequest { message },
            Status::UnknownMethod => RpcError::UnknownMethod { method: message },
            Status::Internal => RpcError::Panicked { message },
            Status::DeadlineExceeded => RpcError::DeadlineExceeded,
            Status::Unavailable => RpcError::Unavailable { message },
            Status::BadReply => RpcError::BadReply { message },
            Status::Ok | Status::Error => {
                RpcError::Codec(CodecError::UnknownStatus(status.as_str().to_owned()))
            }
        }
    }

    /// The handler's own error, if that is what this is.
    pub fn handler_error(&self) -> Option<&E> {
        match self {
            RpcError::Handler(e) => Some(e),
            _ => None,
        }
    }

    /// Whether the broker could tell that no server would answer (no route, or no
    /// consumer): the call failed fast and was never handled.
    pub fn is_no_server(&self) -> bool {
        matches!(self, RpcError::NoRoute { .. } | RpcError::NoServer { .. })
    }

    /// Whether the call failed because of the connection (lost mid-call, or the
    /// broker unreachable): a retry after the connection is back may succeed.
    pub fn is_connection_error(&self) -> bool {
        matches!(
            self,
            RpcError::ConnectionLost { .. } | RpcError::Unreachable { .. } | RpcError::Disconnected
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxed_errors_come_back_typed() {
        let boxed: BoxError = Box::new(RpcError::<Infallible>::NoServer { queue: "q".into() });
        assert!(matches!(
            RpcError::from_box(boxed),
            RpcError::NoServer { .. }
        ));
        let elapsed: BoxError = Box::new(tower::timeout::error::Elapsed::new());
        assert!(matches!(RpcError::from_box(elapsed), RpcError::Timeout));
        let other: BoxError = "rate limited".into();
        assert!(matches!(RpcError::from_box(other), RpcError::Middleware(_)));
    }

    #[test]
    fn statuses_map_to_variants() {
        let e: RpcError<String> = RpcError::from_status(Status::Internal, "boom".into());
        assert!(matches!(e, RpcError::Panicked { ref message } if message == "boom"));
        let e: RpcError<String> = RpcError::from_status(Status::DeadlineExceeded, String::new());
        assert!(matches!(e, RpcError::DeadlineExceeded));
        let e: RpcError<String> = RpcError::from_status(Status::UnknownMethod, "nope".into());
        assert!(matches!(e, RpcError::UnknownMethod { ref method } if method == "nope"));
        let e: RpcError<String> = RpcError::from_status(Status::Unavailable, "shed".into());
        assert!(matches!(e, RpcError::Unavailable { .. }));
        let e: RpcError<String> = RpcError::from_status(Status::BadRequest, "bad".into());
        assert!(matches!(e, RpcError::BadRequest { .. }));
    }

    #[test]
    fn messages_are_lower_case() {
        let e: RpcError = RpcError::NoServer {
            queue: "fib".into(),
        };
        assert_eq!(e.to_string(), "no server is consuming queue \"fib\"");
        let e: RpcError<String> = RpcError::Handler("too big".into());
        assert_eq!(e.to_string(), "the handler returned an error: too big");
        let e: RpcError = RpcError::ConnectionLost {
            outcome: Outcome::Unknown,
        };
        assert!(e.to_string().contains("may or may not have run"));
        assert!(e.is_connection_error());
    }
}
