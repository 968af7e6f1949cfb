//! `/api/vhosts`: list, read, create (`PUT`, 201 or 204 as RabbitMQ; the creating user
//! gets full permissions on a new vhost, as there) and delete
//! (`DELETE`: its queues, exchanges, data and permissions go and its connections are
//! closed with 320 CONNECTION_FORCED).

use axum::body::Bytes;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::{ApiResult, St, body_json, created, no_content, ok, short_name, visible_vhost};
use crate::management::ApiError;
use crate::management::access::{Admin, Viewer};
use crate::vhost::VHostEntry;

fn vhost_json(e: &VHostEntry) -> Value {
    let qs = e.lock().queue_snapshots();
    let ready: u64 = qs.iter().map(|q| u64::from(q.messages_ready)).sum();
    let unacked: u64 = qs
        .iter()
        .map(|q| u64::from(q.messages_unacknowledged))
        .sum();
    json!({
        "name": e.name(),
        "description": if e.name() == "/" { "Default virtual host" } else { "" },
        "tags": [],
        "tracing": false,
        "messages": ready + unacked,
        "messages_ready": ready,
        "messages_unacknowledged": unacked,
    })
}

/// The vhosts the user sees.
pub(super) async fn vhosts(State(s): St, viewer: Viewer) -> ApiResult {
    ok(Value::Array(
        s.vhosts
            .all()
            .iter()
            .filter(|e| viewer.sees_vhost(e.name()))
            .map(|e| vhost_json(e))
            .collect(),
    ))
}

pub(super) async fn vhost(State(s): St, viewer: Viewer, Path(name): Path<String>) -> ApiResult {
    let e = visible_vhost(&s, &viewer, &name)?;
    ok(vhost_json(&e))
}

fn io_error(e: &std::io::Error) -> ApiError {
    tracing::error!(err = %e, "vhost data could not be written");
    ApiError::Internal(format!("could not write the vhost's data: {e}"))
}

/// Creates the vhost (201; 204 if it exists). As RabbitMQ's management API does, the
/// user who created it gets full permissions on it.
pub(super) async fn put_vhost(
    State(s): St,
    Admin(user): Admin,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    // Description, tags and tracing are accepted and not kept.
    body_json(&body)?;
    short_name("vhost name", &name)?;
    if name.is_empty() {
        return Err(ApiError::BadRequest(
            "a vhost name is 1 to 255 bytes".into(),
        ));
    }
    let (shared, vhost) = (s.clone(), name.clone());
    let made = tokio::task::spawn_blocking(move || shared.create_vhost(&name))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| io_error(&e))?;
    if !made {
        return no_content();
    }
    if let Err(err) = s
        .users
        .write()
        .set_permissions(&user, &vhost, ".*", ".*", ".*")
    {
        tracing::warn!(%err, %user, %vhost, "could not grant the vhost's creator permissions");
    }
    super::save_users(&s).await?;
    created()
}

pub(super) async fn delete_vhost(State(s): St, _: Admin, Path(name): Path<String>) -> ApiResult {
    short_name("vhost name", &name)?;
    let shared = s.clone();
    let deleted = tokio::task::spawn_blocking(move || shared.delete_vhost(&name))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| io_error(&e))?;
    if deleted {
        no_content()
    } else {
        Err(ApiError::NotFound)
    }
}
