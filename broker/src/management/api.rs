//! The routes of the management API and their handlers.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::json::{self as j, VHOST};
use super::registry::ConnInfo;
use super::{Admin, ApiError, NODE_NAME, PRODUCT_NAME, Reader, metrics};
use crate::auth::AuthError;
use crate::error::code;
use crate::server::Shared;

type St = State<Arc<Shared>>;
type ApiResult = Result<Response, ApiError>;

/// Every route.
pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/overview", get(overview))
        .route("/api/whoami", get(whoami))
        .route("/api/queues", get(queues))
        .route("/api/queues/{vhost}", get(queues_in))
        .route(
            "/api/queues/{vhost}/{name}",
            get(queue).put(put_queue).delete(delete_queue),
        )
        .route(
            "/api/queues/{vhost}/{name}/contents",
            axum::routing::delete(purge_queue),
        )
        .route("/api/exchanges", get(exchanges))
        .route("/api/exchanges/{vhost}", get(exchanges_in))
        .route("/api/exchanges/{vhost}/{name}", get(exchange))
        .route("/api/bindings", get(bindings))
        .route("/api/bindings/{vhost}", get(bindings_in))
        .route(
            "/api/bindings/{vhost}/e/{exchange}/q/{queue}",
            axum::routing::post(bind_queue),
        )
        .route("/api/connections", get(connections))
        .route(
            "/api/connections/{name}",
            get(connection).delete(close_connection),
        )
        .route("/api/channels", get(channels))
        .route("/api/consumers", get(consumers))
        .route("/api/consumers/{vhost}", get(consumers_in))
        .route("/api/users", get(users))
        .route(
            "/api/users/{name}",
            get(user).put(put_user).delete(delete_user),
        )
        .route("/api/vhosts", get(vhosts))
        .route(
            "/api/vhosts/{name}",
            get(vhost).put(put_vhost).delete(delete_vhost),
        )
        .route("/api/permissions", get(permissions))
        .route(
            "/api/permissions/{vhost}/{user}",
            get(permission)
                .put(put_permission)
                .delete(delete_permission),
        )
        .route("/metrics", get(metrics_text))
        .with_state(shared)
}

fn ok(v: Value) -> ApiResult {
    Ok(Json(v).into_response())
}

fn no_content() -> ApiResult {
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn created() -> ApiResult {
    Ok(StatusCode::CREATED.into_response())
}

fn check_vhost(vhost: &str) -> Result<(), ApiError> {
    if vhost == VHOST {
        Ok(())
    } else {
        Err(ApiError::NotFound)
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

/// Live connections by id, and open channels per connection.
fn connections_by_id(shared: &Shared) -> (HashMap<u64, ConnInfo>, HashMap<u64, u32>) {
    let mut per_conn: HashMap<u64, u32> = HashMap::new();
    for ch in shared.vhost.lock().channel_snapshots() {
        *per_conn.entry(ch.key.0).or_default() += 1;
    }
    let conns = shared
        .registry
        .snapshot()
        .into_iter()
        .map(|c| (c.id, c))
        .collect();
    (conns, per_conn)
}

// ----- overview -----------------------------------------------------------------------

async fn overview(State(s): St, _: Reader) -> ApiResult {
    let (queues, exchanges, channels, consumers, stats) = {
        let mut v = s.vhost.lock();
        (
            v.queue_snapshots(),
            v.exchange_snapshots().len(),
            v.channel_snapshots().len(),
            v.consumer_snapshots().len(),
            v.message_stats(),
        )
    };
    let connections = s.registry.snapshot().len();
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
        "message_stats": {
            "publish": stats.publish,
            "deliver": stats.deliver,
            "deliver_no_ack": stats.deliver_no_ack,
            "get": stats.get,
            "get_no_ack": stats.get_no_ack,
            "deliver_get": stats.deliver_get(),
            "ack": stats.ack,
            "redeliver": stats.redeliver,
        },
    }))
}

async fn whoami(State(s): St, Reader(user): Reader) -> ApiResult {
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

// ----- queues -------------------------------------------------------------------------

async fn queues(State(s): St, _: Reader) -> ApiResult {
    let qs = s.vhost.lock().queue_snapshots();
    ok(Value::Array(qs.iter().map(j::queue).collect()))
}

async fn queues_in(State(s): St, r: Reader, Path(vhost): Path<String>) -> ApiResult {
    check_vhost(&vhost)?;
    queues(State(s), r).await
}

async fn queue(State(s): St, _: Reader, Path((vhost, name)): Path<(String, String)>) -> ApiResult {
    check_vhost(&vhost)?;
    let qs = s.vhost.lock().queue_snapshots();
    let q = qs
        .iter()
        .find(|q| q.name == name)
        .ok_or(ApiError::NotFound)?;
    ok(j::queue(q))
}

/// The connection id API declarations act as: no connection has it, so exclusive
/// queues of connections stay theirs.
const API_CONN: u64 = 0;

fn arguments(body: &Value) -> Result<amq_protocol::types::FieldTable, ApiError> {
    match body.get("arguments") {
        None | Some(Value::Null) => Ok(Default::default()),
        Some(v) => j::amqp_table(v)
            .ok_or_else(|| ApiError::BadRequest("arguments must be an object".into())),
    }
}

fn amqp_to_api(e: crate::AmqpError) -> ApiError {
    match e.code {
        code::NOT_FOUND => ApiError::NotFound,
        _ => ApiError::BadRequest(e.text),
    }
}

async fn put_queue(
    State(s): St,
    _: Admin,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    check_vhost(&vhost)?;
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
    let mut v = s.vhost.lock();
    let existed = v.queue_counts(&name).is_some();
    v.declare_queue(API_CONN, &name, opts)
        .map_err(amqp_to_api)?;
    v.commit_store();
    if existed { no_content() } else { created() }
}

async fn bind_queue(
    State(s): St,
    _: Admin,
    Path((vhost, exchange, queue)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult {
    check_vhost(&vhost)?;
    let body = body_json(&body)?;
    let key = body
        .get("routing_key")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut v = s.vhost.lock();
    v.bind_queue(API_CONN, &queue, &exchange, key, arguments(&body)?)
        .map_err(amqp_to_api)?;
    v.commit_store();
    created()
}

async fn delete_queue(
    State(s): St,
    _: Admin,
    Path((vhost, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    check_vhost(&vhost)?;
    let result = s.vhost.lock().admin_delete_queue(
        &name,
        flag(&query, "if-unused"),
        flag(&query, "if-empty"),
    );
    result.map_err(amqp_to_api)?;
    no_content()
}

async fn purge_queue(
    State(s): St,
    _: Admin,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult {
    check_vhost(&vhost)?;
    match s.vhost.lock().admin_purge_queue(&name) {
        Some(_) => no_content(),
        None => Err(ApiError::NotFound),
    }
}

// ----- exchanges and bindings ---------------------------------------------------------

async fn exchanges(State(s): St, _: Reader) -> ApiResult {
    let xs = s.vhost.lock().exchange_snapshots();
    ok(Value::Array(xs.iter().map(j::exchange).collect()))
}

async fn exchanges_in(State(s): St, r: Reader, Path(vhost): Path<String>) -> ApiResult {
    check_vhost(&vhost)?;
    exchanges(State(s), r).await
}

async fn exchange(
    State(s): St,
    _: Reader,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult {
    check_vhost(&vhost)?;
    // RabbitMQ names the default exchange `amq.default` in URLs.
    let name = if name == "amq.default" { "" } else { &name };
    let xs = s.vhost.lock().exchange_snapshots();
    let x = xs
        .iter()
        .find(|x| x.name == name)
        .ok_or(ApiError::NotFound)?;
    ok(j::exchange(x))
}

async fn bindings(State(s): St, _: Reader) -> ApiResult {
    let bs = s.vhost.lock().binding_snapshots();
    ok(Value::Array(bs.iter().map(j::binding).collect()))
}

async fn bindings_in(State(s): St, r: Reader, Path(vhost): Path<String>) -> ApiResult {
    check_vhost(&vhost)?;
    bindings(State(s), r).await
}

// ----- connections, channels, consumers -----------------------------------------------

async fn connections(State(s): St, _: Reader) -> ApiResult {
    let (conns, per_conn) = connections_by_id(&s);
    let mut list: Vec<&ConnInfo> = conns.values().collect();
    list.sort_by_key(|c| c.id);
    ok(Value::Array(
        list.into_iter()
            .map(|c| j::connection(c, per_conn.get(&c.id).copied().unwrap_or(0)))
            .collect(),
    ))
}

async fn connection(State(s): St, _: Reader, Path(name): Path<String>) -> ApiResult {
    let (conns, per_conn) = connections_by_id(&s);
    let c = conns
        .values()
        .find(|c| c.name() == name)
        .ok_or(ApiError::NotFound)?;
    ok(j::connection(c, per_conn.get(&c.id).copied().unwrap_or(0)))
}

async fn close_connection(
    State(s): St,
    _: Admin,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let reason = headers
        .get("x-reason")
        .and_then(|v| v.to_str().ok())
        .filter(|r| !r.is_empty())
        .unwrap_or("Closed via management plugin");
    if s.registry.close(&name, reason) {
        no_content()
    } else {
        Err(ApiError::NotFound)
    }
}

async fn channels(State(s): St, _: Reader) -> ApiResult {
    let chans = s.vhost.lock().channel_snapshots();
    let (conns, _) = connections_by_id(&s);
    ok(Value::Array(
        chans.iter().map(|c| j::channel(c, &conns)).collect(),
    ))
}

async fn consumers(State(s): St, _: Reader) -> ApiResult {
    let cs = s.vhost.lock().consumer_snapshots();
    let (conns, _) = connections_by_id(&s);
    ok(Value::Array(
        cs.iter().map(|c| j::consumer(c, &conns)).collect(),
    ))
}

async fn consumers_in(State(s): St, r: Reader, Path(vhost): Path<String>) -> ApiResult {
    check_vhost(&vhost)?;
    consumers(State(s), r).await
}

// ----- users --------------------------------------------------------------------------

fn user_json(name: &str, tags: &[String]) -> Value {
    json!({
        "name": name,
        "tags": tags,
        "hashing_algorithm": "rabbit_password_hashing_sha256",
        "limits": {},
    })
}

async fn users(State(s): St, _: Reader) -> ApiResult {
    let list = s.users.read().list_users();
    ok(Value::Array(
        list.iter().map(|(n, t)| user_json(n, t)).collect(),
    ))
}

async fn user(State(s): St, _: Reader, Path(name): Path<String>) -> ApiResult {
    let list = s.users.read().list_users();
    let (n, t) = list
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or(ApiError::NotFound)?;
    ok(user_json(n, t))
}

/// Tags as RabbitMQ takes them: a comma-separated string or a list.
fn parse_tags(v: Option<&Value>) -> Result<Vec<String>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|t| {
                t.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| ApiError::BadRequest("tags must be strings".into()))
            })
            .collect(),
        Some(_) => Err(ApiError::BadRequest(
            "tags must be a string or a list".into(),
        )),
    }
}

async fn put_user(State(s): St, _: Admin, Path(name): Path<String>, body: Bytes) -> ApiResult {
    let body = body_json(&body)?;
    let tags = parse_tags(body.get("tags"))?;
    if body.get("password_hash").is_some() {
        return Err(ApiError::NotImplemented(
            "password_hash is not supported; send password".into(),
        ));
    }
    let password = match body.get("password") {
        None => None,
        Some(Value::String(p)) => Some(p.as_str()),
        Some(_) => return Err(ApiError::BadRequest("password must be a string".into())),
    };
    let mut users = s.users.write();
    let exists = users.list_users().iter().any(|(n, _)| *n == name);
    match (exists, password) {
        (false, None) => Err(ApiError::BadRequest("a new user needs a password".into())),
        (false, Some(p)) => {
            users.add_user(&name, p, tags);
            created()
        }
        (true, p) => {
            if let Some(p) = p {
                users.change_password(&name, p).map_err(auth_error)?;
            }
            users.set_tags(&name, tags).map_err(auth_error)?;
            no_content()
        }
    }
}

async fn delete_user(State(s): St, _: Admin, Path(name): Path<String>) -> ApiResult {
    s.users.write().delete_user(&name).map_err(auth_error)?;
    no_content()
}

fn auth_error(e: AuthError) -> ApiError {
    match e {
        AuthError::NoUser(_) | AuthError::NoVhost(_) => ApiError::NotFound,
        AuthError::BadPattern(..) => ApiError::BadRequest(e.to_string()),
    }
}

// ----- vhosts -------------------------------------------------------------------------

fn single_vhost() -> ApiError {
    ApiError::NotImplemented(
        "this broker serves a single virtual host, '/'; virtual hosts cannot be added or deleted"
            .into(),
    )
}

fn vhost_json(s: &Shared) -> Value {
    let qs = s.vhost.lock().queue_snapshots();
    let ready: u64 = qs.iter().map(|q| u64::from(q.messages_ready)).sum();
    let unacked: u64 = qs
        .iter()
        .map(|q| u64::from(q.messages_unacknowledged))
        .sum();
    json!({
        "name": VHOST,
        "description": "Default virtual host",
        "tags": [],
        "tracing": false,
        "messages": ready + unacked,
        "messages_ready": ready,
        "messages_unacknowledged": unacked,
    })
}

async fn vhosts(State(s): St, _: Reader) -> ApiResult {
    ok(json!([vhost_json(&s)]))
}

async fn vhost(State(s): St, _: Reader, Path(name): Path<String>) -> ApiResult {
    check_vhost(&name)?;
    ok(vhost_json(&s))
}

async fn put_vhost(_: Admin, Path(name): Path<String>) -> ApiResult {
    if name == VHOST {
        // It exists: RabbitMQ answers an idempotent PUT with 204.
        return no_content();
    }
    Err(single_vhost())
}

async fn delete_vhost(_: Admin, Path(_name): Path<String>) -> ApiResult {
    Err(single_vhost())
}

// ----- permissions --------------------------------------------------------------------

fn permission_json(user: &str, vhost: &str, p: &crate::auth::Permission) -> Value {
    json!({
        "user": user,
        "vhost": vhost,
        "configure": p.configure,
        "write": p.write,
        "read": p.read,
    })
}

async fn permissions(State(s): St, _: Reader) -> ApiResult {
    let list = s.users.read().list_permissions();
    ok(Value::Array(
        list.iter()
            .map(|(u, v, p)| permission_json(u, v, p))
            .collect(),
    ))
}

async fn permission(
    State(s): St,
    _: Reader,
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
    let body = body_json(&body)?;
    let field = |name: &str| {
        body.get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ApiError::BadRequest(format!("missing string field '{name}'")))
    };
    let (configure, write, read) = (field("configure")?, field("write")?, field("read")?);
    let mut users = s.users.write();
    let existed = users.permissions(&user, &vhost).is_some();
    users
        .set_permissions(&user, &vhost, &configure, &write, &read)
        .map_err(|e| match e {
            AuthError::NoUser(u) => ApiError::BadRequest(format!("no such user '{u}'")),
            AuthError::NoVhost(v) => ApiError::BadRequest(format!("no such vhost '{v}'")),
            other => ApiError::BadRequest(other.to_string()),
        })?;
    if existed { no_content() } else { created() }
}

async fn delete_permission(
    State(s): St,
    _: Admin,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult {
    let mut users = s.users.write();
    if users.permissions(&user, &vhost).is_none() {
        return Err(ApiError::NotFound);
    }
    users.clear_permissions(&user, &vhost);
    no_content()
}

// ----- metrics ------------------------------------------------------------------------

async fn metrics_text(State(s): St) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::render(&s),
    )
        .into_response()
}
