//! `set-policy`, `list-policies`, `clear-policy` and their operator-policy twins, as
//! `rabbitmqctl` has them: clients of `/api/policies` and `/api/operator-policies`.

use broker::internals::encode_segment;
use serde_json::{Value, json};

use super::args::{Format, PolicyArgs};
use super::table::print_rows;
use super::{Client, CtlError};

/// Which kind of policy a command is about: its API path and its word in messages.
pub struct Kind {
    path: &'static str,
    word: &'static str,
    plural: &'static str,
}

impl Kind {
    /// `/api/{policies|operator-policies}/{vhost}[/{name}]`.
    fn url(&self, vhost: &str, name: Option<&str>) -> String {
        let base = format!("/api/{}/{}", self.path, encode_segment(vhost));
        match name {
            Some(n) => format!("{base}/{}", encode_segment(n)),
            None => base,
        }
    }
}

/// User policies.
pub const USER: Kind = Kind {
    path: "policies",
    word: "policy",
    plural: "policies",
};
/// Operator policies.
pub const OPERATOR: Kind = Kind {
    path: "operator-policies",
    word: "operator policy",
    plural: "operator policies",
};

fn say(out: &mut dyn std::io::Write, format: Format, text: String) {
    if format == Format::Tsv {
        let _ = writeln!(out, "{text}");
    }
}

/// `set-policy`.
pub fn set(
    c: &Client,
    kind: Kind,
    p: &PolicyArgs,
    out: &mut dyn std::io::Write,
    format: Format,
) -> Result<(), CtlError> {
    let definition: Value = serde_json::from_str(&p.definition)
        .map_err(|e| CtlError::BadAnswer(format!("the definition is not JSON: {e}")))?;
    say(
        out,
        format,
        format!(
            "Setting {} \"{}\" for pattern \"{}\" to \"{}\" with priority \"{}\" for vhost \"{}\" ...",
            kind.word, p.name, p.pattern, p.definition, p.priority, p.vhost
        ),
    );
    let body = json!({
        "pattern": p.pattern,
        "definition": definition,
        "priority": p.priority,
        "apply-to": p.apply_to,
    });
    c.request("PUT", &kind.url(&p.vhost, Some(&p.name)), Some(&body), None)
        .map(drop)
}

/// `list-policies`: rabbitmqctl's columns.
pub fn list(
    c: &Client,
    kind: Kind,
    vhost: &str,
    out: &mut dyn std::io::Write,
    format: Format,
) -> Result<(), CtlError> {
    say(
        out,
        format,
        format!("Listing {} for vhost \"{vhost}\" ...", kind.plural),
    );
    let path = kind.url(vhost, None);
    let Value::Array(rows) = c.request("GET", &path, None, None)? else {
        return Err(CtlError::BadAnswer(format!("{path} did not answer a list")));
    };
    let columns = [
        "vhost",
        "name",
        "pattern",
        "apply-to",
        "definition",
        "priority",
    ];
    print_rows(out, &rows, &columns.map(str::to_owned), format);
    Ok(())
}

/// `clear-policy`.
pub fn clear(
    c: &Client,
    kind: Kind,
    vhost: &str,
    name: &str,
    out: &mut dyn std::io::Write,
    format: Format,
) -> Result<(), CtlError> {
    say(
        out,
        format,
        format!("Clearing {} \"{name}\" on vhost \"{vhost}\" ...", kind.word),
    );
    c.request("DELETE", &kind.url(vhost, Some(name)), None, None)
        .map(drop)
}
