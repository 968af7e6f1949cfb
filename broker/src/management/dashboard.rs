//! The dashboard in the browser: a small page of the broker's own (overview with
//! rates and a chart, queues, connections, exchanges; purge, delete and close for
//! administrators), served by the management listener at `/`. Static files embedded
//! in the binary (`dashboard/`), no build step; the page uses only the JSON API, with
//! the user's credentials as HTTP basic auth, so it can do nothing the API would not
//! let that user do.

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const INDEX: &str = include_str!("dashboard/index.html");
const APP: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/style.css");

/// Scripts, styles and API calls from this origin only; no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn file(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    resp
}

/// The page and its two files.
pub(super) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { file(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/index.html",
            get(|| async { file(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/dashboard/app.js",
            get(|| async { file(APP, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/dashboard/style.css",
            get(|| async { file(STYLE, "text/css; charset=utf-8") }),
        )
}

/// A 401 to the page's own requests (which say `X-Requested-With: XMLHttpRequest`)
/// goes without `WWW-Authenticate`: with it, the browser would hold the request and
/// ask for credentials itself instead of letting the page say what went wrong. Other
/// clients (curl, rabbitmqadmin) get the header as from RabbitMQ.
pub(super) async fn no_auth_prompt(req: Request, next: Next) -> Response {
    let from_page = req
        .headers()
        .get("x-requested-with")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"XMLHttpRequest"));
    let mut resp = next.run(req).await;
    if from_page {
        resp.headers_mut().remove(header::WWW_AUTHENTICATE);
    }
    resp
}
