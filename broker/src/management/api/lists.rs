//! The listings of what the broker keeps per user and vhost beside the objects:
//! permissions by vhost and by user, and the kinds of runtime configuration RabbitMQ
//! has that this broker does not keep yet (topic permissions). Those list as
//! empty, which is the truth: nothing can set them, and setting one answers 501
//! with what is missing rather than accepting and ignoring it.

use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::{ApiResult, St, ok, permission_json};
use crate::management::ApiError;
use crate::management::access::{Admin, Viewer};

pub(super) async fn vhost_permissions(
    State(s): St,
    _: Admin,
    Path(vhost): Path<String>,
) -> ApiResult {
    super::vhost_entry(&s, &vhost)?;
    let list = s.users.read().list_permissions();
    ok(Value::Array(
        list.iter()
            .filter(|(_, v, _)| *v == vhost)
            .map(|(u, v, p)| permission_json(u, v, p))
            .collect(),
    ))
}

pub(super) async fn user_permissions(
    State(s): St,
    _: Admin,
    Path(user): Path<String>,
) -> ApiResult {
    let users = s.users.read();
    if !users.list_users().iter().any(|(n, _)| *n == user) {
        return Err(ApiError::NotFound);
    }
    let list = users.list_permissions();
    ok(Value::Array(
        list.iter()
            .filter(|(u, _, _)| *u == user)
            .map(|(u, v, p)| permission_json(u, v, p))
            .collect(),
    ))
}

/// An empty listing, for what the broker keeps none of.
pub(super) async fn none(_: Viewer) -> ApiResult {
    ok(json!([]))
}

/// An empty listing below a path (a vhost, a user, a component), for what the broker
/// keeps none of.
pub(super) async fn none_in(_: Viewer, Path(_scope): Path<String>) -> ApiResult {
    ok(json!([]))
}

/// An empty listing below two path segments.
pub(super) async fn none_in_two(_: Viewer, Path(_scope): Path<(String, String)>) -> ApiResult {
    ok(json!([]))
}

/// Setting something the broker does not keep yet: 501, naming it.
pub(super) fn unsupported(what: &'static str) -> ApiError {
    ApiError::NotImplemented(format!("{what} are not supported by this broker yet"))
}

pub(super) async fn put_topic_permission(_: Admin) -> ApiResult {
    Err(unsupported("topic permissions"))
}
