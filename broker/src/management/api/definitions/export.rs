//! The broker's definitions as RabbitMQ exports them (`GET /api/definitions`), with the
//! field names of RabbitMQ 4.x (tags as lists, vhost `metadata`), which 3.10 also reads.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::management::PRODUCT_NAME;
use crate::management::json::table;
use crate::shared::Shared;
use crate::vhost::VHostEntry;

/// What the broker reports as its version, where RabbitMQ puts its own.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A vhost's description as `/api/vhosts` reports it (the broker keeps none of its
/// own: `/` is RabbitMQ's default vhost).
/// Queues, exchanges and bindings of one vhost, each with `vhost` when `with_vhost`.
struct Objects {
    queues: Vec<Value>,
    exchanges: Vec<Value>,
    bindings: Vec<Value>,
}

fn objects(e: &VHostEntry, with_vhost: bool) -> Objects {
    let (qs, xs, bs) = {
        let mut v = e.lock();
        (
            v.queue_snapshots(),
            v.exchange_snapshots(),
            v.binding_snapshots(),
        )
    };
    let tag = |mut o: Value| {
        if with_vhost && let Value::Object(m) = &mut o {
            m.insert("vhost".into(), json!(e.name()));
        }
        o
    };
    // RabbitMQ does not export exclusive queues: they die with their connection.
    let exclusive: HashSet<&str> = qs
        .iter()
        .filter(|q| q.exclusive)
        .map(|q| q.name.as_str())
        .collect();
    let queues = qs
        .iter()
        .filter(|q| !q.exclusive)
        .map(|q| {
            tag(json!({
                "name": q.name,
                "durable": q.durable,
                "auto_delete": q.auto_delete,
                "arguments": table(&q.arguments),
            }))
        })
        .collect();
    // Nor the default exchange and the `amq.*` ones, which every vhost has.
    let exchanges = xs
        .iter()
        .filter(|x| !x.name.is_empty() && !x.name.starts_with("amq."))
        .map(|x| {
            tag(json!({
                "name": x.name,
                "type": x.kind,
                "durable": x.durable,
                "auto_delete": x.auto_delete,
                "internal": x.internal,
                "arguments": table(&x.arguments),
            }))
        })
        .collect();
    // Nor the default exchange's implicit bindings, nor bindings to exclusive queues.
    let bindings = bs
        .iter()
        .filter(|b| !b.source.is_empty())
        .filter(|b| !(b.to_queue && exclusive.contains(b.destination.as_str())))
        .map(|b| {
            tag(json!({
                "source": b.source,
                "destination": b.destination,
                "destination_type": if b.to_queue { "queue" } else { "exchange" },
                "routing_key": b.routing_key,
                "arguments": table(&b.arguments),
            }))
        })
        .collect();
    Objects {
        queues,
        exchanges,
        bindings,
    }
}

/// `GET /api/definitions`: everything.
pub(super) fn cluster(s: &Shared) -> Value {
    let limits = s.resource_limits.read().clone();
    let (users, permissions) = {
        let users = s.users.read();
        (users.list_users_with_hashes(), users.list_permissions())
    };
    let users: Vec<Value> = users
        .iter()
        .map(|(name, tags, hash)| crate::management::api::users::user_json(s, name, tags, hash))
        .collect();
    let permissions: Vec<Value> = permissions
        .iter()
        .map(|(user, vhost, p)| crate::management::api::permission_json(user, vhost, p))
        .collect();
    let entries = s.vhosts.all();
    let vhosts: Vec<Value> = entries
        .iter()
        .map(|e| {
            let mut m = serde_json::Map::new();
            m.insert("name".into(), json!(e.name()));
            m.extend(
                s.vhost_metadata(e.name())
                    .json_fields()
                    .map(|(k, v)| (k.to_owned(), v)),
            );
            Value::Object(m)
        })
        .collect();
    let (mut queues, mut exchanges, mut bindings) = (Vec::new(), Vec::new(), Vec::new());
    for e in &entries {
        let o = objects(e, true);
        queues.extend(o.queues);
        exchanges.extend(o.exchanges);
        bindings.extend(o.bindings);
    }
    json!({
        "rabbit_version": VERSION,
        "rabbitmq_version": VERSION,
        "product_name": PRODUCT_NAME,
        "product_version": VERSION,
        "rabbitmq_definition_format": "cluster",
        "users": users,
        "vhosts": vhosts,
        "permissions": permissions,
        "topic_permissions": s.users.read().list_topic_permissions().into_iter()
            .map(|(user, vhost, exchange, write, read)| json!({
                "user": user, "vhost": vhost, "exchange": exchange, "write": write, "read": read,
            }))
            .collect::<Vec<_>>(),
        // Vhost limits are RabbitMQ parameters of the component `vhost-limits`.
        "parameters": limits.vhosts.iter().map(|(vhost, m)| json!({
            "value": m, "vhost": vhost, "component": "vhost-limits", "name": "limits",
        })).collect::<Vec<_>>(),
        "global_parameters": s.global_parameters.lock().iter()
            .map(|(name, value)| json!({ "name": name, "value": value }))
            .collect::<Vec<_>>(),
        "policies": super::runtime::export(s, None),
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    })
}

/// `GET /api/definitions/{vhost}`: one vhost's objects, without `vhost` fields.
pub(super) fn vhost(s: &Shared, e: &VHostEntry) -> Value {
    let o = objects(e, false);
    let meta: serde_json::Map<String, Value> = s
        .vhost_metadata(e.name())
        .json_fields()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    let limits = s.resource_limits.read().vhosts.get(e.name()).cloned();
    json!({
        "rabbit_version": VERSION,
        "rabbitmq_version": VERSION,
        "product_name": PRODUCT_NAME,
        "product_version": VERSION,
        "rabbitmq_definition_format": "single_virtual_host",
        "original_vhost_name": e.name(),
        "metadata": meta["metadata"],
        "description": meta["description"],
        "default_queue_type": meta["default_queue_type"],
        "limits": limits.clone().unwrap_or_default(),
        "parameters": limits.map(|m| json!({
            "value": m, "component": "vhost-limits", "name": "limits",
        })).into_iter().collect::<Vec<_>>(),
        "policies": super::runtime::export(s, Some(e.name())),
        "queues": o.queues,
        "exchanges": o.exchanges,
        "bindings": o.bindings,
    })
}
