//! Declare arguments (`x-*` field tables): reading them from any of AMQP's field
//! types, checking them, and printing them in RabbitMQ's reply texts. Shared by queue
//! and exchange declares.

use std::borrow::Cow;
use std::time::Duration;

use amq_protocol::types::{AMQPValue, FieldTable};

use crate::error::AmqpError;
use crate::message::MAX_EXPIRY_MS;

/// A string field's text (an AMQP long or short string, invalid UTF-8 replaced), or
/// `None` for a field of another type. Borrowed unless it had to be repaired.
pub(crate) fn str_value(v: &AMQPValue) -> Option<Cow<'_, str>> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::ShortString(s) => Some(Cow::Borrowed(s.as_str())),
        _ => None,
    }
}

/// A field value as RabbitMQ prints it in reply texts.
pub(crate) fn plain(v: &AMQPValue) -> String {
    if let Some(s) = str_value(v) {
        return s.into_owned();
    }
    match v {
        AMQPValue::Boolean(b) => b.to_string(),
        other => int_value(other).map_or_else(|| format!("{other:?}"), |i| i.to_string()),
    }
}

/// RabbitMQ's name for a field type, as it appears in its reply texts.
pub(crate) fn type_name(v: &AMQPValue) -> &'static str {
    match v {
        AMQPValue::Boolean(_) => "bool",
        AMQPValue::ShortShortInt(_) => "byte",
        AMQPValue::ShortShortUInt(_) => "unsignedbyte",
        AMQPValue::ShortInt(_) => "short",
        AMQPValue::ShortUInt(_) => "unsignedshort",
        AMQPValue::LongInt(_) => "signedint",
        AMQPValue::LongUInt(_) => "unsignedint",
        AMQPValue::LongLongInt(_) => "long",
        AMQPValue::Float(_) => "float",
        AMQPValue::Double(_) => "double",
        AMQPValue::DecimalValue(_) => "decimal",
        AMQPValue::ShortString(_) | AMQPValue::LongString(_) => "longstr",
        AMQPValue::FieldArray(_) => "array",
        AMQPValue::Timestamp(_) => "timestamp",
        AMQPValue::FieldTable(_) => "table",
        AMQPValue::ByteArray(_) => "binary",
        AMQPValue::Void => "void",
    }
}

/// Reads an integer from any of AMQP's integer types.
pub(crate) fn int_value(v: &AMQPValue) -> Option<i128> {
    Some(match *v {
        AMQPValue::ShortShortInt(x) => x.into(),
        AMQPValue::ShortShortUInt(x) => x.into(),
        AMQPValue::ShortInt(x) => x.into(),
        AMQPValue::ShortUInt(x) => x.into(),
        AMQPValue::LongInt(x) => x.into(),
        AMQPValue::LongUInt(x) => x.into(),
        AMQPValue::LongLongInt(x) => x.into(),
        _ => return None,
    })
}

/// A duration argument in milliseconds (`x-message-ttl`, `x-expires`), checked as
/// RabbitMQ checks it.
pub(crate) fn duration_arg(
    vhost: &str,
    queue: &str,
    args: &FieldTable,
    key: &str,
    zero_ok: bool,
) -> Result<Option<Duration>, AmqpError> {
    let Some(value) = args.inner().get(key) else {
        return Ok(None);
    };
    let invalid = |why: &dyn std::fmt::Display| {
        AmqpError::precondition(format_args!(
            "invalid arg '{key}' for queue '{queue}' in vhost '{vhost}': {why}"
        ))
    };
    match int_value(value) {
        Some(ms) if ms > i128::from(MAX_EXPIRY_MS) => {
            Err(invalid(&format_args!("{{value_too_large,{ms}}}")))
        }
        Some(ms) if ms > 0 || (zero_ok && ms == 0) => Ok(Some(Duration::from_millis(
            u64::try_from(ms).unwrap_or(MAX_EXPIRY_MS),
        ))),
        Some(0) => Err(invalid(&"{value_zero,0}")),
        Some(ms) => Err(invalid(&format_args!("{{value_negative,{ms}}}"))),
        None => Err(invalid(&format_args!(
            "\"expected integer, got {}\"",
            type_name(value)
        ))),
    }
}

/// What a queue with a length limit does when full (`x-overflow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Overflow {
    /// Drops the oldest ready messages to make room (RabbitMQ's default).
    #[default]
    DropHead,
    /// Refuses the new message: a confirm-mode publisher gets `basic.nack`.
    RejectPublish,
    /// As `RejectPublish`, and the refused message is dead-lettered (`maxlen`).
    RejectPublishDlx,
}

impl Overflow {
    /// RabbitMQ's names.
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "drop-head" => Self::DropHead,
            "reject-publish" => Self::RejectPublish,
            "reject-publish-dlx" => Self::RejectPublishDlx,
            _ => return None,
        })
    }
}

/// Whether the declare argument `key` differs between a redeclare's `received`
/// arguments and the `current` ones (numbers compare by value, strings by text), and
/// if so the two as RabbitMQ's `inequivalent arg` text shows them: plain values when
/// both sides have one, typed values when one side has none.
pub(crate) fn differs(
    key: &str,
    received: &FieldTable,
    current: &FieldTable,
) -> Option<(String, String)> {
    let (a, b) = (received.inner().get(key), current.inner().get(key));
    let same = match (a, b) {
        (Some(a), Some(b)) => match (
            int_value(a).zip(int_value(b)),
            str_value(a).zip(str_value(b)),
        ) {
            (Some((x, y)), _) => x == y,
            (None, Some((x, y))) => x == y,
            (None, None) => a == b,
        },
        (None, None) => true,
        _ => false,
    };
    if same {
        return None;
    }
    let typed = a.is_none() || b.is_none();
    let show = |v: Option<&AMQPValue>| match v {
        None => "none".to_owned(),
        Some(v) if typed => format!("the value '{}' of type '{}'", plain(v), type_name(v)),
        Some(v) => format!("'{}'", plain(v)),
    };
    Some((show(a), show(b)))
}

/// The length limits of a queue (`x-max-length`, `x-max-length-bytes`) and what it
/// does when one is reached (`x-overflow`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LengthLimit {
    /// The most ready messages (unacked ones do not count).
    pub max_length: Option<u64>,
    /// The most body bytes of ready messages.
    pub max_bytes: Option<u64>,
    /// What one more message does to a full queue.
    pub overflow: Overflow,
}

impl LengthLimit {
    /// Read leniently from the declare arguments: a stored queue is recovered with
    /// what it was declared with; `check_declare_arguments` refused anything invalid at
    /// the declare.
    pub(crate) fn from_args(args: &FieldTable) -> Self {
        let int = |key: &str| {
            args.inner()
                .get(key)
                .and_then(int_value)
                .and_then(|n| u64::try_from(n).ok())
        };
        let overflow = args
            .inner()
            .get("x-overflow")
            .and_then(str_value)
            .and_then(|s| Overflow::parse(&s));
        Self {
            max_length: int("x-max-length"),
            max_bytes: int("x-max-length-bytes"),
            overflow: overflow.unwrap_or_default(),
        }
    }

    /// Whether a queue of `len` ready messages holding `bytes` body bytes is over a
    /// limit.
    pub(crate) fn exceeded(&self, len: u64, bytes: u64) -> bool {
        self.max_length.is_some_and(|max| len > max)
            || self.max_bytes.is_some_and(|max| bytes > max)
    }
}

/// The highest priority of a priority queue (`x-max-priority`, read leniently).
pub(crate) fn max_priority(args: &FieldTable) -> Option<u8> {
    let n = args.inner().get("x-max-priority").and_then(int_value)?;
    u8::try_from(n).ok()
}

/// Whether a queue keeps every ready message in memory (no paging to disk): a
/// priority queue, whose order is not the log's, and one with a byte limit, whose count
/// needs every body's size.
pub(crate) fn keeps_ready_in_memory(args: &FieldTable) -> bool {
    max_priority(args).is_some() || args.inner().contains_key("x-max-length-bytes")
}

/// Checks an exchange's declare arguments as RabbitMQ does: `alternate-exchange` is
/// a string.
pub(crate) fn check_exchange_arguments(
    vhost: &str,
    exchange: &str,
    args: &FieldTable,
) -> Result<(), AmqpError> {
    let key = "alternate-exchange";
    match args.inner().get(key) {
        Some(v) if str_value(v).is_none() => Err(AmqpError::precondition(format_args!(
            "invalid type '{}' for arg '{key}' in exchange '{exchange}' in vhost '{vhost}'",
            type_name(v)
        ))),
        _ => Ok(()),
    }
}

/// Checks the declare arguments the broker only validates, as RabbitMQ does:
/// `x-max-length` and `x-max-length-bytes` are integers from 0, `x-overflow` one of
/// RabbitMQ's overflow behaviours, `x-queue-type` one of RabbitMQ's types. A stored
/// queue is recovered without these checks, so a queue an earlier version accepted keeps
/// its messages.
pub(crate) fn check_declare_arguments(
    vhost: &str,
    queue: &str,
    args: &FieldTable,
) -> Result<(), AmqpError> {
    let invalid = |key: &str, why: &dyn std::fmt::Display| {
        AmqpError::precondition(format_args!(
            "invalid arg '{key}' for queue '{queue}' in vhost '{vhost}': {why}"
        ))
    };
    for key in [
        "x-max-length",
        "x-max-length-bytes",
        "x-max-priority",
        "x-queue-version",
    ] {
        let Some(value) = args.inner().get(key) else {
            continue;
        };
        match int_value(value) {
            Some(n) if key == "x-max-priority" && n > 255 => {
                return Err(invalid(key, &format_args!("{{max_value_exceeded,{n}}}")));
            }
            Some(n) if key == "x-queue-version" && n != 1 && n != 2 => {
                let why = format!("\"unsupported queue version '{n}'\"");
                return Err(invalid(key, &why));
            }
            Some(n) if n >= 0 => {}
            Some(n) => return Err(invalid(key, &format_args!("{{value_negative,{n}}}"))),
            None => {
                let why = format!("\"expected integer, got {}\"", type_name(value));
                return Err(invalid(key, &why));
            }
        }
    }
    // A string argument, or RabbitMQ's refusal of another type.
    let string = |key: &str| match args.inner().get(key) {
        None => Ok(None),
        Some(v) => str_value(v).map(Some).ok_or_else(|| {
            let why = format!("{{unacceptable_type,{}}}", type_name(v));
            invalid(key, &why)
        }),
    };
    if string("x-overflow")?.is_some_and(|o| Overflow::parse(&o).is_none()) {
        return Err(invalid("x-overflow", &"invalid_overflow"));
    }
    if let Some(v) = args.inner().get("x-single-active-consumer")
        && !matches!(v, AMQPValue::Boolean(_))
    {
        let why = format!("{{unacceptable_type,{}}}", type_name(v));
        return Err(invalid("x-single-active-consumer", &why));
    }
    // RabbitMQ checks the exchange's type with another text than the others'.
    let key = "x-dead-letter-exchange";
    if let Some(v) = args.inner().get(key).filter(|v| str_value(v).is_none()) {
        return Err(AmqpError::precondition(format_args!(
            "invalid type '{}' for arg '{key}' in queue '{queue}' in vhost '{vhost}'",
            type_name(v)
        )));
    }
    let dlx = string(key)?;
    if string("x-dead-letter-routing-key")?.is_some() && dlx.is_none() {
        return Err(invalid(
            "x-dead-letter-routing-key",
            &"routing_key_but_no_dlx_defined",
        ));
    }
    if let Some(mode) = string("x-queue-mode")?
        && mode != "default"
        && mode != "lazy"
    {
        let why = format!("\"unsupported queue mode '{mode}'\"");
        return Err(invalid("x-queue-mode", &why));
    }
    let key = "x-queue-type";
    let Some(kind) = string(key)? else {
        return Ok(());
    };
    match kind.as_ref() {
        "classic" | "quorum" | "stream" => Ok(()),
        _ => Err(invalid(
            key,
            &format_args!("\"unsupported queue type '{kind}'\""),
        )),
    }
}

/// Whether the declare arguments make a quorum queue.
pub(crate) fn is_quorum(args: &FieldTable) -> bool {
    args.inner()
        .get("x-queue-type")
        .and_then(str_value)
        .is_some_and(|t| t == "quorum")
}

/// The queue arguments RabbitMQ 4 knows, and which of them each queue type takes
/// (its `capabilities()`); an argument it does not know is kept and ignored, as there.
const CLASSIC_ARGS: &[&str] = &[
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-version",
    "x-single-active-consumer",
    "x-queue-type",
    "x-queue-master-locator",
];
const QUORUM_ARGS: &[&str] = &[
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-dead-letter-strategy",
    "x-expires",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-overflow",
    "x-single-active-consumer",
    "x-queue-type",
    "x-quorum-initial-group-size",
    "x-delivery-limit",
    "x-message-ttl",
    "x-queue-leader-locator",
    "x-quorum-target-group-size",
];
const STREAM_ARGS: &[&str] = &[
    "x-max-length-bytes",
    "x-queue-type",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-initial-cluster-size",
    "x-queue-leader-locator",
    "x-stream-filter-size-bytes",
];

/// Checks a declare against its queue type, as RabbitMQ 4 does: a quorum queue is
/// durable, not exclusive and not auto-delete, and a known argument another queue type
/// takes is refused for this one. A stream declare that RabbitMQ would accept is
/// refused: the broker has no streams (540, as RabbitMQ answers what it does not
/// implement).
pub(crate) fn check_queue_type(
    vhost: &str,
    queue: &str,
    flags: (bool, bool, bool),
    args: &FieldTable,
) -> Result<(), AmqpError> {
    let (durable, exclusive, auto_delete) = flags;
    let kind = args.inner().get("x-queue-type").and_then(str_value);
    let (own, module) = match kind.as_deref() {
        Some("quorum") => (QUORUM_ARGS, "rabbit_quorum_queue"),
        Some("stream") => (STREAM_ARGS, "rabbit_stream_queue"),
        _ => (CLASSIC_ARGS, "rabbit_classic_queue"),
    };
    if module != "rabbit_classic_queue" {
        let property = [
            (!durable, "non-durable"),
            (exclusive, "exclusive-owner"),
            (auto_delete, "auto-delete"),
        ]
        .into_iter()
        .find_map(|(bad, name)| bad.then_some(name));
        if let Some(name) = property {
            return Err(AmqpError::precondition(format_args!(
                "invalid property '{name}' for queue '{queue}' in vhost '{vhost}'"
            )));
        }
    }
    let known = |k: &str| {
        [CLASSIC_ARGS, QUORUM_ARGS, STREAM_ARGS]
            .iter()
            .any(|l| l.contains(&k))
    };
    let wrong = args
        .inner()
        .keys()
        .map(|k| k.as_str())
        .find(|k| known(k) && !own.contains(k));
    if let Some(key) = wrong {
        return Err(AmqpError::precondition(format_args!(
            "invalid arg '{key}' for queue '{queue}' in vhost '{vhost}' of queue type {module}"
        )));
    }
    if module == "rabbit_stream_queue" {
        return Err(AmqpError::connection(
            crate::error::code::NOT_IMPLEMENTED,
            format_args!(
                "queue type 'stream' is not implemented by this broker (queue '{queue}' in vhost '{vhost}')"
            ),
        ));
    }
    Ok(())
}
