//! What a broker's definitions look like from its ordinary management listings, so
//! that two brokers (the built-in one or RabbitMQ) can be compared after an export
//! and import.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::http::call;

/// Queue arguments without `x-queue-type: classic`, which RabbitMQ 4 adds to every
/// classic queue it declares: the queue is the same without it.
fn queue_arguments(q: &Value) -> Value {
    let mut args = q["arguments"].clone();
    if let Value::Object(m) = &mut args
        && m.get("x-queue-type") == Some(&json!("classic"))
    {
        m.remove("x-queue-type");
    }
    args
}

/// What a user observes of a broker's definitions, one line per object: users
/// (name, tags, hash), vhosts, permissions, queues, exchanges, policies and bindings (without
/// the default exchange, the `amq.*` ones, exclusive queues and their bindings).
pub async fn listings(base: &str, auth: (&str, &str)) -> anyhow::Result<BTreeSet<String>> {
    let mut seen = BTreeSet::new();
    let get = |path: &'static str| async move {
        let v = call(base, auth, "GET", path, None, 200).await?;
        anyhow::Ok(v.as_array().cloned().unwrap_or_default())
    };
    for u in get("/api/users").await? {
        seen.insert(format!(
            "user {} {} {}",
            u["name"], u["tags"], u["password_hash"]
        ));
    }
    for v in get("/api/vhosts").await? {
        seen.insert(format!("vhost {}", v["name"]));
    }
    for p in get("/api/permissions").await? {
        seen.insert(format!(
            "permission {} {} {} {} {}",
            p["user"], p["vhost"], p["configure"], p["write"], p["read"]
        ));
    }
    let mut exclusive = BTreeSet::new();
    for q in get("/api/queues").await? {
        if q["exclusive"] == json!(true) {
            exclusive.insert(format!("{} {}", q["vhost"], q["name"]));
            continue;
        }
        seen.insert(format!(
            "queue {} {} {} {} {}",
            q["vhost"],
            q["name"],
            q["durable"],
            q["auto_delete"],
            queue_arguments(&q)
        ));
    }
    for x in get("/api/exchanges").await? {
        let name = x["name"].as_str().unwrap_or_default();
        if name.is_empty() || name.starts_with("amq.") {
            continue;
        }
        seen.insert(format!(
            "exchange {} {} {} {} {} {} {}",
            x["vhost"],
            x["name"],
            x["type"],
            x["durable"],
            x["auto_delete"],
            x["internal"],
            x["arguments"]
        ));
    }
    for p in get("/api/policies").await? {
        seen.insert(format!(
            "policy {} {} {} {} {} {}",
            p["vhost"], p["name"], p["pattern"], p["apply-to"], p["priority"], p["definition"]
        ));
    }
    for b in get("/api/bindings").await? {
        let to_exclusive = b["destination_type"] == json!("queue")
            && exclusive.contains(&format!("{} {}", b["vhost"], b["destination"]));
        if b["source"] == json!("") || to_exclusive {
            continue;
        }
        seen.insert(format!(
            "binding {} {} {} {} {} {}",
            b["vhost"],
            b["source"],
            b["destination_type"],
            b["destination"],
            b["routing_key"],
            b["arguments"]
        ));
    }
    Ok(seen)
}
