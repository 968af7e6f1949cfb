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
    let path = root.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(GlobalParameters::new()),
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    };
    let bad = |e: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    };
    let payload = snapshot::unseal(MAGIC, &bytes).map_err(|e| bad(e.to_string()))?;
    serde_json::from_slice(payload).map_err(|e| bad(e.to_string()))
}

/// Replaces the file in `root` with `params`.
pub(crate) fn save(root: &Path, params: &GlobalParameters) -> io::Result<()> {
    let payload = serde_json::to_vec(params).map_err(io::Error::other)?;
    snapshot::write(root, FILE, &snapshot::seal(MAGIC, &payload))
}
