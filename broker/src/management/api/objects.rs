//! Queues, exchanges and bindings: listed over every vhost or one (`/api/queues/{vhost}`),
//! read, declared, bound, purged and deleted in the vhost the path names.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use serde_json::Value;

use super::{
    ApiResult, St, amqp_to_api, arguments, body_json, created, flag, in_scope, no_content, ok,
    routing_key, short_name, vhost_entry, visible_vhost,
};
use crate::management::ApiError;
use crate::management::access::{Admin, Viewer};
use crate::management::json as j;
use crate::shared::Shared;

/// The connection id API declarations act as: no connection has it, so exclusive
/// queues of connections stay theirs.
pub(super) const API_CONN: u64 = 0;

// ----- queues -------------------------------------------------------------------------

fn list_queues(s: &Shared, viewer: &Viewer, vhost: Option<&str>) -> ApiResult {
    let mut out = Vec::new();
    for e in in_scope(s, viewer, vhost)? {
        let qs = e.lock().queue_snapshots();
        out.extend(qs.iter().map(|q| j::queue(e.name(), q)));
    }
    ok(Value::Array(out))
}

pub(super) async fn queues(State(s): St, viewer: Viewer) -> ApiResult {
    list_queues(&s, &viewer, None)
}

pub(super) async fn queues_in(
    State(s): St,
    viewer: Viewer,
    Path(vhost): Path<String>,
) -> ApiResult {
    list_queues(&s, &viewer, Some(&vhost))
}

pub(super) async fn queue(
    State(s): St,
    viewer: Viewer,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult {
    let e = visible_vhost(&s, &viewer, &vhost)?;
    short_name("queue name", &name)?;
    let qs = e.lock().queue_snapshots();
    let q = qs
        .iter()
        .find(|q| q.name == name)
        .ok_or(ApiError::NotFound)?;
    ok(j::queue(e.name(), q))
}

pub(super) async fn put_queue(
    State(s): St,
    _: Admin,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let e = vhost_entry(&s, &vhost)?;
    short_name("queue name", &name)?;
    let body = body_json(&body)?;
    let opts = crate::vhost::QueueOptions {
        passive: false,
        durable: body
            .get("durable")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        exclusive: false,
        auto_delete: body
            .get("auto_delete")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        arguments: arguments(&body)?,
    };
    let mut v = e.lock();
    let existed = v.queue_counts(&name).is_some();
    v.declare_queue(API_CONN, &name, opts)
        .map_err(amqp_to_api)?;
    v.commit_store();
    if existed { no_content() } else { created() }
}

pub(super) async fn bind_queue(
    State(s): St,
    _: Admin,
    Path((vhost, exchange, queue)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult {
    let e = vhost_entry(&s, &vhost)?;
    short_name("exchange name", &exchange)?;
    short_name("queue name", &queue)?;
    let body = body_json(&body)?;
    let key = routing_key(&body)?;
    let mut v = e.lock();
    v.bind_queue(API_CONN, &queue, &exchange, key, arguments(&body)?)
        .map_err(amqp_to_api)?;
    v.commit_store();
    created()
}

pub(super) async fn delete_queue(
    State(s): St,
    _: Admin,
    Path((vhost, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    let e = vhost_entry(&s, &vhost)?;
    short_name("queue name", &name)?;
    let result =
        e.lock()
            .admin_delete_queue(&name, flag(&query, "if-unused"), flag(&query, "if-empty"));
    result.map_err(amqp_to_api)?;
    no_content()
}

pub(super) async fn purge_queue(
    State(s): St,
    _: Admin,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult {
    let e = vhost_entry(&s, &vhost)?;
    short_name("queue name", &name)?;
    match e.lock().admin_purge_queue(&name) {
        Some(_) => no_content(),
        None => Err(ApiError::NotFound),
    }
}

// ----- exchanges and bindings ---------------------------------------------------------

fn list_exchanges(s: &Shared, viewer: &Viewer, vhost: Option<&str>) -> ApiResult {
    let mut out = Vec::new();
    for e in in_scope(s, viewer, vhost)? {
        let xs = e.lock().exchange_snapshots();
        out.extend(xs.iter().map(|x| j::exchange(e.name(), x)));
    }
    ok(Value::Array(out))
}

pub(super) async fn exchanges(State(s): St, viewer: Viewer) -> ApiResult {
    list_exchanges(&s, &viewer, None)
}

pub(super) async fn exchanges_in(
    State(s): St,
    viewer: Viewer,
    Path(vhost): Path<String>,
) -> ApiResult {
    list_exchanges(&s, &viewer, Some(&vhost))
}

pub(super) async fn exchange(
    State(s): St,
    viewer: Viewer,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult {
    let e = visible_vhost(&s, &viewer, &vhost)?;
    short_name("exchange name", &name)?;
    // RabbitMQ names the default exchange `amq.default` in URLs.
    let name = if name == "amq.default" { "" } else { &name };
    let xs = e.lock().exchange_snapshots();
    let x = xs
        .iter()
        .find(|x| x.name == name)
        .ok_or(ApiError::NotFound)?;
    ok(j::exchange(e.name(), x))
}

fn list_bindings(s: &Shared, viewer: &Viewer, vhost: Option<&str>) -> ApiResult {
    let mut out = Vec::new();
    for e in in_scope(s, viewer, vhost)? {
        let bs = e.lock().binding_snapshots();
        out.extend(bs.iter().map(|b| j::binding(e.name(), b)));
    }
    ok(Value::Array(out))
}

pub(super) async fn bindings(State(s): St, viewer: Viewer) -> ApiResult {
    list_bindings(&s, &viewer, None)
}

pub(super) async fn bindings_in(
    State(s): St,
    viewer: Viewer,
    Path(vhost): Path<String>,
) -> ApiResult {
    list_bindings(&s, &viewer, Some(&vhost))
}
