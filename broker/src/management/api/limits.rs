//! `/api/vhost-limits` and `/api/user-limits`: listing, setting (`PUT
//! .../{vhost}/{name}` with `{"value": N}`) and clearing a vhost's `max-connections`
//! and `max-queues` and a user's `max-connections` and `max-channels`, as RabbitMQ's
//! API does, with its validation texts. The broker enforces them (see
//! [`crate::resource_limits`]) and keeps them with a data directory.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::{ApiResult, St, body_json, no_content, ok, vhost_entry};
use crate::management::ApiError;
use crate::management::access::{Admin, Viewer};
use crate::resource_limits::{ResourceLimits, USER_LIMITS, VHOST_LIMITS};
use crate::shared::Shared;

/// Vhost limits or user limits.
#[derive(Clone, Copy)]
enum Kind {
    Vhost,
    User,
}

impl Kind {
    fn key(self) -> &'static str {
        match self {
            Kind::Vhost => "vhost",
            Kind::User => "user",
        }
    }

    fn names(self) -> &'static [&'static str] {
        match self {
            Kind::Vhost => &VHOST_LIMITS,
            Kind::User => &USER_LIMITS,
        }
    }

    fn map(self, l: &ResourceLimits) -> &BTreeMap<String, BTreeMap<String, i64>> {
        match self {
            Kind::Vhost => &l.vhosts,
            Kind::User => &l.users,
        }
    }

    fn map_mut(self, l: &mut ResourceLimits) -> &mut BTreeMap<String, BTreeMap<String, i64>> {
        match self {
            Kind::Vhost => &mut l.vhosts,
            Kind::User => &mut l.users,
        }
    }

    /// 404 unless the vhost or user exists.
    fn check_exists(self, s: &Shared, name: &str) -> Result<(), ApiError> {
        match self {
            Kind::Vhost => vhost_entry(s, name).map(|_| ()),
            Kind::User => {
                if s.users.read().list_users().iter().any(|(n, _)| n == name) {
                    Ok(())
                } else {
                    Err(ApiError::NotFound)
                }
            }
        }
    }
}

fn listing(s: &Shared, kind: Kind, only: Option<&str>) -> Value {
    let limits = s.resource_limits.read();
    Value::Array(
        kind.map(&limits)
            .iter()
            .filter(|(who, m)| !m.is_empty() && only.is_none_or(|o| o == who.as_str()))
            .map(|(who, m)| json!({ kind.key(): who, "value": m }))
            .collect(),
    )
}

/// Applies a change to the limits, installs them and saves them.
pub(super) async fn change(
    s: &Arc<Shared>,
    f: impl FnOnce(&mut ResourceLimits),
) -> Result<(), ApiError> {
    let mut limits = s.resource_limits.read().clone();
    f(&mut limits);
    s.set_resource_limits(limits);
    super::off_runtime(s, "the limits", Shared::save_resource_limits).await
}

async fn put(s: St, kind: Kind, who: String, name: String, body: Bytes) -> ApiResult {
    let State(s) = s;
    kind.check_exists(&s, &who)?;
    let body = body_json(&body)?;
    let value = body.get("value").cloned().unwrap_or(Value::Null);
    if !kind.names().contains(&name.as_str()) {
        return Err(ApiError::BadRequest(format!(
            "Validation failed\n\nUnrecognised terms [{{<<\"{name}\">>,{value}}}] in limits\n"
        )));
    }
    let Some(n) = value.as_i64() else {
        return Err(ApiError::BadRequest(format!(
            "Validation failed\n\n{name} should be a number, actually was {value}\n"
        )));
    };
    change(&s, |l| {
        kind.map_mut(l).entry(who).or_default().insert(name, n);
    })
    .await?;
    no_content()
}

async fn clear(s: St, kind: Kind, who: String, name: String) -> ApiResult {
    let State(s) = s;
    kind.check_exists(&s, &who)?;
    change(&s, |l| {
        let map = kind.map_mut(l);
        if let Some(m) = map.get_mut(&who) {
            m.remove(&name);
            if m.is_empty() {
                map.remove(&who);
            }
        }
    })
    .await?;
    no_content()
}

pub(super) async fn vhost_limits(State(s): St, _: Viewer) -> ApiResult {
    ok(listing(&s, Kind::Vhost, None))
}

pub(super) async fn vhost_limits_of(
    State(s): St,
    _: Viewer,
    Path(vhost): Path<String>,
) -> ApiResult {
    Kind::Vhost.check_exists(&s, &vhost)?;
    ok(listing(&s, Kind::Vhost, Some(&vhost)))
}

pub(super) async fn put_vhost_limit(
    s: St,
    _: Admin,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    put(s, Kind::Vhost, vhost, name, body).await
}

pub(super) async fn delete_vhost_limit(
    s: St,
    _: Admin,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult {
    clear(s, Kind::Vhost, vhost, name).await
}

pub(super) async fn user_limits(State(s): St, _: Admin) -> ApiResult {
    ok(listing(&s, Kind::User, None))
}

pub(super) async fn user_limits_of(State(s): St, _: Admin, Path(user): Path<String>) -> ApiResult {
    Kind::User.check_exists(&s, &user)?;
    ok(listing(&s, Kind::User, Some(&user)))
}

pub(super) async fn put_user_limit(
    s: St,
    _: Admin,
    Path((user, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    put(s, Kind::User, user, name, body).await
}

pub(super) async fn delete_user_limit(
    s: St,
    _: Admin,
    Path((user, name)): Path<(String, String)>,
) -> ApiResult {
    clear(s, Kind::User, user, name).await
}
