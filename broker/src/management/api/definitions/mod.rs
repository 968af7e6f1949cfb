//! `/api/definitions` and `/api/definitions/{vhost}`: the broker's topology and users
//! exported and imported in RabbitMQ's definitions format, so that a file exported from
//! RabbitMQ (3.10's, with tags as a comma-separated string, or 3.13/4.x's, with tags as
//! a list) loads here and one exported here loads into RabbitMQ. Administrators only.
//!
//! - `GET` ([`export`]): users with their password hashes, vhosts, permissions, queues
//!   (not exclusive ones), exchanges (not the default exchange nor `amq.*`) and bindings
//!   (not the default exchange's implicit ones), as RabbitMQ exports them; vhost limits
//!   as `vhost-limits` parameters and user limits in each user's `limits`; policies,
//!   global parameters and topic permissions. Other parameters are an empty array:
//!   the broker has none. `?download=NAME` asks for an attachment, as RabbitMQ's UI does.
//!   The per-vhost form has no users, vhosts or permissions and no `vhost` fields.
//! - `POST` ([`import`]): a JSON body, or the management UI's multipart upload
//!   ([`upload`]). What is missing is created and persisted as the same objects made
//!   over AMQP or the API are; what exists is kept as it is (RabbitMQ 3.10 and 4.0 both
//!   answer 204 and keep an existing queue or exchange whose properties differ); users
//!   are created or replaced with their hash, limits and policies set. Anything the
//!   broker cannot hold (other parameters, unknown limits, another hashing algorithm,
//!   a policy or topic permission the API would refuse) refuses the
//!   whole file with 400 before anything changes: nothing is accepted and dropped.

mod export;
mod file;
mod import;
mod runtime;
mod upload;

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::IntoResponse;

use super::{ApiResult, St, no_content, vhost_entry};
use crate::management::ApiError;
use crate::management::access::Admin;

/// `GET /api/definitions`.
pub(in crate::management::api) async fn definitions(
    State(s): St,
    _: Admin,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    answer(export::cluster(&s), &query)
}

/// `GET /api/definitions/{vhost}`.
pub(in crate::management::api) async fn vhost_definitions(
    State(s): St,
    _: Admin,
    Path(vhost): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    let e = vhost_entry(&s, &vhost)?;
    answer(export::vhost(&s, &e), &query)
}

/// `POST /api/definitions`: 204 once everything in the file exists.
pub(in crate::management::api) async fn import_definitions(
    State(s): St,
    Admin(user): Admin,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let file = file::parse(upload::json_part(&headers, &body)?)?;
    import::cluster(&s, &user, file).await?;
    no_content()
}

/// `POST /api/definitions/{vhost}`: the file's queues, exchanges and bindings into
/// this vhost (their own `vhost` fields, if any, are ignored as RabbitMQ ignores
/// them, and so are users, vhosts and permissions).
pub(in crate::management::api) async fn import_vhost_definitions(
    State(s): St,
    _: Admin,
    Path(vhost): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let e = vhost_entry(&s, &vhost)?;
    let file = file::parse(upload::json_part(&headers, &body)?)?;
    let (limits, policies) = import::vhost(&e, file)?;
    import::set_limits(&s, limits).await?;
    runtime::install(&s, policies).await?;
    no_content()
}

/// The JSON, as an attachment when `?download=NAME` asks for one.
fn answer(v: serde_json::Value, query: &HashMap<String, String>) -> ApiResult {
    let mut resp = axum::Json(v).into_response();
    if let Some(name) = query.get("download") {
        // Only characters that need no quoting in a header value or a file name.
        let safe: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
            .collect();
        let safe = if safe.is_empty() {
            "definitions.json".to_owned()
        } else {
            safe
        };
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{safe}\"")) {
            resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
        }
    }
    Ok(resp)
}

/// 400 for a file the broker cannot take as a whole.
fn refused(reason: impl Into<String>) -> ApiError {
    ApiError::BadRequest(reason.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_asks_for_an_attachment_with_a_harmless_name() {
        let query = HashMap::from([("download".to_owned(), "my defs/../x\".json".to_owned())]);
        let resp = answer(serde_json::json!({}), &query).expect("answer");
        assert_eq!(
            resp.headers().get(header::CONTENT_DISPOSITION),
            Some(&HeaderValue::from_static(
                "attachment; filename=\"mydefs..x.json\""
            ))
        );
        let plain = answer(serde_json::json!({}), &HashMap::new()).expect("answer");
        assert!(plain.headers().get(header::CONTENT_DISPOSITION).is_none());
    }
}
