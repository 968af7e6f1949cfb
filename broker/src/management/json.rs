//! Snapshots turned into the JSON objects RabbitMQ's management API answers with
//! (the same field names, for the fields this broker has).

use std::collections::HashMap;

use amq_protocol::types::{AMQPValue, FieldTable};
use serde_json::{Map, Value, json};

use super::NODE_NAME;
use super::registry::ConnInfo;
use crate::vhost::{
    BindingSnapshot, ChannelSnapshot, ConsumerSnapshot, ExchangeSnapshot, MessageStats,
    QueueSnapshot, QueueStats,
};

/// An AMQP field table as a JSON object.
pub(crate) fn table(t: &FieldTable) -> Value {
    Value::Object(
        t.inner()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), value(v)))
            .collect(),
    )
}

fn value(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::ShortShortInt(i) => json!(i),
        AMQPValue::ShortShortUInt(i) => json!(i),
        AMQPValue::ShortInt(i) => json!(i),
        AMQPValue::ShortUInt(i) => json!(i),
        AMQPValue::LongInt(i) => json!(i),
        AMQPValue::LongUInt(i) => json!(i),
        AMQPValue::LongLongInt(i) => json!(i),
        AMQPValue::Float(f) => json!(f),
        AMQPValue::Double(f) => json!(f),
        AMQPValue::Timestamp(t) => json!(t),
        AMQPValue::ShortString(s) => json!(s.as_str()),
        AMQPValue::LongString(s) => json!(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(value).collect()),
        AMQPValue::FieldTable(t) => table(t),
        AMQPValue::ByteArray(b) => json!(b.as_slice()),
        AMQPValue::Void => Value::Null,
        AMQPValue::DecimalValue(d) => json!(format!("{d:?}")),
    }
}

/// A JSON value as an AMQP field value (for binding and queue arguments).
pub(crate) fn amqp_table(v: &Value) -> Option<FieldTable> {
    let Value::Object(map) = v else {
        return None;
    };
    let mut t = FieldTable::default();
    for (k, v) in map {
        // A key is a short string: longer would panic on conversion.
        if k.len() > 255 {
            return None;
        }
        t.insert(k.as_str().into(), amqp_value(v)?);
    }
    Some(t)
}

fn amqp_value(v: &Value) -> Option<AMQPValue> {
    Some(match v {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AMQPValue::LongLongInt(i),
            None => AMQPValue::Double(n.as_f64()?),
        },
        Value::String(s) => AMQPValue::LongString(s.as_bytes().to_vec().into()),
        Value::Array(a) => {
            AMQPValue::FieldArray(a.iter().map(amqp_value).collect::<Option<Vec<_>>>()?.into())
        }
        Value::Object(_) => AMQPValue::FieldTable(amqp_table(v)?),
    })
}

pub(crate) fn queue(vhost: &str, q: &QueueSnapshot) -> Value {
    let mut v = queue_fields(vhost, q);
    if q.quorum
        && let Value::Object(m) = &mut v
    {
        // A quorum queue of one node: its leader and only member.
        m.insert("leader".into(), json!(NODE_NAME));
        m.insert("members".into(), json!([NODE_NAME]));
        m.insert("online".into(), json!([NODE_NAME]));
    }
    v
}

fn queue_fields(vhost: &str, q: &QueueSnapshot) -> Value {
    json!({
        "name": q.name,
        "vhost": vhost,
        "durable": q.durable,
        "auto_delete": q.auto_delete,
        "exclusive": q.exclusive,
        "arguments": table(&q.arguments),
        "messages": u64::from(q.messages_ready) + u64::from(q.messages_unacknowledged),
        "messages_ready": q.messages_ready,
        "messages_unacknowledged": q.messages_unacknowledged,
        "consumers": q.consumers,
        "policy": q.applied.policy,
        "operator_policy": q.applied.operator_policy,
        "effective_policy_definition": q.applied.definition,
        "message_stats": message_stats(&q.stats),
        "state": "running",
        "type": if q.quorum { "quorum" } else { "classic" },
        "node": NODE_NAME,
    })
}

/// A queue's `message_stats`: each counter and its `_details.rate`, as RabbitMQ's.
fn message_stats(stats: &QueueStats) -> Value {
    let mut m = Map::new();
    for ((name, count), rate) in MessageStats::NAMES
        .iter()
        .zip(stats.counts.values())
        .zip(stats.rates)
    {
        m.insert((*name).to_owned(), json!(count));
        m.insert(format!("{name}_details"), json!({ "rate": rate }));
    }
    Value::Object(m)
}

pub(crate) fn exchange(vhost: &str, x: &ExchangeSnapshot) -> Value {
    let mut v = exchange_fields(vhost, x);
    // RabbitMQ lists `policy` on an exchange only when one applies.
    if let (Some(policy), Value::Object(m)) = (&x.policy, &mut v) {
        m.insert("policy".into(), json!(policy));
    }
    v
}

fn exchange_fields(vhost: &str, x: &ExchangeSnapshot) -> Value {
    json!({
        "name": x.name,
        "vhost": vhost,
        "type": x.kind,
        "durable": x.durable,
        "auto_delete": x.auto_delete,
        "internal": x.internal,
        "arguments": table(&x.arguments),
        "user_who_performed_action": if x.name.is_empty() || x.name.starts_with("amq.") { "rmq-internal" } else { "" },
    })
}

pub(crate) fn binding(vhost: &str, b: &BindingSnapshot) -> Value {
    json!({
        "source": b.source,
        "vhost": vhost,
        "destination": b.destination,
        "destination_type": if b.to_queue { "queue" } else { "exchange" },
        "routing_key": b.routing_key,
        "arguments": table(&b.arguments),
        "properties_key": properties_key(&b.routing_key, &b.arguments),
    })
}

/// RabbitMQ's `properties_key`: the routing key (`~` if empty), plus `~` and a hash of
/// the arguments when there are any. (RabbitMQ hashes with Erlang's `phash2`; ours
/// is a different, stable hash.)
pub(crate) fn properties_key(routing_key: &str, arguments: &FieldTable) -> String {
    let key = routing_key.replace('~', "%7E");
    if arguments.inner().is_empty() {
        return if key.is_empty() { "~".to_owned() } else { key };
    }
    let text = table(arguments).to_string();
    // FNV-1a, printed in base 36.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut digits = Vec::new();
    while h > 0 {
        let d = u8::try_from(h % 36).unwrap_or(0);
        digits.push(if d < 10 { b'0' + d } else { b'a' + d - 10 } as char);
        h /= 36;
    }
    let hash: String = digits.into_iter().rev().collect();
    format!("{key}~{hash}")
}

fn peer_fields(c: &ConnInfo) -> (String, u16) {
    (c.peer.ip().to_string(), c.peer.port())
}

pub(crate) fn connection(c: &ConnInfo) -> Value {
    let (peer_host, peer_port) = peer_fields(c);
    let (frame_max, channel_max, timeout) = c.tune.unwrap_or((0, 0, 0));
    let (ssl_protocol, ssl_cipher) = match &c.tls {
        Some(t) => (Value::from(t.protocol), Value::from(t.cipher)),
        None => (Value::Null, Value::Null),
    };
    json!({
        "name": c.name(),
        "node": NODE_NAME,
        "type": "network",
        "protocol": "AMQP 0-9-1",
        "state": if c.is_open() { "running" } else { "starting" },
        "user": c.user,
        "vhost": c.vhost,
        "channels": c.channels,
        "peer_host": peer_host,
        "peer_port": peer_port,
        "host": c.local.ip().to_string(),
        "port": c.local.port(),
        "ssl": c.tls.is_some(),
        "ssl_protocol": ssl_protocol,
        "ssl_cipher": ssl_cipher,
        "connected_at": c.connected_at,
        "frame_max": frame_max,
        "channel_max": channel_max,
        "timeout": timeout,
        "auth_mechanism": "PLAIN",
        "client_properties": table(&c.client_properties),
    })
}

/// `{name, number, connection_name, peer_host, peer_port, user}` of a channel, as
/// RabbitMQ's `channel_details`.
fn channel_details(c: Option<&ConnInfo>, number: u16) -> (String, Value) {
    let conn_name = c.map(ConnInfo::name).unwrap_or_default();
    let name = format!("{conn_name} ({number})");
    let (peer_host, peer_port) = c.map(peer_fields).unwrap_or_default();
    let details = json!({
        "name": name,
        "number": number,
        "connection_name": conn_name,
        "peer_host": peer_host,
        "peer_port": peer_port,
        "user": c.map(|c| c.user.as_str()).unwrap_or_default(),
        "node": NODE_NAME,
    });
    (name, details)
}

pub(crate) fn channel(vhost: &str, ch: &ChannelSnapshot, conns: &HashMap<u64, ConnInfo>) -> Value {
    let conn = conns.get(&ch.key.conn);
    let (name, _) = channel_details(conn, ch.key.channel);
    let (peer_host, peer_port) = conn.map(peer_fields).unwrap_or_default();
    json!({
        "name": name,
        "number": ch.key.channel,
        "node": NODE_NAME,
        "user": conn.map(|c| c.user.as_str()).unwrap_or_default(),
        "vhost": vhost,
        "connection_details": {
            "name": conn.map(ConnInfo::name).unwrap_or_default(),
            "peer_host": peer_host,
            "peer_port": peer_port,
        },
        "consumer_count": ch.consumers,
        "messages_unacknowledged": ch.unacked,
        "prefetch_count": ch.prefetch_count,
        "global_prefetch_count": ch.global_prefetch_count,
        "confirm": ch.confirm,
        "messages_unconfirmed": ch.unconfirmed,
        "state": "running",
    })
}

pub(crate) fn consumer(vhost: &str, c: &ConsumerSnapshot, conns: &HashMap<u64, ConnInfo>) -> Value {
    let (_, details) = channel_details(conns.get(&c.channel.conn), c.channel.channel);
    json!({
        "queue": { "name": c.queue, "vhost": vhost },
        "consumer_tag": c.tag,
        "channel_details": details,
        "ack_required": c.ack_required,
        "exclusive": c.exclusive,
        "prefetch_count": c.prefetch_count,
        "active": c.active,
        "activity_status": if c.active { "up" } else { "waiting" },
        "arguments": consumer_arguments(c),
        // RabbitMQ reports the timeout in milliseconds, 0 for none.
        "consumer_timeout": c.timeout.map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        "priority": c.priority,
    })
}

/// A consumer's `basic.consume` arguments, as far as the broker keeps them: its
/// `x-priority` (the only consume argument it acts on) when not 0.
fn consumer_arguments(c: &ConsumerSnapshot) -> Value {
    let mut m = Map::new();
    if c.priority != 0 {
        m.insert("x-priority".into(), json!(c.priority));
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_round_trip_through_json() {
        let v = json!({"x-message-ttl": 1000, "x-dead-letter-exchange": "dlx", "flag": true});
        let t = amqp_table(&v).expect("object");
        assert_eq!(table(&t), v);
        assert!(amqp_table(&json!([1])).is_none());
    }

    #[test]
    fn properties_key_as_rabbitmq() {
        assert_eq!(properties_key("", &FieldTable::default()), "~");
        assert_eq!(properties_key("a~b", &FieldTable::default()), "a%7Eb");
        let t = amqp_table(&json!({"x-match": "all"})).expect("object");
        assert!(properties_key("k", &t).starts_with("k~"));
    }
}
