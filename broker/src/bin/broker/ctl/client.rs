//! A blocking HTTP client of the management API (ureq, with rustls for `https://`),
//! and the errors a command can end with.

use std::time::Duration;

use base64::Engine;
use serde_json::Value;

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
    /// A definitions file could not be read or written, or is not JSON.
    #[error("definitions file {path}: {detail}")]
    DefinitionsFile {
        /// The file (`-` for standard input or output).
        path: String,
        /// What went wrong.
        detail: String,
    },
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
