//! The management API's handlers (the routes are in `routes`): the overview,
//! connections, channels, consumers, permissions (and the user table's saving) and
//! `/metrics` (and `/metrics/per-object`) here; queues, exchanges and bindings in
//! `objects`, their changes in `topology`; vhosts in `vhosts`; users in `users`;
//! definitions (export and import) in `definitions`; the node, feature flags and
//! deprecated features in `node`; health checks in `health`; messages over HTTP in
//! `messages`; narrower connection and channel listings in `conns`; policies and
//! operator policies in `policies`; runtime and global parameters in `parameters`;
//! topic permissions in `topic_permissions`; the empty listings in `lists`.
//!
//! A vhost in a path that does not exist answers 404, as RabbitMQ. A queue, exchange or
//! vhost name, routing key or argument key over 255 bytes (more than an AMQP short
//! string holds) answers 400.

mod conns;
mod definitions;
mod health;
mod limits;
mod lists;
mod messages;
mod node;
mod objects;
mod parameters;
mod policies;
mod routes;
mod topic_permissions;
mod topology;
mod users;
mod vhosts;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use serde_json::{Value, json};

use super::access::{Admin, Viewer};
use super::json as j;
use super::registry::ConnInfo;
use super::{ApiError, NODE_NAME, PRODUCT_NAME, metrics};
use crate::auth::AuthError;
use crate::error::code;
use crate::shared::Shared;
use crate::vhost::VHostEntry;

type St = State<Arc<Shared>>;
type ApiResult = Result<Response, ApiError>;

pub(super) use routes::router;

fn ok(v: Value) -> ApiResult {
    Ok(Json(v).into_response())
}

fn no_content() -> ApiResult {
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn created() -> ApiResult {
    Ok(StatusCode::CREATED.into_response())
}

/// The longest queue, exchange or vhost name or routing key: an AMQP short string.
const MAX_NAME: usize = 255;

/// 400 for a `what` (queue, exchange, vhost name, routing key) that AMQP could not carry:
/// over 255 bytes. The broker's names are short strings, and making one of a longer
/// string panics, so every name from a request is checked here first.
fn short_name(what: &str, name: &str) -> Result<(), ApiError> {
    if name.len() > MAX_NAME {
        return Err(ApiError::BadRequest(format!(
            "{what} is {} bytes long; at most {MAX_NAME} are allowed (an AMQP short string)",
            name.len()
        )));
    }
    Ok(())
}

/// The vhost a path names (400 if the name is too long, 404 if there is none).
fn vhost_entry(s: &Shared, name: &str) -> Result<Arc<VHostEntry>, ApiError> {
    short_name("vhost name", name)?;
    s.vhosts.get(name).ok_or(ApiError::NotFound)
}

/// The vhost a path names, for a user who may see it (401 if not, as RabbitMQ: a
/// vhost the user cannot see is refused whether it exists or not).
fn visible_vhost(s: &Shared, viewer: &Viewer, name: &str) -> Result<Arc<VHostEntry>, ApiError> {
    short_name("vhost name", name)?;
    if !viewer.sees_vhost(name) {
        return Err(ApiError::VhostAccessRefused);
    }
    vhost_entry(s, name)
}

/// The vhosts a listing covers: every one the user sees, or the one a path names.
fn in_scope(
    s: &Shared,
    viewer: &Viewer,
    name: Option<&str>,
) -> Result<Vec<Arc<VHostEntry>>, ApiError> {
    match name {
        None => Ok(s
            .vhosts
            .all()
            .into_iter()
            .filter(|e| viewer.sees_vhost(e.name()))
            .collect()),
        Some(n) => Ok(vec![visible_vhost(s, viewer, n)?]),
    }
}

/// The `arguments` of a request body as an AMQP table.
fn arguments(body: &Value) -> Result<amq_protocol::types::FieldTable, ApiError> {
    match body.get("arguments") {
        None | Some(Value::Null) => Ok(Default::default()),
        Some(v) => j::amqp_table(v).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "arguments must be an object with keys of at most {MAX_NAME} bytes"
            ))
        }),
    }
}

fn amqp_to_api(e: crate::error::AmqpError) -> ApiError {
    match e.code {
        code::NOT_FOUND => ApiError::NotFound,
        _ => ApiError::BadRequest(e.text),
    }
}

fn body_json(body: &Bytes) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid JSON: {e}")))
}

fn flag(query: &HashMap<String, String>, name: &str) -> bool {
    query.get(name).is_some_and(|v| v == "true")
}

/// Live connections by id (all of them: what a user sees is filtered where they are
/// listed), each with its open channels as the registry has them.
fn connections_by_id(shared: &Shared) -> HashMap<u64, ConnInfo> {
    shared
        .registry
        .snapshot()
        .into_iter()
        .map(|c| (c.id, c))
        .collect()
}

/// The `X-Reason` header of a close request, or RabbitMQ's default reason.
fn close_reason(headers: &HeaderMap) -> &str {
    headers
        .get("x-reason")
        .and_then(|v| v.to_str().ok())
        .filter(|r| !r.is_empty())
        .unwrap_or("Closed via management plugin")
}

/// The `routing_key` of a binding request (empty if absent; 400 if too long).
fn routing_key(body: &Value) -> Result<&str, ApiError> {
    let key = body
        .get("routing_key")
        .and_then(Value::as_str)
        .unwrap_or_default();
    short_name("routing key", key)?;
    Ok(key)
}

// ----- overview -----------------------------------------------------------------------

/// Totals over the vhosts the user sees (its own connections and channels only for a
/// `management` user), as RabbitMQ's overview.
async fn overview(State(s): St, viewer: Viewer) -> ApiResult {
    let conns = connections_by_id(&s);
    let mut queues = Vec::new();
    let (mut exchanges, mut channels, mut consumers) = (0, 0, 0);
    let mut stats = crate::vhost::MessageStats::default();
    for e in in_scope(&s, &viewer, None)? {
        let mut v = e.lock();
        queues.extend(v.queue_snapshots());
        exchanges += v.exchange_snapshots().len();
        channels += v
            .channel_snapshots()
            .iter()
            .filter(|ch| sees_channel(&viewer, &conns, ch.key.conn))
            .count();
        consumers += v.consumer_snapshots().len();
        stats.add(&v.message_stats());
    }
    let connections = conns.values().filter(|c| viewer.sees_connection(c)).count();
    let ready: u64 = queues.iter().map(|q| u64::from(q.messages_ready)).sum();
    let unacked: u64 = queues
        .iter()
        .map(|q| u64::from(q.messages_unacknowledged))
        .sum();
    ok(json!({
        "management_version": env!("CARGO_PKG_VERSION"),
        "product_name": PRODUCT_NAME,
        "product_version": env!("CARGO_PKG_VERSION"),
        "rabbitmq_version": env!("CARGO_PKG_VERSION"),
        "cluster_name": NODE_NAME,
        "node": NODE_NAME,
        "object_totals": {
            "connections": connections,
            "channels": channels,
            "exchanges": exchanges,
            "queues": queues.len(),
            "consumers": consumers,
        },
        "queue_totals": {
            "messages": ready + unacked,
            "messages_ready": ready,
            "messages_unacknowledged": unacked,
        },
        // Counts over the vhosts the user sees; rates broker-wide, as sampled.
        "message_stats": {
            "publish": stats.publish,
            "publish_details": { "rate": s.rates.rate("publish") },
            "deliver": stats.deliver,
            "deliver_details": { "rate": s.rates.rate("deliver") },
            "deliver_no_ack": stats.deliver_no_ack,
            "deliver_no_ack_details": { "rate": s.rates.rate("deliver_no_ack") },
            "get": stats.get,
            "get_details": { "rate": s.rates.rate("get") },
            "get_no_ack": stats.get_no_ack,
            "get_no_ack_details": { "rate": s.rates.rate("get_no_ack") },
            "deliver_get": stats.deliver_get(),
            "deliver_get_details": { "rate": s.rates.rate("deliver_get") },
            "ack": stats.ack,
            "ack_details": { "rate": s.rates.rate("ack") },
            "redeliver": stats.redeliver,
            "redeliver_details": { "rate": s.rates.rate("redeliver") },
        },
        "churn_rates": s.rates.with_details(&crate::management::sampler::read(&s), &[
            "connection_created",
            "connection_closed",
            "channel_created",
            "channel_closed",
            "queue_declared",
            "queue_created",
            "queue_deleted",
        ]),
        "listeners": s.listeners.iter().map(|l| json!({
            "node": NODE_NAME,
            "protocol": l.protocol,
            "ip_address": l.addr.ip().to_string(),
            "port": l.addr.port(),
        })).collect::<Vec<_>>(),
        "rates_mode": "basic",
        "statistics_db_event_queue": 0,
    }))
}

async fn whoami(State(s): St, Viewer { name: user, .. }: Viewer) -> ApiResult {
    let tags = s
        .users
        .read()
        .list_users()
        .into_iter()
        .find(|(n, _)| *n == user)
        .map(|(_, t)| t)
        .unwrap_or_default();
    ok(json!({ "name": user, "tags": tags }))
}

// ----- connections, channels, consumers -----------------------------------------------

/// Whether the user sees the channel of connection `conn`.
fn sees_channel(viewer: &Viewer, conns: &HashMap<u64, ConnInfo>, conn: u64) -> bool {
    conns.get(&conn).is_some_and(|c| viewer.sees_connection(c))
}

async fn connections(State(s): St, viewer: Viewer) -> ApiResult {
    ok(conns::connections_where(&s, &viewer, |_| true))
}

async fn connection(State(s): St, viewer: Viewer, Path(name): Path<String>) -> ApiResult {
    let conns = connections_by_id(&s);
    let c = conns
        .values()
        .find(|c| c.name() == name && viewer.sees_connection(c))
        .ok_or(ApiError::NotFound)?;
    ok(j::connection(c))
}

async fn close_connection(
    State(s): St,
    _: Admin,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    if s.registry.close(&name, close_reason(&headers)) {
        no_content()
    } else {
        Err(ApiError::NotFound)
    }
}

async fn channels(State(s): St, viewer: Viewer) -> ApiResult {
    ok(Value::Array(conns::channels_where(
        &s,
        &viewer,
        None,
        |_, _| true,
    )?))
}

fn list_consumers(s: &Shared, viewer: &Viewer, vhost: Option<&str>) -> ApiResult {
    let conns = connections_by_id(s);
    let mut out = Vec::new();
    for e in in_scope(s, viewer, vhost)? {
        let cs = e.lock().consumer_snapshots();
        out.extend(cs.iter().map(|c| j::consumer(e.name(), c, &conns)));
    }
    ok(Value::Array(out))
}

async fn consumers(State(s): St, viewer: Viewer) -> ApiResult {
    list_consumers(&s, &viewer, None)
}

async fn consumers_in(State(s): St, viewer: Viewer, Path(vhost): Path<String>) -> ApiResult {
    list_consumers(&s, &viewer, Some(&vhost))
}

// ----- users --------------------------------------------------------------------------

/// Runs `f`, which saves to the data directory (blocking file I/O), on a blocking
/// thread. A failed save is a 500 naming `what`: the change holds until the broker
/// stops, but would not survive a restart.
pub(super) async fn off_runtime<T: Send + 'static>(
    s: &Arc<Shared>,
    what: &'static str,
    f: impl FnOnce(&Shared) -> std::io::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let shared = Arc::clone(s);
    tokio::task::spawn_blocking(move || f(&shared))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| {
            tracing::error!(err = %e, what, "could not be saved");
            ApiError::Internal(format!("could not save {what}: {e}"))
        })
}

/// Saves the user table after a change (with a data directory; nothing without).
pub(super) async fn save_users(s: &Arc<Shared>) -> Result<(), ApiError> {
    off_runtime(s, "the user table", Shared::save_users).await
}

fn auth_error(e: AuthError) -> ApiError {
    match e {
        AuthError::NoUser(_) | AuthError::NoVhost(_) => ApiError::NotFound,
        AuthError::BadPattern(..) => ApiError::BadRequest(e.to_string()),
    }
}

// ----- permissions --------------------------------------------------------------------

pub(super) fn permission_json(user: &str, vhost: &str, p: &crate::auth::Permission) -> Value {
    json!({
        "user": user,
        "vhost": vhost,
        "configure": p.configure,
        "write": p.write,
        "read": p.read,
    })
}

async fn permissions(State(s): St, _: Admin) -> ApiResult {
    let list = s.users.read().list_permissions();
    ok(Value::Array(
        list.iter()
            .map(|(u, v, p)| permission_json(u, v, p))
            .collect(),
    ))
}

async fn permission(
    State(s): St,
    _: Admin,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult {
    let users = s.users.read();
    let p = users.permissions(&user, &vhost).ok_or(ApiError::NotFound)?;
    ok(permission_json(&user, &vhost, p))
}

async fn put_permission(
    State(s): St,
    _: Admin,
    Path((vhost, user)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    short_name("vhost name", &vhost)?;
    let body = body_json(&body)?;
    let field = |name: &str| {
        body.get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ApiError::BadRequest(format!("missing string field '{name}'")))
    };
    let (configure, write, read) = (field("configure")?, field("write")?, field("read")?);
    let existed = {
        let mut users = s.users.write();
        let existed = users.permissions(&user, &vhost).is_some();
        users
            .set_permissions(&user, &vhost, &configure, &write, &read)
            .map_err(|e| match e {
                AuthError::NoUser(u) => ApiError::BadRequest(format!("no such user '{u}'")),
                AuthError::NoVhost(v) => ApiError::BadRequest(format!("no such vhost '{v}'")),
                other => ApiError::BadRequest(other.to_string()),
            })?;
        existed
    };
    save_users(&s).await?;
    if existed { no_content() } else { created() }
}

async fn delete_permission(
    State(s): St,
    _: Admin,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult {
    {
        let mut users = s.users.write();
        if users.permissions(&user, &vhost).is_none() {
            return Err(ApiError::NotFound);
        }
        users.clear_permissions(&user, &vhost);
    }
    save_users(&s).await?;
    no_content()
}

// ----- metrics ------------------------------------------------------------------------

async fn metrics_aggregated(State(s): St) -> Response {
    metrics_text(&s, false)
}

async fn metrics_per_object(State(s): St) -> Response {
    metrics_text(&s, true)
}

fn metrics_text(s: &Shared, per_object: bool) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::render(s, per_object),
    )
        .into_response()
}
