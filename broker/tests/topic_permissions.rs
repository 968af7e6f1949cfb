//! Topic permissions as RabbitMQ has them (its texts and codes checked by hand
//! against RabbitMQ 3.10.8 with a pika client): set through `/api/topic-permissions`,
//! enforced on the routing keys of publishes to topic exchanges (write) and on the
//! binding keys of bindings to them (read), with `{username}` expanded; other
//! exchanges and other users are not limited; kept across a restart and carried by
//! the definitions.

mod common;

use common::expect_error;
use common::http::{call, get_json, http};
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::json;

const ADMIN: (&str, &str) = ("guest", "guest");

fn builder() -> broker::BrokerBuilder {
    broker::Broker::builder()
        .user("tp", "pw")
        .permissions("tp", "/", ".*", ".*", ".*")
        .unwrap_or_else(|e| panic!("permissions: {e}"))
}

async fn channel(url: &str) -> anyhow::Result<(Connection, Channel)> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok((conn, ch))
}

async fn publish(ch: &Channel, exchange: &str, key: &str) -> Result<(), lapin::Error> {
    ch.basic_publish(
        exchange.into(),
        key.into(),
        BasicPublishOptions::default(),
        b"m",
        BasicProperties::default(),
    )
    .await?
    .await?;
    Ok(())
}

#[tokio::test]
async fn routing_and_binding_keys_are_checked_on_topic_exchanges() -> anyhow::Result<()> {
    let (b, base) = common::http::start_with_api(builder()).await?;
    let path = "/api/topic-permissions/%2F/tp";
    let (status, _) = http("GET", format!("{base}{path}"), Some(ADMIN), None).await?;
    assert_eq!(status, 404, "none yet");
    let perm = json!({"exchange": "amq.topic", "write": "^{username}\\.", "read": "^ok\\."});
    call(&base, ADMIN, "PUT", path, Some(perm.clone()), 201).await?;
    call(&base, ADMIN, "PUT", path, Some(perm), 204).await?;
    let row = json!({"user": "tp", "vhost": "/", "exchange": "amq.topic", "write": "^{username}\\.", "read": "^ok\\."});
    assert_eq!(get_json(&base, path).await?, json!([row]));
    assert_eq!(
        get_json(&base, "/api/topic-permissions").await?,
        json!([row])
    );
    assert_eq!(
        get_json(&base, "/api/users/tp/topic-permissions").await?,
        json!([row])
    );
    assert_eq!(
        get_json(&base, "/api/vhosts/%2F/topic-permissions").await?,
        json!([row])
    );
    let missing = call(
        &base,
        ADMIN,
        "PUT",
        path,
        Some(json!({"write": ".*", "read": ".*"})),
        400,
    )
    .await?;
    assert_eq!(missing["reason"], json!("[{key_missing,exchange}]"));

    let url = format!("amqp://tp:pw@{}/%2f", b.local_addr());
    let (_conn, ch) = channel(&url).await?;
    publish(&ch, "amq.topic", "tp.orders").await?;
    // Not a topic exchange: any key.
    publish(&ch, "amq.direct", "anything").await?;
    expect_error(
        publish(&ch, "amq.topic", "other.orders").await,
        403,
        "ACCESS_REFUSED - access to topic 'other.orders' in exchange 'amq.topic' in vhost '/' refused for user 'tp'",
    );
    let ch = _conn.create_channel().await?;
    ch.queue_declare(
        "tp.q".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let bind = |key: &'static str| {
        let ch = ch.clone();
        async move {
            ch.queue_bind(
                "tp.q".into(),
                "amq.topic".into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
        }
    };
    bind("ok.#").await?;
    expect_error(
        bind("nope.#").await,
        403,
        "ACCESS_REFUSED - access to topic 'nope.#' in exchange 'amq.topic' in vhost '/' refused for user 'tp'",
    );
    // guest has none: not limited.
    let (_g, gch) = channel(&b.amqp_url()).await?;
    publish(&gch, "amq.topic", "other.orders").await?;

    call(&base, ADMIN, "DELETE", path, None, 204).await?;
    call(&base, ADMIN, "DELETE", path, None, 404).await?;
    let (_conn2, ch2) = channel(&url).await?;
    publish(&ch2, "amq.topic", "other.orders").await?;
    b.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn topic_permissions_survive_a_restart_and_travel_with_the_definitions() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let start = || common::http::start_with_api(builder().data_dir(dir.path()));
    let (b, base) = start().await?;
    let perm = json!({"exchange": "amq.topic", "write": "^a\\.", "read": ".*"});
    call(
        &base,
        ADMIN,
        "PUT",
        "/api/topic-permissions/%2F/tp",
        Some(perm),
        201,
    )
    .await?;
    b.shutdown().await;

    let (b, base) = start().await?;
    let url = format!("amqp://tp:pw@{}/%2f", b.local_addr());
    let (_conn, ch) = channel(&url).await?;
    expect_error(
        publish(&ch, "amq.topic", "b.x").await,
        403,
        "ACCESS_REFUSED - access to topic 'b.x' in exchange 'amq.topic' in vhost '/' refused for user 'tp'",
    );
    let defs = get_json(&base, "/api/definitions").await?;
    assert_eq!(
        defs["topic_permissions"],
        json!([{"user": "tp", "vhost": "/", "exchange": "amq.topic", "write": "^a\\.", "read": ".*"}])
    );
    b.shutdown().await;

    let (c, base_c) = common::http::start_with_api(broker::Broker::builder()).await?;
    call(
        &base_c,
        ADMIN,
        "POST",
        "/api/definitions",
        Some(defs.clone()),
        204,
    )
    .await?;
    assert_eq!(
        get_json(&base_c, "/api/topic-permissions").await?,
        defs["topic_permissions"]
    );
    c.shutdown().await;
    Ok(())
}
