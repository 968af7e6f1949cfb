//! Every management API endpoint that rabbitmqadmin v2 reads, decoded into the types of
//! `rabbitmq_http_client` (the crate rabbitmqadmin is built on): the oracle for
//! RabbitMQ's field names and types. One test walks them all with a connection, two
//! channels, a consumer, a queue and a binding in place, and reports every endpoint
//! that fails (status or decoding) at once.

mod common;

use common::http::{GUEST, http};
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use rabbitmq_http_client::responses as r;
use serde::de::DeserializeOwned;
use serde_json::json;

/// GETs `path` and decodes the body as `T`; the failure as text.
async fn decode<T: DeserializeOwned>(base: &str, path: &str) -> Result<T, String> {
    let (status, body) = http("GET", format!("{base}/api/{path}"), GUEST, None)
        .await
        .map_err(|e| format!("GET {path}: {e}"))?;
    if status != 200 {
        return Err(format!("GET {path}: {status} {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("GET {path}: {e}: {body}"))
}

/// Collects the failures of a list of checks.
#[derive(Default)]
struct Report(Vec<String>);

impl Report {
    fn check<T>(&mut self, res: Result<T, String>) -> Option<T> {
        res.map_err(|e| self.0.push(e)).ok()
    }
}

#[tokio::test]
async fn every_endpoint_decodes_into_rabbitmq_http_client_types() -> anyhow::Result<()> {
    let (b, base) = common::http::start_with_api(broker::Broker::builder()).await?;
    let conn = Connection::connect(&b.amqp_url(), ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    let q = "types.q";
    ch.queue_declare(
        q.into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await?;
    ch.exchange_declare(
        "types.x".into(),
        lapin::ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await?;
    ch.queue_bind(
        q.into(),
        "types.x".into(),
        "k".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    ch.basic_publish(
        "".into(),
        q.into(),
        BasicPublishOptions::default(),
        b"m",
        BasicProperties::default(),
    )
    .await?
    .await?;
    let cch = conn.create_channel().await?;
    cch.basic_qos(5, BasicQosOptions::default()).await?;
    let _consumer = cch
        .basic_consume(
            q.into(),
            "types.c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;

    // The connection shows up in the registry once it is open; wait for the listing.
    let conns: Vec<r::Connection> = common::poll::try_until(
        std::time::Duration::from_secs(10),
        "the connection in /api/connections",
        || async {
            let v: Vec<r::Connection> = decode(&base, "connections")
                .await
                .map_err(anyhow::Error::msg)?;
            Ok::<_, anyhow::Error>((!v.is_empty()).then_some(v))
        },
    )
    .await?;
    let conn_name = conns[0].name.clone();
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };

    let mut rep = Report::default();
    let ov = rep.check(decode::<r::Overview>(&base, "overview").await);
    let nodes = rep.check(decode::<Vec<r::ClusterNode>>(&base, "nodes").await);
    let node = ov.map(|o| o.node).unwrap_or_default();
    rep.check(decode::<r::ClusterNode>(&base, &format!("nodes/{node}")).await);
    rep.check(decode::<r::NodeMemoryFootprint>(&base, &format!("nodes/{node}/memory")).await);
    rep.check(decode::<r::PluginList>(&base, &format!("nodes/{node}/plugins")).await);
    if let Some(n) = nodes {
        rep.check(
            (n.len() == 1)
                .then_some(())
                .ok_or(format!("{} nodes", n.len())),
        );
    }
    rep.check(decode::<r::ClusterIdentity>(&base, "cluster-name").await);
    rep.check(decode::<Vec<r::Connection>>(&base, "connections").await);
    rep.check(decode::<r::Connection>(&base, &format!("connections/{}", enc(&conn_name))).await);
    rep.check(decode::<Vec<r::Connection>>(&base, "vhosts/%2F/connections").await);
    rep.check(decode::<Vec<r::UserConnection>>(&base, "connections/username/guest").await);
    let chans = rep.check(decode::<Vec<r::Channel>>(&base, "channels").await);
    if let Some(c) = chans.as_ref().and_then(|c| c.first()) {
        rep.check(decode::<r::Channel>(&base, &format!("channels/{}", enc(&c.name))).await);
    }
    rep.check(decode::<Vec<r::Channel>>(&base, "vhosts/%2F/channels").await);
    rep.check(
        decode::<Vec<r::Channel>>(&base, &format!("connections/{}/channels", enc(&conn_name)))
            .await,
    );
    rep.check(decode::<Vec<r::Consumer>>(&base, "consumers").await);
    rep.check(decode::<Vec<r::Consumer>>(&base, "consumers/%2F").await);
    rep.check(decode::<Vec<r::QueueInfo>>(&base, "queues").await);
    rep.check(decode::<Vec<r::QueueInfo>>(&base, "queues/%2F").await);
    rep.check(decode::<Vec<r::DetailedQueueInfo>>(&base, "queues/detailed").await);
    rep.check(decode::<r::QueueInfo>(&base, &format!("queues/%2F/{q}")).await);
    rep.check(decode::<Vec<r::BindingInfo>>(&base, &format!("queues/%2F/{q}/bindings")).await);
    rep.check(decode::<Vec<r::ExchangeInfo>>(&base, "exchanges").await);
    rep.check(decode::<Vec<r::ExchangeInfo>>(&base, "exchanges/%2F").await);
    rep.check(decode::<r::ExchangeInfo>(&base, "exchanges/%2F/types.x").await);
    for vertex in ["source", "destination"] {
        rep.check(
            decode::<Vec<r::BindingInfo>>(
                &base,
                &format!("exchanges/%2F/types.x/bindings/{vertex}"),
            )
            .await,
        );
    }
    rep.check(decode::<Vec<r::BindingInfo>>(&base, "bindings").await);
    rep.check(decode::<Vec<r::BindingInfo>>(&base, "bindings/%2F").await);
    rep.check(decode::<Vec<r::User>>(&base, "users").await);
    rep.check(decode::<Vec<r::User>>(&base, "users/without-permissions").await);
    rep.check(decode::<r::User>(&base, "users/guest").await);
    rep.check(decode::<r::CurrentUser>(&base, "whoami").await);
    rep.check(decode::<Vec<r::VirtualHost>>(&base, "vhosts").await);
    rep.check(decode::<r::VirtualHost>(&base, "vhosts/%2F").await);
    rep.check(decode::<Vec<r::Permissions>>(&base, "permissions").await);
    rep.check(decode::<Vec<r::Permissions>>(&base, "vhosts/%2F/permissions").await);
    rep.check(decode::<Vec<r::Permissions>>(&base, "users/guest/permissions").await);
    rep.check(decode::<r::Permissions>(&base, "permissions/%2F/guest").await);
    rep.check(decode::<Vec<r::TopicPermission>>(&base, "topic-permissions").await);
    rep.check(decode::<Vec<r::TopicPermission>>(&base, "vhosts/%2F/topic-permissions").await);
    rep.check(decode::<Vec<r::TopicPermission>>(&base, "users/guest/topic-permissions").await);
    rep.check(decode::<Vec<r::Policy>>(&base, "policies").await);
    rep.check(decode::<Vec<r::Policy>>(&base, "policies/%2F").await);
    rep.check(decode::<Vec<r::Policy>>(&base, "operator-policies").await);
    rep.check(decode::<Vec<r::Policy>>(&base, "operator-policies/%2F").await);
    rep.check(decode::<Vec<r::RuntimeParameter>>(&base, "parameters").await);
    rep.check(decode::<Vec<r::RuntimeParameter>>(&base, "parameters/federation-upstream").await);
    rep.check(decode::<Vec<r::GlobalRuntimeParameter>>(&base, "global-parameters").await);
    rep.check(decode::<r::FeatureFlagList>(&base, "feature-flags").await);
    rep.check(decode::<r::DeprecatedFeatureList>(&base, "deprecated-features").await);
    rep.check(decode::<r::DeprecatedFeatureList>(&base, "deprecated-features/used").await);
    rep.check(decode::<Vec<r::UserLimits>>(&base, "user-limits").await);
    rep.check(decode::<Vec<r::UserLimits>>(&base, "user-limits/guest").await);
    rep.check(decode::<Vec<r::VirtualHostLimits>>(&base, "vhost-limits").await);
    rep.check(decode::<Vec<r::VirtualHostLimits>>(&base, "vhost-limits/%2F").await);
    // What a RabbitMQ node without the plugin answers (3.10 on this machine answers
    // these 404 with this body): the broker has no shovels, federation or streams.
    for absent in ["shovels", "federation-links", "stream/connections"] {
        let (status, body) = http("GET", format!("{base}/api/{absent}"), GUEST, None).await?;
        rep.check(
            (status == 404 && body.contains("Object Not Found"))
                .then_some(())
                .ok_or(format!("GET {absent}: {status} {body}")),
        );
    }
    for check in [
        "alarms",
        "local-alarms",
        "node-is-quorum-critical",
        "virtual-hosts",
        "protocol-listener/amqp",
    ] {
        rep.check(decode::<serde_json::Value>(&base, &format!("health/checks/{check}")).await);
    }
    let port = b.local_addr().port();
    rep.check(
        decode::<serde_json::Value>(&base, &format!("health/checks/port-listener/{port}")).await,
    );

    // POSTs: publish through an exchange, get from the queue.
    let (status, body) = http(
        "POST",
        format!("{base}/api/exchanges/%2F/types.x/publish"),
        GUEST,
        Some(json!({"properties": {}, "routing_key": "k", "payload": "hi", "payload_encoding": "string"})),
    )
    .await?;
    rep.check(
        (status == 200)
            .then_some(())
            .ok_or(format!("POST publish: {status} {body}"))
            .and_then(|()| {
                serde_json::from_str::<r::MessageRouted>(&body)
                    .map_err(|e| format!("POST publish: {e}: {body}"))
            }),
    );

    assert!(
        rep.0.is_empty(),
        "{} endpoints failed:\n{}",
        rep.0.len(),
        rep.0.join("\n")
    );
    conn.close(200, "bye".into()).await?;
    b.shutdown().await;
    Ok(())
}
