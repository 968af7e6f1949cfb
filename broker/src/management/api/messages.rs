//! Messages over HTTP, as RabbitMQ's management plugin has them for testing and
//! operations: `POST /api/exchanges/{vhost}/{name}/publish` (answers `{"routed": ...}`)
//! and `POST /api/queues/{vhost}/{name}/get` (takes messages and acks, or rejects
//! them, at once; see [`AckMode`]). The user needs the administrator tag and, as on
//! a channel, write permission on the exchange or read permission on the queue.

use amq_protocol::protocol::basic::{AMQPProperties, parse_properties};
use amq_protocol::types::ShortString;
use axum::body::Bytes;
use axum::extract::{Path, State};
use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::{ApiResult, St, amqp_to_api, body_json, ok, short_name, vhost_entry};
use crate::auth::{Access, Resource};
use crate::management::ApiError;
use crate::management::access::Admin;
use crate::management::json as j;
use crate::message::{Message, parse_expiration};
use crate::vhost::AckMode;

fn bad(what: impl Into<String>) -> ApiError {
    ApiError::BadRequest(what.into())
}

/// A string property of `props`, if present (400 if not a string).
fn str_prop(props: &Map<String, Value>, name: &str) -> Result<Option<ShortString>, ApiError> {
    match props.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            short_name(name, s)?;
            Ok(Some(s.as_str().into()))
        }
        Some(_) => Err(bad(format!("property '{name}' must be a string"))),
    }
}

fn int_prop(props: &Map<String, Value>, name: &str) -> Result<Option<u64>, ApiError> {
    match props.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| bad(format!("property '{name}' must be a non-negative integer"))),
    }
}

/// RabbitMQ's `properties` object as AMQP properties.
fn properties(v: Option<&Value>) -> Result<AMQPProperties, ApiError> {
    let empty = Map::new();
    let props = match v {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => return Err(bad("properties must be an object")),
    };
    let mut p = AMQPProperties::default();
    if let Some(s) = str_prop(props, "content_type")? {
        p = p.with_content_type(s);
    }
    if let Some(s) = str_prop(props, "content_encoding")? {
        p = p.with_content_encoding(s);
    }
    match props.get("headers") {
        None | Some(Value::Null) => {}
        Some(h) => {
            let t = j::amqp_table(h).ok_or_else(|| bad("headers must be an object"))?;
            p = p.with_headers(t);
        }
    }
    if let Some(d) = int_prop(props, "delivery_mode")? {
        let d = u8::try_from(d)
            .ok()
            .filter(|d| matches!(d, 1 | 2))
            .ok_or_else(|| bad("delivery_mode must be 1 or 2"))?;
        p = p.with_delivery_mode(d);
    }
    if let Some(n) = int_prop(props, "priority")? {
        let n = u8::try_from(n).map_err(|_| bad("priority must be 0-255"))?;
        p = p.with_priority(n);
    }
    if let Some(s) = str_prop(props, "correlation_id")? {
        p = p.with_correlation_id(s);
    }
    if let Some(s) = str_prop(props, "reply_to")? {
        p = p.with_reply_to(s);
    }
    if let Some(s) = str_prop(props, "expiration")? {
        parse_expiration(s.as_str())
            .map_err(|why| bad(format!("invalid expiration '{}': {why}", s.as_str())))?;
        p = p.with_expiration(s);
    }
    if let Some(s) = str_prop(props, "message_id")? {
        p = p.with_message_id(s);
    }
    if let Some(t) = int_prop(props, "timestamp")? {
        p = p.with_timestamp(t);
    }
    if let Some(s) = str_prop(props, "type")? {
        p = p.with_type(s);
    }
    if let Some(s) = str_prop(props, "user_id")? {
        p = p.with_user_id(s);
    }
    if let Some(s) = str_prop(props, "app_id")? {
        p = p.with_app_id(s);
    }
    Ok(p)
}

/// AMQP properties as RabbitMQ's `properties` object (only those that are set).
fn properties_json(p: &AMQPProperties) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            m.insert(k.to_owned(), v);
        }
    };
    let s = |v: &Option<ShortString>| v.as_ref().map(|s| json!(s.as_str()));
    put("content_type", s(p.content_type()));
    put("content_encoding", s(p.content_encoding()));
    put("headers", p.headers().as_ref().map(j::table));
    put("delivery_mode", p.delivery_mode().map(|d| json!(d)));
    put("priority", p.priority().map(|d| json!(d)));
    put("correlation_id", s(p.correlation_id()));
    put("reply_to", s(p.reply_to()));
    put("expiration", s(p.expiration()));
    put("message_id", s(p.message_id()));
    put("timestamp", p.timestamp().map(|t| json!(t)));
    put("type", s(p.kind()));
    put("user_id", s(p.user_id()));
    put("app_id", s(p.app_id()));
    Value::Object(m)
}

pub(super) async fn publish(
    State(s): St,
    Admin(user): Admin,
    Path((vhost, exchange)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let e = vhost_entry(&s, &vhost)?;
    short_name("exchange name", &exchange)?;
    // RabbitMQ names the default exchange `amq.default` in URLs.
    let exchange = if exchange == "amq.default" {
        String::new()
    } else {
        exchange
    };
    let body = body_json(&body)?;
    let routing_key = body
        .get("routing_key")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("missing string field 'routing_key'"))?;
    short_name("routing key", routing_key)?;
    let payload = body
        .get("payload")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("missing string field 'payload'"))?;
    let payload = match body.get("payload_encoding").and_then(Value::as_str) {
        None | Some("string") => payload.as_bytes().to_vec(),
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(payload)
            .map_err(|e| bad(format!("payload is not base64: {e}")))?,
        Some(other) => return Err(bad(format!("unknown payload_encoding '{other}'"))),
    };
    if payload.len() > s.config.max_message_size as usize {
        return Err(bad(format!(
            "message size {} is larger than max size {}",
            payload.len(),
            s.config.max_message_size
        )));
    }
    let props = properties(body.get("properties"))?;
    s.users
        .read()
        .check_access(&user, &vhost, Resource::Exchange, &exchange, Access::Write)
        .map_err(|e| ApiError::BadRequest(e.text))?;
    if let Some(uid) = props.user_id()
        && uid.as_str() != user
    {
        return Err(bad(format!(
            "user_id property set to '{}' but authenticated user was '{user}'",
            uid.as_str()
        )));
    }
    let raw = crate::frame::encode_properties(&props);
    let ttl = props
        .expiration()
        .as_ref()
        .and_then(|e| parse_expiration(e.as_str()).ok());
    let message = Message {
        exchange: exchange.as_str().into(),
        routing_key: routing_key.into(),
        priority: props.priority().unwrap_or(0),
        properties: raw,
        body: payload.into(),
        ttl,
        expires_at: None,
        persistent: *props.delivery_mode() == Some(2),
        sender_keys: None,
    };
    let headers = props.headers().clone();
    let mut v = e.lock();
    v.check_publish(&exchange).map_err(amqp_to_api)?;
    let routed = v.publish(&|| headers.clone(), message);
    v.commit_store();
    ok(json!({ "routed": routed.returned.is_none() }))
}

pub(super) async fn get(
    State(s): St,
    Admin(user): Admin,
    Path((vhost, queue)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let e = vhost_entry(&s, &vhost)?;
    short_name("queue name", &queue)?;
    let body = body_json(&body)?;
    let count = body
        .get("count")
        .and_then(|c| c.as_u64().or_else(|| c.as_str()?.parse().ok()))
        .ok_or_else(|| bad("missing integer field 'count'"))?;
    let mode = body
        .get("ackmode")
        .and_then(Value::as_str)
        .and_then(AckMode::parse)
        .ok_or_else(|| {
            bad("ackmode must be ack_requeue_true, ack_requeue_false, reject_requeue_true or reject_requeue_false")
        })?;
    let base64 = match body.get("encoding").and_then(Value::as_str) {
        None | Some("auto") => false,
        Some("base64") => true,
        Some(other) => return Err(bad(format!("unknown encoding '{other}'"))),
    };
    let truncate = body
        .get("truncate")
        .and_then(|t| t.as_u64().or_else(|| t.as_str()?.parse().ok()))
        .map(|t| usize::try_from(t).unwrap_or(usize::MAX));
    s.users
        .read()
        .check_access(&user, &vhost, Resource::Queue, &queue, Access::Read)
        .map_err(|e| ApiError::BadRequest(e.text))?;
    let got = {
        let mut v = e.lock();
        let got = v
            .get_for_api(&queue, usize::try_from(count).unwrap_or(usize::MAX), mode)
            .map_err(amqp_to_api)?;
        v.commit_store();
        got
    };
    let out: Vec<Value> = got
        .iter()
        .map(|g| {
            let m = &g.message;
            let body = &m.body[..truncate.unwrap_or(usize::MAX).min(m.body.len())];
            // "auto": text when the body is UTF-8, else base64 (as RabbitMQ).
            let (payload, encoding) = match std::str::from_utf8(body) {
                Ok(text) if !base64 => (text.to_owned(), "string"),
                _ => (
                    base64::engine::general_purpose::STANDARD.encode(body),
                    "base64",
                ),
            };
            let props = parse_properties(&g.properties[..])
                .map(|(_, p)| properties_json(&p))
                .unwrap_or_else(|_| json!({}));
            json!({
                "payload_bytes": m.body.len(),
                "redelivered": g.redelivered,
                "exchange": m.exchange.as_str(),
                "routing_key": m.routing_key.as_str(),
                "message_count": g.remaining,
                "properties": props,
                "payload": payload,
                "payload_encoding": encoding,
            })
        })
        .collect();
    ok(Value::Array(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_round_trip_through_json() {
        let v = json!({
            "content_type": "text/plain",
            "headers": {"a": 1},
            "delivery_mode": 2,
            "priority": 3,
            "correlation_id": "c",
            "expiration": "1000",
            "timestamp": 7,
            "type": "t",
            "app_id": "app",
        });
        let p = properties(Some(&v)).expect("valid");
        assert_eq!(properties_json(&p), v);
        assert!(properties(Some(&json!({"delivery_mode": 3}))).is_err());
        assert!(properties(Some(&json!({"expiration": "-1"}))).is_err());
        assert!(properties(Some(&json!({"priority": 256}))).is_err());
    }

    #[test]
    fn header_values_keep_their_types() {
        use amq_protocol::types::AMQPValue;
        let p = properties(Some(&json!({"headers": {"n": 5, "s": "x"}}))).expect("valid");
        let h = p.headers().clone().expect("headers");
        assert_eq!(h.inner().get("n"), Some(&AMQPValue::LongLongInt(5)));
    }
}
