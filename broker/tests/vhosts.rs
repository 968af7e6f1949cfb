//! Virtual hosts end to end, with lapin and the management API against the embedded
//! broker: a vhost created through the API is a world of its own (its queues invisible
//! from `/`), every listing shows each object's vhost, an unknown vhost is 530 at
//! `connection.open`, permissions are per vhost, deleting a vhost closes its
//! connections with 320 and takes its queues, and with a data directory a vhost, its
//! durable queues and their persistent messages survive a restart.
//!
//! The texts asserted here were observed on RabbitMQ 3.10 (vhosts made with
//! `rabbitmqctl add_vhost`, deleted with `rabbitmqctl delete_vhost`).

mod common;

use std::path::Path;
use std::time::Duration;

use common::expect_error;
use common::http::{GUEST, get_json, http};
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::{Value, json};

/// A broker with the management API on port 0; its base URL.
async fn start(dir: Option<&Path>) -> anyhow::Result<(broker::BrokerHandle, String)> {
    let mut builder = broker::Broker::builder();
    if let Some(dir) = dir {
        builder = builder.data_dir(dir);
    }
    common::http::start_with_api(builder).await
}

/// `PUT /api/vhosts/NAME` as guest (who then has full permissions on it).
async fn create_vhost(base: &str, name: &str) -> anyhow::Result<()> {
    let path = common::encode_segment(name);
    let (status, body) = http("PUT", format!("{base}/api/vhosts/{path}"), GUEST, None).await?;
    anyhow::ensure!(status == 201, "PUT vhost {name}: {status} {body}");
    Ok(())
}

async fn channel(url: &str) -> anyhow::Result<(Connection, Channel)> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    Ok((conn, ch))
}

fn passive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        passive: true,
        ..Default::default()
    }
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

/// Publishes `bodies` to `queue` with confirms (persistent if `persistent`).
async fn publish(
    ch: &Channel,
    queue: &str,
    bodies: &[&str],
    persistent: bool,
) -> anyhow::Result<()> {
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let props = if persistent {
        BasicProperties::default().with_delivery_mode(2)
    } else {
        BasicProperties::default()
    };
    for body in bodies {
        let confirm = ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                props.clone(),
            )
            .await?
            .await?;
        anyhow::ensure!(confirm.is_ack(), "publish of {body} not acked");
    }
    Ok(())
}

/// Gets every ready message of `queue` (acking them); their bodies in order.
async fn drain(ch: &Channel, queue: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await?
    {
        out.push(String::from_utf8(m.delivery.data.clone())?);
    }
    Ok(out)
}

/// Polls `GET path` until `check` holds (queue counts settle asynchronously).
async fn wait_json(
    base: &str,
    path: &str,
    check: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let last = std::cell::RefCell::new(Value::Null);
    common::poll::try_until(Duration::from_secs(10), path, || async {
        let v = get_json(base, path).await?;
        if check(&v) {
            return Ok(Some(v));
        }
        *last.borrow_mut() = v;
        Ok(None)
    })
    .await
    .map_err(|e: anyhow::Error| e.context(format!("{path} never matched: {}", last.borrow())))
}

/// `(vhost, name, messages)` of every queue `/api/queues...` lists.
fn queue_rows(v: &Value) -> Vec<(String, String, u64)> {
    let mut rows: Vec<(String, String, u64)> = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|q| {
                    (
                        q["vhost"].as_str().unwrap_or_default().to_owned(),
                        q["name"].as_str().unwrap_or_default().to_owned(),
                        q["messages"].as_u64().unwrap_or(u64::MAX),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    rows.sort();
    rows
}

fn row(vhost: &str, name: &str, messages: u64) -> (String, String, u64) {
    (vhost.to_owned(), name.to_owned(), messages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vhost_made_through_the_api_has_queues_of_its_own() -> anyhow::Result<()> {
    let (b, base) = start(None).await?;
    // A name that must be percent-encoded, in the API path and in the AMQP URL.
    create_vhost(&base, "dev/team").await?;
    let (_c1, root) = channel(&b.amqp_url()).await?;
    let (_c2, dev) = channel(&b.amqp_url_for_vhost("dev/team")).await?;

    // Same name in both vhosts: two different queues.
    root.queue_declare("orders".into(), Default::default(), FieldTable::default())
        .await?;
    dev.queue_declare("orders".into(), Default::default(), FieldTable::default())
        .await?;
    dev.queue_declare("only-dev".into(), Default::default(), FieldTable::default())
        .await?;
    publish(&root, "orders", &["r1", "r2"], false).await?;
    publish(&dev, "orders", &["d1", "d2", "d3"], false).await?;

    // A queue of one vhost is not there in the other; the text names the vhost.
    let (_c3, root2) = channel(&b.amqp_url()).await?;
    expect_error(
        root2
            .queue_declare("only-dev".into(), passive(), FieldTable::default())
            .await,
        404,
        "NOT_FOUND - no queue 'only-dev' in vhost '/'",
    );
    let (_c4, dev2) = channel(&b.amqp_url_for_vhost("dev/team")).await?;
    expect_error(
        dev2.queue_declare("missing".into(), passive(), FieldTable::default())
            .await,
        404,
        "NOT_FOUND - no queue 'missing' in vhost 'dev/team'",
    );

    let all = wait_json(&base, "/api/queues", |v| {
        queue_rows(v).iter().filter(|r| r.2 > 0).count() == 2
    })
    .await?;
    assert_eq!(
        queue_rows(&all),
        [
            row("/", "orders", 2),
            row("dev/team", "only-dev", 0),
            row("dev/team", "orders", 3),
        ]
    );
    let dev_only = get_json(&base, "/api/queues/dev%2Fteam").await?;
    assert_eq!(
        queue_rows(&dev_only),
        [row("dev/team", "only-dev", 0), row("dev/team", "orders", 3)]
    );
    let q = get_json(&base, "/api/queues/dev%2Fteam/orders").await?;
    assert_eq!(
        (q["vhost"].clone(), q["messages"].clone()),
        (json!("dev/team"), json!(3))
    );
    let vhost = get_json(&base, "/api/vhosts/dev%2Fteam").await?;
    assert_eq!(vhost["messages"], 3);
    let exchanges = get_json(&base, "/api/exchanges/dev%2Fteam").await?;
    assert!(
        exchanges
            .as_array()
            .is_some_and(|a| a.iter().all(|x| x["vhost"] == "dev/team") && !a.is_empty()),
        "{exchanges}"
    );

    let (status, metrics) = http("GET", format!("{base}/metrics/per-object"), None, None).await?;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("rabbitmq_queue_messages{vhost=\"dev/team\",queue=\"orders\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rabbitmq_queue_messages{vhost=\"/\",queue=\"orders\"} 2"),
        "{metrics}"
    );

    // Consuming works in both, each from its own queue.
    for (ch, want) in [(&root, "r1"), (&dev, "d1")] {
        let mut consumer = ch
            .basic_consume(
                "orders".into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let d = common::next_delivery(&mut consumer).await?;
        assert_eq!(d.data, want.as_bytes());
        d.ack(BasicAckOptions::default()).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_vhost_is_530_at_open() -> anyhow::Result<()> {
    let b = broker::Broker::builder().start().await?;
    expect_error(
        Connection::connect(
            &b.amqp_url_for_vhost("nope"),
            ConnectionProperties::default(),
        )
        .await,
        530,
        "NOT_ALLOWED - vhost nope not found",
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_on_one_vhost_do_not_open_another() -> anyhow::Result<()> {
    let b = broker::Broker::builder()
        .vhost("apps")
        .user_with_tags("app", "pw", &[])
        .permissions("app", "apps", ".*", ".*", ".*")?
        .start()
        .await?;
    let at = b.local_addr();
    let (_conn, ch) = channel(&format!("amqp://app:pw@{at}/apps")).await?;
    ch.queue_declare("mine".into(), Default::default(), FieldTable::default())
        .await?;
    expect_error(
        Connection::connect(
            &format!("amqp://app:pw@{at}/%2f"),
            ConnectionProperties::default(),
        )
        .await,
        530,
        "NOT_ALLOWED - access to vhost '/' refused for user 'app'",
    );
    // guest has rights on `/` only: a vhost made at start grants nobody anything.
    expect_error(
        Connection::connect(
            &b.amqp_url_for_vhost("apps"),
            ConnectionProperties::default(),
        )
        .await,
        530,
        "NOT_ALLOWED - access to vhost 'apps' refused for user 'guest'",
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_vhost_closes_its_connections_and_removes_its_queues() -> anyhow::Result<()> {
    let (b, base) = start(None).await?;
    create_vhost(&base, "doomed").await?;
    let (doomed, ch) = channel(&b.amqp_url_for_vhost("doomed")).await?;
    let mut events = Box::pin(doomed.events_listener());
    ch.queue_declare("q".into(), Default::default(), FieldTable::default())
        .await?;
    publish(&ch, "q", &["x"], false).await?;
    let (_keep, root) = channel(&b.amqp_url()).await?;
    root.queue_declare("stays".into(), Default::default(), FieldTable::default())
        .await?;

    let (status, body) = http("DELETE", format!("{base}/api/vhosts/doomed"), GUEST, None).await?;
    assert_eq!(status, 204, "{body}");
    assert_eq!(
        common::closed_with(&mut events).await?,
        (
            320,
            "CONNECTION_FORCED - vhost 'doomed' is deleted".to_owned()
        )
    );
    // Only the deleted vhost's connection went.
    wait_json(&base, "/api/connections", |v| {
        v.as_array()
            .is_some_and(|a| a.len() == 1 && a[0]["vhost"] == "/")
    })
    .await?;
    root.queue_declare("stays".into(), passive(), FieldTable::default())
        .await?;
    assert_eq!(
        queue_rows(&get_json(&base, "/api/queues").await?),
        [row("/", "stays", 0)]
    );
    let (status, _) = http("GET", format!("{base}/api/queues/doomed"), GUEST, None).await?;
    assert_eq!(status, 404);
    expect_error(
        Connection::connect(
            &b.amqp_url_for_vhost("doomed"),
            ConnectionProperties::default(),
        )
        .await,
        530,
        "NOT_ALLOWED - vhost doomed not found",
    );

    // Made again, it starts empty.
    create_vhost(&base, "doomed").await?;
    let (_again, ch) = channel(&b.amqp_url_for_vhost("doomed")).await?;
    expect_error(
        ch.queue_declare("q".into(), passive(), FieldTable::default())
            .await,
        404,
        "NOT_FOUND - no queue 'q' in vhost 'doomed'",
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vhost_and_its_persistent_messages_survive_a_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let (b, base) = start(Some(dir.path())).await?;
        create_vhost(&base, "durable vh").await?;
        let (conn, ch) = channel(&b.amqp_url_for_vhost("durable vh")).await?;
        ch.queue_declare("jobs".into(), durable(), FieldTable::default())
            .await?;
        publish(&ch, "jobs", &["j1", "j2", "j3"], true).await?;
        let (root_conn, root) = channel(&b.amqp_url()).await?;
        root.queue_declare("jobs".into(), durable(), FieldTable::default())
            .await?;
        publish(&root, "jobs", &["root"], true).await?;
        conn.close(200, "bye".into()).await?;
        root_conn.close(200, "bye".into()).await?;
        b.shutdown().await;
    }
    {
        // Nothing names the vhost at this start: it comes back from the data directory.
        let (b, base) = start(Some(dir.path())).await?;
        let names = get_json(&base, "/api/vhosts").await?;
        assert_eq!(
            names
                .as_array()
                .map(|a| a.iter().map(|v| v["name"].clone()).collect::<Vec<_>>()),
            Some(vec![json!("/"), json!("durable vh")])
        );
        // guest's permissions on it (granted when guest created it) were kept too.
        let perm = get_json(&base, "/api/permissions/durable%20vh/guest").await?;
        assert_eq!(perm["configure"], json!(".*"), "{perm}");
        let (_conn, ch) = channel(&b.amqp_url_for_vhost("durable vh")).await?;
        assert_eq!(drain(&ch, "jobs").await?, ["j1", "j2", "j3"]);
        let (_root_conn, root) = channel(&b.amqp_url()).await?;
        assert_eq!(drain(&root, "jobs").await?, ["root"]);
        // Publish one more, to see deletion take the data too.
        publish(&ch, "jobs", &["left"], true).await?;
        let (status, _) = http(
            "DELETE",
            format!("{base}/api/vhosts/durable%20vh"),
            GUEST,
            None,
        )
        .await?;
        assert_eq!(status, 204);
        b.shutdown().await;
    }
    let vhost_dirs: Vec<_> = std::fs::read_dir(dir.path().join("vhosts"))?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(vhost_dirs.is_empty(), "left behind: {vhost_dirs:?}");
    let b = broker::Broker::builder()
        .data_dir(dir.path())
        .start()
        .await?;
    expect_error(
        Connection::connect(
            &b.amqp_url_for_vhost("durable vh"),
            ConnectionProperties::default(),
        )
        .await,
        530,
        "NOT_ALLOWED - vhost durable vh not found",
    );
    // `/` kept its own queue, and none of the deleted vhost's.
    let (_conn, root) = channel(&b.amqp_url()).await?;
    let q = root
        .queue_declare("jobs".into(), passive(), FieldTable::default())
        .await?;
    assert_eq!(q.message_count(), 0);
    Ok(())
}
