//! `/api/policies` and `/api/operator-policies`: listing (all, per vhost, one),
//! setting (`PUT .../{vhost}/{name}` with `pattern`, `definition`, `priority`,
//! `apply-to`) and clearing policies, with RabbitMQ's validation texts. The broker
//! applies them at once (see [`crate::policy`]) and keeps them with a data
//! directory.
//!
//! Who may change them, as in RabbitMQ: policies, an administrator or a
//! `policymaker` in a vhost it has permissions on; operator policies, an
//! administrator.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use serde_json::Value;

use super::{ApiResult, St, body_json, created, no_content, ok, vhost_entry};
use crate::management::access::{Admin, Viewer};
use crate::management::{ADMIN_TAG, ApiError};
use crate::policy::{self, Kind, Policies, PolicyBody};
use crate::shared::Shared;

fn listing(s: &Shared, kind: Kind, viewer: &Viewer, only: Option<&str>) -> Value {
    let policies = s.policies.read();
    Value::Array(
        policies
            .of(kind)
            .iter()
            .filter(|(vhost, _)| {
                only.is_none_or(|o| o == vhost.as_str()) && viewer.sees_vhost(vhost)
            })
            .flat_map(|(_, by_name)| by_name.values())
            .filter_map(|p| serde_json::to_value(p).ok())
            .collect(),
    )
}

/// Applies a change (installing and saving the policies) off the async runtime.
pub(super) async fn change<T: Send + 'static>(
    s: &Arc<Shared>,
    f: impl FnOnce(&mut Policies) -> T + Send + 'static,
) -> Result<T, ApiError> {
    super::off_runtime(s, "the policies", move |shared| shared.change_policies(f)).await
}

fn list_all(s: St, kind: Kind, viewer: Viewer) -> ApiResult {
    let State(s) = s;
    ok(listing(&s, kind, &viewer, None))
}

fn list_in(s: St, kind: Kind, viewer: Viewer, vhost: String) -> ApiResult {
    let State(s) = s;
    vhost_entry(&s, &vhost)?;
    if !viewer.sees_vhost(&vhost) {
        return Err(ApiError::NotFound);
    }
    ok(listing(&s, kind, &viewer, Some(&vhost)))
}

fn get_one(s: St, kind: Kind, viewer: Viewer, vhost: String, name: String) -> ApiResult {
    let State(s) = s;
    if !viewer.sees_vhost(&vhost) {
        return Err(ApiError::NotFound);
    }
    let policies = s.policies.read();
    let p = policies
        .of(kind)
        .get(&vhost)
        .and_then(|m| m.get(&name))
        .ok_or(ApiError::NotFound)?;
    ok(serde_json::to_value(p).map_err(|e| ApiError::Internal(e.to_string()))?)
}

/// 403 unless `who` may change policies in `vhost` (see the module docs).
fn may_change(s: &Shared, who: &Viewer, vhost: &str) -> Result<(), ApiError> {
    let users = s.users.read();
    if users.has_tag(&who.name, ADMIN_TAG)
        || (users.has_tag(&who.name, "policymaker") && who.sees_vhost(vhost))
    {
        Ok(())
    } else {
        Err(ApiError::Forbidden)
    }
}

async fn put_one(s: St, kind: Kind, vhost: String, name: String, body: Bytes) -> ApiResult {
    let State(s) = s;
    vhost_entry(&s, &vhost)?;
    let body: PolicyBody = serde_json::from_value(body_json(&body)?)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let p = policy::validate(kind, &vhost, &name, body).map_err(ApiError::BadRequest)?;
    let existed = change(&s, move |all| {
        all.of_mut(kind)
            .entry(vhost)
            .or_default()
            .insert(name, p)
            .is_some()
    })
    .await?;
    if existed { no_content() } else { created() }
}

async fn delete_one(s: St, kind: Kind, vhost: String, name: String) -> ApiResult {
    let State(s) = s;
    vhost_entry(&s, &vhost)?;
    let removed = change(&s, move |all| {
        let map = all.of_mut(kind);
        let removed = map.get_mut(&vhost).and_then(|m| m.remove(&name)).is_some();
        if map.get(&vhost).is_some_and(|m| m.is_empty()) {
            map.remove(&vhost);
        }
        removed
    })
    .await?;
    if removed {
        no_content()
    } else {
        Err(ApiError::NotFound)
    }
}

pub(super) async fn policies(s: St, v: Viewer) -> ApiResult {
    list_all(s, Kind::User, v)
}

pub(super) async fn policies_in(s: St, v: Viewer, Path(vhost): Path<String>) -> ApiResult {
    list_in(s, Kind::User, v, vhost)
}

pub(super) async fn policy_get(
    s: St,
    v: Viewer,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult {
    get_one(s, Kind::User, v, vhost, name)
}

pub(super) async fn policy_put(
    s: St,
    v: Viewer,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    may_change(&s.0, &v, &vhost)?;
    put_one(s, Kind::User, vhost, name, body).await
}

pub(super) async fn policy_delete(
    s: St,
    v: Viewer,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult {
    may_change(&s.0, &v, &vhost)?;
    delete_one(s, Kind::User, vhost, name).await
}

pub(super) async fn operator_policies(s: St, v: Viewer) -> ApiResult {
    list_all(s, Kind::Operator, v)
}

pub(super) async fn operator_policies_in(s: St, v: Viewer, Path(vhost): Path<String>) -> ApiResult {
    list_in(s, Kind::Operator, v, vhost)
}

pub(super) async fn operator_policy_get(
    s: St,
    v: Viewer,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult {
    get_one(s, Kind::Operator, v, vhost, name)
}

pub(super) async fn operator_policy_put(
    s: St,
    _: Admin,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    put_one(s, Kind::Operator, vhost, name, body).await
}

pub(super) async fn operator_policy_delete(
    s: St,
    _: Admin,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult {
    delete_one(s, Kind::Operator, vhost, name).await
}
