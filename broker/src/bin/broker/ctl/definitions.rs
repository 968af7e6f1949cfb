//! The files of `export-definitions` and `import-definitions`: RabbitMQ's definitions
//! JSON, read from or written to a path, or standard input or output for `-` (as
//! `rabbitmqctl export_definitions -`).

use std::io::{Read, Write};

use serde_json::Value;

use super::CtlError;

fn failed(path: &str, detail: impl ToString) -> CtlError {
    CtlError::DefinitionsFile {
        path: path.to_owned(),
        detail: detail.to_string(),
    }
}

/// Writes `defs` (pretty-printed, as RabbitMQ writes the file) to `path`, or to `out`
/// for `-`.
pub fn write(path: &str, defs: &Value, out: &mut dyn Write) -> Result<(), CtlError> {
    let mut text = serde_json::to_string_pretty(defs).map_err(|e| failed(path, e))?;
    text.push('\n');
    if path == "-" {
        out.write_all(text.as_bytes()).map_err(|e| failed(path, e))
    } else {
        std::fs::write(path, text).map_err(|e| failed(path, e))
    }
}

/// The JSON in `path`, or on standard input for `-`.
pub fn read(path: &str) -> Result<Value, CtlError> {
    let text = if path == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| failed(path, e))?;
        text
    } else {
        std::fs::read_to_string(path).map_err(|e| failed(path, e))?
    };
    serde_json::from_str(&text).map_err(|e| failed(path, format!("not JSON: {e}")))
}
