//! A vhost's description, tags and default queue type, as RabbitMQ keeps them: set
//! with `PUT /api/vhosts/{name}` (RabbitMQ 3's comma-separated tags or 4's list),
//! listed in RabbitMQ 4's shape, kept across a restart, carried by the definitions;
//! and the default queue type applied as in RabbitMQ 4: a queue declared without
//! `x-queue-type` that can be a quorum queue is one, an exclusive one stays classic.

mod common;

use common::http::{call, get_json};
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use rabbitmq_http_client::responses as r;
use serde_json::json;

const ADMIN: (&str, &str) = ("guest", "guest");

#[tokio::test]
async fn a_vhost_keeps_its_metadata_and_applies_its_default_queue_type() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let start = || common::http::start_with_api(broker::Broker::builder().data_dir(dir.path()));
    let (b, base) = start().await?;
    let body = json!({"description": "jobs", "tags": "prod, eu", "default_queue_type": "quorum"});
    call(&base, ADMIN, "PUT", "/api/vhosts/jobs", Some(body), 201).await?;
    let v = get_json(&base, "/api/vhosts/jobs").await?;
    assert_eq!(
        (
            v["description"].clone(),
            v["tags"].clone(),
            v["default_queue_type"].clone()
        ),
        (json!("jobs"), json!(["prod", "eu"]), json!("quorum"))
    );
    assert_eq!(v["metadata"]["tags"], json!(["prod", "eu"]));
    let _: r::VirtualHost = serde_json::from_value(v)?;
    // RabbitMQ has no streams here: refused, not ignored.
    let stream = call(
        &base,
        ADMIN,
        "PUT",
        "/api/vhosts/s",
        Some(json!({"default_queue_type": "stream"})),
        400,
    )
    .await?;
    assert!(
        stream["reason"]
            .as_str()
            .is_some_and(|r| r.contains("stream")),
        "{stream}"
    );

    let conn = Connection::connect(
        &b.amqp_url_for_vhost("jobs"),
        ConnectionProperties::default(),
    )
    .await?;
    let ch = conn.create_channel().await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare("work".into(), durable, FieldTable::default())
        .await?;
    // Redeclared without a type: the same queue.
    ch.queue_declare("work".into(), durable, FieldTable::default())
        .await?;
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    ch.queue_declare("mine".into(), exclusive, FieldTable::default())
        .await?;
    let kind = |q: &str| {
        let base = base.clone();
        let q = q.to_owned();
        async move {
            anyhow::Ok(get_json(&base, &format!("/api/queues/jobs/{q}")).await?["type"].clone())
        }
    };
    assert_eq!(kind("work").await?, json!("quorum"));
    assert_eq!(kind("mine").await?, json!("classic"));
    conn.close(200, "bye".into()).await?;

    // The metadata travels with the definitions.
    let defs = get_json(&base, "/api/definitions").await?;
    let jobs = defs["vhosts"]
        .as_array()
        .and_then(|a| a.iter().find(|v| v["name"] == json!("jobs")).cloned())
        .ok_or_else(|| anyhow::anyhow!("jobs exported"))?;
    assert_eq!(jobs["description"], json!("jobs"));
    assert_eq!(jobs["default_queue_type"], json!("quorum"));
    b.shutdown().await;

    // And survives a restart.
    let (b, base) = start().await?;
    assert_eq!(
        get_json(&base, "/api/vhosts/jobs").await?["tags"],
        json!(["prod", "eu"])
    );
    b.shutdown().await;

    let (c, base_c) = common::http::start_with_api(broker::Broker::builder()).await?;
    call(&base_c, ADMIN, "POST", "/api/definitions", Some(defs), 204).await?;
    let v = get_json(&base_c, "/api/vhosts/jobs").await?;
    assert_eq!(
        (v["description"].clone(), v["default_queue_type"].clone()),
        (json!("jobs"), json!("quorum"))
    );
    assert_eq!(
        get_json(&base_c, "/api/queues/jobs/work").await?["type"],
        json!("quorum")
    );
    c.shutdown().await;
    Ok(())
}
