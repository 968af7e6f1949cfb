//! Vhost names and the data directory: any valid vhost name gets a store (however
//! long its escaped form), a data directory whose vhost list names a vhost that never
//! got a directory starts again, and one vhost whose store cannot be read does not stop
//! the broker (it is not served, and its data is kept for repair).

mod common;

use std::path::Path;

use common::http::{GUEST, http};
use lapin::options::{BasicGetOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

async fn start(dir: &Path) -> anyhow::Result<(broker::BrokerHandle, String)> {
    common::http::start_with_api(broker::Broker::builder().data_dir(dir)).await
}

/// `PUT /api/vhosts/NAME` as guest; the status.
async fn create_vhost(base: &str, name: &str) -> anyhow::Result<u16> {
    let path = common::encode_segment(name);
    let (status, _) = http("PUT", format!("{base}/api/vhosts/{path}"), GUEST, None).await?;
    Ok(status)
}

async fn channel(b: &broker::BrokerHandle, vhost: &str) -> anyhow::Result<(Connection, Channel)> {
    let url = b.amqp_url_for_vhost(vhost);
    let conn = Connection::connect(&url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    Ok((conn, ch))
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

/// Declares the durable queue `q` in `vhost` and publishes `body` to it, confirmed.
async fn put(b: &broker::BrokerHandle, vhost: &str, body: &str) -> anyhow::Result<()> {
    let (conn, ch) = channel(b, vhost).await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    ch.queue_declare("q".into(), durable(), FieldTable::default())
        .await?;
    let confirm = ch
        .basic_publish(
            "".into(),
            "q".into(),
            Default::default(),
            body.as_bytes(),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await?
        .await?;
    anyhow::ensure!(confirm.is_ack(), "not confirmed");
    conn.close(200, "ok".into()).await?;
    Ok(())
}

/// The next message of queue `q` in `vhost`.
async fn take(b: &broker::BrokerHandle, vhost: &str) -> anyhow::Result<Option<String>> {
    let (conn, ch) = channel(b, vhost).await?;
    let m = ch
        .basic_get("q".into(), BasicGetOptions { no_ack: true })
        .await?;
    conn.close(200, "ok".into()).await?;
    Ok(m.map(|m| String::from_utf8_lossy(&m.delivery.data).into_owned()))
}

#[tokio::test]
async fn vhosts_with_long_names_keep_their_messages_through_a_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // 86 capitals escape to 258 bytes, 29 CJK characters to 261: over NAME_MAX.
    let names = ["A".repeat(86), "漢".repeat(29), "x".repeat(255)];
    let (b, api) = start(dir.path()).await?;
    for name in &names {
        assert_eq!(create_vhost(&api, name).await?, 201, "PUT vhost {name}");
        put(&b, name, &format!("kept in {name}")).await?;
    }
    b.shutdown().await;
    let (b, _api) = start(dir.path()).await?;
    for name in &names {
        assert_eq!(
            take(&b, name).await?,
            Some(format!("kept in {name}")),
            "vhost {name}"
        );
    }
    b.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_listed_vhost_without_a_directory_does_not_stop_the_start() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // What the earlier code left behind: the name listed, its directory never made.
    let long = "B".repeat(86);
    broker::internals::write_list(dir.path(), std::slice::from_ref(&long))?;
    let (b, api) = start(dir.path()).await?;
    let path = common::encode_segment(&long);
    let all = serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"});
    let (status, body) = http(
        "PUT",
        format!("{api}/api/permissions/{path}/guest"),
        GUEST,
        Some(all),
    )
    .await?;
    assert_eq!(status, 201, "{body}");
    put(&b, &long, "after").await?;
    put(&b, "/", "default").await?;
    b.shutdown().await;
    let (b, _api) = start(dir.path()).await?;
    assert_eq!(take(&b, &long).await?.as_deref(), Some("after"));
    assert_eq!(take(&b, "/").await?.as_deref(), Some("default"));
    b.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn one_unreadable_vhost_store_does_not_stop_the_others() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (b, api) = start(dir.path()).await?;
    for name in ["broken", "fine"] {
        assert_eq!(create_vhost(&api, name).await?, 201);
        put(&b, name, name).await?;
    }
    b.shutdown().await;
    let damaged = dir.path().join("vhosts/broken/definitions");
    std::fs::write(&damaged, b"not a definitions file")?;

    let (b, api) = start(dir.path()).await?;
    assert_eq!(take(&b, "fine").await?.as_deref(), Some("fine"));
    let refused = Connection::connect(
        &b.amqp_url_for_vhost("broken"),
        ConnectionProperties::default(),
    )
    .await;
    assert!(
        refused.is_err(),
        "a vhost whose store is damaged is not served"
    );
    // Creating another vhost rewrites the list: the damaged one stays in it.
    assert_eq!(create_vhost(&api, "later").await?, 201);
    b.shutdown().await;
    assert_eq!(
        std::fs::read(&damaged)?,
        b"not a definitions file",
        "kept for repair"
    );

    // Repaired (here: the file removed, so the vhost starts empty but listed, with
    // its permissions).
    std::fs::remove_file(&damaged)?;
    let (b, _api) = start(dir.path()).await?;
    let (conn, _ch) = channel(&b, "broken").await?;
    conn.close(200, "ok".into()).await?;
    assert_eq!(take(&b, "fine").await?, None);
    b.shutdown().await;
    Ok(())
}
