//! The management HTTP API and Prometheus metrics, on a port of their own, shaped
//! like RabbitMQ's management and prometheus plugins so that scripts and dashboards
//! written for RabbitMQ read them.
//!
//! - `/api/...`: JSON with RabbitMQ's field names for what this broker has. HTTP basic
//!   auth against the broker's users; what a user sees and may do follows its tags as
//!   in RabbitMQ (see [`access`]): listings cover only what the user may see, changes
//!   need the `administrator` tag.
//! - `/metrics`: Prometheus text exposition, without auth, as RabbitMQ's plugin:
//!   aggregated totals there, per-queue detail on `/metrics/per-object`.
//! - `/`: the dashboard in the browser ([`dashboard`]), a client of `/api`.
//!
//! With the broker's TLS certificate and `management_tls`, the same is served as
//! HTTPS (see [`crate::tls`]).
//!
//! The listener caps its connections and closes idle and half-sent ones
//! ([`ManagementLimits`]), so that the AMQP listener always has descriptors left.
//!
//! Every vhost is served: listings cover all those the user sees (each object with its `vhost`),
//! `/api/queues/{vhost}` and the like one; vhosts are created and deleted with
//! `PUT`/`DELETE /api/vhosts/{name}`.
//!
//! The `broker ctl` commands ([`crate::ctl`]) are a client of this API.

pub mod access;
mod api;
mod dashboard;
mod json;
mod listener;
mod metrics;
pub(crate) mod rates;
pub(crate) mod registry;
mod sampler;

pub use listener::ManagementLimits;
pub use registry::ConnInfo;

use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::shared::Shared;

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
    /// Good credentials of a user without a management tag (401, as RabbitMQ).
    #[error("Not management user")]
    NotManagementUser,
    /// A vhost in the path the user has no permissions on (401, as RabbitMQ).
    #[error("User not authorised to access virtual host")]
    VhostAccessRefused,
    /// Authenticated but not an administrator (403).
    #[error("Not administrator user")]
    Forbidden,
    /// No such object (404).
    #[error("Not Found")]
    NotFound,
    /// A malformed request (400).
    #[error("{0}")]
    BadRequest(String),
    /// The broker failed to do it (500), e.g. a vhost's data could not be written.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized | Self::NotManagementUser | Self::VhostAccessRefused => {
                StatusCode::UNAUTHORIZED
            }
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Unauthorized | Self::NotManagementUser | Self::VhostAccessRefused => {
                "not_authorized"
            }
            Self::Forbidden => "not_authorised",
            Self::NotFound => "Object Not Found",
            Self::BadRequest(_) => "bad_request",
            Self::Internal(_) => "internal_server_error",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.kind(), "reason": self.to_string() });
        let mut resp = (self.status(), axum::Json(body)).into_response();
        if self.status() == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"RabbitMQ Management\""),
            );
        }
        resp
    }
}

/// Serves the API on `listener` until `shutdown` turns true: HTTPS when given a TLS
/// acceptor, else plain HTTP; within `limits` (see [`ManagementLimits`]).
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    limits: ManagementLimits,
    shutdown: watch::Receiver<bool>,
) {
    tokio::spawn(sampler::run(Arc::clone(&shared), shutdown.clone()));
    listener::run(listener, tls, api::router(shared), limits, shutdown).await;
}
