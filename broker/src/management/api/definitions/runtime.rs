//! The runtime configuration of a definitions file: policies, exported as RabbitMQ
//! writes them (`policies`; operator policies are not part of RabbitMQ's definitions
//! and stay out) and imported with the same checks as `PUT /api/policies` (any invalid
//! policy refuses the whole file before anything changes); global parameters.

use serde_json::Value;

use super::refused;
use crate::management::ApiError;
use crate::policy::{self, Kind, Policy, PolicyBody};
use crate::shared::Shared;

/// The `policies` of an export: every vhost's, or one vhost's without `vhost` fields.
pub(super) fn export(s: &Shared, only: Option<&str>) -> Vec<Value> {
    let policies = s.policies.read();
    policies
        .user
        .iter()
        .filter(|(vhost, _)| only.is_none_or(|o| o == vhost.as_str()))
        .flat_map(|(_, by_name)| by_name.values())
        .filter_map(|p| {
            let mut v = serde_json::to_value(p).ok()?;
            if only.is_some()
                && let Value::Object(m) = &mut v
            {
                m.remove("vhost");
            }
            Some(v)
        })
        .collect()
}

/// The file's policies, checked; `into` puts them all in that vhost (a per-vhost
/// import), else each names its own.
pub(super) fn parse(list: &[Value], into: Option<&str>) -> Result<Vec<Policy>, ApiError> {
    list.iter()
        .map(|v| {
            let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
            let name = text("name").ok_or_else(|| refused("a policy without a name"))?;
            let vhost = match into {
                Some(vhost) => vhost.to_owned(),
                None => text("vhost")
                    .ok_or_else(|| refused(format!("policy '{name}' names no vhost")))?,
            };
            let body: PolicyBody = serde_json::from_value(v.clone())
                .map_err(|e| refused(format!("policy '{name}': {e}")))?;
            policy::validate(Kind::User, &vhost, &name, body)
                .map_err(|why| refused(format!("policy '{name}' in vhost '{vhost}': {why}")))
        })
        .collect()
}

/// Sets `policies` (replacing any of the same name) and applies them.
pub(super) async fn install(
    s: &std::sync::Arc<Shared>,
    policies: Vec<Policy>,
) -> Result<(), ApiError> {
    if policies.is_empty() {
        return Ok(());
    }
    crate::management::api::policies::change(s, move |all| {
        for p in policies {
            all.user
                .entry(p.vhost.clone())
                .or_default()
                .insert(p.name.clone(), p);
        }
    })
    .await
}

/// Keeps `globals` (name, value) as global parameters.
pub(super) async fn set_global_parameters(
    s: &std::sync::Arc<Shared>,
    globals: Vec<(String, Value)>,
) -> Result<(), ApiError> {
    if globals.is_empty() {
        return Ok(());
    }
    crate::management::api::parameters::change_globals(s, |p| p.extend(globals)).await
}
