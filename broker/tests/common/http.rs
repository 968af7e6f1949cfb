//! A small blocking HTTP client for the management API tests.

use std::time::Duration;

use serde_json::Value;

/// One HTTP request (blocking client on a blocking thread): status and body.
pub async fn http(
    method: &str,
    url: String,
    auth: Option<(&str, &str)>,
    body: Option<Value>,
) -> anyhow::Result<(u16, String)> {
    let method = method.to_owned();
    let auth = auth.map(|(u, p)| {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        format!("Basic {token}")
    });
    tokio::task::spawn_blocking(move || -> anyhow::Result<(u16, String)> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let mut req = ureq::http::Request::builder()
            .method(method.as_str())
            .uri(&url);
        if let Some(a) = &auth {
            req = req.header("authorization", a);
        }
        // RabbitMQ answers 415 to a body without it.
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req.body(body.map(|b| b.to_string()).unwrap_or_default())?;
        let mut resp = agent.run(req)?;
        let status = resp.status().as_u16();
        Ok((status, resp.body_mut().read_to_string()?))
    })
    .await?
}

/// guest's credentials.
pub const GUEST: Option<(&str, &str)> = Some(("guest", "guest"));

pub async fn get_json(base: &str, path: &str) -> anyhow::Result<Value> {
    let (status, body) = http("GET", format!("{base}{path}"), GUEST, None).await?;
    anyhow::ensure!(status == 200, "GET {path}: {status} {body}");
    Ok(serde_json::from_str(&body)?)
}

/// Starts `builder` with the management API on port 0: the broker and the API's base
/// URL.
pub async fn start_with_api(
    builder: broker::BrokerBuilder,
) -> anyhow::Result<(broker::BrokerHandle, String)> {
    let b = builder
        .management(([127, 0, 0, 1], 0).into())
        .start()
        .await?;
    let at = b
        .management_addr()
        .ok_or_else(|| anyhow::anyhow!("no management address"))?;
    Ok((b, format!("http://{at}")))
}

/// An API call as `auth` that must answer `status`; the body as JSON (`null` if empty).
pub async fn call(
    base: &str,
    auth: (&str, &str),
    method: &str,
    path: &str,
    body: Option<Value>,
    status: u16,
) -> anyhow::Result<Value> {
    let (got, text) = http(method, format!("{base}{path}"), Some(auth), body).await?;
    anyhow::ensure!(
        got == status,
        "{method} {path}: {got} {text} (wanted {status})"
    );
    Ok(if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text)?
    })
}
