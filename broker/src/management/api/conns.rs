//! The narrower listings of connections and channels: those of a vhost, of a user
//! (and closing them all), the channels of one connection and one channel by name,
//! as RabbitMQ's management API has them.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde_json::Value;

use super::{
    ApiResult, St, close_reason, connections_by_id, no_content, ok, sees_channel, visible_vhost,
};
use crate::management::ApiError;
use crate::management::access::{Admin, Viewer};
use crate::management::json as j;
use crate::management::registry::ConnInfo;
use crate::shared::Shared;

/// The connections `keep` selects among those the user sees, by id.
pub(super) fn connections_where(
    s: &Shared,
    viewer: &Viewer,
    keep: impl Fn(&ConnInfo) -> bool,
) -> Value {
    let conns = connections_by_id(s);
    let mut list: Vec<&ConnInfo> = conns
        .values()
        .filter(|c| viewer.sees_connection(c) && keep(c))
        .collect();
    list.sort_by_key(|c| c.id);
    Value::Array(list.into_iter().map(j::connection).collect())
}

pub(super) async fn vhost_connections(
    State(s): St,
    viewer: Viewer,
    Path(vhost): Path<String>,
) -> ApiResult {
    visible_vhost(&s, &viewer, &vhost)?;
    ok(connections_where(&s, &viewer, |c| c.vhost == vhost))
}

pub(super) async fn user_connections(
    State(s): St,
    viewer: Viewer,
    Path(user): Path<String>,
) -> ApiResult {
    ok(connections_where(&s, &viewer, |c| c.user == user))
}

/// Closes every connection of the user (204 even when there are none, as RabbitMQ).
pub(super) async fn close_user_connections(
    State(s): St,
    _: Admin,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    s.registry.close_user(&user, close_reason(&headers));
    no_content()
}

/// The channels `keep` selects among those the user sees, in `vhost` or all.
pub(super) fn channels_where(
    s: &Shared,
    viewer: &Viewer,
    vhost: Option<&str>,
    keep: impl Fn(&ConnInfo, u16) -> bool,
) -> Result<Vec<Value>, ApiError> {
    let conns = connections_by_id(s);
    let mut out = Vec::new();
    for e in super::in_scope(s, viewer, vhost)? {
        let chans = e.lock().channel_snapshots();
        out.extend(
            chans
                .iter()
                .filter(|c| sees_channel(viewer, &conns, c.key.conn))
                .filter(|c| {
                    conns
                        .get(&c.key.conn)
                        .is_some_and(|info| keep(info, c.key.channel))
                })
                .map(|c| j::channel(e.name(), c, &conns)),
        );
    }
    Ok(out)
}

pub(super) async fn vhost_channels(
    State(s): St,
    viewer: Viewer,
    Path(vhost): Path<String>,
) -> ApiResult {
    ok(Value::Array(channels_where(
        &s,
        &viewer,
        Some(&vhost),
        |_, _| true,
    )?))
}

pub(super) async fn connection_channels(
    State(s): St,
    viewer: Viewer,
    Path(name): Path<String>,
) -> ApiResult {
    let conns = connections_by_id(&s);
    if !conns
        .values()
        .any(|c| c.name() == name && viewer.sees_connection(c))
    {
        return Err(ApiError::NotFound);
    }
    ok(Value::Array(channels_where(&s, &viewer, None, |c, _| {
        c.name() == name
    })?))
}

/// One channel by RabbitMQ's name for it, `"CONNECTION (NUMBER)"`.
pub(super) async fn channel(State(s): St, viewer: Viewer, Path(name): Path<String>) -> ApiResult {
    let found = channels_where(&s, &viewer, None, |c, n| {
        format!("{} ({n})", c.name()) == name
    })?;
    found.into_iter().next().map_or(Err(ApiError::NotFound), ok)
}
