//! The management API, `/metrics` and `broker ctl` against an embedded broker whose
//! AMQP and HTTP listeners both bind port 0.

mod common;

use std::time::Duration;

use common::http::{GUEST, get_json, http};
use futures::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{Value, json};

async fn start() -> anyhow::Result<(broker::BrokerHandle, String)> {
    common::http::start_with_api(broker::Broker::builder()).await
}

/// Publishes `n` messages to `queue` with publisher confirms.
async fn publish(ch: &lapin::Channel, queue: &str, n: usize) -> anyhow::Result<()> {
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    for i in 0..n {
        ch.basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            format!("m{i}").as_bytes(),
            BasicProperties::default(),
        )
        .await?
        .await?;
    }
    Ok(())
}

/// Polls `/api/queues/%2F/NAME` until `check` holds (counts settle asynchronously).
async fn wait_queue(
    base: &str,
    name: &str,
    check: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let path = format!("/api/queues/%2F/{name}");
    let last = std::cell::RefCell::new(Value::Null);
    common::poll::try_until(Duration::from_secs(10), &path, || async {
        let q = get_json(base, &path).await?;
        if check(&q) {
            return Ok(Some(q));
        }
        *last.borrow_mut() = q;
        Ok(None)
    })
    .await
    .map_err(|e: anyhow::Error| e.context(format!("queue never matched: {}", last.borrow())))
}

/// 5 published, 2 consumed without ack (prefetch 2): 3 ready, 2 unacked, 1 consumer.
async fn five_published_two_unacked(
    url: &str,
    queue: &str,
) -> anyhow::Result<(
    Connection,
    Vec<lapin::Channel>,
    lapin::Consumer,
    Vec<lapin::message::Delivery>,
)> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await?;
    publish(&ch, queue, 5).await?;
    let consumer_ch = conn.create_channel().await?;
    consumer_ch.basic_qos(2, BasicQosOptions::default()).await?;
    let mut consumer = consumer_ch
        .basic_consume(
            queue.into(),
            "c1".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut got = Vec::new();
    for _ in 0..2 {
        let d = common::next_delivery(&mut consumer).await?;
        got.push(d);
    }
    // With prefetch 2 and no acks, nothing more may arrive.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), consumer.next())
            .await
            .is_err(),
        "a third delivery beyond prefetch 2"
    );
    // Dropping the consumer would cancel it: the caller keeps it.
    Ok((conn, vec![ch, consumer_ch], consumer, got))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_counts_match_what_the_client_observes() -> anyhow::Result<()> {
    let (b, base) = start().await?;
    let (_conn, _chs, _consumer, got) = five_published_two_unacked(&b.amqp_url(), "work").await?;
    assert_eq!(got.len(), 2);
    let q = wait_queue(&base, "work", |q| q["messages_unacknowledged"] == 2).await?;
    assert_eq!(q["messages_ready"], 3);
    assert_eq!(q["messages_unacknowledged"], 2);
    assert_eq!(q["messages"], 5);
    assert_eq!(q["consumers"], 1);
    assert_eq!(q["vhost"], "/");
    assert_eq!(q["durable"], false);
    assert_eq!(q["arguments"], json!({}));

    let all = get_json(&base, "/api/queues").await?;
    assert_eq!(all.as_array().map(Vec::len), Some(1));

    let overview = get_json(&base, "/api/overview").await?;
    assert_eq!(overview["queue_totals"]["messages_ready"], 3);
    assert_eq!(overview["queue_totals"]["messages_unacknowledged"], 2);
    assert_eq!(overview["object_totals"]["queues"], 1);
    assert_eq!(overview["object_totals"]["connections"], 1);
    assert_eq!(overview["object_totals"]["consumers"], 1);
    assert_eq!(overview["message_stats"]["publish"], 5);
    assert_eq!(overview["message_stats"]["deliver"], 2);

    let conns = get_json(&base, "/api/connections").await?;
    let c = &conns[0];
    assert_eq!(c["user"], "guest");
    assert_eq!(c["vhost"], "/");
    assert_eq!(c["channels"], 2);
    assert_eq!(c["peer_host"], "127.0.0.1");
    let name = c["name"].as_str().unwrap_or_default();
    assert!(name.ends_with(&format!(" -> {}", b.local_addr())), "{name}");

    let channels = get_json(&base, "/api/channels").await?;
    assert_eq!(channels.as_array().map(Vec::len), Some(2));
    let consumers = get_json(&base, "/api/consumers").await?;
    assert_eq!(consumers[0]["consumer_tag"], "c1");
    assert_eq!(consumers[0]["queue"]["name"], "work");
    assert_eq!(consumers[0]["ack_required"], true);
    assert_eq!(consumers[0]["prefetch_count"], 2);

    let (status, metrics) = http("GET", format!("{base}/metrics/per-object"), None, None).await?;
    assert_eq!(status, 200, "metrics need no auth");
    for line in [
        "rabbitmq_queue_messages_ready{vhost=\"/\",queue=\"work\"} 3",
        "rabbitmq_queue_messages_unacked{vhost=\"/\",queue=\"work\"} 2",
        "rabbitmq_queue_consumers{vhost=\"/\",queue=\"work\"} 1",
        "rabbitmq_connections 1",
        "rabbitmq_channels 2",
        "rabbitmq_global_messages_received_total 5",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line} in\n{metrics}"
        );
    }
    assert!(metrics.contains("rabbitmq_process_resident_memory_bytes "));
    // `/metrics` has the same gauges summed over the queues, without their names.
    let (status, metrics) = http("GET", format!("{base}/metrics"), None, None).await?;
    assert_eq!(status, 200, "metrics need no auth");
    for line in [
        "rabbitmq_queue_messages_ready 3",
        "rabbitmq_queue_messages_unacked 2",
        "rabbitmq_queue_consumers 1",
        "rabbitmq_connections 1",
        "rabbitmq_global_messages_received_total 5",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line} in\n{metrics}"
        );
    }
    assert!(!metrics.contains("work"), "{metrics}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_include_the_default_exchange() -> anyhow::Result<()> {
    let (b, base) = start().await?;
    let conn = Connection::connect(&b.amqp_url(), ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.queue_declare(
        "bq".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await?;
    ch.queue_bind(
        "bq".into(),
        "amq.topic".into(),
        "a.*".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let bindings = get_json(&base, "/api/bindings").await?;
    let rows: Vec<(&str, &str, &str, &str)> = bindings
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            let s = |k: &str| b[k].as_str().unwrap_or("?");
            (
                s("source"),
                s("destination"),
                s("destination_type"),
                s("routing_key"),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("", "bq", "queue", "bq"),
            ("amq.topic", "bq", "queue", "a.*")
        ]
    );
    assert_eq!(bindings[0]["vhost"], "/");
    assert_eq!(bindings[0]["properties_key"], "bq");

    let exchanges = get_json(&base, "/api/exchanges").await?;
    assert!(
        exchanges
            .as_array()
            .into_iter()
            .flatten()
            .any(|x| x["name"] == "amq.topic" && x["type"] == "topic" && x["durable"] == true)
    );
    let default = get_json(&base, "/api/exchanges/%2F/amq.default").await?;
    assert_eq!(default["name"], "");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_401_and_non_administrators_get_403() -> anyhow::Result<()> {
    let (_b, base) = start().await?;
    let (status, _) = http("GET", format!("{base}/api/queues"), None, None).await?;
    assert_eq!(status, 401);
    let (status, body) = http(
        "GET",
        format!("{base}/api/queues"),
        Some(("guest", "nope")),
        None,
    )
    .await?;
    assert_eq!(status, 401);
    assert_eq!(
        serde_json::from_str::<Value>(&body)?["error"],
        "not_authorized"
    );

    let (status, _) = http(
        "PUT",
        format!("{base}/api/users/watcher"),
        GUEST,
        Some(json!({"password": "pw", "tags": "monitoring"})),
    )
    .await?;
    assert_eq!(status, 201);
    let watcher = Some(("watcher", "pw"));
    let (status, _) = http("GET", format!("{base}/api/queues"), watcher, None).await?;
    assert_eq!(status, 200, "a monitoring user may read");
    for (method, path, body) in [
        ("DELETE", "/api/queues/%2F/x", None),
        ("PUT", "/api/users/other", Some(json!({"password": "x"}))),
        ("DELETE", "/api/users/guest", None),
        (
            "PUT",
            "/api/permissions/%2F/watcher",
            Some(json!({"configure": ".*", "write": ".*", "read": ".*"})),
        ),
    ] {
        let (status, body) = http(method, format!("{base}{path}"), watcher, body).await?;
        assert_eq!(status, 403, "{method} {path}: {body}");
    }
    let users = get_json(&base, "/api/users").await?;
    let w = users
        .as_array()
        .into_iter()
        .flatten()
        .find(|u| u["name"] == "watcher")
        .cloned()
        .unwrap_or_default();
    assert_eq!(w["tags"], json!(["monitoring"]));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_added_through_the_api_can_log_in() -> anyhow::Result<()> {
    let (b, base) = start().await?;
    let url = format!("amqp://alice:s3cret@{}/%2f", b.local_addr());
    assert!(
        Connection::connect(&url, ConnectionProperties::default())
            .await
            .is_err(),
        "no such user yet"
    );
    let (status, _) = http(
        "PUT",
        format!("{base}/api/users/alice"),
        GUEST,
        Some(json!({"password": "s3cret", "tags": ""})),
    )
    .await?;
    assert_eq!(status, 201);
    let (status, _) = http(
        "PUT",
        format!("{base}/api/permissions/%2F/alice"),
        GUEST,
        Some(json!({"configure": ".*", "write": ".*", "read": ".*"})),
    )
    .await?;
    assert_eq!(status, 201);
    let perm = get_json(&base, "/api/permissions/%2F/alice").await?;
    assert_eq!(
        perm,
        json!({"user": "alice", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"})
    );
    let conn = Connection::connect(&url, ConnectionProperties::default()).await?;
    conn.create_channel().await?;
    let conns = get_json(&base, "/api/connections").await?;
    assert_eq!(conns[0]["user"], "alice");
    conn.close(200, "bye".into()).await?;

    let (status, _) = http("DELETE", format!("{base}/api/users/alice"), GUEST, None).await?;
    assert_eq!(status, 204);
    assert!(
        Connection::connect(&url, ConnectionProperties::default())
            .await
            .is_err()
    );
    let (status, _) = http("DELETE", format!("{base}/api/users/alice"), GUEST, None).await?;
    assert_eq!(status, 404);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_and_delete_through_the_api() -> anyhow::Result<()> {
    let (b, base) = start().await?;
    let (_conn, _chs, _consumer, _got) = five_published_two_unacked(&b.amqp_url(), "p").await?;
    wait_queue(&base, "p", |q| q["messages_unacknowledged"] == 2).await?;
    let (status, _) = http(
        "DELETE",
        format!("{base}/api/queues/%2F/p/contents"),
        GUEST,
        None,
    )
    .await?;
    assert_eq!(status, 204);
    let q = wait_queue(&base, "p", |q| q["messages_ready"] == 0).await?;
    assert_eq!(
        q["messages_unacknowledged"], 2,
        "purge leaves unacked messages"
    );

    let (status, _) = http(
        "DELETE",
        format!("{base}/api/queues/%2F/p?if-unused=true"),
        GUEST,
        None,
    )
    .await?;
    assert_eq!(status, 400, "in use");
    let (status, _) = http("DELETE", format!("{base}/api/queues/%2F/p"), GUEST, None).await?;
    assert_eq!(status, 204);
    let (status, _) = http("GET", format!("{base}/api/queues/%2F/p"), GUEST, None).await?;
    assert_eq!(status, 404);
    let (status, _) = http(
        "DELETE",
        format!("{base}/api/queues/%2F/p/contents"),
        GUEST,
        None,
    )
    .await?;
    assert_eq!(status, 404);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_connection_sends_320_to_the_client() -> anyhow::Result<()> {
    let (b, base) = start().await?;
    let conn = Connection::connect(&b.amqp_url(), ConnectionProperties::default()).await?;
    let mut events = conn.events_listener();
    let _ch = conn.create_channel().await?;
    let conns = get_json(&base, "/api/connections").await?;
    let name = conns[0]["name"].as_str().unwrap_or_default().to_owned();
    let path = common::encode_segment(&name);
    let (status, body) = http(
        "DELETE",
        format!("{base}/api/connections/{path}"),
        GUEST,
        None,
    )
    .await?;
    assert_eq!(status, 204, "{body}");
    let (code, text) = common::closed_with(&mut events).await?;
    assert_eq!(code, 320);
    assert!(text.contains("Closed via management plugin"), "{text}");
    common::poll::try_until(
        Duration::from_secs(5),
        "the connection unlisted",
        || async {
            Ok::<_, anyhow::Error>(
                (get_json(&base, "/api/connections").await? == json!([])).then_some(()),
            )
        },
    )
    .await?;
    let (status, _) = http(
        "DELETE",
        format!("{base}/api/connections/{path}"),
        GUEST,
        None,
    )
    .await?;
    assert_eq!(status, 404);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vhosts_are_created_and_deleted_through_the_api() -> anyhow::Result<()> {
    let (_b, base) = start().await?;
    let vhosts = get_json(&base, "/api/vhosts").await?;
    assert_eq!(vhosts.as_array().map(Vec::len), Some(1));
    assert_eq!(vhosts[0]["name"], "/");
    let (status, body) = http("GET", format!("{base}/api/queues/other"), GUEST, None).await?;
    assert_eq!(status, 404);
    assert_eq!(
        serde_json::from_str::<Value>(&body)?,
        json!({"error": "Object Not Found", "reason": "Not Found"})
    );
    let (status, body) = http("PUT", format!("{base}/api/vhosts/other"), GUEST, None).await?;
    assert_eq!(status, 201, "{body}");
    let (status, _) = http("PUT", format!("{base}/api/vhosts/other"), GUEST, None).await?;
    assert_eq!(status, 204);
    let (status, _) = http("PUT", format!("{base}/api/vhosts/%2F"), GUEST, None).await?;
    assert_eq!(status, 204);
    let names: Vec<Value> = get_json(&base, "/api/vhosts")
        .await?
        .as_array()
        .map(|a| a.iter().map(|v| v["name"].clone()).collect())
        .unwrap_or_default();
    assert_eq!(names, [json!("/"), json!("other")]);
    assert_eq!(get_json(&base, "/api/queues/other").await?, json!([]));
    assert_eq!(get_json(&base, "/api/vhosts/other").await?["messages"], 0);
    let (status, _) = http("DELETE", format!("{base}/api/vhosts/other"), GUEST, None).await?;
    assert_eq!(status, 204);
    let (status, _) = http("DELETE", format!("{base}/api/vhosts/other"), GUEST, None).await?;
    assert_eq!(status, 404);
    let (status, _) = http("GET", format!("{base}/api/queues/other"), GUEST, None).await?;
    assert_eq!(status, 404);
    Ok(())
}

use common::ctl::run as ctl;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_lists_queues_as_rabbitmqctl_does() -> anyhow::Result<()> {
    let (b, base) = start().await?;
    let (_conn, _chs, _consumer, _got) = five_published_two_unacked(&b.amqp_url(), "work").await?;
    wait_queue(&base, "work", |q| q["messages_unacknowledged"] == 2).await?;
    let (code, out, err) = ctl(
        &base,
        &[
            "list-queues",
            "name",
            "messages_ready",
            "messages_unacknowledged",
        ],
    )
    .await?;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "name\tmessages_ready\tmessages_unacknowledged\nwork\t3\t2\n"
    );

    let (code, out, _) = ctl(&base, &["list-queues"]).await?;
    assert_eq!(code, 0);
    assert_eq!(out, "name\tmessages\nwork\t5\n");

    let (code, out, _) = ctl(
        &base,
        &["--format", "json", "list-queues", "name", "consumers"],
    )
    .await?;
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out)?,
        json!([{"name": "work", "consumers": 1}])
    );

    let (code, out, _) = ctl(&base, &["list-bindings"]).await?;
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "source_name\tsource_kind\tdestination_name\tdestination_kind\trouting_key\targuments\n\texchange\twork\tqueue\twork\t[]\n"
    );

    let (code, _, err) = ctl(&base, &["add-vhost", "other"]).await?;
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = ctl(&base, &["list-vhosts"]).await?;
    assert_eq!(out, "name\n/\nother\n");
    let (code, out, err) = ctl(&base, &["list-queues", "-p", "other"]).await?;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "name\tmessages\n");
    let (code, _, err) = ctl(&base, &["list-queues", "-p", "nope"]).await?;
    assert_ne!(code, 0);
    assert!(err.contains("404"), "{err}");
    let (code, _, err) = ctl(&base, &["delete-vhost", "other"]).await?;
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = ctl(&base, &["list-vhosts"]).await?;
    assert_eq!(out, "name\n/\n");

    let (code, _, err) = ctl(&base, &["add-user", "bob", "pw"]).await?;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = ctl(&base, &["set-user-tags", "bob", "monitoring", "management"]).await?;
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = ctl(&base, &["list-users"]).await?;
    assert!(
        out.lines().any(|l| l == "bob\t[monitoring, management]"),
        "{out}"
    );
    let (code, _, err) = ctl(&base, &["set-permissions", "bob", ".*", "", "^work$"]).await?;
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = ctl(&base, &["list-permissions"]).await?;
    assert!(out.lines().any(|l| l == "bob\t.*\t\t^work$"), "{out}");

    let (code, _, err) = ctl(&base, &["purge-queue", "work"]).await?;
    assert_eq!(code, 0, "{err}");
    wait_queue(&base, "work", |q| q["messages_ready"] == 0).await?;
    let (code, _, err) = ctl(
        &base,
        &["--user", "bob", "--password", "pw", "delete-queue", "work"],
    )
    .await?;
    assert_ne!(code, 0);
    assert!(err.contains("403"), "{err}");
    Ok(())
}
