//! The management HTTP API and Prometheus metrics, on a port of their own, shaped
//! like RabbitMQ's management and prometheus plugins so that scripts and dashboards
//! written for RabbitMQ read them.
//!
//! - `/api/...`: JSON with RabbitMQ's field names for what this broker has. HTTP basic
//!   auth against the broker's users (loopback-only users such as `guest` only from
//!   loopback): any user may read, changes need the `administrator` tag (401 for
//!   missing or bad credentials, 403 for a user without the tag).
//! - `/metrics`: Prometheus text exposition, without auth, as RabbitMQ's plugin.
//!
//! With the broker's TLS certificate and `management_tls`, the same is served as
//! HTTPS (see [`crate::tls`]).
//!
//! Every vhost is served: listings cover them all (each object with its `vhost`),
//! `/api/queues/{vhost}` and the like one; vhosts are created and deleted with
//! `PUT`/`DELETE /api/vhosts/{name}`.
//!
//! The `broker ctl` commands ([`crate::ctl`]) are a client of this API.

mod api;
mod json;
mod metrics;
pub(crate) mod registry;

pub use registry::ConnInfo;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use base64::Engine;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::Credentials;
use crate::server::Shared;

/// The product name the API reports.
pub const PRODUCT_NAME: &str = "amqp-rpc broker";
/// The node name the API reports (RabbitMQ reports `rabbit@HOST`).
pub const NODE_NAME: &str = "amqp-rpc@localhost";
/// The tag a user needs to change anything through the API.
pub const ADMIN_TAG: &str = "administrator";

/// An API error, answered with RabbitMQ's `{"error": ..., "reason": ...}` body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Missing or bad credentials (401).
    #[error("Login failed")]
    Unauthorized,
    /// Authenticated but not an administrator (403).
    #[error("Not administrator user")]
    Forbidden,
    /// No such object (404).
    #[error("Not Found")]
    NotFound,
    /// A malformed request (400).
    #[error("{0}")]
    BadRequest(String),
    /// Something this broker does not do (501).
    #[error("{0}")]
    NotImplemented(String),
    /// The broker failed to do it (500), e.g. a vhost's data could not be written.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Unauthorized => "not_authorized",
            Self::Forbidden => "not_authorised",
            Self::NotFound => "Object Not Found",
            Self::BadRequest(_) => "bad_request",
            Self::NotImplemented(_) => "not_implemented",
            Self::Internal(_) => "internal_server_error",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.kind(), "reason": self.to_string() });
        let mut resp = (self.status(), axum::Json(body)).into_response();
        if self == Self::Unauthorized {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"RabbitMQ Management\""),
            );
        }
        resp
    }
}

/// A request with valid credentials: the user's name.
#[derive(Debug, Clone)]
pub(crate) struct Reader(#[allow(dead_code)] pub(crate) String);

/// A request by a user with the `administrator` tag: the user's name.
#[derive(Debug, Clone)]
pub(crate) struct Admin(pub(crate) String);

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
    if ok {
        Ok(user)
    } else {
        Err(ApiError::Unauthorized)
    }
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

impl FromRequestParts<Arc<Shared>> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        shared: &Arc<Shared>,
    ) -> Result<Self, Self::Rejection> {
        authenticate(parts, shared).map(Reader)
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

/// Serves the API on `listener` until `shutdown` turns true: HTTPS when given a TLS
/// acceptor, else plain HTTP.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = api::router(shared).into_make_service_with_connect_info::<SocketAddr>();
    let stop = async move {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
    };
    let served = match tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
        }
        Some(acceptor) => match crate::tls::HttpsListener::new(listener, acceptor) {
            // `tap_io` only so that axum hands the peer's SocketAddr to `ConnectInfo`
            // (it does so for its own listeners and for tapped ones).
            Ok(https) => {
                axum::serve(https.tap_io(|_| {}), app)
                    .with_graceful_shutdown(stop)
                    .await
            }
            Err(err) => Err(err),
        },
    };
    if let Err(err) = served {
        tracing::warn!(%err, "management listener failed");
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
