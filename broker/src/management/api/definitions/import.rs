//! Importing a definitions file (`POST /api/definitions`): parse it, check all of it,
//! then create what is missing in RabbitMQ's order (users, vhosts, permissions, then
//! per vhost exchanges, queues and bindings) and persist it as the broker persists
//! the same changes made over the API or AMQP (the user table saved, each vhost's
//! store committed).
//!
//! Everything that can be refused is refused before the first change: a malformed
//! file, what the broker has no place for (parameters other than vhost limits, another
//! hashing algorithm), a policy or topic permission the API would refuse, a name
//! AMQP cannot carry, an object in a
//! vhost that neither exists nor is in the file, a permission of an unknown user, a
//! binding whose source or destination will not exist (400, as RabbitMQ 4.0's
//! `resources_missing`). What can only fail while being applied (a queue the broker
//! refuses to declare) stops the import with 400 and leaves what was already made.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use amq_protocol::types::FieldTable;
use serde_json::{Map, Value};

use super::file::File;
use super::refused;
use crate::auth::Permission;
use crate::management::ApiError;
use crate::management::api::users::parse_tags;
use crate::management::api::{MAX_NAME, save_users, short_name};
use crate::management::json as j;
use crate::resource_limits::{USER_LIMITS, VHOST_LIMITS};
use crate::shared::Shared;
use crate::vhost::{ExchangeOptions, QueueOptions, VHost, VHostEntry};

/// The connection id imported queues are declared as: no connection has it (as the
/// API's own declarations), so no queue is tied to a connection.
const IMPORT_CONN: u64 = 0;

/// RabbitMQ's own global parameters, which describe the exporting cluster (its name,
/// its id, and since 3.13 its tags) rather than anything to recreate here, so an
/// import skips them. RabbitMQ 3.10 exports `internal_cluster_id`, 4.0 also
/// `cluster_tags`; any other global parameter is kept.
const CLUSTER_PARAMETERS: [&str; 3] = ["cluster_name", "cluster_tags", "internal_cluster_id"];

/// One vhost's exchanges, queues and bindings, checked and converted.
#[derive(Debug, Default)]
struct Topology {
    exchanges: Vec<(String, ExchangeOptions)>,
    queues: Vec<(String, QueueOptions)>,
    bindings: Vec<Bind>,
}

#[derive(Debug)]
struct Bind {
    source: String,
    destination: String,
    to_queue: bool,
    routing_key: String,
    arguments: FieldTable,
}

fn arguments(what: &str, args: Map<String, Value>) -> Result<FieldTable, ApiError> {
    j::amqp_table(&Value::Object(args)).ok_or_else(|| {
        refused(format!(
            "the arguments of {what} have a key over {MAX_NAME} bytes"
        ))
    })
}

/// 400 if the file holds what the broker has no place for: never accepted and dropped.
/// A per-vhost import (`users: false`) looks at no users.
fn unsupported(file: &File, users: bool) -> Result<(), ApiError> {
    let mut problems = Vec::new();
    let mut count = |n: usize, what: &str, why: &str| {
        if n > 0 {
            problems.push(format!("{n} {what} ({why})"));
        }
    };
    count(
        file.parameters
            .iter()
            .filter(|p| !is_vhost_limits(p))
            .count(),
        "parameters",
        "this broker has no runtime parameters but vhost-limits",
    );
    for u in file.users.iter().filter(|_| users) {
        if let Err(why) = limits_map(&u.limits, &USER_LIMITS) {
            problems.push(format!("limits of user '{}' ({why})", u.name));
        }
    }
    for p in file.parameters.iter().filter(|p| is_vhost_limits(p)) {
        if let Err(why) = limits_map(p.get("value").unwrap_or(&Value::Null), &VHOST_LIMITS) {
            problems.push(format!("vhost-limits ({why})"));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(refused(format!(
        "nothing was imported: the file has {}",
        problems.join("; ")
    )))
}

/// Whether a runtime parameter is a vhost's limits, which RabbitMQ exports as the
/// parameter `limits` of the component `vhost-limits`.
fn is_vhost_limits(p: &Value) -> bool {
    p.get("component").and_then(Value::as_str) == Some("vhost-limits")
        && p.get("name").and_then(Value::as_str) == Some("limits")
}

/// A limits object (`{"max-connections": 10}`) of the limits `known`: why not, if not.
fn limits_map(v: &Value, known: &[&str]) -> Result<BTreeMap<String, i64>, String> {
    let map = match v {
        // RabbitMQ writes a vhost whose limits were all cleared as `[]`.
        Value::Null => return Ok(BTreeMap::new()),
        Value::Array(a) if a.is_empty() => return Ok(BTreeMap::new()),
        Value::Object(m) => m,
        _ => return Err("limits must be an object".into()),
    };
    map.iter()
        .map(|(k, v)| {
            if !known.contains(&k.as_str()) {
                return Err(format!("unknown limit '{k}'"));
            }
            let n = v
                .as_i64()
                .ok_or_else(|| format!("{k} must be an integer"))?;
            Ok((k.clone(), n))
        })
        .collect()
}

/// Limits by vhost or user name.
type LimitsOf = Vec<(String, BTreeMap<String, i64>)>;

/// The limits of a file: of vhosts, then of users.
pub(super) type Limits = (LimitsOf, LimitsOf);

/// The file's vhost limits (into `into` for a per-vhost file) and user limits.
fn resource_limits(file: &File, into: Option<&str>) -> Limits {
    let vhosts = file
        .parameters
        .iter()
        .filter(|p| is_vhost_limits(p))
        .filter_map(|p| {
            let vhost = into.or_else(|| p.get("vhost").and_then(Value::as_str))?;
            let map = limits_map(p.get("value").unwrap_or(&Value::Null), &VHOST_LIMITS).ok()?;
            Some((vhost.to_owned(), map))
        })
        .collect();
    let users = file
        .users
        .iter()
        .filter_map(|u| Some((u.name.clone(), limits_map(&u.limits, &USER_LIMITS).ok()?)))
        .filter(|(_, m)| !m.is_empty())
        .collect();
    (vhosts, users)
}

/// Sets the limits the file has (each vhost's or user's replaced whole, as an import
/// replaces a RabbitMQ parameter) and saves them.
pub(super) async fn set_limits(
    s: &std::sync::Arc<Shared>,
    (vhosts, users): Limits,
) -> Result<(), ApiError> {
    if vhosts.is_empty() && users.is_empty() {
        return Ok(());
    }
    let mut limits = s.resource_limits.read().clone();
    limits.vhosts.extend(vhosts);
    limits.users.extend(users);
    s.set_resource_limits(limits);
    let shared = std::sync::Arc::clone(s);
    tokio::task::spawn_blocking(move || shared.save_resource_limits())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(format!("could not save the limits: {e}")))
}

/// The file's queues, exchanges and bindings by vhost: `into` for every object when
/// given (the per-vhost form), else each object's own `vhost`.
fn topology(file: &mut File, into: Option<&str>) -> Result<BTreeMap<String, Topology>, ApiError> {
    let mut by_vhost: BTreeMap<String, Topology> = BTreeMap::new();
    let vhost_of = |own: Option<String>, what: &str| -> Result<String, ApiError> {
        match (into, own) {
            (Some(v), _) => Ok(v.to_owned()),
            (None, Some(v)) => Ok(v),
            (None, None) => Err(refused(format!("{what} has no vhost"))),
        }
    };
    for x in std::mem::take(&mut file.exchanges) {
        let what = format!("exchange '{}'", x.name);
        short_name("exchange name", &x.name)?;
        let vhost = vhost_of(x.vhost, &what)?;
        let opts = ExchangeOptions {
            kind: x.kind,
            passive: false,
            durable: x.durable,
            auto_delete: x.auto_delete,
            internal: x.internal,
            arguments: arguments(&what, x.arguments)?,
        };
        by_vhost
            .entry(vhost)
            .or_default()
            .exchanges
            .push((x.name, opts));
    }
    for q in std::mem::take(&mut file.queues) {
        let what = format!("queue '{}'", q.name);
        short_name("queue name", &q.name)?;
        if q.name.is_empty() {
            return Err(refused("a queue in the file has no name"));
        }
        let vhost = vhost_of(q.vhost, &what)?;
        let opts = QueueOptions {
            passive: false,
            durable: q.durable,
            exclusive: false,
            auto_delete: q.auto_delete,
            arguments: arguments(&what, q.arguments)?,
        };
        by_vhost
            .entry(vhost)
            .or_default()
            .queues
            .push((q.name, opts));
    }
    for b in std::mem::take(&mut file.bindings) {
        let what = format!("the binding of '{}' to '{}'", b.source, b.destination);
        for name in [&b.source, &b.destination] {
            short_name("binding source or destination", name)?;
        }
        short_name("routing key", &b.routing_key)?;
        let to_queue = match b.destination_type.as_str() {
            "queue" => true,
            "exchange" => false,
            other => {
                return Err(refused(format!(
                    "{what}: destination_type '{other}' is neither queue nor exchange"
                )));
            }
        };
        let vhost = vhost_of(b.vhost, &what)?;
        let bind = Bind {
            source: b.source,
            destination: b.destination,
            to_queue,
            routing_key: b.routing_key,
            arguments: arguments(&what, b.arguments)?,
        };
        by_vhost.entry(vhost).or_default().bindings.push(bind);
    }
    Ok(by_vhost)
}

/// 400 `resources_missing` (as RabbitMQ 4.0) for a binding whose source or
/// destination neither exists in the vhost nor is declared by the file.
/// `v`: the vhost as it is (`None`: one the import creates).
fn check_bindings(vhost: &str, t: &Topology, v: Option<&VHost>) -> Result<(), ApiError> {
    let has_exchange = |n: &str| v.is_some_and(|v| v.has_exchange(n));
    let has_queue = |n: &str| v.is_some_and(|v| v.has_queue(n));
    let exchanges: HashSet<&str> = t.exchanges.iter().map(|(n, _)| n.as_str()).collect();
    let queues: HashSet<&str> = t.queues.iter().map(|(n, _)| n.as_str()).collect();
    let mut missing = BTreeSet::new();
    for b in &t.bindings {
        // The default exchange's bindings are implicit: nothing to check or make.
        if b.source.is_empty() {
            continue;
        }
        if !exchanges.contains(b.source.as_str()) && !has_exchange(&b.source) {
            missing.insert(format!("exchange '{}'", b.source));
        }
        let found = if b.to_queue {
            queues.contains(b.destination.as_str()) || has_queue(&b.destination)
        } else {
            exchanges.contains(b.destination.as_str()) || has_exchange(&b.destination)
        };
        if !found {
            let kind = if b.to_queue { "queue" } else { "exchange" };
            missing.insert(format!("{kind} '{}'", b.destination));
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = missing.into_iter().collect();
    Err(refused(format!(
        "resources_missing: bindings refer to {} in vhost '{vhost}', which neither exist nor are in the file",
        list.join(", ")
    )))
}

/// Declares the vhost's exchanges, queues and bindings, then commits its store.
/// An object that exists stays as it is, as RabbitMQ keeps it (a warning says so
/// when its properties differ).
fn apply(e: &VHostEntry, t: Topology) -> Result<(), ApiError> {
    let vhost = e.name();
    let failed = |what: String, err: crate::error::AmqpError| {
        refused(format!("{what} in vhost '{vhost}': {}", err.text))
    };
    let mut v = e.lock();
    let result = (|| {
        for (name, opts) in t.exchanges {
            if name.is_empty() {
                continue;
            }
            let existed = v.has_exchange(&name);
            match v.declare_exchange(&name, opts) {
                Ok(()) => {}
                Err(err) if existed => {
                    tracing::warn!(%vhost, exchange = %name, reason = %err.text, "definitions import: kept the existing exchange");
                }
                Err(err) => return Err(failed(format!("exchange '{name}'"), err)),
            }
        }
        for (name, opts) in t.queues {
            let existed = v.has_queue(&name);
            let declared = if name.starts_with("amq.") {
                // A server-named queue exported by name: declared under it.
                v.declare_server_named_queue(IMPORT_CONN, name.as_str().into(), opts)
            } else {
                v.declare_queue(IMPORT_CONN, &name, opts)
            };
            match declared {
                Ok(_) => {}
                Err(err) if existed => {
                    tracing::warn!(%vhost, queue = %name, reason = %err.text, "definitions import: kept the existing queue");
                }
                Err(err) => return Err(failed(format!("queue '{name}'"), err)),
            }
        }
        for b in t.bindings {
            if b.source.is_empty() {
                continue;
            }
            let what = format!("the binding of '{}' to '{}'", b.source, b.destination);
            let bound = if b.to_queue {
                v.bind_queue(
                    IMPORT_CONN,
                    &b.destination,
                    &b.source,
                    &b.routing_key,
                    b.arguments,
                )
            } else {
                v.bind_exchange(&b.destination, &b.source, &b.routing_key, b.arguments)
            };
            bound.map_err(|err| failed(what, err))?;
        }
        Ok(())
    })();
    v.commit_store();
    result
}

/// `POST /api/definitions`.
pub(super) async fn cluster(
    s: &std::sync::Arc<Shared>,
    acting_user: &str,
    mut file: File,
) -> Result<(), ApiError> {
    unsupported(&file, true)?;
    let users = file
        .users
        .iter()
        .map(|u| {
            short_name("user name", &u.name)?;
            let hash = crate::auth::decode_hash(&u.password_hash, u.hashing_algorithm.as_deref())
                .map_err(|e| refused(format!("user '{}': {e}", u.name)))?;
            Ok((u.name.clone(), hash, parse_tags(Some(&u.tags))?))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let new_vhosts: Vec<String> = file.vhosts.iter().map(|v| v.name.clone()).collect();
    let metadata = file
        .vhosts
        .iter()
        .map(|v| {
            crate::vhost_metadata::Metadata::from_json(&Value::Object(v.rest.clone()))
                .map(|m| (v.name.clone(), m))
                .map_err(|why| refused(format!("vhost '{}': {why}", v.name)))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    for name in &new_vhosts {
        short_name("vhost name", name)?;
        if name.is_empty() {
            return Err(refused("a vhost name is 1 to 255 bytes"));
        }
    }
    let topology = topology(&mut file, None)?;
    let policies = super::runtime::parse(&file.policies, None)?;
    {
        let known = s.users.read();
        let vhost_known = |v: &str| new_vhosts.iter().any(|n| n == v) || s.vhosts.get(v).is_some();
        let user_known = |u: &str| {
            users.iter().any(|(n, _, _)| n == u) || known.list_users().iter().any(|(n, _)| n == u)
        };
        for t in &file.topic_permissions {
            if !vhost_known(&t.vhost) || !user_known(&t.user) {
                return Err(refused(format!(
                    "topic permission of '{}' in '{}': no such user or vhost",
                    t.user, t.vhost
                )));
            }
            crate::auth::TopicPermission::new(&t.user, &t.vhost, &t.write, &t.read)
                .map_err(|e| refused(e.to_string()))?;
        }
        for p in &policies {
            if !vhost_known(&p.vhost) {
                return Err(refused(format!(
                    "policy '{}': no_such_vhost: '{}'",
                    p.name, p.vhost
                )));
            }
        }
        for p in &file.permissions {
            if !user_known(&p.user) {
                return Err(refused(format!("no_such_user: '{}'", p.user)));
            }
            if !vhost_known(&p.vhost) {
                return Err(refused(format!("no_such_vhost: '{}'", p.vhost)));
            }
            Permission::new(&p.configure, &p.write, &p.read).map_err(|e| refused(e.to_string()))?;
        }
        for vhost in topology.keys() {
            if !vhost_known(vhost) {
                return Err(refused(format!("no_such_vhost: '{vhost}'")));
            }
        }
    }
    for (vhost, t) in &topology {
        match s.vhosts.get(vhost) {
            Some(e) => check_bindings(vhost, t, Some(&e.lock()))?,
            None => check_bindings(vhost, t, None)?,
        }
    }
    tracing::info!(
        user = %acting_user,
        users = users.len(),
        vhosts = new_vhosts.len(),
        permissions = file.permissions.len(),
        "importing definitions"
    );
    {
        let mut table = s.users.write();
        for (name, hash, tags) in users {
            table.add_user_with_hash(&name, hash, tags);
        }
    }
    for (name, meta) in new_vhosts.into_iter().zip(metadata) {
        let shared = std::sync::Arc::clone(s);
        tokio::task::spawn_blocking(move || {
            shared.create_vhost(&name)?;
            shared.set_vhost_metadata(&name, Some(meta.1))
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(format!("could not write the vhost's data: {e}")))?;
    }
    {
        let mut table = s.users.write();
        for p in &file.permissions {
            table
                .set_permissions(&p.user, &p.vhost, &p.configure, &p.write, &p.read)
                .map_err(|e| refused(e.to_string()))?;
        }
        for t in &file.topic_permissions {
            table
                .set_topic_permission(&t.user, &t.vhost, &t.exchange, &t.write, &t.read)
                .map_err(|e| refused(e.to_string()))?;
        }
    }
    save_users(s).await?;
    set_limits(s, resource_limits(&file, None)).await?;
    // Before the queues, as RabbitMQ's import: they are declared with them.
    super::runtime::install(s, policies).await?;
    super::runtime::set_global_parameters(s, globals(&file)).await?;
    for (vhost, t) in topology {
        let e = s
            .vhosts
            .get(&vhost)
            .ok_or_else(|| refused(format!("no_such_vhost: '{vhost}'")))?;
        apply(&e, t)?;
    }
    Ok(())
}

/// `POST /api/definitions/{vhost}`: the file's queues, exchanges and bindings into
/// `e`, whatever their own `vhost` says (users, vhosts and permissions are not part
/// of a vhost's definitions and are left alone, as RabbitMQ does).
///
/// Returns the vhost's limits and policies from the file, for the caller to set.
pub(super) fn vhost(
    e: &VHostEntry,
    mut file: File,
) -> Result<(Limits, Vec<crate::policy::Policy>), ApiError> {
    unsupported(&file, false)?;
    let (vhosts, _) = resource_limits(&file, Some(e.name()));
    let limits = (vhosts, Vec::new());
    let policies = super::runtime::parse(&file.policies, Some(e.name()))?;
    let mut topology = topology(&mut file, Some(e.name()))?;
    let Some(t) = topology.remove(e.name()) else {
        return Ok((limits, policies));
    };
    check_bindings(e.name(), &t, Some(&e.lock()))?;
    apply(e, t)?;
    Ok((limits, policies))
}

/// The file's global parameters but RabbitMQ's own (see `CLUSTER_PARAMETERS`).
fn globals(file: &File) -> Vec<(String, Value)> {
    file.global_parameters
        .iter()
        .filter(|p| !CLUSTER_PARAMETERS.contains(&p.name.as_str()))
        .map(|p| (p.name.clone(), p.value.clone()))
        .collect()
}
