//! Changes to exchanges and bindings through the API, and the binding listings a
//! change is made from: `PUT`/`DELETE /api/exchanges/{vhost}/{name}`, exchange to
//! exchange bindings, the bindings of a queue and between two objects, and deleting
//! one binding by its `properties_key`, as RabbitMQ's management API has them.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use serde_json::Value;

use super::{
    ApiResult, St, amqp_to_api, arguments, body_json, created, flag, no_content, ok, routing_key,
    short_name, vhost_entry, visible_vhost,
};
use crate::management::ApiError;
use crate::management::access::{Admin, Viewer};
use crate::management::json as j;
use crate::vhost::{BindingSnapshot, ExchangeOptions};

use super::objects::API_CONN;

pub(super) async fn put_exchange(
    State(s): St,
    _: Admin,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let e = vhost_entry(&s, &vhost)?;
    short_name("exchange name", &name)?;
    let body = body_json(&body)?;
    let kind = body
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::BadRequest("missing string field 'type'".into()))?;
    let get_bool = |k: &str, default: bool| body.get(k).and_then(Value::as_bool).unwrap_or(default);
    let opts = ExchangeOptions {
        kind: kind.to_owned(),
        passive: false,
        // RabbitMQ's API declares durable exchanges unless told otherwise.
        durable: get_bool("durable", true),
        auto_delete: get_bool("auto_delete", false),
        internal: get_bool("internal", false),
        arguments: arguments(&body)?,
    };
    let mut v = e.lock();
    let existed = v.has_exchange(&name);
    v.declare_exchange(&name, opts).map_err(amqp_to_api)?;
    v.commit_store();
    if existed { no_content() } else { created() }
}

pub(super) async fn delete_exchange(
    State(s): St,
    _: Admin,
    Path((vhost, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    let e = vhost_entry(&s, &vhost)?;
    short_name("exchange name", &name)?;
    let mut v = e.lock();
    if !v.has_exchange(&name) {
        return Err(ApiError::NotFound);
    }
    v.delete_exchange(&name, flag(&query, "if-unused"))
        .map_err(amqp_to_api)?;
    v.commit_store();
    no_content()
}

pub(super) async fn bind_exchange(
    State(s): St,
    _: Admin,
    Path((vhost, source, destination)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult {
    let e = vhost_entry(&s, &vhost)?;
    short_name("exchange name", &source)?;
    short_name("exchange name", &destination)?;
    let body = body_json(&body)?;
    let key = routing_key(&body)?;
    let mut v = e.lock();
    v.bind_exchange(&destination, &source, key, arguments(&body)?)
        .map_err(amqp_to_api)?;
    v.commit_store();
    created()
}

/// The bindings of `vhost` that `keep` selects, as JSON.
fn bindings_where(
    s: &crate::shared::Shared,
    viewer: &Viewer,
    vhost: &str,
    keep: impl Fn(&BindingSnapshot) -> bool,
) -> ApiResult {
    let e = visible_vhost(s, viewer, vhost)?;
    let bs = e.lock().binding_snapshots();
    ok(Value::Array(
        bs.iter()
            .filter(|b| keep(b))
            .map(|b| j::binding(e.name(), b))
            .collect(),
    ))
}

/// Every binding to the queue, the default exchange's included (as RabbitMQ lists
/// them).
pub(super) async fn queue_bindings(
    State(s): St,
    viewer: Viewer,
    Path((vhost, queue)): Path<(String, String)>,
) -> ApiResult {
    short_name("queue name", &queue)?;
    let e = visible_vhost(&s, &viewer, &vhost)?;
    if !e.lock().has_queue(&queue) {
        return Err(ApiError::NotFound);
    }
    bindings_where(&s, &viewer, &vhost, |b| {
        b.to_queue && b.destination == queue
    })
}

/// The bindings of exchange `name` that `keep` selects (404 if there is no such
/// exchange).
fn exchange_bindings(
    s: &crate::shared::Shared,
    viewer: &Viewer,
    (vhost, name): (&str, &str),
    keep: impl Fn(&BindingSnapshot) -> bool,
) -> ApiResult {
    let e = visible_vhost(s, viewer, vhost)?;
    if !e.lock().has_exchange(name) {
        return Err(ApiError::NotFound);
    }
    bindings_where(s, viewer, vhost, keep)
}

/// `/api/exchanges/{vhost}/{name}/bindings/source`: the bindings from the exchange.
pub(super) async fn exchange_bindings_source(
    State(s): St,
    viewer: Viewer,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult {
    exchange_bindings(&s, &viewer, (&vhost, &name), |b| b.source == name)
}

/// `/api/exchanges/{vhost}/{name}/bindings/destination`: the bindings to the exchange.
pub(super) async fn exchange_bindings_destination(
    State(s): St,
    viewer: Viewer,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult {
    exchange_bindings(&s, &viewer, (&vhost, &name), |b| {
        !b.to_queue && b.destination == name
    })
}

pub(super) async fn bindings_to_queue(
    State(s): St,
    viewer: Viewer,
    Path((vhost, exchange, queue)): Path<(String, String, String)>,
) -> ApiResult {
    bindings_where(&s, &viewer, &vhost, |b| {
        b.to_queue && b.source == exchange && b.destination == queue
    })
}

pub(super) async fn bindings_to_exchange(
    State(s): St,
    viewer: Viewer,
    Path((vhost, source, destination)): Path<(String, String, String)>,
) -> ApiResult {
    bindings_where(&s, &viewer, &vhost, |b| {
        !b.to_queue && b.source == source && b.destination == destination
    })
}

/// Deletes the binding whose `properties_key` the path names (404 if none has it).
fn delete_binding(
    s: &crate::shared::Shared,
    vhost: &str,
    (source, destination, to_queue): (&str, &str, bool),
    props: &str,
) -> ApiResult {
    let e = vhost_entry(s, vhost)?;
    let mut v = e.lock();
    let found = v.binding_snapshots().into_iter().find(|b| {
        b.to_queue == to_queue
            && b.source == source
            && b.destination == destination
            && j::properties_key(&b.routing_key, &b.arguments) == props
    });
    let b = found.ok_or(ApiError::NotFound)?;
    if to_queue {
        v.unbind_queue(API_CONN, destination, source, &b.routing_key, &b.arguments)
    } else {
        v.unbind_exchange(destination, source, &b.routing_key, &b.arguments)
    }
    .map_err(amqp_to_api)?;
    v.commit_store();
    no_content()
}

pub(super) async fn delete_queue_binding(
    State(s): St,
    _: Admin,
    Path((vhost, exchange, queue, props)): Path<(String, String, String, String)>,
) -> ApiResult {
    delete_binding(&s, &vhost, (&exchange, &queue, true), &props)
}

pub(super) async fn delete_exchange_binding(
    State(s): St,
    _: Admin,
    Path((vhost, source, destination, props)): Path<(String, String, String, String)>,
) -> ApiResult {
    delete_binding(&s, &vhost, (&source, &destination, false), &props)
}
