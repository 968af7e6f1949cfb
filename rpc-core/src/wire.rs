//! The wire contract's names: header keys, reply statuses, the trace context.
//!
//! Client and server both build and read AMQP properties through this module, so the
//! contract written down in `docs/wire.md` lives in one place in the code too.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

/// Request header: the absolute deadline, milliseconds since the Unix epoch (an
/// integer, AMQP type `l`).
pub const DEADLINE_HEADER: &str = "x-deadline";
/// Reply header: the [`Status`] of the call, a string.
pub const STATUS_HEADER: &str = "x-status";
/// Request header: the W3C trace context, `00-<trace id>-<span id>-<flags>`.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// The direct reply-to pseudo queue (RabbitMQ's and the built-in broker's).
pub const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// What happened to a call, carried by every reply in the `x-status` header.
///
/// A reply without the header is `ok`: that is what a plain AMQP server of the seed
/// protocol sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// The handler returned a value; the body is that value.
    Ok,
    /// The handler returned its own error (`Err(e)` of a `Result` method); the body is
    /// `e`, encoded.
    Error,
    /// The arguments did not decode (or the content type is unknown); the body is a
    /// message.
    BadRequest,
    /// No method of that name; the body is a message.
    UnknownMethod,
    /// The handler panicked; the body is the panic message.
    Internal,
    /// The request reached the server after its deadline and was not started.
    DeadlineExceeded,
    /// A server middleware refused the request (load shed, overload); the body is a
    /// message.
    Unavailable,
    /// The handler ran, but its return value (or its error) did not encode in the
    /// request's codec; the body is the encoder's message.
    BadReply,
}

impl Status {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Error => "error",
            Status::BadRequest => "bad_request",
            Status::UnknownMethod => "unknown_method",
            Status::Internal => "internal",
            Status::DeadlineExceeded => "deadline_exceeded",
            Status::Unavailable => "unavailable",
            Status::BadReply => "bad_reply",
        }
    }

    /// Parses a header value.
    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "ok" => Status::Ok,
            "error" => Status::Error,
            "bad_request" => Status::BadRequest,
            "unknown_method" => Status::UnknownMethod,
            "internal" => Status::Internal,
            "deadline_exceeded" => Status::DeadlineExceeded,
            "unavailable" => Status::Unavailable,
            "bad_reply" => Status::BadReply,
            _ => return None,
        })
    }
}

/// Reads a string-valued header (long or short string).
pub fn header_str<'a>(headers: Option<&'a FieldTable>, key: &str) -> Option<&'a str> {
    match headers?.inner().get(key)? {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str()),
        _ => None,
    }
}

/// Reads an integer-valued header of any width.
pub fn header_i64(headers: Option<&FieldTable>, key: &str) -> Option<i64> {
    Some(match headers?.inner().get(key)? {
        AMQPValue::LongLongInt(v) => *v,
        AMQPValue::LongInt(v) => i64::from(*v),
        AMQPValue::LongUInt(v) => i64::from(*v),
        AMQPValue::ShortInt(v) => i64::from(*v),
        AMQPValue::ShortUInt(v) => i64::from(*v),
        AMQPValue::Timestamp(v) => i64::try_from(*v).ok()?,
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.parse().ok()?,
        _ => return None,
    })
}

/// Inserts a string header.
pub fn insert_str(headers: &mut FieldTable, key: &str, value: &str) {
    headers.insert(
        ShortString::from(key),
        AMQPValue::LongString(LongString::from(value)),
    );
}

/// Milliseconds since the Unix epoch (saturating at 0 before it).
pub fn unix_millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The `SystemTime` of a millisecond Unix timestamp.
pub fn from_unix_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// The `expiration` property for a remaining budget: whole milliseconds, at least 1
/// (RabbitMQ reads `0` as "deliver now or drop", which would race a busy server).
pub fn expiration(remaining: Duration) -> String {
    remaining
        .as_millis()
        .clamp(1, u128::from(u32::MAX))
        .to_string()
}

/// A W3C trace context: the trace id is kept across processes, each hop gets a new
/// span id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    /// 32 lower-case hex digits.
    pub trace_id: String,
    /// 16 lower-case hex digits.
    pub span_id: String,
}

impl TraceParent {
    /// A new trace.
    pub fn new_root() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        TraceParent {
            trace_id: id,
            span_id: new_span_id(),
        }
    }

    /// The next hop of this trace.
    pub fn child(&self) -> Self {
        TraceParent {
            trace_id: self.trace_id.clone(),
            span_id: new_span_id(),
        }
    }

    /// Parses `00-<32 hex>-<16 hex>-<2 hex>`; anything else is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit());
        if parts.next().is_some()
            || !hex(version, 2)
            || !hex(trace, 32)
            || !hex(span, 16)
            || !hex(flags, 2)
            || trace.bytes().all(|b| b == b'0')
        {
            return None;
        }
        Some(TraceParent {
            trace_id: trace.to_ascii_lowercase(),
            span_id: span.to_ascii_lowercase(),
        })
    }
}

impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "00-{}-{}-01", self.trace_id, self.span_id)
    }
}

fn new_span_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    id[..16].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip() {
        for s in [
            Status::Ok,
            Status::Error,
            Status::BadRequest,
            Status::UnknownMethod,
            Status::Internal,
            Status::DeadlineExceeded,
            Status::Unavailable,
            Status::BadReply,
        ] {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert_eq!(Status::parse("OK"), None);
    }

    #[test]
    fn traceparent_round_trips_and_children_keep_the_trace() {
        let root = TraceParent::new_root();
        let text = root.to_string();
        assert_eq!(text.len(), 55);
        assert_eq!(TraceParent::parse(&text), Some(root.clone()));
        let child = root.child();
        assert_eq!(child.trace_id, root.trace_id);
        assert_ne!(child.span_id, root.span_id);
        assert_eq!(TraceParent::parse("00-abc-def-01"), None);
        assert_eq!(
            TraceParent::parse("00-00000000000000000000000000000000-0000000000000001-01"),
            None
        );
    }

    #[test]
    fn expiration_is_whole_millis_at_least_one() {
        assert_eq!(expiration(Duration::from_micros(10)), "1");
        assert_eq!(expiration(Duration::from_millis(1500)), "1500");
    }

    #[test]
    fn headers_read_both_string_kinds_and_int_widths() {
        let mut h = FieldTable::default();
        insert_str(&mut h, "a", "x");
        h.insert("b".into(), AMQPValue::ShortString("y".into()));
        h.insert("c".into(), AMQPValue::LongInt(7));
        h.insert("d".into(), AMQPValue::LongLongInt(1_700_000_000_000));
        assert_eq!(header_str(Some(&h), "a"), Some("x"));
        assert_eq!(header_str(Some(&h), "b"), Some("y"));
        assert_eq!(header_i64(Some(&h), "c"), Some(7));
        assert_eq!(header_i64(Some(&h), "d"), Some(1_700_000_000_000));
        assert_eq!(header_i64(None, "d"), None);
        let t = from_unix_millis(1_700_000_000_000);
        assert_eq!(unix_millis(t), 1_700_000_000_000);
    }
}
