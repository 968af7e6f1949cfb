//! Policies and operator policies, as RabbitMQ has them (`rabbitmqctl set_policy`,
//! `/api/policies`, `/api/operator-policies`): queue and exchange settings applied by
//! a name pattern instead of declare arguments, changed at run time.
//!
//! A policy has a regular expression matched against object names (unanchored, as
//! RabbitMQ's `re:run`), what it applies to (`queues`, `classic_queues`,
//! `quorum_queues`, `streams`, `exchanges`, `all`), a priority and a definition. Of the
//! policies matching an object the one with the highest priority applies (ties: the
//! first by name), and likewise one operator policy. Where both set a key the lower
//! value wins (operator policies carry only numeric limits).
//!
//! Against a queue's own `x-` arguments, as RabbitMQ's `rabbit_amqqueue_process`
//! resolves them: `max-length`, `max-length-bytes`, `message-ttl`, `expires` and
//! `delivery-limit` take the lower of the two; `dead-letter-exchange`,
//! `dead-letter-routing-key` and `overflow` take the argument when there is one. An
//! exchange takes `alternate-exchange` from a policy unless it declared one.
//!
//! Settings RabbitMQ knows that mean nothing on one node that pages every durable
//! queue and has no streams (`ha-*`, `queue-mode`, `queue-version`, the locators,
//! `target-group-size`, `max-in-memory-*`, the stream settings `max-age` and
//! `stream-*`) are accepted and listed, with no effect. Anything else is refused with
//! RabbitMQ's text (e.g. `dead-letter-strategy`: this broker's quorum queues
//! dead-letter at most once).
//!
//! A change applies at once to every queue and exchange of the vhost (a lower
//! `max-length` drops or dead-letters the excess at once, as RabbitMQ does); a new
//! `message-ttl` applies to messages published from then on. With a data directory
//! policies are kept in the snapshot file `policies`.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use amq_protocol::types::{AMQPValue, FieldTable, ShortString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::store::snapshot;

const MAGIC: &[u8; 8] = b"AMQPOLI1";
/// The file's name in the data directory.
const FILE: &str = "policies";

/// Keys resolved against a queue argument by taking the lower value.
const MIN_KEYS: [&str; 5] = [
    "max-length",
    "max-length-bytes",
    "message-ttl",
    "expires",
    "delivery-limit",
];
/// Keys where a queue's own argument wins.
const ARG_KEYS: [&str; 3] = [
    "dead-letter-exchange",
    "dead-letter-routing-key",
    "overflow",
];
/// Keys accepted with no effect on this broker: mirroring and placement (one node),
/// storage tuning (it pages every durable queue), and stream settings (it has no
/// streams, so nothing they could apply to exists).
const NO_EFFECT_KEYS: [&str; 16] = [
    "ha-mode",
    "ha-params",
    "ha-sync-mode",
    "ha-sync-batch-size",
    "ha-promote-on-shutdown",
    "ha-promote-on-failure",
    "queue-mode",
    "queue-version",
    "queue-master-locator",
    "queue-leader-locator",
    "target-group-size",
    "max-in-memory-length",
    "max-in-memory-bytes",
    "max-age",
    "stream-max-segment-size-bytes",
    "stream-filter-size-bytes",
];
/// What `apply-to` may say (RabbitMQ 4's list; 3.x knows the first three).
const APPLY_TO: [&str; 6] = [
    "queues",
    "exchanges",
    "all",
    "classic_queues",
    "quorum_queues",
    "streams",
];

/// User policies or operator policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `/api/policies`.
    User,
    /// `/api/operator-policies`: limits an operator imposes over the users' policies.
    Operator,
}

/// One policy as the API lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Policy {
    pub(crate) vhost: String,
    pub(crate) name: String,
    pub(crate) pattern: String,
    #[serde(rename = "apply-to")]
    pub(crate) apply_to: String,
    pub(crate) definition: Map<String, Value>,
    pub(crate) priority: i64,
}

/// Every policy, by vhost and name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Policies {
    pub(crate) user: BTreeMap<String, BTreeMap<String, Policy>>,
    pub(crate) operator: BTreeMap<String, BTreeMap<String, Policy>>,
}

impl Policies {
    /// The file in `root`, if there is one.
    pub(crate) fn load(root: &Path) -> io::Result<Self> {
        snapshot::load_json(root, FILE, MAGIC)
    }

    /// Replaces the file in `root` with these policies.
    pub(crate) fn save(&self, root: &Path) -> io::Result<()> {
        snapshot::save_json(root, FILE, MAGIC, self)
    }

    /// The map of one kind.
    pub(crate) fn of(&self, kind: Kind) -> &BTreeMap<String, BTreeMap<String, Policy>> {
        match kind {
            Kind::User => &self.user,
            Kind::Operator => &self.operator,
        }
    }

    /// The map of one kind, to change.
    pub(crate) fn of_mut(&mut self, kind: Kind) -> &mut BTreeMap<String, BTreeMap<String, Policy>> {
        match kind {
            Kind::User => &mut self.user,
            Kind::Operator => &mut self.operator,
        }
    }

    /// The policies of `vhost`, compiled for matching.
    pub(crate) fn for_vhost(&self, vhost: &str) -> VhostPolicies {
        let compile = |m: Option<&BTreeMap<String, Policy>>| {
            m.into_iter()
                .flat_map(BTreeMap::values)
                .filter_map(|p| {
                    let regex = regex::Regex::new(&p.pattern).ok()?;
                    Some(Compiled {
                        policy: p.clone(),
                        regex,
                    })
                })
                .collect()
        };
        VhostPolicies {
            user: compile(self.user.get(vhost)),
            operator: compile(self.operator.get(vhost)),
        }
    }
}

/// A policy with its pattern compiled.
#[derive(Debug, Clone)]
struct Compiled {
    policy: Policy,
    regex: regex::Regex,
}

/// What a queue or exchange can be, for `apply-to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// A classic queue.
    ClassicQueue,
    /// A quorum queue.
    QuorumQueue,
    /// An exchange.
    Exchange,
}

impl Compiled {
    fn applies(&self, name: &str, target: Target) -> bool {
        let kind_ok = matches!(
            (self.policy.apply_to.as_str(), target),
            ("all", _)
                | ("queues", Target::ClassicQueue | Target::QuorumQueue)
                | ("classic_queues", Target::ClassicQueue)
                | ("quorum_queues", Target::QuorumQueue)
                | ("exchanges", Target::Exchange)
        );
        kind_ok && self.regex.is_match(name)
    }
}

/// The policies of one vhost, ready to match.
#[derive(Debug, Clone, Default)]
pub(crate) struct VhostPolicies {
    user: Vec<Compiled>,
    operator: Vec<Compiled>,
}

/// The policies that apply to one object, and their merged definition.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    /// The user policy's name.
    pub policy: Option<String>,
    /// The operator policy's name.
    pub operator_policy: Option<String>,
    /// `effective_policy_definition`: the two merged (the lower of two numbers).
    pub definition: Map<String, Value>,
}

/// The policy of `list` that applies: highest priority, then first by name (the list
/// is in name order).
fn pick<'a>(list: &'a [Compiled], name: &str, target: Target) -> Option<&'a Policy> {
    let mut best: Option<&Policy> = None;
    for c in list.iter().filter(|c| c.applies(name, target)) {
        if best.is_none_or(|b| c.policy.priority > b.priority) {
            best = Some(&c.policy);
        }
    }
    best
}

impl VhostPolicies {
    /// The policies that apply to the object `name`.
    pub(crate) fn applied(&self, name: &str, target: Target) -> Applied {
        let user = pick(&self.user, name, target);
        let operator = pick(&self.operator, name, target);
        let mut definition = user.map(|p| p.definition.clone()).unwrap_or_default();
        if let Some(op) = operator {
            for (k, v) in &op.definition {
                let merged = match (definition.get(k).and_then(Value::as_i64), v.as_i64()) {
                    (Some(a), Some(b)) => Value::from(a.min(b)),
                    _ => v.clone(),
                };
                definition.insert(k.clone(), merged);
            }
        }
        Applied {
            policy: user.map(|p| p.name.clone()),
            operator_policy: operator.map(|p| p.name.clone()),
            definition,
        }
    }
}

impl Applied {
    /// A queue's declared `x-` arguments with this definition resolved into them, the
    /// table the queue's settings are read from.
    pub(crate) fn queue_arguments(&self, declared: &FieldTable) -> FieldTable {
        let mut args = declared.clone();
        for (key, value) in &self.definition {
            let x = format!("x-{key}");
            let own = declared.inner().get(x.as_str());
            let resolved = if MIN_KEYS.contains(&key.as_str()) {
                let Some(p) = value.as_i64() else { continue };
                match own.and_then(crate::args::int_value) {
                    Some(a) if a < i128::from(p) => continue,
                    _ => AMQPValue::LongLongInt(p),
                }
            } else if ARG_KEYS.contains(&key.as_str()) {
                let (None, Some(s)) = (own, value.as_str()) else {
                    continue;
                };
                AMQPValue::LongString(s.into())
            } else {
                continue;
            };
            args.insert(ShortString::from(x), resolved);
        }
        args
    }

    /// The policy's `alternate-exchange` (an exchange's own argument goes first).
    pub(crate) fn alternate_exchange(&self) -> Option<&str> {
        self.definition
            .get("alternate-exchange")
            .and_then(Value::as_str)
    }
}

/// A policy as `PUT /api/policies/{vhost}/{name}` sends it.
#[derive(Debug, Deserialize)]
pub(crate) struct PolicyBody {
    pattern: Option<Value>,
    definition: Option<Value>,
    #[serde(default)]
    priority: Option<Value>,
    #[serde(default, rename = "apply-to")]
    apply_to: Option<Value>,
}

/// A term as RabbitMQ prints it in its validation texts: `<<"text">>` for a string.
fn term(v: &Value) -> String {
    match v {
        Value::String(s) => format!("<<\"{s}\">>"),
        other => other.to_string(),
    }
}

/// Checks a policy body as RabbitMQ does; the reason is RabbitMQ's text after
/// "Validation failed".
pub(crate) fn validate(
    kind: Kind,
    vhost: &str,
    name: &str,
    body: PolicyBody,
) -> Result<Policy, String> {
    let fail = |why: String| Err(format!("Validation failed\n\n{why}\n"));
    let pattern = match body.pattern {
        Some(Value::String(p)) => p,
        Some(other) => {
            return fail(format!(
                "pattern should be a string but is {}",
                term(&other)
            ));
        }
        None => return fail("pattern not provided".into()),
    };
    if let Err(e) = regex::Regex::new(&pattern) {
        return fail(format!(
            "pattern should be regular expression but is invalid: {e}"
        ));
    }
    let apply_to = match body.apply_to {
        None => "all".to_owned(),
        Some(Value::String(a)) if APPLY_TO.contains(&a.as_str()) => a,
        Some(other) => {
            let shown = other
                .as_str()
                .map_or_else(|| other.to_string(), str::to_owned);
            return fail(format!(
                "apply-to '{shown}' unrecognised; should be 'queues', 'classic_queues', 'quorum_queues', 'streams', 'exchanges' or 'all'"
            ));
        }
    };
    let priority = match body.priority {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) if n.is_i64() => n.as_i64().unwrap_or(0),
        Some(other) => match other.as_str().and_then(|s| s.trim().parse::<i64>().ok()) {
            Some(n) => n,
            None => return fail(format!("priority must be a number, got {}", term(&other))),
        },
    };
    let definition = match body.definition {
        Some(Value::Object(d)) => d,
        Some(other) => {
            return fail(format!(
                "definition must be a JSON object, got {}",
                term(&other)
            ));
        }
        None => Map::new(),
    };
    if definition.is_empty() {
        return fail("no policy provided".into());
    }
    let allowed = |k: &str| match kind {
        Kind::User => {
            MIN_KEYS.contains(&k)
                || ARG_KEYS.contains(&k)
                || NO_EFFECT_KEYS.contains(&k)
                || k == "alternate-exchange"
        }
        Kind::Operator => MIN_KEYS.contains(&k),
    };
    let unknown: Vec<String> = definition
        .iter()
        .filter(|(k, _)| !allowed(k))
        .map(|(k, v)| format!("{{<<\"{k}\">>,{}}}", term(v)))
        .collect();
    if !unknown.is_empty() {
        return fail(format!(
            "[{}] are not recognised policy settings",
            unknown.join(",")
        ));
    }
    for (k, v) in &definition {
        if let Some(why) = invalid_value(k, v) {
            return fail(format!("{} is not a valid {why}", term(v)));
        }
    }
    Ok(Policy {
        vhost: vhost.to_owned(),
        name: name.to_owned(),
        pattern,
        apply_to,
        definition,
        priority,
    })
}

/// What a key's value should have been, when it is not valid (RabbitMQ's words).
fn invalid_value(key: &str, v: &Value) -> Option<&'static str> {
    let non_negative = v.as_i64().is_some_and(|n| n >= 0);
    let string = v.is_string();
    match key {
        "max-length" => (!non_negative).then_some("maximum length"),
        "max-length-bytes" => (!non_negative).then_some("maximum length in bytes"),
        "message-ttl" => (!v
            .as_i64()
            .is_some_and(|n| (0..=i64::from(u32::MAX)).contains(&n)))
        .then_some("message TTL"),
        "expires" => v.as_i64().is_none_or(|n| n < 1).then_some("queue expiry"),
        "delivery-limit" => (!non_negative).then_some("delivery limit"),
        "dead-letter-exchange" => (!string).then_some("dead letter exchange"),
        "dead-letter-routing-key" => (!string).then_some("dead letter routing key"),
        "alternate-exchange" => (!string).then_some("alternate exchange name"),
        "overflow" => (!matches!(
            v.as_str(),
            Some("drop-head" | "reject-publish" | "reject-publish-dlx")
        ))
        .then_some("overflow value"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> PolicyBody {
        serde_json::from_value(v).expect("body")
    }

    fn policy(kind: Kind, name: &str, v: Value) -> Policy {
        validate(kind, "/", name, body(v)).expect("valid")
    }

    fn set(policies: &[Policy], operator: &[Policy]) -> VhostPolicies {
        let mut all = Policies::default();
        for p in policies {
            all.user
                .entry("/".into())
                .or_default()
                .insert(p.name.clone(), p.clone());
        }
        for p in operator {
            all.operator
                .entry("/".into())
                .or_default()
                .insert(p.name.clone(), p.clone());
        }
        all.for_vhost("/")
    }

    #[test]
    fn validation_gives_rabbitmqs_texts() {
        let err = |v| validate(Kind::User, "/", "p", body(v)).expect_err("invalid");
        assert_eq!(
            err(json!({"pattern": "^a", "definition": {"foo": 1}})),
            "Validation failed\n\n[{<<\"foo\">>,1}] are not recognised policy settings\n"
        );
        assert_eq!(
            err(json!({"pattern": "^a", "definition": {"max-length": "x"}})),
            "Validation failed\n\n<<\"x\">> is not a valid maximum length\n"
        );
        assert_eq!(
            err(json!({"pattern": "^a", "definition": {}})),
            "Validation failed\n\nno policy provided\n"
        );
        assert!(
            err(json!({"pattern": "([", "definition": {"max-length": 1}})).starts_with(
                "Validation failed\n\npattern should be regular expression but is invalid"
            )
        );
        assert!(
            err(json!({"pattern": "a", "definition": {"max-length": 1}, "apply-to": "bogus"}))
                .starts_with("Validation failed\n\napply-to 'bogus' unrecognised")
        );
        // Operator policies carry limits only.
        let op = validate(
            Kind::Operator,
            "/",
            "o",
            body(json!({"pattern": "a", "definition": {"dead-letter-exchange": "x"}})),
        );
        assert!(
            op.expect_err("not an operator setting")
                .contains("are not recognised")
        );
    }

    #[test]
    fn the_highest_priority_applies_and_operator_limits_take_the_lower_value() {
        let low = policy(
            Kind::User,
            "low",
            json!({"pattern": "^q", "definition": {"max-length": 9}}),
        );
        let high = policy(
            Kind::User,
            "high",
            json!({"pattern": "^q", "definition": {"max-length": 5, "message-ttl": 100}, "priority": 2}),
        );
        let op = policy(
            Kind::Operator,
            "op",
            json!({"pattern": ".", "definition": {"max-length": 3, "expires": 1000}, "apply-to": "queues"}),
        );
        let vp = set(&[low, high], &[op]);
        let a = vp.applied("q1", Target::ClassicQueue);
        assert_eq!(a.policy.as_deref(), Some("high"));
        assert_eq!(a.operator_policy.as_deref(), Some("op"));
        assert_eq!(
            Value::Object(a.definition.clone()),
            json!({"max-length": 3, "message-ttl": 100, "expires": 1000})
        );
        // Not a queue: the queue-only operator policy does not apply.
        let x = vp.applied("q1", Target::Exchange);
        assert_eq!(x.policy.as_deref(), Some("high"));
        assert_eq!(x.operator_policy, None);
        assert_eq!(vp.applied("other", Target::Exchange), Applied::default());
    }

    #[test]
    fn queue_arguments_take_the_lower_limit_and_their_own_dead_letter_exchange() {
        let p = policy(
            Kind::User,
            "p",
            json!({"pattern": ".", "definition": {
                "max-length": 5, "message-ttl": 1000,
                "dead-letter-exchange": "policy-dlx", "overflow": "reject-publish"
            }}),
        );
        let a = set(&[p], &[]).applied("q", Target::QuorumQueue);
        let mut declared = FieldTable::default();
        declared.insert("x-max-length".into(), AMQPValue::LongInt(2));
        declared.insert("x-message-ttl".into(), AMQPValue::LongInt(5000));
        declared.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString("own".into()),
        );
        let args = a.queue_arguments(&declared);
        let get = |k: &str| args.inner().get(k).cloned();
        assert_eq!(get("x-max-length"), Some(AMQPValue::LongInt(2)));
        assert_eq!(get("x-message-ttl"), Some(AMQPValue::LongLongInt(1000)));
        assert_eq!(
            get("x-dead-letter-exchange"),
            Some(AMQPValue::LongString("own".into()))
        );
        assert_eq!(
            get("x-overflow"),
            Some(AMQPValue::LongString("reject-publish".into()))
        );
    }

    #[test]
    fn apply_to_selects_the_kind_of_object() {
        let q = policy(
            Kind::User,
            "q",
            json!({"pattern": ".", "definition": {"max-length": 1}, "apply-to": "quorum_queues"}),
        );
        let vp = set(&[q], &[]);
        assert_eq!(vp.applied("a", Target::ClassicQueue), Applied::default());
        assert_eq!(
            vp.applied("a", Target::QuorumQueue).policy.as_deref(),
            Some("q")
        );
    }
}
