//! `broker ctl`: a `rabbitmqctl`-like client of the management API.
//!
//! List commands print a header line and one tab-separated row per object, as
//! `rabbitmqctl` does (`--format json` prints a JSON array of objects with the chosen
//! columns instead). Columns are the API's field names; a few of `rabbitmqctl`'s own
//! names are accepted too (`source_name`, `destination_name`, `queue_name`, ...), and
//! nested fields are reached with dots (`queue.name`).
//!
//! `args` is the command line, `client` the HTTP client of the API, `table` the
//! output, `definitions` the files of `export-definitions` and `import-definitions`,
//! `policies` the policy commands; this module runs the commands.

mod args;
mod client;
mod definitions;
mod policies;
mod table;

use serde_json::{Map, Value};

pub use args::{CtlArgs, CtlCommand, Format};
use broker::internals::encode_segment;
pub use client::{Client, CtlError};
use table::print_rows;

/// Runs one command, writing its output to `out`.
pub fn run(args: &CtlArgs, out: &mut dyn std::io::Write) -> Result<(), CtlError> {
    let c = match &args.cacert {
        Some(file) => Client::with_ca_file(&args.url, &args.api_user, &args.api_password, file)?,
        None => Client::new(&args.url, &args.api_user, &args.api_password),
    };
    let list = |path: &str, columns: &[String], default: &[&str], out: &mut dyn std::io::Write| {
        let value = c.request("GET", path, None, None)?;
        let Value::Array(rows) = value else {
            return Err(CtlError::BadAnswer(format!("{path} did not answer a list")));
        };
        let columns: Vec<String> = if columns.is_empty() {
            default.iter().map(|s| (*s).to_owned()).collect()
        } else {
            columns.to_vec()
        };
        print_rows(out, &rows, &columns, args.format);
        Ok(())
    };
    let say = |out: &mut dyn std::io::Write, text: String| {
        if args.format == Format::Tsv {
            let _ = writeln!(out, "{text}");
        }
    };
    let seg = encode_segment;
    use CtlCommand as C;
    match &args.command {
        C::ListQueues { columns, vhost } => list(
            &format!("/api/queues/{}", seg(vhost)),
            columns,
            &["name", "messages"],
            out,
        ),
        C::ListExchanges { columns, vhost } => list(
            &format!("/api/exchanges/{}", seg(vhost)),
            columns,
            &["name", "type"],
            out,
        ),
        C::ListBindings { columns, vhost } => list(
            &format!("/api/bindings/{}", seg(vhost)),
            columns,
            &[
                "source_name",
                "source_kind",
                "destination_name",
                "destination_kind",
                "routing_key",
                "arguments",
            ],
            out,
        ),
        C::ListConnections { columns } => list(
            "/api/connections",
            columns,
            &["name", "user", "peer_host", "peer_port", "state"],
            out,
        ),
        C::ListChannels { columns } => list(
            "/api/channels",
            columns,
            &["name", "user", "consumer_count", "messages_unacknowledged"],
            out,
        ),
        C::ListConsumers { columns, vhost } => list(
            &format!("/api/consumers/{}", seg(vhost)),
            columns,
            &[
                "queue_name",
                "channel_pid",
                "consumer_tag",
                "ack_required",
                "prefetch_count",
                "active",
                "arguments",
            ],
            out,
        ),
        C::ListUsers => list("/api/users", &[], &["user", "tags"], out),
        C::ListVhosts => list("/api/vhosts", &[], &["name"], out),
        C::ListPermissions { vhost } => {
            let value = c.request("GET", "/api/permissions", None, None)?;
            let rows: Vec<Value> = match value {
                Value::Array(rows) => rows
                    .into_iter()
                    .filter(|r| r.get("vhost").and_then(Value::as_str) == Some(vhost))
                    .collect(),
                _ => return Err(CtlError::BadAnswer("permissions are not a list".into())),
            };
            print_rows(
                out,
                &rows,
                &["user", "configure", "write", "read"].map(str::to_owned),
                args.format,
            );
            Ok(())
        }
        C::PurgeQueue { name, vhost } => {
            say(
                out,
                format!("Purging queue '{name}' in vhost '{vhost}' ..."),
            );
            c.request(
                "DELETE",
                &format!("/api/queues/{}/{}/contents", seg(vhost), seg(name)),
                None,
                None,
            )
            .map(drop)
        }
        C::DeleteQueue {
            name,
            vhost,
            if_unused,
            if_empty,
        } => {
            say(
                out,
                format!("Deleting queue '{name}' on vhost '{vhost}' ..."),
            );
            c.request(
                "DELETE",
                &format!(
                    "/api/queues/{}/{}?if-unused={if_unused}&if-empty={if_empty}",
                    seg(vhost),
                    seg(name)
                ),
                None,
                None,
            )
            .map(drop)
        }
        C::CloseConnection { name, reason } => {
            say(
                out,
                format!(
                    "Closing connection {name}, reason: {} ...",
                    reason.as_deref().unwrap_or("Closed via management plugin")
                ),
            );
            c.request(
                "DELETE",
                &format!("/api/connections/{}", seg(name)),
                None,
                reason.as_deref(),
            )
            .map(drop)
        }
        C::AddUser { name, password } => {
            say(out, format!("Adding user \"{name}\" ..."));
            let exists = c
                .request("GET", &format!("/api/users/{}", seg(name)), None, None)
                .is_ok();
            if exists {
                return Err(CtlError::Api {
                    status: 409,
                    error: "user_already_exists".into(),
                    reason: format!("user '{name}' already exists"),
                });
            }
            let body = serde_json::json!({ "password": password, "tags": "" });
            c.request(
                "PUT",
                &format!("/api/users/{}", seg(name)),
                Some(&body),
                None,
            )
            .map(drop)
        }
        C::DeleteUser { name } => {
            say(out, format!("Deleting user \"{name}\" ..."));
            c.request("DELETE", &format!("/api/users/{}", seg(name)), None, None)
                .map(drop)
        }
        C::ChangePassword { name, password } => {
            say(out, format!("Changing password for user \"{name}\" ..."));
            let tags = user_tags(&c, name)?;
            let body = serde_json::json!({ "password": password, "tags": tags });
            c.request(
                "PUT",
                &format!("/api/users/{}", seg(name)),
                Some(&body),
                None,
            )
            .map(drop)
        }
        C::SetUserTags { name, tags } => {
            say(
                out,
                format!(
                    "Setting tags for user \"{name}\" to [{}] ...",
                    tags.join(", ")
                ),
            );
            user_tags(&c, name)?;
            let body = serde_json::json!({ "tags": tags });
            c.request(
                "PUT",
                &format!("/api/users/{}", seg(name)),
                Some(&body),
                None,
            )
            .map(drop)
        }
        C::SetPermissions {
            vhost,
            user,
            configure,
            write,
            read,
        } => {
            say(
                out,
                format!("Setting permissions for user \"{user}\" in vhost \"{vhost}\" ..."),
            );
            let body = serde_json::json!({ "configure": configure, "write": write, "read": read });
            c.request(
                "PUT",
                &format!("/api/permissions/{}/{}", seg(vhost), seg(user)),
                Some(&body),
                None,
            )
            .map(drop)
        }
        C::ClearPermissions { vhost, user } => {
            say(
                out,
                format!("Clearing permissions for user \"{user}\" in vhost \"{vhost}\" ..."),
            );
            c.request(
                "DELETE",
                &format!("/api/permissions/{}/{}", seg(vhost), seg(user)),
                None,
                None,
            )
            .map(drop)
        }
        C::AddVhost { name } => {
            say(out, format!("Adding vhost \"{name}\" ..."));
            c.request(
                "PUT",
                &format!("/api/vhosts/{}", seg(name)),
                Some(&Value::Object(Map::new())),
                None,
            )
            .map(drop)
        }
        C::DeleteVhost { name } => {
            say(out, format!("Deleting vhost \"{name}\" ..."));
            c.request("DELETE", &format!("/api/vhosts/{}", seg(name)), None, None)
                .map(drop)
        }
        C::ExportDefinitions { file, vhost } => {
            if file != "-" {
                say(
                    out,
                    format!("Exporting definitions in JSON to a file at \"{file}\" ..."),
                );
            }
            let defs = c.request("GET", &definitions_path(vhost.as_deref()), None, None)?;
            definitions::write(file, &defs, out)
        }
        C::SetPolicy(p) => policies::set(&c, policies::USER, p, out, args.format),
        C::SetOperatorPolicy(p) => policies::set(&c, policies::OPERATOR, p, out, args.format),
        C::ListPolicies { vhost } => policies::list(&c, policies::USER, vhost, out, args.format),
        C::ListOperatorPolicies { vhost } => {
            policies::list(&c, policies::OPERATOR, vhost, out, args.format)
        }
        C::ClearPolicy { vhost, name } => {
            policies::clear(&c, policies::USER, vhost, name, out, args.format)
        }
        C::ClearOperatorPolicy { vhost, name } => {
            policies::clear(&c, policies::OPERATOR, vhost, name, out, args.format)
        }
        C::ImportDefinitions { file, vhost } => {
            say(
                out,
                format!("Importing definitions in JSON from a file at \"{file}\" ..."),
            );
            let defs = definitions::read(file)?;
            c.request(
                "POST",
                &definitions_path(vhost.as_deref()),
                Some(&defs),
                None,
            )
            .map(drop)
        }
    }
}

/// `/api/definitions`, or one vhost's.
fn definitions_path(vhost: Option<&str>) -> String {
    match vhost {
        Some(v) => format!("/api/definitions/{}", encode_segment(v)),
        None => "/api/definitions".to_owned(),
    }
}

/// A user's current tags (and a 404 error if there is no such user).
fn user_tags(c: &Client, name: &str) -> Result<Value, CtlError> {
    let user = c.request(
        "GET",
        &format!("/api/users/{}", encode_segment(name)),
        None,
        None,
    )?;
    Ok(user
        .get("tags")
        .cloned()
        .unwrap_or(Value::Array(Vec::new())))
}
