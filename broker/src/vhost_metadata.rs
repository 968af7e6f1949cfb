//! What a vhost has beside its objects, as RabbitMQ keeps it (`PUT /api/vhosts/{name}`
//! with `description`, `tags`, `default_queue_type`; `rabbitmqctl add_vhost
//! --description --tags --default-queue-type`): a description and tags, listed and
//! exported, and a default queue type, which the vhost applies: a queue declared
//! there without `x-queue-type` that can be a quorum queue (durable, not exclusive,
//! not auto-delete) is one when the default is `quorum`, as in RabbitMQ 4. With a data
//! directory the metadata is kept in the snapshot file `vhost-metadata`.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::store::snapshot;

const MAGIC: &[u8; 8] = b"AMQVMET1";
/// The file's name in the data directory.
const FILE: &str = "vhost-metadata";

/// The default queue types a vhost may have (`undefined`, RabbitMQ 3's "not set", is
/// classic). RabbitMQ's `stream` is refused: this broker has no streams.
const QUEUE_TYPES: [&str; 3] = ["classic", "quorum", "undefined"];

/// One vhost's metadata.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Metadata {
    pub(crate) description: String,
    pub(crate) tags: Vec<String>,
    /// `None`: never set (RabbitMQ 3.10 lists `undefined`).
    pub(crate) default_queue_type: Option<String>,
}

impl Metadata {
    /// The default vhost's, as RabbitMQ has it.
    pub(crate) fn default_for(name: &str) -> Metadata {
        Metadata {
            description: if name == "/" {
                "Default virtual host".into()
            } else {
                String::new()
            },
            ..Metadata::default()
        }
    }

    /// Read from a `PUT /api/vhosts` body or a definitions file's vhost (where
    /// RabbitMQ 3.13+ also nests them in `metadata`); `Err` is RabbitMQ-like text.
    pub(crate) fn from_json(body: &Value) -> Result<Metadata, String> {
        let field = |k: &str| {
            body.get(k)
                .or_else(|| body.get("metadata").and_then(|m| m.get(k)))
        };
        let description = match field("description") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => return Err(format!("description must be a string, got {other}")),
        };
        let tags = match field("tags") {
            None | Some(Value::Null) => Vec::new(),
            // RabbitMQ 3.x: a comma-separated string; 3.13+: a list.
            Some(Value::String(s)) => s
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|t| {
                    t.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| format!("a tag must be a string, got {t}"))
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(format!(
                    "tags must be a list or a comma-separated string, got {other}"
                ));
            }
        };
        let default_queue_type = match field("default_queue_type") {
            None | Some(Value::Null) => None,
            Some(Value::String(t)) if QUEUE_TYPES.contains(&t.as_str()) => {
                (t != "undefined").then(|| t.clone())
            }
            Some(Value::String(t)) => {
                return Err(format!(
                    "default queue type '{t}' is not one this broker has (classic, quorum)"
                ));
            }
            Some(other) => return Err(format!("default_queue_type must be a string, got {other}")),
        };
        Ok(Metadata {
            description,
            tags,
            default_queue_type,
        })
    }

    /// The fields of the vhost's JSON (listing and definitions), as RabbitMQ 4's.
    pub(crate) fn json_fields(&self) -> [(&'static str, Value); 4] {
        let dqt = self.default_queue_type.as_deref().unwrap_or("classic");
        [
            ("description", json!(self.description)),
            ("tags", json!(self.tags)),
            ("default_queue_type", json!(dqt)),
            (
                "metadata",
                json!({ "description": self.description, "tags": self.tags, "default_queue_type": dqt }),
            ),
        ]
    }

    /// Whether queues declared without a type default to quorum here.
    pub(crate) fn quorum_by_default(&self) -> bool {
        self.default_queue_type.as_deref() == Some("quorum")
    }
}

/// The metadata of every vhost that has any set, by name.
pub(crate) type AllMetadata = BTreeMap<String, Metadata>;

/// The file in `root`, if there is one.
pub(crate) fn load(root: &Path) -> io::Result<AllMetadata> {
    snapshot::load_json(root, FILE, MAGIC)
}

/// Replaces the file in `root`.
pub(crate) fn save(root: &Path, all: &AllMetadata) -> io::Result<()> {
    snapshot::save_json(root, FILE, MAGIC, all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_reads_rabbitmq_3_and_4_shapes() {
        let v3 = Metadata::from_json(
            &json!({"description": "d", "tags": "a, b", "default_queue_type": "undefined"}),
        );
        assert_eq!(
            v3,
            Ok(Metadata {
                description: "d".into(),
                tags: vec!["a".into(), "b".into()],
                default_queue_type: None,
            })
        );
        let v4 = Metadata::from_json(&json!({"name": "x", "metadata": {"description": "d", "tags": ["a"], "default_queue_type": "quorum"}}))
            .expect("valid");
        assert!(v4.quorum_by_default());
        assert!(Metadata::from_json(&json!({"default_queue_type": "stream"})).is_err());
    }
}
