//! `/api/topic-permissions` (all, per vhost and user, per vhost, per user): listing,
//! setting (`PUT .../{vhost}/{user}` with `exchange`, `write`, `read`; 201 or 204) and
//! clearing (`DELETE .../{vhost}/{user}`: all of that user's in that vhost), as
//! RabbitMQ's API; enforced on AMQP (see `crate::auth`'s topic permissions) and kept
//! with the user table.

use axum::body::Bytes;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::{ApiResult, St, body_json, created, no_content, ok, save_users, vhost_entry};
use crate::management::ApiError;
use crate::management::access::Admin;
use crate::shared::Shared;

fn listing(s: &Shared, keep: impl Fn(&str, &str) -> bool) -> Vec<Value> {
    s.users
        .read()
        .list_topic_permissions()
        .into_iter()
        .filter(|(u, v, ..)| keep(u, v))
        .map(|(user, vhost, exchange, write, read)| {
            json!({ "user": user, "vhost": vhost, "exchange": exchange, "write": write, "read": read })
        })
        .collect()
}

pub(super) async fn all(State(s): St, _: Admin) -> ApiResult {
    ok(Value::Array(listing(&s, |_, _| true)))
}

pub(super) async fn of_vhost(State(s): St, _: Admin, Path(vhost): Path<String>) -> ApiResult {
    vhost_entry(&s, &vhost)?;
    ok(Value::Array(listing(&s, |_, v| v == vhost)))
}

pub(super) async fn of_user(State(s): St, _: Admin, Path(user): Path<String>) -> ApiResult {
    if !s.users.read().list_users().iter().any(|(n, _)| *n == user) {
        return Err(ApiError::NotFound);
    }
    ok(Value::Array(listing(&s, |u, _| u == user)))
}

/// A user's in a vhost; 404 when there are none, as RabbitMQ.
pub(super) async fn get(
    State(s): St,
    _: Admin,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult {
    let list = listing(&s, |u, v| u == user && v == vhost);
    if list.is_empty() {
        return Err(ApiError::NotFound);
    }
    ok(Value::Array(list))
}

pub(super) async fn put(
    State(s): St,
    _: Admin,
    Path((vhost, user)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    vhost_entry(&s, &vhost)?;
    let body = body_json(&body)?;
    let field = |k: &str| -> Result<String, ApiError> {
        body.get(k)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ApiError::BadRequest(format!("[{{key_missing,{k}}}]")))
    };
    let (exchange, write, read) = (field("exchange")?, field("write")?, field("read")?);
    let replaced = s
        .users
        .write()
        .set_topic_permission(&user, &vhost, &exchange, &write, &read)
        .map_err(|e| match e {
            crate::auth::AuthError::NoUser(_) => ApiError::NotFound,
            other => ApiError::BadRequest(format!("invalid_regexp: {other}")),
        })?;
    save_users(&s).await?;
    if replaced { no_content() } else { created() }
}

pub(super) async fn delete(
    State(s): St,
    _: Admin,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult {
    let removed = s.users.write().clear_topic_permissions(&user, &vhost, None);
    if !removed {
        return Err(ApiError::NotFound);
    }
    save_users(&s).await?;
    no_content()
}
