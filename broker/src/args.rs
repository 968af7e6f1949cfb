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

/// The length limit of a queue: `x-max-length` and `x-overflow` (read leniently: a
/// stored queue is recovered with what it was declared with; `check_declare_arguments`
/// refused anything invalid at the declare).
pub(crate) fn length_limit(args: &FieldTable) -> (Option<u64>, Overflow) {
    let max = args
        .inner()
        .get("x-max-length")
        .and_then(int_value)
        .and_then(|n| u64::try_from(n).ok());
    let overflow = args
        .inner()
        .get("x-overflow")
        .and_then(str_value)
        .and_then(|s| Overflow::parse(&s));
    (max, overflow.unwrap_or_default())
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
    for key in ["x-max-length", "x-max-length-bytes"] {
        let Some(value) = args.inner().get(key) else {
            continue;
        };
        match int_value(value) {
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
    let dlx = string("x-dead-letter-exchange")?;
    if string("x-dead-letter-routing-key")?.is_some() && dlx.is_none() {
        return Err(invalid(
            "x-dead-letter-routing-key",
            &"routing_key_but_no_dlx_defined",
        ));
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
