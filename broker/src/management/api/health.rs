//! Health checks as RabbitMQ names them (`/api/health/checks/...`), for load
//! balancers and Kubernetes probes: `200 {"status":"ok"}` when the check passes,
//! `503 {"status":"failed","reason":...}` when it does not, with RabbitMQ's fields.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::{ApiResult, St};
use crate::management::NODE_NAME;
use crate::management::access::Viewer;
use crate::shared::Shared;

fn passed(body: Value) -> ApiResult {
    Ok(Json(body).into_response())
}

fn failed(body: Value) -> ApiResult {
    Ok((StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response())
}

/// The alarms in effect, as RabbitMQ lists them (`{resource, node}`).
fn alarms(s: &Shared) -> Vec<Value> {
    let [memory, disk] = s.alarm.state();
    [(memory, "memory"), (disk, "disk")]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, resource)| json!({ "resource": resource, "node": NODE_NAME }))
        .collect()
}

/// No alarm in the cluster (here: on the node).
pub(super) async fn cluster_alarms(State(s): St, _: Viewer) -> ApiResult {
    let on = alarms(&s);
    if on.is_empty() {
        return passed(json!({ "status": "ok" }));
    }
    failed(
        json!({ "status": "failed", "reason": "resource alarm(s) in effect in the cluster", "alarms": on }),
    )
}

/// No alarm on this node.
pub(super) async fn local_alarms(State(s): St, _: Viewer) -> ApiResult {
    let on = alarms(&s);
    if on.is_empty() {
        return passed(json!({ "status": "ok" }));
    }
    failed(
        json!({ "status": "failed", "reason": "resource alarm(s) in effect on the node", "alarms": on }),
    )
}

/// A node of one is never quorum-critical (RabbitMQ answers the same).
pub(super) async fn quorum_critical(_: Viewer) -> ApiResult {
    passed(json!({ "status": "ok", "reason": "single node cluster" }))
}

/// Every vhost runs: fails when one could not be opened (its data unreadable).
pub(super) async fn virtual_hosts(State(s): St, _: Viewer) -> ApiResult {
    let down = s.vhosts.unavailable();
    if down.is_empty() {
        return passed(json!({ "status": "ok" }));
    }
    failed(json!({
        "status": "failed",
        "reason": format!("Some virtual hosts are down: {}", down.join(", ")),
        "virtual-hosts": down,
    }))
}

/// A listener on `port`.
pub(super) async fn port_listener(State(s): St, _: Viewer, Path(port): Path<String>) -> ApiResult {
    let ports: Vec<u16> = s.listeners.iter().map(|l| l.addr.port()).collect();
    match port.parse::<u16>() {
        Ok(p) if ports.contains(&p) => passed(json!({ "status": "ok", "port": p })),
        Ok(p) => failed(json!({
            "status": "failed",
            "reason": "No active listener",
            "missing": p,
            "ports": ports,
        })),
        Err(_) => Err(crate::management::ApiError::BadRequest(format!(
            "'{port}' is not a port number"
        ))),
    }
}

/// A listener for `protocol` (RabbitMQ's names: `amqp`, `amqp/ssl` or `amqps`,
/// `http`, `https`).
pub(super) async fn protocol_listener(
    State(s): St,
    _: Viewer,
    Path(protocol): Path<String>,
) -> ApiResult {
    let wanted = match protocol.as_str() {
        "amqps" => "amqp/ssl",
        p => p,
    };
    let protocols: Vec<&str> = s.listeners.iter().map(|l| l.protocol).collect();
    if protocols.contains(&wanted) {
        return passed(json!({ "status": "ok", "protocol": protocol }));
    }
    failed(json!({
        "status": "failed",
        "reason": "No active listener",
        "missing": protocol,
        "protocols": protocols,
    }))
}
