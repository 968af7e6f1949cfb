//! AMQP errors as the broker raises them: a reply code, RabbitMQ's reply text, the
//! method that caused it, and whether it closes the channel or the whole connection.
//!
//! Every handler in [`crate::channel`] and [`crate::connection`] returns
//! `Result<_, AmqpError>`; the connection turns an error into `channel.close` or
//! `connection.close` with exactly these fields, so clients see what RabbitMQ would send.
//!
//! [`StartError`] is the other kind: why [`crate::BrokerBuilder::start`] could not start
//! a broker, for the embedder.

use std::fmt;

/// The methods errors are raised on by name, as the spec numbers them (class, method):
/// `.during(method::BASIC_PUBLISH)` rather than `.on_method(60, 40)`.
pub(crate) mod method {
    use super::MethodId;

    pub(crate) const CONNECTION_START_OK: MethodId = MethodId::new(10, 11);
    pub(crate) const CONNECTION_OPEN: MethodId = MethodId::new(10, 40);
    pub(crate) const CHANNEL_OPEN: MethodId = MethodId::new(20, 10);
    pub(crate) const CHANNEL_CLOSE: MethodId = MethodId::new(20, 40);
    pub(crate) const BASIC_QOS: MethodId = MethodId::new(60, 10);
    pub(crate) const BASIC_PUBLISH: MethodId = MethodId::new(60, 40);
}

/// A method's class and method ids, as `channel.close` and `connection.close` carry them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MethodId {
    class: u16,
    method: u16,
}

impl MethodId {
    const fn new(class: u16, method: u16) -> Self {
        Self { class, method }
    }
}

/// AMQP 0-9-1 reply codes (the spec's constants, as RabbitMQ uses them).
#[allow(missing_docs)]
pub mod code {
    pub const REPLY_SUCCESS: u16 = 200;
    pub const CONTENT_TOO_LARGE: u16 = 311;
    pub const NO_ROUTE: u16 = 312;
    pub const NO_CONSUMERS: u16 = 313;
    pub const CONNECTION_FORCED: u16 = 320;
    pub const INVALID_PATH: u16 = 402;
    pub const ACCESS_REFUSED: u16 = 403;
    pub const NOT_FOUND: u16 = 404;
    pub const RESOURCE_LOCKED: u16 = 405;
    pub const PRECONDITION_FAILED: u16 = 406;
    pub const FRAME_ERROR: u16 = 501;
    pub const SYNTAX_ERROR: u16 = 502;
    pub const COMMAND_INVALID: u16 = 503;
    pub const CHANNEL_ERROR: u16 = 504;
    pub const UNEXPECTED_FRAME: u16 = 505;
    pub const RESOURCE_ERROR: u16 = 506;
    pub const NOT_ALLOWED: u16 = 530;
    pub const NOT_IMPLEMENTED: u16 = 540;
    pub const INTERNAL_ERROR: u16 = 541;

    /// The symbolic name RabbitMQ puts in front of every reply text.
    pub fn name(code: u16) -> &'static str {
        match code {
            REPLY_SUCCESS => "OK",
            CONTENT_TOO_LARGE => "CONTENT_TOO_LARGE",
            NO_ROUTE => "NO_ROUTE",
            NO_CONSUMERS => "NO_CONSUMERS",
            CONNECTION_FORCED => "CONNECTION_FORCED",
            INVALID_PATH => "INVALID_PATH",
            ACCESS_REFUSED => "ACCESS_REFUSED",
            NOT_FOUND => "NOT_FOUND",
            RESOURCE_LOCKED => "RESOURCE_LOCKED",
            PRECONDITION_FAILED => "PRECONDITION_FAILED",
            FRAME_ERROR => "FRAME_ERROR",
            SYNTAX_ERROR => "SYNTAX_ERROR",
            COMMAND_INVALID => "COMMAND_INVALID",
            CHANNEL_ERROR => "CHANNEL_ERROR",
            UNEXPECTED_FRAME => "UNEXPECTED_FRAME",
            RESOURCE_ERROR => "RESOURCE_ERROR",
            NOT_ALLOWED => "NOT_ALLOWED",
            NOT_IMPLEMENTED => "NOT_IMPLEMENTED",
            INTERNAL_ERROR => "INTERNAL_ERROR",
            _ => "UNKNOWN",
        }
    }
}

/// Whether an error closes one channel or the whole connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `channel.close`: the connection and its other channels go on.
    Channel,
    /// `connection.close`: every channel of the connection goes.
    Connection,
}

/// A protocol error with the fields of `channel.close` / `connection.close`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct AmqpError {
    /// The AMQP reply code, e.g. 404.
    pub code: u16,
    /// The reply text, `"NOT_FOUND - no queue 'q' in vhost '/'"` as RabbitMQ words it.
    pub text: String,
    /// Class of the method that failed (0 if none).
    pub class_id: u16,
    /// Method that failed (0 if none).
    pub method_id: u16,
    /// What the error closes.
    pub scope: Scope,
}

impl fmt::Display for AmqpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.text, self.code)
    }
}

impl AmqpError {
    fn new(scope: Scope, code: u16, detail: impl fmt::Display) -> Self {
        let mut text = format!("{} - {}", code::name(code), detail);
        // A short string holds at most 255 bytes; cut on a char boundary.
        if text.len() > 255 {
            let mut end = 255;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        Self {
            code,
            text,
            class_id: 0,
            method_id: 0,
            scope,
        }
    }

    /// An error that closes the channel.
    pub fn channel(code: u16, detail: impl fmt::Display) -> Self {
        Self::new(Scope::Channel, code, detail)
    }

    /// An error that closes the connection.
    pub fn connection(code: u16, detail: impl fmt::Display) -> Self {
        Self::new(Scope::Connection, code, detail)
    }

    /// Records the method that caused the error, unless one is already set.
    pub fn on_method(mut self, class_id: u16, method_id: u16) -> Self {
        if self.class_id == 0 && self.method_id == 0 {
            self.class_id = class_id;
            self.method_id = method_id;
        }
        self
    }

    /// [`AmqpError::on_method`] with a named method.
    pub(crate) fn during(self, m: MethodId) -> Self {
        self.on_method(m.class, m.method)
    }

    pub(crate) fn not_found_queue(vhost: &str, name: &str) -> Self {
        Self::channel(
            code::NOT_FOUND,
            format_args!("no queue '{name}' in vhost '{vhost}'"),
        )
    }

    pub(crate) fn not_found_exchange(vhost: &str, name: &str) -> Self {
        Self::channel(
            code::NOT_FOUND,
            format_args!("no exchange '{name}' in vhost '{vhost}'"),
        )
    }

    pub(crate) fn precondition(detail: impl fmt::Display) -> Self {
        Self::channel(code::PRECONDITION_FAILED, detail)
    }

    pub(crate) fn access_refused(detail: impl fmt::Display) -> Self {
        Self::channel(code::ACCESS_REFUSED, detail)
    }
}

/// Why a broker did not start ([`crate::BrokerBuilder::start`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// `max_message_size` is over RabbitMQ's cap ([`crate::Limits::MAX_MESSAGE_SIZE_CAP`]).
    #[error("max_message_size {requested} is larger than {cap} bytes (512 MiB, RabbitMQ's cap)")]
    MaxMessageSize {
        /// The size asked for.
        requested: u64,
        /// The largest accepted.
        cap: u64,
    },
    /// The management API over HTTPS was asked for without a TLS certificate.
    #[error("management over HTTPS needs a TLS certificate and key")]
    ManagementTlsWithoutCertificate,
    /// A listener could not be bound (the port is taken, or the address is not local).
    #[error("cannot listen for {listener} on {addr}: {source}")]
    Listen {
        /// Which listener: `AMQP`, `AMQPS` or `the management API`.
        listener: &'static str,
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The data directory could not be created, read or recovered (the message names
    /// the file).
    #[error("data directory: {0}")]
    Store(#[source] std::io::Error),
    /// A configured permission names a user that is not configured.
    #[error("configured users and permissions: no such user '{0}'")]
    UnknownUser(String),
    /// A configured permission names a vhost that is not configured.
    #[error("configured users and permissions: no such vhost '{0}'")]
    UnknownVhost(String),
    /// A configured permission is not a valid regular expression.
    #[error("configured users and permissions: invalid pattern '{pattern}': {reason}")]
    BadPattern {
        /// The pattern.
        pattern: String,
        /// Why the regex engine refused it.
        reason: String,
    },
}

impl From<StartError> for std::io::Error {
    /// For callers that return `io::Result`: the kind says whether the input or the
    /// system was at fault, the message is the error's.
    fn from(e: StartError) -> Self {
        let kind = match &e {
            StartError::Listen { source, .. } | StartError::Store(source) => source.kind(),
            _ => std::io::ErrorKind::InvalidInput,
        };
        std::io::Error::new(kind, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_prefixed_with_the_code_name() {
        let e = AmqpError::not_found_queue("/", "q");
        assert_eq!(e.text, "NOT_FOUND - no queue 'q' in vhost '/'");
        assert_eq!(e.code, 404);
        assert_eq!(e.scope, Scope::Channel);
    }

    #[test]
    fn long_text_is_cut_to_a_short_string() {
        let e = AmqpError::precondition("é".repeat(300));
        assert!(e.text.len() <= 255);
    }

    #[test]
    fn first_method_wins() {
        let e = AmqpError::precondition("x")
            .on_method(50, 10)
            .on_method(60, 40);
        assert_eq!((e.class_id, e.method_id), (50, 10));
    }
}
