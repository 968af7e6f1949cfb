//! `/api/parameters` and `/api/global-parameters`, as a RabbitMQ node without the
//! federation and shovel plugins has them.
//!
//! - Runtime parameters: the one component this broker has is `vhost-limits` (a
//!   vhost's limits as the parameter `limits`, the same limits as `/api/vhost-limits`,
//!   enforced; see [`crate::resource_limits`]). Any other component is refused with
//!   RabbitMQ's 400 "component ... not found", as from a node without its plugin.
//! - Global parameters: named JSON values, kept and listed (see
//!   [`crate::global_parameters`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::{ApiResult, St, body_json, created, no_content, ok, vhost_entry};
use crate::management::ApiError;
use crate::management::access::{Admin, Viewer};
use crate::resource_limits::VHOST_LIMITS;
use crate::shared::Shared;

const VHOST_LIMITS_COMPONENT: &str = "vhost-limits";
/// The name of a vhost's limits parameter.
const LIMITS: &str = "limits";

fn not_found_component(component: &str) -> ApiError {
    ApiError::BadRequest(format!(
        "Validation failed\n\ncomponent {component} not found\n"
    ))
}

/// The `vhost-limits` parameters the viewer sees (of `only`, if given).
fn limits_parameters(s: &Shared, viewer: &Viewer, only: Option<&str>) -> Vec<Value> {
    s.resource_limits
        .read()
        .vhosts
        .iter()
        .filter(|(vhost, m)| {
            !m.is_empty() && viewer.sees_vhost(vhost) && only.is_none_or(|o| o == vhost.as_str())
        })
        .map(|(vhost, m)| {
            json!({ "value": m, "vhost": vhost, "component": VHOST_LIMITS_COMPONENT, "name": LIMITS })
        })
        .collect()
}

pub(super) async fn parameters(State(s): St, v: Viewer) -> ApiResult {
    ok(Value::Array(limits_parameters(&s, &v, None)))
}

pub(super) async fn component(State(s): St, v: Viewer, Path(component): Path<String>) -> ApiResult {
    let list = if component == VHOST_LIMITS_COMPONENT {
        limits_parameters(&s, &v, None)
    } else {
        Vec::new()
    };
    ok(Value::Array(list))
}

pub(super) async fn component_in(
    State(s): St,
    v: Viewer,
    Path((component, vhost)): Path<(String, String)>,
) -> ApiResult {
    vhost_entry(&s, &vhost)?;
    let list = if component == VHOST_LIMITS_COMPONENT {
        limits_parameters(&s, &v, Some(&vhost))
    } else {
        Vec::new()
    };
    ok(Value::Array(list))
}

pub(super) async fn parameter(
    State(s): St,
    v: Viewer,
    Path((component, vhost, name)): Path<(String, String, String)>,
) -> ApiResult {
    if component != VHOST_LIMITS_COMPONENT || name != LIMITS {
        return Err(ApiError::NotFound);
    }
    limits_parameters(&s, &v, Some(&vhost))
        .into_iter()
        .next()
        .map_or(Err(ApiError::NotFound), ok)
}

pub(super) async fn put_parameter(
    State(s): St,
    _: Admin,
    Path((component, vhost, name)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult {
    vhost_entry(&s, &vhost)?;
    if component != VHOST_LIMITS_COMPONENT {
        return Err(not_found_component(&component));
    }
    if name != LIMITS {
        return Err(ApiError::BadRequest(format!(
            "Validation failed\n\na vhost's limits are the parameter '{LIMITS}', not '{name}'\n"
        )));
    }
    let body = body_json(&body)?;
    let Some(Value::Object(value)) = body.get("value") else {
        return Err(ApiError::BadRequest("[{key_missing,value}]".into()));
    };
    let unknown: Vec<String> = value
        .iter()
        .filter(|(k, _)| !VHOST_LIMITS.contains(&k.as_str()))
        .map(|(k, v)| format!("{{<<\"{k}\">>,{v}}}"))
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "Validation failed\n\nUnrecognised terms [{}] in limits\n",
            unknown.join(",")
        )));
    }
    let mut limits = BTreeMap::new();
    for (k, v) in value {
        let Some(n) = v.as_i64() else {
            return Err(ApiError::BadRequest(format!(
                "Validation failed\n\n{k} should be a number, actually was {v}\n"
            )));
        };
        limits.insert(k.clone(), n);
    }
    let existed = s.resource_limits.read().vhosts.contains_key(&vhost);
    super::limits::change(&s, move |l| {
        if limits.is_empty() {
            l.vhosts.remove(&vhost);
        } else {
            l.vhosts.insert(vhost, limits);
        }
    })
    .await?;
    if existed { no_content() } else { created() }
}

pub(super) async fn delete_parameter(
    State(s): St,
    _: Admin,
    Path((component, vhost, name)): Path<(String, String, String)>,
) -> ApiResult {
    vhost_entry(&s, &vhost)?;
    if component != VHOST_LIMITS_COMPONENT
        || name != LIMITS
        || !s.resource_limits.read().vhosts.contains_key(&vhost)
    {
        return Err(ApiError::NotFound);
    }
    super::limits::change(&s, move |l| {
        l.vhosts.remove(&vhost);
    })
    .await?;
    no_content()
}

// ----- global parameters ---------------------------------------------------------------

fn global_json(name: &str, value: &Value) -> Value {
    json!({ "value": value, "name": name })
}

pub(super) async fn global_parameters(State(s): St, _: Admin) -> ApiResult {
    let params = s.global_parameters.lock();
    ok(Value::Array(
        params.iter().map(|(n, v)| global_json(n, v)).collect(),
    ))
}

pub(super) async fn global_parameter(
    State(s): St,
    _: Admin,
    Path(name): Path<String>,
) -> ApiResult {
    let params = s.global_parameters.lock();
    params
        .get(&name)
        .map_or(Err(ApiError::NotFound), |v| ok(global_json(&name, v)))
}

/// Changes the global parameters and saves them, off the async runtime.
pub(super) async fn change_globals<T: Send + 'static>(
    s: &Arc<Shared>,
    f: impl FnOnce(&mut crate::global_parameters::GlobalParameters) -> T + Send + 'static,
) -> Result<T, ApiError> {
    super::off_runtime(s, "the global parameters", move |shared| {
        shared.change_global_parameters(f)
    })
    .await
}

pub(super) async fn put_global_parameter(
    State(s): St,
    _: Admin,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let body = body_json(&body)?;
    let Some(value) = body.get("value").cloned() else {
        return Err(ApiError::BadRequest("[{key_missing,value}]".into()));
    };
    let existed = change_globals(&s, move |p| p.insert(name, value).is_some()).await?;
    if existed { no_content() } else { created() }
}

pub(super) async fn delete_global_parameter(
    State(s): St,
    _: Admin,
    Path(name): Path<String>,
) -> ApiResult {
    let removed = change_globals(&s, move |p| p.remove(&name).is_some()).await?;
    if removed {
        no_content()
    } else {
        Err(ApiError::NotFound)
    }
}
