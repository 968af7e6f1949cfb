//! What rabbitmqadmin's commands do through the management API, checked for their
//! effect: exchanges declared and deleted, bindings listed and deleted by
//! `properties_key`, messages published and taken over HTTP (with each ack mode),
//! the health checks passing and failing, channels in confirm mode, churn counted,
//! each queue's own `message_stats`, authentication attempts, rebalancing.

mod common;

use common::http::{GUEST, get_json, http};
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{Value, json};

async fn call(method: &str, base: &str, path: &str, body: Option<Value>) -> (u16, String) {
    http(method, format!("{base}{path}"), GUEST, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

async fn start() -> anyhow::Result<(broker::BrokerHandle, String)> {
    common::http::start_with_api(broker::Broker::builder()).await
}

#[tokio::test]
async fn exchanges_and_bindings_are_declared_listed_and_deleted() -> anyhow::Result<()> {
    let (b, base) = start().await?;
    let (st, body) = call(
        "PUT",
        &base,
        "/api/exchanges/%2F/ops.x",
        Some(json!({"type": "topic", "durable": true})),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let (st, _) = call(
        "PUT",
        &base,
        "/api/exchanges/%2F/ops.x",
        Some(json!({"type": "topic", "durable": true})),
    )
    .await;
    assert_eq!(st, 204, "a redeclare is no change");
    let (st, body) = call(
        "PUT",
        &base,
        "/api/exchanges/%2F/ops.x",
        Some(json!({"type": "direct"})),
    )
    .await;
    assert_eq!(st, 400, "an inequivalent redeclare: {body}");
    assert!(body.contains("inequivalent"), "{body}");
    let x = get_json(&base, "/api/exchanges/%2F/ops.x").await?;
    assert_eq!(x["type"], "topic");

    call(
        "PUT",
        &base,
        "/api/queues/%2F/ops.q",
        Some(json!({"durable": false})),
    )
    .await;
    let (st, _) = call(
        "POST",
        &base,
        "/api/bindings/%2F/e/ops.x/q/ops.q",
        Some(json!({"routing_key": "a.*", "arguments": {"k": "v"}})),
    )
    .await;
    assert_eq!(st, 201);
    let (st, _) = call(
        "POST",
        &base,
        "/api/bindings/%2F/e/ops.x/e/amq.fanout",
        Some(json!({"routing_key": "#"})),
    )
    .await;
    assert_eq!(st, 201);
    let to_q = get_json(&base, "/api/bindings/%2F/e/ops.x/q/ops.q").await?;
    let to_q = to_q.as_array().cloned().unwrap_or_default();
    assert_eq!(to_q.len(), 1, "{to_q:?}");
    let of_q = get_json(&base, "/api/queues/%2F/ops.q/bindings").await?;
    assert!(
        of_q.as_array()
            .is_some_and(|a| a.iter().any(|b| b["source"] == "ops.x")),
        "{of_q}"
    );
    let to_x = get_json(&base, "/api/bindings/%2F/e/ops.x/e/amq.fanout").await?;
    assert_eq!(to_x.as_array().map(Vec::len), Some(1), "{to_x}");

    // Deleted by its properties_key, as rabbitmqadmin deletes a binding.
    let props = to_q[0]["properties_key"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (st, _) = call(
        "DELETE",
        &base,
        &format!("/api/bindings/%2F/e/ops.x/q/ops.q/{props}"),
        None,
    )
    .await;
    assert_eq!(st, 204);
    let (st, _) = call(
        "DELETE",
        &base,
        &format!("/api/bindings/%2F/e/ops.x/q/ops.q/{props}"),
        None,
    )
    .await;
    assert_eq!(st, 404, "gone");
    let to_q = get_json(&base, "/api/bindings/%2F/e/ops.x/q/ops.q").await?;
    assert_eq!(to_q, json!([]));

    let (st, _) = call(
        "DELETE",
        &base,
        "/api/exchanges/%2F/ops.x?if-unused=true",
        None,
    )
    .await;
    assert_eq!(st, 400, "still bound to amq.fanout");
    let (st, _) = call("DELETE", &base, "/api/exchanges/%2F/ops.x", None).await;
    assert_eq!(st, 204);
    let (st, _) = call("GET", &base, "/api/exchanges/%2F/ops.x", None).await;
    assert_eq!(st, 404);
    let (st, _) = call("DELETE", &base, "/api/exchanges/%2F/ops.x", None).await;
    assert_eq!(st, 404, "deleting what is not there");
    b.shutdown().await;
    Ok(())
}

/// `POST .../get` with `count` and `ackmode`.
async fn get(base: &str, q: &str, count: u32, ackmode: &str) -> Vec<Value> {
    let (st, body) = call(
        "POST",
        base,
        &format!("/api/queues/%2F/{q}/get"),
        Some(json!({"count": count, "ackmode": ackmode, "encoding": "auto"})),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    serde_json::from_str::<Vec<Value>>(&body).unwrap_or_default()
}

#[tokio::test]
async fn messages_are_published_and_taken_over_http() -> anyhow::Result<()> {
    let (b, base) = start().await?;
    call(
        "PUT",
        &base,
        "/api/queues/%2F/ops.dlq",
        Some(json!({"durable": false})),
    )
    .await;
    call(
        "PUT",
        &base,
        "/api/queues/%2F/ops.m",
        Some(json!({"durable": false, "arguments": {
            "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "ops.dlq"}})),
    )
    .await;
    for (i, payload) in ["one", "two", "three"].iter().enumerate() {
        let (st, body) = call(
            "POST",
            &base,
            "/api/exchanges/%2F/amq.default/publish",
            Some(json!({
                "routing_key": "ops.m",
                "payload": payload,
                "payload_encoding": "string",
                "properties": {"headers": {"n": i}, "content_type": "text/plain"},
            })),
        )
        .await;
        assert_eq!(st, 200, "{body}");
        assert_eq!(
            serde_json::from_str::<Value>(&body)?,
            json!({"routed": true})
        );
    }
    let (_, body) = call(
        "POST",
        &base,
        "/api/exchanges/%2F/amq.default/publish",
        Some(json!({"routing_key": "nowhere", "payload": "x", "payload_encoding": "string", "properties": {}})),
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&body)?,
        json!({"routed": false})
    );

    // Requeued: the same two again, now redelivered, in order.
    let first = get(&base, "ops.m", 2, "ack_requeue_true").await;
    let payloads: Vec<&Value> = first.iter().map(|m| &m["payload"]).collect();
    assert_eq!(payloads, [&json!("one"), &json!("two")]);
    assert_eq!(first[0]["redelivered"], false);
    assert_eq!(first[0]["message_count"], 2, "ready after taking the first");
    assert_eq!(first[0]["properties"]["headers"]["n"], 0);
    assert_eq!(first[0]["properties"]["content_type"], "text/plain");
    let again = get(&base, "ops.m", 2, "ack_requeue_true").await;
    assert_eq!(again[0]["payload"], "one");
    assert_eq!(again[0]["redelivered"], true);
    // Acked: gone.
    let acked = get(&base, "ops.m", 1, "ack_requeue_false").await;
    assert_eq!(acked[0]["payload"], "one");
    // Rejected without requeue: dead-lettered.
    let rejected = get(&base, "ops.m", 1, "reject_requeue_false").await;
    assert_eq!(rejected[0]["payload"], "two");
    let dead = get(&base, "ops.dlq", 10, "ack_requeue_false").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["payload"], "two");
    assert_eq!(
        dead[0]["properties"]["headers"]["x-death"][0]["reason"],
        "rejected"
    );
    let q = get_json(&base, "/api/queues/%2F/ops.m").await?;
    assert_eq!(q["messages"], 1, "three is left: {q}");
    let (st, _) = call(
        "POST",
        &base,
        "/api/queues/%2F/ops.m/get",
        Some(json!({"count": 1, "ackmode": "sideways"})),
    )
    .await;
    assert_eq!(st, 400);
    b.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn health_checks_pass_and_fail_as_rabbitmqs() -> anyhow::Result<()> {
    let (b, base) = start().await?;
    let port = b.local_addr().port();
    for path in [
        "alarms".to_owned(),
        "local-alarms".to_owned(),
        "virtual-hosts".to_owned(),
        "node-is-quorum-critical".to_owned(),
        format!("port-listener/{port}"),
        "protocol-listener/amqp".to_owned(),
        "protocol-listener/http".to_owned(),
    ] {
        let (st, body) = call("GET", &base, &format!("/api/health/checks/{path}"), None).await;
        assert_eq!(st, 200, "{path}: {body}");
        assert_eq!(serde_json::from_str::<Value>(&body)?["status"], "ok");
    }
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let (st, body) = call(
        "GET",
        &base,
        &format!("/api/health/checks/port-listener/{closed}"),
        None,
    )
    .await;
    assert_eq!(st, 503, "{body}");
    let v: Value = serde_json::from_str(&body)?;
    assert_eq!(v["status"], "failed");
    assert_eq!(v["missing"], closed);
    let (st, body) = call(
        "GET",
        &base,
        "/api/health/checks/protocol-listener/mqtt",
        None,
    )
    .await;
    assert_eq!(st, 503, "{body}");
    b.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn channels_show_confirm_mode_and_churn_is_counted() -> anyhow::Result<()> {
    let (b, base) = start().await?;
    let before = get_json(&base, "/api/overview").await?;
    let conn = Connection::connect(&b.amqp_url(), ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    ch.queue_declare(
        "ops.churn".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await?;
    ch.basic_publish(
        "".into(),
        "ops.churn".into(),
        BasicPublishOptions::default(),
        b"x",
        BasicProperties::default(),
    )
    .await?
    .await?;
    let plain = conn.create_channel().await?;
    let chans = common::poll::try_until(
        std::time::Duration::from_secs(10),
        "both channels listed",
        || async {
            let v = get_json(&base, "/api/channels").await?;
            Ok::<_, anyhow::Error>(v.as_array().filter(|a| a.len() == 2).cloned())
        },
    )
    .await?;
    let confirm: Vec<&Value> = chans.iter().map(|c| &c["confirm"]).collect();
    assert_eq!(confirm, [&json!(true), &json!(false)], "{chans:?}");
    assert_eq!(chans[0]["messages_unconfirmed"], 0, "the confirm came back");
    let conns = get_json(&base, "/api/connections").await?;
    assert_eq!(conns[0]["channels"], 2, "{conns}");
    assert_eq!(conns[0]["client_properties"]["product"], "lapin", "{conns}");
    plain.close(200, "bye".into()).await?;
    ch.queue_delete("ops.churn".into(), QueueDeleteOptions::default())
        .await?;
    let after = get_json(&base, "/api/overview").await?;
    let churn = |v: &Value, k: &str| v["churn_rates"][k].as_u64().unwrap_or(u64::MAX);
    for (k, n) in [
        ("connection_created", 1),
        ("channel_created", 2),
        ("channel_closed", 1),
        ("queue_declared", 1),
        ("queue_created", 1),
        ("queue_deleted", 1),
    ] {
        assert_eq!(churn(&after, k) - churn(&before, k), n, "{k}: {after}");
    }
    assert!(after["churn_rates"]["queue_created_details"]["rate"].is_number());
    conn.close(200, "bye".into()).await?;
    b.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn each_queue_counts_its_own_messages_in_message_stats() -> anyhow::Result<()> {
    let (b, base) = start().await?;
    let conn = Connection::connect(&b.amqp_url(), ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    for q in ["stats.a", "stats.b"] {
        ch.queue_declare(
            q.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    for (q, n) in [("stats.a", 3), ("stats.b", 1)] {
        for _ in 0..n {
            ch.basic_publish(
                "".into(),
                q.into(),
                BasicPublishOptions::default(),
                b"m",
                BasicProperties::default(),
            )
            .await?
            .await?;
        }
    }
    // Two gets acked, one without ack, all from stats.a.
    for _ in 0..2 {
        let got = ch
            .basic_get("stats.a".into(), BasicGetOptions::default())
            .await?
            .ok_or_else(|| anyhow::anyhow!("a message"))?;
        got.delivery.acker.ack(BasicAckOptions::default()).await?;
    }
    ch.basic_get("stats.a".into(), BasicGetOptions { no_ack: true })
        .await?
        .ok_or_else(|| anyhow::anyhow!("a message"))?;
    // The acks are handled in order after this round trip.
    ch.queue_declare(
        "stats.a".into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    let stats = |q: Value| {
        let m = &q["message_stats"];
        let counts: Vec<u64> = [
            "publish",
            "get",
            "get_no_ack",
            "deliver",
            "deliver_get",
            "ack",
        ]
        .iter()
        .map(|k| m[*k].as_u64().unwrap_or(u64::MAX))
        .collect();
        let rates_are_numbers = ["publish", "deliver_get", "ack", "redeliver"]
            .iter()
            .all(|k| m[format!("{k}_details")]["rate"].is_number());
        (counts, rates_are_numbers)
    };
    assert_eq!(
        stats(get_json(&base, "/api/queues/%2F/stats.a").await?),
        (vec![3, 2, 1, 0, 3, 2], true)
    );
    assert_eq!(
        stats(get_json(&base, "/api/queues/%2F/stats.b").await?),
        (vec![1, 0, 0, 0, 0, 0], true)
    );
    b.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn authentication_attempts_are_counted_by_protocol() -> anyhow::Result<()> {
    let (b, base) = start().await?;
    let node = get_json(&base, "/api/overview").await?["node"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let _good = Connection::connect(&b.amqp_url(), ConnectionProperties::default()).await?;
    let bad = format!("amqp://guest:wrong@{}/%2f", b.local_addr());
    assert!(
        Connection::connect(&bad, ConnectionProperties::default())
            .await
            .is_err()
    );
    let (status, _) = http(
        "GET",
        format!("{base}/api/overview"),
        Some(("guest", "wrong")),
        None,
    )
    .await?;
    assert_eq!(status, 401);
    let listed = get_json(&base, &format!("/api/auth/attempts/{node}")).await?;
    let stats: Vec<rabbitmq_http_client::responses::AuthenticationAttemptStatistics> =
        serde_json::from_value(listed.clone())?;
    assert_eq!(stats.len(), 2);
    let amqp = &listed[1];
    assert_eq!(
        (
            amqp["protocol"].clone(),
            amqp["auth_attempts"].clone(),
            amqp["auth_attempts_failed"].clone()
        ),
        (json!("amqp091"), json!(2), json!(1))
    );
    let http_row = &listed[0];
    assert_eq!(http_row["protocol"], json!("http"));
    assert!(http_row["auth_attempts_failed"].as_u64() >= Some(1));
    assert_eq!(
        get_json(&base, &format!("/api/auth/attempts/{node}/source")).await?,
        json!([])
    );
    let (status, _) = call("DELETE", &base, &format!("/api/auth/attempts/{node}"), None).await;
    assert_eq!(status, 204);
    let after = get_json(&base, &format!("/api/auth/attempts/{node}")).await?;
    assert_eq!(after[1]["auth_attempts"], json!(0));
    // One node: nothing to rebalance, as RabbitMQ answers when it starts.
    let (status, _) = call("POST", &base, "/api/rebalance/queues", Some(json!({}))).await;
    assert_eq!(status, 204);
    b.shutdown().await;
    Ok(())
}
