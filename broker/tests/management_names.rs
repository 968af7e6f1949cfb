//! Names longer than an AMQP short string (255 bytes) through the management API: each
//! endpoint that takes a queue, exchange or vhost name or a routing key answers 400 with
//! RabbitMQ's `{"error": "bad_request", ...}` body, and the broker goes on serving.

mod common;

use common::http::{GUEST, get_json, http};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_argument_keys_over_255_bytes_are_answered_400() -> anyhow::Result<()> {
    let (b, base) = common::http::start_with_api(broker::Broker::builder()).await?;
    let long = "n".repeat(256);
    let key = "k".repeat(256);
    let ok_name = "q".repeat(255);
    let cases: Vec<(&str, String, Option<Value>)> = vec![
        ("PUT", format!("/api/queues/%2F/{long}"), Some(json!({}))),
        (
            "PUT",
            format!("/api/queues/%2F/{long}"),
            Some(json!({"durable": true})),
        ),
        (
            "PUT",
            "/api/queues/%2F/short".to_owned(),
            Some(json!({ "arguments": { long.clone(): 1 } })),
        ),
        ("GET", format!("/api/queues/%2F/{long}"), None),
        ("DELETE", format!("/api/queues/%2F/{long}"), None),
        ("DELETE", format!("/api/queues/%2F/{long}/contents"), None),
        ("GET", format!("/api/exchanges/%2F/{long}"), None),
        (
            "POST",
            format!("/api/bindings/%2F/e/amq.direct/q/{long}"),
            Some(json!({"routing_key": "k"})),
        ),
        (
            "POST",
            format!("/api/bindings/%2F/e/{long}/q/{ok_name}"),
            Some(json!({"routing_key": "k"})),
        ),
        (
            "POST",
            format!("/api/bindings/%2F/e/amq.direct/q/{ok_name}"),
            Some(json!({ "routing_key": key })),
        ),
        ("PUT", format!("/api/vhosts/{long}"), None),
        ("GET", format!("/api/vhosts/{long}"), None),
        ("DELETE", format!("/api/vhosts/{long}"), None),
        ("GET", format!("/api/queues/{long}"), None),
        ("GET", format!("/api/exchanges/{long}"), None),
        ("GET", format!("/api/bindings/{long}"), None),
        ("GET", format!("/api/consumers/{long}"), None),
        (
            "PUT",
            format!("/api/permissions/{long}/guest"),
            Some(json!({"configure": ".*", "write": ".*", "read": ".*"})),
        ),
    ];
    // A queue with the longest allowed name exists, so that the binding cases get past
    // "no such queue" to the name they are about.
    let (status, body) = http(
        "PUT",
        format!("{base}/api/queues/%2F/{ok_name}"),
        GUEST,
        Some(json!({"durable": true})),
    )
    .await?;
    assert_eq!(status, 201, "255 bytes is a valid name: {body}");
    for (method, path, body) in cases {
        let (status, text) = http(method, format!("{base}{path}"), GUEST, body)
            .await
            .map_err(|e| anyhow::anyhow!("{method} {path}: no answer: {e}"))?;
        assert_eq!(status, 400, "{method} {}...: {text}", &path[..40]);
        let v: Value = serde_json::from_str(&text)?;
        assert_eq!(v["error"], "bad_request", "{text}");
        assert!(
            v["reason"].as_str().is_some_and(|r| r.contains("255")),
            "{text}"
        );
    }
    // Nothing was made, and the broker still answers and accepts AMQP.
    let queues = get_json(&base, "/api/queues").await?;
    assert_eq!(queues.as_array().map(Vec::len), Some(1), "{queues}");
    let bindings = get_json(&base, "/api/bindings").await?;
    assert_eq!(bindings.as_array().map(Vec::len), Some(1), "{bindings}");
    let conn =
        lapin::Connection::connect(&b.amqp_url(), lapin::ConnectionProperties::default()).await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}
