//! Vhost and user limits set through the management API and enforced on AMQP with
//! RabbitMQ's codes and texts (each checked by hand against RabbitMQ 3.10.8):
//! `max-connections` and `max-queues` of a vhost, `max-connections` and
//! `max-channels` of a user; the listings decode into rabbitmq_http_client's types,
//! the validation answers RabbitMQ's 400s, and the limits survive a restart.

mod common;

use common::http::{GUEST, get_json, http};
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use rabbitmq_http_client::responses as r;
use serde_json::{Value, json};

async fn set(base: &str, path: &str, value: Value) -> (u16, String) {
    http(
        "PUT",
        format!("{base}/api/{path}"),
        GUEST,
        Some(json!({ "value": value })),
    )
    .await
    .unwrap_or((0, String::new()))
}

async fn connect(url: &str) -> Result<Connection, lapin::Error> {
    Connection::connect(url, ConnectionProperties::default()).await
}

/// The AMQP code and text of a refused operation.
fn refusal(e: &lapin::Error) -> Option<(u16, String)> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(p) => Some((p.get_id(), p.get_message().to_string())),
        _ => None,
    }
}

#[tokio::test]
async fn vhost_limits_refuse_connections_and_queues_as_rabbitmq() -> anyhow::Result<()> {
    let (b, base) = common::http::start_with_api(broker::Broker::builder()).await?;
    assert_eq!(
        set(&base, "vhost-limits/%2F/max-connections", json!(1))
            .await
            .0,
        204
    );
    assert_eq!(
        set(&base, "vhost-limits/%2F/max-queues", json!(2)).await.0,
        204
    );
    let listed: Vec<r::VirtualHostLimits> =
        serde_json::from_value(get_json(&base, "/api/vhost-limits").await?)?;
    assert_eq!(listed.len(), 1);
    let of: Value = get_json(&base, "/api/vhost-limits/%2F").await?;
    assert_eq!(
        of,
        json!([{"vhost": "/", "value": {"max-connections": 1, "max-queues": 2}}])
    );

    let first = connect(&b.amqp_url()).await?;
    let second = connect(&b.amqp_url()).await;
    let err = second.err().and_then(|e| refusal(&e));
    assert_eq!(
        err,
        Some((
            530,
            "NOT_ALLOWED - access to vhost '/' refused for user 'guest': connection limit (1) is reached"
                .to_owned()
        ))
    );

    let ch = first.create_channel().await?;
    for q in ["lim.a", "lim.b"] {
        ch.queue_declare(
            q.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    // A redeclare is no new queue.
    ch.queue_declare(
        "lim.a".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let third = ch
        .queue_declare(
            "lim.c".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert_eq!(
        third.err().and_then(|e| refusal(&e)),
        Some((
            406,
            "PRECONDITION_FAILED - cannot declare queue 'lim.c': queue limit in vhost '/' (2) is reached"
                .to_owned()
        ))
    );
    first.close(200, "bye".into()).await?;

    // Cleared: both work again.
    for name in ["max-connections", "max-queues"] {
        let (st, _) = http(
            "DELETE",
            format!("{base}/api/vhost-limits/%2F/{name}"),
            GUEST,
            None,
        )
        .await?;
        assert_eq!(st, 204);
    }
    assert_eq!(get_json(&base, "/api/vhost-limits").await?, json!([]));
    let a = connect(&b.amqp_url()).await?;
    let c = connect(&b.amqp_url()).await?;
    c.create_channel()
        .await?
        .queue_declare(
            "lim.c".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
    a.close(200, "bye".into()).await?;
    c.close(200, "bye".into()).await?;
    b.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn user_limits_refuse_connections_and_channels_as_rabbitmq() -> anyhow::Result<()> {
    let (b, base) = common::http::start_with_api(broker::Broker::builder()).await?;
    assert_eq!(
        set(&base, "user-limits/guest/max-connections", json!(1))
            .await
            .0,
        204
    );
    assert_eq!(
        set(&base, "user-limits/guest/max-channels", json!(1))
            .await
            .0,
        204
    );
    let listed: Vec<r::UserLimits> =
        serde_json::from_value(get_json(&base, "/api/user-limits").await?)?;
    assert_eq!(listed.len(), 1);
    // As RabbitMQ lists them, on the user too.
    assert_eq!(
        get_json(&base, "/api/users/guest").await?["limits"],
        json!({"max-channels": 1, "max-connections": 1})
    );

    let first = connect(&b.amqp_url()).await?;
    let second = connect(&b.amqp_url()).await;
    assert_eq!(
        second.err().and_then(|e| refusal(&e)),
        Some((
            530,
            "NOT_ALLOWED - connection refused for user 'guest': user connection limit (1) is reached"
                .to_owned()
        ))
    );
    let _ch = first.create_channel().await?;
    let two = first.create_channel().await;
    assert_eq!(
        two.err().and_then(|e| refusal(&e)),
        Some((
            530,
            "NOT_ALLOWED - number of channels opened for user 'guest' has reached the maximum allowed user limit of (1)"
                .to_owned()
        ))
    );
    b.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn limits_are_validated_as_rabbitmq() -> anyhow::Result<()> {
    let (b, base) = common::http::start_with_api(broker::Broker::builder()).await?;
    let (st, body) = set(&base, "vhost-limits/%2F/bogus", json!(1)).await;
    assert_eq!(st, 400);
    assert!(body.contains("Unrecognised terms"), "{body}");
    let (st, body) = set(&base, "vhost-limits/%2F/max-queues", json!("x")).await;
    assert_eq!(st, 400);
    assert!(body.contains("max-queues should be a number"), "{body}");
    let (st, _) = set(&base, "vhost-limits/nowhere/max-queues", json!(1)).await;
    assert_eq!(st, 404);
    let (st, _) = set(&base, "user-limits/nobody/max-channels", json!(1)).await;
    assert_eq!(st, 404);
    // Negative is no limit, kept and listed (as RabbitMQ).
    assert_eq!(
        set(&base, "vhost-limits/%2F/max-connections", json!(-1))
            .await
            .0,
        204
    );
    let c1 = connect(&b.amqp_url()).await?;
    let c2 = connect(&b.amqp_url()).await?;
    assert_eq!(
        get_json(&base, "/api/vhost-limits/%2F").await?,
        json!([{"vhost": "/", "value": {"max-connections": -1}}])
    );
    c1.close(200, "bye".into()).await?;
    c2.close(200, "bye".into()).await?;
    b.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn limits_survive_a_restart_with_a_data_directory() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let start = || common::http::start_with_api(broker::Broker::builder().data_dir(dir.path()));
    let (b, base) = start().await?;
    assert_eq!(
        set(&base, "vhost-limits/%2F/max-queues", json!(0)).await.0,
        204
    );
    b.shutdown().await;

    let (b, base) = start().await?;
    assert_eq!(
        get_json(&base, "/api/vhost-limits").await?,
        json!([{"vhost": "/", "value": {"max-queues": 0}}])
    );
    let conn = connect(&b.amqp_url()).await?;
    let declared = conn
        .create_channel()
        .await?
        .queue_declare(
            "lim.none".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert_eq!(
        declared.err().and_then(|e| refusal(&e)).map(|(c, _)| c),
        Some(406)
    );
    b.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn limits_travel_with_the_definitions_as_rabbitmq_exports_them() -> anyhow::Result<()> {
    let (a, base_a) = common::http::start_with_api(broker::Broker::builder()).await?;
    assert_eq!(
        set(&base_a, "vhost-limits/%2F/max-queues", json!(7))
            .await
            .0,
        204
    );
    assert_eq!(
        set(&base_a, "user-limits/guest/max-channels", json!(3))
            .await
            .0,
        204
    );
    let defs = get_json(&base_a, "/api/definitions").await?;
    // As RabbitMQ 4.0.5 writes them: a `vhost-limits` parameter, the user's `limits`.
    assert_eq!(
        defs["parameters"],
        json!([{"value": {"max-queues": 7}, "vhost": "/", "component": "vhost-limits", "name": "limits"}])
    );
    assert_eq!(defs["users"][0]["limits"], json!({"max-channels": 3}));
    let _: r::ClusterDefinitionSet = serde_json::from_value(defs.clone())?;
    a.shutdown().await;

    let (b, base_b) = common::http::start_with_api(broker::Broker::builder()).await?;
    let (st, body) = http(
        "POST",
        format!("{base_b}/api/definitions"),
        GUEST,
        Some(defs),
    )
    .await?;
    assert_eq!(st, 204, "{body}");
    assert_eq!(
        get_json(&base_b, "/api/vhost-limits").await?,
        json!([{"vhost": "/", "value": {"max-queues": 7}}])
    );
    assert_eq!(
        get_json(&base_b, "/api/user-limits").await?,
        json!([{"user": "guest", "value": {"max-channels": 3}}])
    );
    // Limits all cleared, as RabbitMQ 3.10 and 4.0 then export them: `[]`.
    let cleared = json!({"parameters": [{"value": [], "vhost": "/", "component": "vhost-limits", "name": "limits"}]});
    let (st, body) = http(
        "POST",
        format!("{base_b}/api/definitions"),
        GUEST,
        Some(cleared),
    )
    .await?;
    assert_eq!(st, 204, "{body}");
    // A limit this broker does not know is refused, not dropped.
    let bad = json!({"parameters": [{"value": {"max-bananas": 1}, "vhost": "/", "component": "vhost-limits", "name": "limits"}]});
    let (st, body) = http(
        "POST",
        format!("{base_b}/api/definitions"),
        GUEST,
        Some(bad),
    )
    .await?;
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("max-bananas"), "{body}");
    b.shutdown().await;
    Ok(())
}
