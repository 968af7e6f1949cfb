//! The node: `/api/nodes` and `/api/nodes/{node}` (one node, with its memory, alarms
//! and uptime), its memory breakdown, `/api/cluster-name`, its authentication
//! attempts, queue rebalancing (nothing to move on one node), and the feature flags
//! and deprecated features it reports, in the shapes of RabbitMQ 4's management API.

use axum::body::Bytes;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::{ApiResult, St, body_json, no_content, ok};
use crate::deprecated::DeprecatedFeatures;
use crate::management::access::{Admin, Viewer};
use crate::management::{ApiError, NODE_NAME, PRODUCT_NAME};
use crate::shared::Shared;

fn node_json(s: &Shared) -> Value {
    let [mem_alarm, disk_free_alarm] = s.alarm.state();
    let uptime_ms = u64::try_from(s.started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let processors = std::thread::available_parallelism().map_or(1, usize::from);
    json!({
        "name": NODE_NAME,
        "type": "disc",
        "running": true,
        "being_drained": false,
        "uptime": uptime_ms,
        "processors": processors,
        "os_pid": std::process::id().to_string(),
        "mem_used": s.alarm.memory_used(),
        "mem_limit": s.alarm.memory_limit(),
        "mem_alarm": mem_alarm,
        "disk_free_alarm": disk_free_alarm,
        // The broker has no Erlang runtime: none of RabbitMQ's plugins or applications.
        "enabled_plugins": [],
        "applications": [],
        "rates_mode": "basic",
        "rabbitmq_version": env!("CARGO_PKG_VERSION"),
        "product_name": PRODUCT_NAME,
        "connections": s.registry.snapshot().len(),
    })
}

/// The one node, as a list.
pub(super) async fn nodes(State(s): St, _: Viewer) -> ApiResult {
    ok(json!([node_json(&s)]))
}

/// The node named in the path (404 for any other, as RabbitMQ for a node not in the
/// cluster).
/// `GET /api/auth/attempts/{node}`: attempts by protocol, as RabbitMQ lists them.
pub(super) async fn auth_attempts(State(s): St, _: Admin, Path(name): Path<String>) -> ApiResult {
    if name != NODE_NAME {
        return Err(ApiError::NotFound);
    }
    ok(Value::Array(
        s.auth_attempts
            .counts()
            .iter()
            .map(|(protocol, succeeded, failed)| {
                json!({
                    "protocol": protocol,
                    "auth_attempts": succeeded + failed,
                    "auth_attempts_failed": failed,
                    "auth_attempts_succeeded": succeeded,
                })
            })
            .collect(),
    ))
}

/// `GET /api/auth/attempts/{node}/source`: none, as from a RabbitMQ node that does
/// not track sources (its default).
pub(super) async fn auth_attempts_by_source(_: Admin, Path(name): Path<String>) -> ApiResult {
    if name != NODE_NAME {
        return Err(ApiError::NotFound);
    }
    ok(json!([]))
}

/// `DELETE /api/auth/attempts/{node}`: the counts start over.
pub(super) async fn reset_auth_attempts(
    State(s): St,
    _: Admin,
    Path(name): Path<String>,
) -> ApiResult {
    if name != NODE_NAME {
        return Err(ApiError::NotFound);
    }
    s.auth_attempts.reset();
    no_content()
}

/// `POST /api/rebalance/queues`: with one node every queue's leader is already on
/// it; there is nothing to move (RabbitMQ answers 204 when it starts rebalancing).
pub(super) async fn rebalance_queues(_: Admin) -> ApiResult {
    no_content()
}

pub(super) async fn node(State(s): St, _: Viewer, Path(name): Path<String>) -> ApiResult {
    if name != NODE_NAME {
        return Err(ApiError::NotFound);
    }
    ok(node_json(&s))
}

/// RabbitMQ breaks memory down by Erlang allocator and process kind; the broker has
/// neither, so it answers RabbitMQ's `not_available` (what a node answers before its
/// first breakdown) rather than made-up figures. `mem_used` in `/api/nodes` is the
/// real figure.
pub(super) async fn node_memory(_: Viewer, Path(name): Path<String>) -> ApiResult {
    if name != NODE_NAME {
        return Err(ApiError::NotFound);
    }
    ok(json!({ "memory": "not_available" }))
}

/// The plugins enabled on the node: none (the broker is not a RabbitMQ node).
pub(super) async fn node_plugins(_: Viewer, Path(name): Path<String>) -> ApiResult {
    if name != NODE_NAME {
        return Err(ApiError::NotFound);
    }
    ok(json!([]))
}

/// `/api/cluster-name`: a single node's cluster is named after the node, as
/// RabbitMQ names it by default.
pub(super) async fn cluster_name(_: Viewer) -> ApiResult {
    ok(json!({ "name": NODE_NAME }))
}

/// The RabbitMQ 4 feature flags whose behaviour a client can observe here, with the
/// state that matches what the broker does.
const FEATURE_FLAGS: [(&str, &str, &str); 6] = [
    (
        "quorum_queue",
        "enabled",
        "Support queues of type `quorum` (here on one node)",
    ),
    (
        "implicit_default_bindings",
        "enabled",
        "Default bindings are now implicit, instead of being stored in the database",
    ),
    (
        "virtual_host_metadata",
        "enabled",
        "Virtual host metadata (description, tags, etc)",
    ),
    (
        "classic_queue_type_delivery_support",
        "enabled",
        "Bug fix for classic queue deliveries using mixed versions",
    ),
    (
        "message_containers",
        "enabled",
        "Support for message containers",
    ),
    (
        "stream_queue",
        "unavailable",
        "Support queues of type `stream` (not in this broker)",
    ),
];

pub(super) async fn feature_flags(_: Viewer) -> ApiResult {
    ok(Value::Array(
        FEATURE_FLAGS
            .iter()
            .map(|(name, state, desc)| {
                json!({
                    "name": name,
                    "desc": desc,
                    "doc_url": "",
                    "state": state,
                    "stability": "stable",
                    "provided_by": "rabbit",
                })
            })
            .collect(),
    ))
}

/// Enabling a flag that is enabled succeeds; the others cannot be enabled here.
pub(super) async fn enable_feature_flag(
    _: Admin,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    body_json(&body)?;
    match FEATURE_FLAGS.iter().find(|(n, ..)| *n == name) {
        Some((_, "enabled", _)) => no_content(),
        Some(_) => Err(ApiError::BadRequest(format!(
            "feature flag '{name}' is unavailable in this broker"
        ))),
        None => Err(ApiError::BadRequest(format!(
            "unsupported feature flag '{name}'"
        ))),
    }
}

/// RabbitMQ 4's deprecated features that the broker implements, with the phase
/// RabbitMQ 4.0 gives them and whether this broker permits them.
fn deprecated_json(d: DeprecatedFeatures, only_used: Option<[bool; 2]>) -> Value {
    let features = [
        (
            "transient_nonexcl_queues",
            "Transient non-exclusive queues",
            d.transient_nonexcl_queues,
        ),
        (
            "global_qos",
            "Global QoS: basic.qos with global = true",
            d.global_qos,
        ),
    ];
    Value::Array(
        features
            .iter()
            .enumerate()
            .filter(|(i, _)| only_used.is_none_or(|used| used[*i]))
            .map(|(_, (name, desc, permitted))| {
                json!({
                    "name": name,
                    "desc": desc,
                    "deprecation_phase": "permitted_by_default",
                    "doc_url": "https://www.rabbitmq.com/docs/deprecated-features",
                    "provided_by": "rabbit",
                    "state": if *permitted { "permitted" } else { "denied" },
                })
            })
            .collect(),
    )
}

pub(super) async fn deprecated_features(State(s): St, _: Viewer) -> ApiResult {
    ok(deprecated_json(s.vhosts.deprecated(), None))
}

/// The deprecated features in use now: a queue that is neither durable nor exclusive,
/// a channel with a global prefetch.
pub(super) async fn deprecated_features_used(State(s): St, _: Viewer) -> ApiResult {
    let mut used = [false; 2];
    for e in s.vhosts.all() {
        let mut v = e.lock();
        used[0] |= v
            .queue_snapshots()
            .iter()
            .any(|q| !q.durable && !q.exclusive);
        used[1] |= v
            .channel_snapshots()
            .iter()
            .any(|c| c.global_prefetch_count > 0);
    }
    ok(deprecated_json(s.vhosts.deprecated(), Some(used)))
}
