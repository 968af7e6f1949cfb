//! `broker ctl`: a `rabbitmqctl`-like client of the management API.
//!
//! List commands print a header line and one tab-separated row per object, as
//! `rabbitmqctl` does (`--format json` prints a JSON array of objects with the chosen
//! columns instead). Columns are the API's field names; a few of `rabbitmqctl`'s own
//! names are accepted too (`source_name`, `destination_name`, `queue_name`, ...), and
//! nested fields are reached with dots (`queue.name`).

use std::time::Duration;

use base64::Engine;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Map, Value};

/// Why a `ctl` command failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The broker could not be reached.
    #[error("could not reach the management API at {url}: {detail}")]
    Unreachable {
        /// The URL tried.
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// The API answered with an error status.
    #[error("{status} {error}: {reason}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// RabbitMQ's `error` field.
        error: String,
        /// RabbitMQ's `reason` field.
        reason: String,
    },
    /// The `--cacert` file could not be read or holds no PEM certificate.
    #[error("cannot use CA certificate file {}: {detail}", path.display())]
    CaCert {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The answer was not what the API should send.
    #[error("unexpected answer from the management API: {0}")]
    BadAnswer(String),
}

/// Output format of list commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Header line, then tab-separated rows (as `rabbitmqctl`).
    Tsv,
    /// A JSON array of objects.
    Json,
}

/// `broker ctl [OPTIONS] COMMAND`.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The management API's base URL (`https://...` for a broker started with
    /// --management-tls).
    #[arg(
        long,
        global = true,
        env = "BROKER_MANAGEMENT_URL",
        default_value = "http://127.0.0.1:15672"
    )]
    pub url: String,
    /// PEM file of the certificate(s) to trust for an `https://` URL instead of the
    /// built-in (Mozilla) roots, e.g. the broker's own self-signed --tls-cert.
    #[arg(long, global = true, env = "BROKER_CACERT", value_name = "FILE")]
    pub cacert: Option<std::path::PathBuf>,
    /// User for HTTP basic auth.
    #[arg(long = "user", global = true, default_value = "guest")]
    pub api_user: String,
    /// Password for HTTP basic auth.
    #[arg(long = "password", global = true, default_value = "guest")]
    pub api_password: String,
    /// Output format of list commands.
    #[arg(long, global = true, value_enum, default_value_t = Format::Tsv)]
    pub format: Format,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// The commands, named as `rabbitmqctl`'s with dashes.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Queues (default columns: name messages).
    ListQueues {
        /// Columns, e.g. name messages_ready messages_unacknowledged consumers.
        columns: Vec<String>,
        /// The vhost.
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
    },
    /// Exchanges (default columns: name type).
    ListExchanges {
        /// Columns.
        columns: Vec<String>,
        /// The vhost.
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
    },
    /// Bindings, including the default exchange's (default: rabbitmqctl's columns).
    ListBindings {
        /// Columns.
        columns: Vec<String>,
        /// The vhost.
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
    },
    /// Connections (default columns: name user peer_host peer_port state).
    ListConnections {
        /// Columns.
        columns: Vec<String>,
    },
    /// Channels (default columns: name user consumer_count messages_unacknowledged).
    ListChannels {
        /// Columns.
        columns: Vec<String>,
    },
    /// Consumers (default: rabbitmqctl's columns).
    ListConsumers {
        /// Columns.
        columns: Vec<String>,
        /// The vhost.
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
    },
    /// Users and their tags.
    ListUsers,
    /// Virtual hosts.
    ListVhosts,
    /// Permissions in a vhost.
    ListPermissions {
        /// The vhost.
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
    },
    /// Drops a queue's ready messages.
    PurgeQueue {
        /// Queue name.
        name: String,
        /// The vhost.
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
    },
    /// Deletes a queue.
    DeleteQueue {
        /// Queue name.
        name: String,
        /// The vhost.
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
        /// Only if it has no consumers.
        #[arg(long)]
        if_unused: bool,
        /// Only if it has no ready messages.
        #[arg(long)]
        if_empty: bool,
    },
    /// Closes a connection (by its name, `PEER -> LOCAL`) with 320 CONNECTION_FORCED.
    CloseConnection {
        /// Connection name as `list-connections` shows it.
        name: String,
        /// Reply text the client sees.
        reason: Option<String>,
    },
    /// Adds a user (no tags, no permissions).
    AddUser {
        /// User name.
        name: String,
        /// Password.
        password: String,
    },
    /// Deletes a user.
    DeleteUser {
        /// User name.
        name: String,
    },
    /// Changes a user's password.
    ChangePassword {
        /// User name.
        name: String,
        /// New password.
        password: String,
    },
    /// Replaces a user's tags.
    SetUserTags {
        /// User name.
        name: String,
        /// Tags (none clears them).
        tags: Vec<String>,
    },
    /// Sets a user's permissions in a vhost.
    SetPermissions {
        /// The vhost.
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
        /// User name.
        user: String,
        /// Configure pattern.
        configure: String,
        /// Write pattern.
        write: String,
        /// Read pattern.
        read: String,
    },
    /// Removes a user's permissions in a vhost.
    ClearPermissions {
        /// The vhost.
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
        /// User name.
        user: String,
    },
    /// Adds a vhost (persisted with a data directory).
    AddVhost {
        /// Vhost name.
        name: String,
    },
    /// Deletes a vhost: its queues, exchanges, messages and permissions go, and its
    /// connections are closed with 320 CONNECTION_FORCED.
    DeleteVhost {
        /// Vhost name.
        name: String,
    },
}

/// Percent-encodes one path segment.
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A blocking client of the management API.
#[derive(Debug)]
pub struct Client {
    base: String,
    auth: String,
    agent: ureq::Agent,
}

impl Client {
    /// A client of the API at `url` (e.g. `http://127.0.0.1:15672`, or an `https://`
    /// URL whose certificate the built-in Mozilla roots trust).
    pub fn new(url: &str, user: &str, password: &str) -> Self {
        Self::with_roots(url, user, password, ureq::tls::RootCerts::WebPki)
    }

    /// A client of the API at `url` that trusts only the PEM certificates in `cacert`
    /// for HTTPS (as `curl --cacert`).
    pub fn with_ca_file(
        url: &str,
        user: &str,
        password: &str,
        cacert: &std::path::Path,
    ) -> Result<Self, CtlError> {
        let bad = |detail: String| CtlError::CaCert {
            path: cacert.to_owned(),
            detail,
        };
        let pem = std::fs::read(cacert).map_err(|e| bad(e.to_string()))?;
        let mut certs = Vec::new();
        for item in ureq::tls::parse_pem(&pem) {
            if let ureq::tls::PemItem::Certificate(c) = item.map_err(|e| bad(e.to_string()))? {
                certs.push(c);
            }
        }
        if certs.is_empty() {
            return Err(bad("no PEM certificate in it".to_owned()));
        }
        Ok(Self::with_roots(url, user, password, certs.into()))
    }

    fn with_roots(url: &str, user: &str, password: &str, roots: ureq::tls::RootCerts) -> Self {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build())
            .build()
            .into();
        Self {
            base: url.trim_end_matches('/').to_owned(),
            auth: format!("Basic {token}"),
            agent,
        }
    }

    /// Sends a request; returns the JSON answer (`null` for an empty one).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        reason: Option<&str>,
    ) -> Result<Value, CtlError> {
        let url = format!("{}{path}", self.base);
        let unreachable = |e: ureq::Error| CtlError::Unreachable {
            url: url.clone(),
            detail: e.to_string(),
        };
        let builder = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("authorization", &self.auth)
            .header("content-type", "application/json");
        let builder = match reason {
            Some(r) => builder.header("x-reason", r),
            None => builder,
        };
        let payload = body.map(Value::to_string).unwrap_or_default();
        let req = builder
            .body(payload)
            .map_err(|e| CtlError::BadAnswer(e.to_string()))?;
        let mut resp = self.agent.run(req).map_err(unreachable)?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| CtlError::BadAnswer(e.to_string()))?;
        let value: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).map_err(|_| CtlError::BadAnswer(text.clone()))?
        };
        if status >= 400 {
            let field = |k: &str| {
                value
                    .get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            return Err(CtlError::Api {
                status,
                error: field("error"),
                reason: field("reason"),
            });
        }
        Ok(value)
    }
}

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

/// `rabbitmqctl`'s column names for fields the API names differently.
fn lookup<'a>(row: &'a Value, column: &str) -> Option<std::borrow::Cow<'a, Value>> {
    use std::borrow::Cow;
    let path = match column {
        "source_name" => "source",
        "destination_name" => "destination",
        "destination_kind" => "destination_type",
        "source_kind" => return Some(Cow::Owned(Value::String("exchange".into()))),
        "queue_name" => "queue.name",
        "channel_pid" => "channel_details.name",
        "user" if row.get("user").is_none() => "name",
        other => other,
    };
    let mut v = row;
    for part in path.split('.') {
        v = v.get(part)?;
    }
    Some(Cow::Borrowed(v))
}

/// A value as `rabbitmqctl` prints it in a table cell.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(cell).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(m) if m.is_empty() => "[]".to_owned(),
        other => other.to_string(),
    }
}

/// Prints rows with the chosen columns.
pub fn print_rows(
    out: &mut dyn std::io::Write,
    rows: &[Value],
    columns: &[String],
    format: Format,
) {
    match format {
        Format::Tsv => {
            let _ = writeln!(out, "{}", columns.join("\t"));
            for row in rows {
                let cells: Vec<String> = columns
                    .iter()
                    .map(|c| lookup(row, c).map(|v| cell(&v)).unwrap_or_default())
                    .collect();
                let _ = writeln!(out, "{}", cells.join("\t"));
            }
        }
        Format::Json => {
            let objects: Vec<Value> = rows
                .iter()
                .map(|row| {
                    Value::Object(
                        columns
                            .iter()
                            .map(|c| {
                                let v = lookup(row, c)
                                    .map(|v| v.into_owned())
                                    .unwrap_or(Value::Null);
                                (c.clone(), v)
                            })
                            .collect(),
                    )
                })
                .collect();
            let _ = writeln!(out, "{}", Value::Array(objects));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_print_as_rabbitmqctl_tables() {
        let rows = vec![
            json!({"name": "q1", "messages_ready": 3, "tags": ["administrator"], "arguments": {}}),
            json!({"name": "q2", "messages_ready": 0, "queue": {"name": "n"}}),
        ];
        let mut out = Vec::new();
        let cols = ["name", "messages_ready", "tags", "arguments", "queue_name"].map(str::to_owned);
        print_rows(&mut out, &rows, &cols, Format::Tsv);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "name\tmessages_ready\ttags\targuments\tqueue_name\nq1\t3\t[administrator]\t[]\t\nq2\t0\t\t\tn\n"
        );
        let mut out = Vec::new();
        print_rows(&mut out, &rows[..1], &cols[..2], Format::Json);
        let printed: Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(printed, json!([{"name": "q1", "messages_ready": 3}]));
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(encode_segment("/"), "%2F");
        assert_eq!(
            encode_segment("127.0.0.1:1 -> 127.0.0.1:2"),
            "127.0.0.1%3A1%20-%3E%20127.0.0.1%3A2"
        );
    }
}
