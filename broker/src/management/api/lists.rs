//! The permissions listings of one vhost and of one user
//! (`/api/vhosts/{name}/permissions`, `/api/users/{name}/permissions`).

use axum::extract::{Path, State};
use serde_json::Value;

use super::{ApiResult, St, ok, permission_json};
use crate::management::ApiError;
use crate::management::access::Admin;

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
