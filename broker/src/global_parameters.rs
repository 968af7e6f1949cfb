//! Global runtime parameters (`/api/global-parameters`, `rabbitmqctl
//! set_global_parameter`): named JSON values the broker keeps and lists for the tools
//! that set them, as RabbitMQ stores them. None of them changes what the broker does
//! (RabbitMQ's own, `cluster_name` and `internal_cluster_id`, describe a cluster and are
//! not kept here). With a data directory they are kept in the snapshot file
//! `global-parameters`.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use serde_json::Value;

use crate::store::snapshot;

const MAGIC: &[u8; 8] = b"AMQGPAR1";
/// The file's name in the data directory.
const FILE: &str = "global-parameters";

/// The parameters by name.
pub(crate) type GlobalParameters = BTreeMap<String, Value>;

/// The file in `root`, if there is one.
pub(crate) fn load(root: &Path) -> io::Result<GlobalParameters> {
    snapshot::load_json(root, FILE, MAGIC)
}

/// Replaces the file in `root` with `params`.
pub(crate) fn save(root: &Path, params: &GlobalParameters) -> io::Result<()> {
    snapshot::save_json(root, FILE, MAGIC, params)
}
