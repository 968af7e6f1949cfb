//! The shape of a definitions file, as RabbitMQ 3.x and 4.x write it: what
//! `import` reads (unknown fields are ignored, missing lists are empty).

use serde::Deserialize;
use serde_json::{Map, Value};

use super::refused;
use crate::management::ApiError;

/// A definitions file, as RabbitMQ 3.x and 4.x write it (unknown fields ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct File {
    pub(super) users: Vec<UserDef>,
    pub(super) vhosts: Vec<VhostDef>,
    pub(super) permissions: Vec<PermissionDef>,
    pub(super) topic_permissions: Vec<TopicPermissionDef>,
    pub(super) parameters: Vec<Value>,
    pub(super) global_parameters: Vec<GlobalParameter>,
    pub(super) policies: Vec<Value>,
    pub(super) queues: Vec<QueueDef>,
    pub(super) exchanges: Vec<ExchangeDef>,
    pub(super) bindings: Vec<BindingDef>,
}

#[derive(Debug, Deserialize)]
pub(super) struct UserDef {
    pub(super) name: String,
    #[serde(default)]
    pub(super) password_hash: String,
    #[serde(default)]
    pub(super) hashing_algorithm: Option<String>,
    /// A list (3.13+) or a comma-separated string (3.10 and older).
    #[serde(default)]
    pub(super) tags: Value,
    #[serde(default)]
    pub(super) limits: Value,
}

/// A vhost: only the name is kept (description, tags, default queue type and
/// metadata have no place in this broker).
#[derive(Debug, Deserialize)]
pub(super) struct VhostDef {
    pub(super) name: String,
    /// `description`, `tags`, `default_queue_type`, `metadata` (see
    /// [`crate::vhost_metadata`]).
    #[serde(flatten)]
    pub(super) rest: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
pub(super) struct PermissionDef {
    pub(super) user: String,
    pub(super) vhost: String,
    pub(super) configure: String,
    pub(super) write: String,
    pub(super) read: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct TopicPermissionDef {
    pub(super) user: String,
    pub(super) vhost: String,
    pub(super) exchange: String,
    pub(super) write: String,
    pub(super) read: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct GlobalParameter {
    pub(super) name: String,
    #[serde(default)]
    pub(super) value: Value,
}

#[derive(Debug, Deserialize)]
pub(super) struct QueueDef {
    pub(super) name: String,
    #[serde(default)]
    pub(super) vhost: Option<String>,
    #[serde(default)]
    pub(super) durable: bool,
    #[serde(default)]
    pub(super) auto_delete: bool,
    #[serde(default)]
    pub(super) arguments: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
pub(super) struct ExchangeDef {
    pub(super) name: String,
    #[serde(default)]
    pub(super) vhost: Option<String>,
    #[serde(rename = "type")]
    pub(super) kind: String,
    #[serde(default)]
    pub(super) durable: bool,
    #[serde(default)]
    pub(super) auto_delete: bool,
    #[serde(default)]
    pub(super) internal: bool,
    #[serde(default)]
    pub(super) arguments: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
pub(super) struct BindingDef {
    pub(super) source: String,
    #[serde(default)]
    pub(super) vhost: Option<String>,
    pub(super) destination: String,
    pub(super) destination_type: String,
    #[serde(default)]
    pub(super) routing_key: String,
    #[serde(default)]
    pub(super) arguments: Map<String, Value>,
}

/// Parses a definitions file (400 `failed_to_parse_json` as RabbitMQ, with why).
pub(super) fn parse(json: &[u8]) -> Result<File, ApiError> {
    serde_json::from_slice(json).map_err(|e| refused(format!("failed_to_parse_json: {e}")))
}
