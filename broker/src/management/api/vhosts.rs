//! `/api/vhosts`: list, read, create or update (`PUT` with `description`, `tags`,
//! `default_queue_type`, kept as [`crate::vhost_metadata`]; 201 or 204 as RabbitMQ;
//! the creating user gets full permissions on a new vhost, as there) and delete
//! (`DELETE`: its queues, exchanges, data and permissions go and its connections are
//! closed with 320 CONNECTION_FORCED).

use axum::body::Bytes;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::{ApiResult, St, body_json, created, no_content, ok, short_name, visible_vhost};
use crate::management::ApiError;
use crate::management::access::{Admin, Viewer};
use crate::shared::Shared;
use crate::vhost::VHostEntry;
use crate::vhost_metadata::Metadata;

fn vhost_json(s: &Shared, e: &VHostEntry) -> Value {
    let qs = e.lock().queue_snapshots();
    let ready: u64 = qs.iter().map(|q| u64::from(q.messages_ready)).sum();
    let unacked: u64 = qs
        .iter()
        .map(|q| u64::from(q.messages_unacknowledged))
        .sum();
    let mut v = json!({
        "name": e.name(),
        "tracing": false,
        "messages": ready + unacked,
        "messages_ready": ready,
        "messages_unacknowledged": unacked,
    });
    if let Value::Object(m) = &mut v {
        for (k, field) in s.vhost_metadata(e.name()).json_fields() {
            m.insert(k.into(), field);
        }
    }
    v
}

/// The vhosts the user sees.
pub(super) async fn vhosts(State(s): St, viewer: Viewer) -> ApiResult {
    ok(Value::Array(
        s.vhosts
            .all()
            .iter()
            .filter(|e| viewer.sees_vhost(e.name()))
            .map(|e| vhost_json(&s, e))
            .collect(),
    ))
}

pub(super) async fn vhost(State(s): St, viewer: Viewer, Path(name): Path<String>) -> ApiResult {
    let e = visible_vhost(&s, &viewer, &name)?;
    ok(vhost_json(&s, &e))
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
    // Tracing is not kept (the broker has no firehose tracer).
    let metadata = Metadata::from_json(&body_json(&body)?)
        .map_err(|why| ApiError::BadRequest(format!("Validation failed\n\n{why}\n")))?;
    short_name("vhost name", &name)?;
    if name.is_empty() {
        return Err(ApiError::BadRequest(
            "a vhost name is 1 to 255 bytes".into(),
        ));
    }
    let (shared, vhost) = (s.clone(), name.clone());
    // Created, or its metadata updated (RabbitMQ's 204).
    let made = tokio::task::spawn_blocking(move || {
        let made = shared.create_vhost(&name)?;
        shared.set_vhost_metadata(&name, Some(metadata))?;
        Ok::<_, std::io::Error>(made)
    })
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
