//! Who may use the management API and what they see, as RabbitMQ's management plugin
//! decides it from the user's tags:
//!
//! - no management tag: 401 on every `/api` path, whatever the password;
//! - `management` and `policymaker`: the objects of the vhosts the user has
//!   permissions on, and only its own connections and channels;
//! - `monitoring`: every vhost, object and connection (read-only);
//! - `administrator`: everything, and the only one who may change anything or list
//!   users and permissions (403 for the others).
//!
//! The extractors here (`Viewer`, `Admin`) authenticate each request (HTTP basic
//! auth against the broker's users; loopback-only users such as `guest` only from
//! loopback) before a handler runs.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine;

use super::{ADMIN_TAG, ApiError, ConnInfo};
use crate::auth::Credentials;
use crate::shared::Shared;

/// The tags that let a user into the management API at all.
pub const MANAGEMENT_TAGS: [&str; 4] = ["management", "policymaker", "monitoring", ADMIN_TAG];

/// The tag that shows every vhost and connection without granting changes.
pub const MONITORING_TAG: &str = "monitoring";

/// A request by a user with a management tag: who it is and what it may see.
#[derive(Debug, Clone)]
pub(crate) struct Viewer {
    /// The user's name.
    pub(crate) name: String,
    /// `monitoring` or `administrator`: every vhost and every connection.
    sees_all: bool,
    /// The vhosts the user has permissions on: all that a `management` user sees.
    vhosts: HashSet<String>,
}

impl Viewer {
    /// Whether the user sees the objects of `vhost`.
    pub(crate) fn sees_vhost(&self, vhost: &str) -> bool {
        self.sees_all || self.vhosts.contains(vhost)
    }

    /// Whether the user sees a connection (and its channels): its own, or any with
    /// `monitoring` or `administrator`.
    pub(crate) fn sees_connection(&self, c: &ConnInfo) -> bool {
        self.sees_all || c.user == self.name
    }
}

/// A request by a user with the `administrator` tag: the user's name.
#[derive(Debug, Clone)]
pub(crate) struct Admin(pub(crate) String);

/// Checks the request's credentials: the user's name.
fn authenticate(parts: &Parts, shared: &Shared) -> Result<String, ApiError> {
    let (user, password) = basic_credentials(parts).ok_or(ApiError::Unauthorized)?;
    let users = shared.users.read();
    let ok = match parts.extensions.get::<ConnectInfo<SocketAddr>>() {
        Some(ConnectInfo(peer)) => {
            let creds = Credentials {
                user: user.clone(),
                password,
            };
            users.authenticate(&creds, "PLAIN", *peer).is_ok()
        }
        None => users.check_password(&user, &password),
    };
    shared.auth_attempts.http(ok);
    if ok {
        Ok(user)
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// Authenticates the request and requires a management tag (401 without one).
pub(crate) fn viewer(parts: &Parts, shared: &Shared) -> Result<Viewer, ApiError> {
    let name = authenticate(parts, shared)?;
    let users = shared.users.read();
    if !MANAGEMENT_TAGS.iter().any(|t| users.has_tag(&name, t)) {
        return Err(ApiError::NotManagementUser);
    }
    let sees_all = users.has_tag(&name, MONITORING_TAG) || users.has_tag(&name, ADMIN_TAG);
    let vhosts = if sees_all {
        HashSet::new()
    } else {
        users
            .list_permissions()
            .into_iter()
            .filter(|(u, _, _)| *u == name)
            .map(|(_, v, _)| v)
            .collect()
    };
    Ok(Viewer {
        name,
        sees_all,
        vhosts,
    })
}

fn basic_credentials(parts: &Parts) -> Option<(String, String)> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

impl FromRequestParts<Arc<Shared>> for Viewer {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        shared: &Arc<Shared>,
    ) -> Result<Self, Self::Rejection> {
        viewer(parts, shared)
    }
}

impl FromRequestParts<Arc<Shared>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        shared: &Arc<Shared>,
    ) -> Result<Self, Self::Rejection> {
        let user = authenticate(parts, shared)?;
        if shared.users.read().has_tag(&user, ADMIN_TAG) {
            Ok(Admin(user))
        } else {
            Err(ApiError::Forbidden)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_decoded() {
        let req = axum::http::Request::builder()
            .header("authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")
            .body(())
            .expect("request");
        let (parts, ()) = req.into_parts();
        assert_eq!(
            basic_credentials(&parts),
            Some(("guest".to_owned(), "guest".to_owned()))
        );
        let req = axum::http::Request::builder()
            .header("authorization", "Bearer x")
            .body(())
            .expect("request");
        assert_eq!(basic_credentials(&req.into_parts().0), None);
    }
}
