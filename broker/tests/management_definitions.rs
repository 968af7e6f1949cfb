//! `/api/definitions`: what one embedded broker exports (users with their hashes,
//! vhosts, permissions, durable exchanges, queues with arguments, bindings to queues
//! and exchanges) imports into a fresh one, whose listings then match and whose
//! imported users log in with their original passwords. The export is decoded into
//! `rabbitmq_http_client`'s definition types (what rabbitmqadmin v2 reads), a real
//! RabbitMQ 3.10 export (`fixtures/rabbitmq-3.10-definitions.json`) and a 4.0.5 one
//! (`fixtures/rabbitmq-4.0-definitions.json`) import, and
//! what the broker cannot hold (policies, parameters) is refused, never dropped.

mod common;

use std::collections::BTreeSet;

use common::http::http;
use lapin::options::QueueDeclareOptions;
use lapin::options::{ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use rabbitmq_http_client::password_hashing;
use rabbitmq_http_client::requests::UserParams;
use rabbitmq_http_client::responses::{ClusterDefinitionSet, VirtualHostDefinitionSet};
use serde_json::{Value, json};

const FIXTURE_310: &str = include_str!("fixtures/rabbitmq-3.10-definitions.json");
const FIXTURE_40: &str = include_str!("fixtures/rabbitmq-4.0-definitions.json");

/// An API call as guest that must answer `status`; the body as JSON (`null` if empty).
async fn call(
    base: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
    status: u16,
) -> anyhow::Result<Value> {
    common::http::call(base, ("guest", "guest"), method, path, body, status).await
}

async fn listings(base: &str) -> anyhow::Result<BTreeSet<String>> {
    common::definitions::listings(base, ("guest", "guest")).await
}

async fn start() -> anyhow::Result<(broker::BrokerHandle, String)> {
    common::http::start_with_api(broker::Broker::builder()).await
}

fn args(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

/// Builds the definitions the round trip carries, over the API and over AMQP; the
/// open connection holds an exclusive queue, which must not be exported.
async fn populate(b: &broker::BrokerHandle, base: &str) -> anyhow::Result<Connection> {
    call(base, "PUT", "/api/vhosts/orders", Some(json!({})), 201).await?;
    let alice = json!({ "password": "alice-pw", "tags": "management" });
    call(base, "PUT", "/api/users/alice", Some(alice), 201).await?;
    // As rabbitmqadmin v2's `users declare`: a salted hash, no password.
    let salt = password_hashing::salt();
    let hash = password_hashing::base64_encoded_salted_password_hash_sha256(&salt, "hashed-pw");
    let hashed = json!({ "password_hash": hash, "tags": ["monitoring", "custom"] });
    call(base, "PUT", "/api/users/hashed", Some(hashed), 201).await?;
    let nopw = json!({ "password_hash": "", "tags": "" });
    call(base, "PUT", "/api/users/nopw", Some(nopw), 201).await?;
    let perm = json!({ "configure": "^app\\.", "write": ".*", "read": "" });
    call(
        base,
        "PUT",
        "/api/permissions/orders/alice",
        Some(perm),
        201,
    )
    .await?;
    let all = json!({ "configure": ".*", "write": ".*", "read": ".*" });
    call(base, "PUT", "/api/permissions/%2F/hashed", Some(all), 201).await?;
    let q = json!({ "durable": true, "arguments": { "x-dead-letter-exchange": "orders.topic" } });
    call(base, "PUT", "/api/queues/orders/api.q", Some(q), 201).await?;

    let conn = Connection::connect(
        &b.amqp_url_for_vhost("orders"),
        ConnectionProperties::default(),
    )
    .await?;
    let ch = conn.create_channel().await?;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let ae = args(&[(
        "alternate-exchange",
        AMQPValue::LongString("orders.fanout".into()),
    )]);
    ch.exchange_declare("orders.topic".into(), ExchangeKind::Topic, durable, ae)
        .await?;
    ch.exchange_declare(
        "orders.fanout".into(),
        ExchangeKind::Fanout,
        durable,
        FieldTable::default(),
    )
    .await?;
    let internal = ExchangeDeclareOptions {
        durable: true,
        internal: true,
        ..Default::default()
    };
    let headers = ExchangeKind::Custom("headers".into());
    ch.exchange_declare(
        "orders.internal".into(),
        headers,
        internal,
        FieldTable::default(),
    )
    .await?;
    let qargs = args(&[
        ("x-message-ttl", AMQPValue::LongInt(60_000)),
        ("x-max-length", AMQPValue::LongInt(10)),
    ]);
    let durable_q = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare("orders.q".into(), durable_q, qargs)
        .await?;
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    ch.queue_declare("orders.mine".into(), exclusive, FieldTable::default())
        .await?;
    let bargs = args(&[("x-match", AMQPValue::LongString("all".into()))]);
    ch.queue_bind(
        "orders.q".into(),
        "orders.topic".into(),
        "app.#".into(),
        QueueBindOptions::default(),
        bargs,
    )
    .await?;
    ch.queue_bind(
        "orders.mine".into(),
        "orders.topic".into(),
        "mine".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    ch.exchange_bind(
        "orders.internal".into(),
        "orders.topic".into(),
        "x.*".into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let bind = json!({ "routing_key": "" });
    call(
        base,
        "POST",
        "/api/bindings/orders/e/orders.fanout/q/api.q",
        Some(bind),
        201,
    )
    .await?;
    Ok(conn)
}

async fn logs_in(b: &broker::BrokerHandle, user: &str, password: &str, vhost: &str) -> bool {
    let url = format!(
        "amqp://{user}:{password}@{}/{}",
        b.local_addr(),
        common::encode_segment(vhost)
    );
    match Connection::connect(&url, ConnectionProperties::default()).await {
        Ok(c) => c.close(200, "bye".into()).await.is_ok(),
        Err(_) => false,
    }
}

#[tokio::test]
async fn an_export_imports_into_a_fresh_broker_with_the_same_listings_and_logins()
-> anyhow::Result<()> {
    let (a, base_a) = start().await?;
    let conn = populate(&a, &base_a).await?;
    let export = call(&base_a, "GET", "/api/definitions", None, 200).await?;

    // rabbitmqadmin v2's types read it.
    let defs: ClusterDefinitionSet = serde_json::from_value(export.clone())?;
    let hashed = defs
        .users
        .iter()
        .find(|u| u.name == "hashed")
        .ok_or_else(|| anyhow::anyhow!("no user 'hashed' in {export}"))?;
    assert_eq!(hashed.tags.0, ["monitoring", "custom"]);
    assert_eq!(hashed.password_hash.len(), 48, "base64 of 36 bytes");
    let nopw = defs.users.iter().find(|u| u.name == "nopw");
    assert_eq!(nopw.map(|u| u.password_hash.as_str()), Some(""));
    let names = |v: &[String]| v.iter().cloned().collect::<BTreeSet<_>>();
    let queues: Vec<String> = defs.queues.iter().map(|q| q.name.clone()).collect();
    assert_eq!(names(&queues), names(&["api.q".into(), "orders.q".into()]));
    let orders_q = defs.find_queue("orders", "orders.q");
    assert_eq!(
        orders_q.and_then(|q| q.arguments.get("x-message-ttl")),
        Some(&json!(60_000))
    );
    let exchanges: Vec<String> = defs.exchanges.iter().map(|x| x.name.clone()).collect();
    assert_eq!(
        names(&exchanges),
        names(&[
            "orders.fanout".into(),
            "orders.internal".into(),
            "orders.topic".into()
        ]),
        "no default or amq.* exchanges"
    );
    assert_eq!(defs.bindings.len(), 3, "{:?}", defs.bindings);
    assert!(defs.policies.is_empty() && defs.parameters.is_empty());
    for key in [
        "topic_permissions",
        "global_parameters",
        "rabbit_version",
        "product_name",
    ] {
        assert!(export.get(key).is_some(), "{key} missing");
    }

    // The per-vhost form: no users, vhosts, permissions or `vhost` fields.
    let one = call(&base_a, "GET", "/api/definitions/orders", None, 200).await?;
    let vdefs: VirtualHostDefinitionSet = serde_json::from_value(one.clone())?;
    assert_eq!(vdefs.queues.len(), 2);
    assert_eq!(vdefs.exchanges.len(), 3);
    assert_eq!(vdefs.bindings.len(), 3);
    for key in ["users", "vhosts", "permissions"] {
        assert!(one.get(key).is_none(), "{key} in {one}");
    }
    for kind in ["queues", "exchanges", "bindings"] {
        for o in one[kind].as_array().into_iter().flatten() {
            assert!(o.get("vhost").is_none(), "{o}");
        }
    }
    call(&base_a, "GET", "/api/definitions/nope", None, 404).await?;

    let (b, base_b) = start().await?;
    call(
        &base_b,
        "POST",
        "/api/definitions",
        Some(export.clone()),
        204,
    )
    .await?;
    assert_eq!(listings(&base_b).await?, listings(&base_a).await?);
    assert!(logs_in(&b, "alice", "alice-pw", "orders").await);
    assert!(logs_in(&b, "hashed", "hashed-pw", "/").await);
    assert!(!logs_in(&b, "hashed", "wrong", "/").await);
    assert!(!logs_in(&b, "nopw", "", "/").await, "no password logs in");
    // Importing the same file again changes nothing.
    call(&base_b, "POST", "/api/definitions", Some(export), 204).await?;
    assert_eq!(listings(&base_b).await?, listings(&base_a).await?);

    // The per-vhost export loads into another vhost.
    call(&base_b, "PUT", "/api/vhosts/copy", Some(json!({})), 201).await?;
    call(&base_b, "POST", "/api/definitions/copy", Some(one), 204).await?;
    let copied = call(&base_b, "GET", "/api/definitions/copy", None, 200).await?;
    let copied: VirtualHostDefinitionSet = serde_json::from_value(copied)?;
    assert_eq!((copied.queues.len(), copied.bindings.len()), (2, 3));
    conn.close(200, "bye".into()).await?;
    Ok(())
}

#[tokio::test]
async fn only_administrators_export_or_import() -> anyhow::Result<()> {
    let (_b, base) = start().await?;
    let watcher = json!({ "password": "w", "tags": "monitoring" });
    call(&base, "PUT", "/api/users/watcher", Some(watcher), 201).await?;
    for (method, path) in [
        ("GET", "/api/definitions"),
        ("POST", "/api/definitions"),
        ("GET", "/api/definitions/%2F"),
    ] {
        let body = (method == "POST").then(|| json!({}));
        let (status, _) = http(
            method,
            format!("{base}{path}"),
            Some(("watcher", "w")),
            body,
        )
        .await?;
        assert_eq!(status, 403, "{method} {path}");
    }
    Ok(())
}

#[tokio::test]
async fn invalid_policies_and_parameters_are_refused_and_nothing_is_imported() -> anyhow::Result<()>
{
    let (_b, base) = start().await?;
    let queue = json!({ "name": "would.be", "vhost": "/", "durable": true, "auto_delete": false, "arguments": {} });
    // A setting no broker has (a typo): `PUT /api/policies` would refuse it too.
    let policy = json!({ "vhost": "/", "name": "ttl", "pattern": ".*", "apply-to": "queues", "definition": { "message-tt": 1 }, "priority": 0 });
    let file = json!({ "queues": [queue], "policies": [policy] });
    let err = call(&base, "POST", "/api/definitions", Some(file), 400).await?;
    assert!(
        err["reason"].as_str().is_some_and(
            |r| r.contains("policy 'ttl'") && r.contains("are not recognised policy settings")
        ),
        "{err}"
    );
    let parameter =
        json!({ "vhost": "/", "component": "federation-upstream", "name": "up", "value": {} });
    let file = json!({ "queues": [queue], "parameters": [parameter] });
    let err = call(&base, "POST", "/api/definitions/%2F", Some(file), 400).await?;
    assert!(
        err["reason"]
            .as_str()
            .is_some_and(|r| r.contains("parameters")),
        "{err}"
    );
    call(&base, "GET", "/api/queues/%2F/would.be", None, 404).await?;
    // RabbitMQ's own cluster identity is skipped.
    let own = json!([{ "name": "cluster_name", "value": "rabbit@x" }, { "name": "internal_cluster_id", "value": "id" }, { "name": "cluster_tags", "value": [] }]);
    let file = json!({ "queues": [queue], "global_parameters": own });
    call(&base, "POST", "/api/definitions", Some(file), 204).await?;
    call(&base, "GET", "/api/queues/%2F/would.be", None, 200).await?;
    // Any other global parameter is kept, as RabbitMQ keeps it.
    let other =
        json!({ "global_parameters": [{ "name": "mqtt_port_to_vhost_mapping", "value": {} }] });
    call(&base, "POST", "/api/definitions", Some(other), 204).await?;
    let kept = call(&base, "GET", "/api/global-parameters", None, 200).await?;
    assert_eq!(
        kept,
        json!([{ "name": "mqtt_port_to_vhost_mapping", "value": {} }])
    );
    call(
        &base,
        "POST",
        "/api/definitions",
        Some(json!("not definitions")),
        400,
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn existing_objects_are_kept_and_missing_binding_ends_are_refused() -> anyhow::Result<()> {
    let (_b, base) = start().await?;
    let q = json!({ "durable": true, "arguments": { "x-message-ttl": 1000 } });
    call(&base, "PUT", "/api/queues/%2F/kept", Some(q), 201).await?;
    // RabbitMQ 3.10 and 4.0 answer 204 and keep the queue as it was.
    let other = json!({ "name": "kept", "vhost": "/", "durable": true, "auto_delete": false, "arguments": { "x-message-ttl": 2000 } });
    call(
        &base,
        "POST",
        "/api/definitions",
        Some(json!({ "queues": [other] })),
        204,
    )
    .await?;
    let now = call(&base, "GET", "/api/queues/%2F/kept", None, 200).await?;
    assert_eq!(now["arguments"], json!({ "x-message-ttl": 1000 }));
    // As RabbitMQ 4.0: 400 resources_missing, here before anything is made.
    let fresh = json!({ "name": "fresh", "vhost": "/", "durable": true, "auto_delete": false, "arguments": {} });
    let binding = json!({ "source": "nowhere", "vhost": "/", "destination": "fresh", "destination_type": "queue", "routing_key": "", "arguments": {} });
    let file = json!({ "queues": [fresh], "bindings": [binding] });
    let err = call(&base, "POST", "/api/definitions", Some(file), 400).await?;
    assert!(
        err["reason"]
            .as_str()
            .is_some_and(|r| r.contains("resources_missing") && r.contains("nowhere")),
        "{err}"
    );
    call(&base, "GET", "/api/queues/%2F/fresh", None, 404).await?;
    // An object in a vhost that is neither there nor in the file.
    let lost = json!({ "name": "q", "vhost": "elsewhere", "durable": true, "auto_delete": false, "arguments": {} });
    call(
        &base,
        "POST",
        "/api/definitions",
        Some(json!({ "queues": [lost] })),
        400,
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn password_hash_users_log_in_and_bad_hashes_are_refused() -> anyhow::Result<()> {
    let (b, base) = start().await?;
    let salt = password_hashing::salt();
    let hash = password_hashing::base64_encoded_salted_password_hash_sha256(&salt, "s3cret");
    // The body rabbitmqadmin v2's `users declare` sends.
    let body = serde_json::to_value(UserParams::new("h", &hash, "management"))?;
    call(&base, "PUT", "/api/users/h", Some(body), 201).await?;
    let with_algorithm = json!({ "password_hash": hash, "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": "" });
    call(&base, "PUT", "/api/users/h2", Some(with_algorithm), 201).await?;
    let perm = json!({ "configure": ".*", "write": ".*", "read": ".*" });
    call(&base, "PUT", "/api/permissions/%2F/h", Some(perm), 201).await?;
    assert!(logs_in(&b, "h", "s3cret", "/").await);
    let shown = call(&base, "GET", "/api/users/h", None, 200).await?;
    assert_eq!(shown["password_hash"], json!(hash));
    let listed = call(&base, "GET", "/api/users", None, 200).await?;
    assert!(
        listed
            .as_array()
            .into_iter()
            .flatten()
            .all(|u| u["password_hash"].is_string())
    );
    // A new hash for an existing user replaces the password.
    let hash2 = password_hashing::base64_encoded_salted_password_hash_sha256(&salt, "other");
    call(
        &base,
        "PUT",
        "/api/users/h",
        Some(json!({ "password_hash": hash2 })),
        204,
    )
    .await?;
    assert!(!logs_in(&b, "h", "s3cret", "/").await);
    assert!(logs_in(&b, "h", "other", "/").await);
    for bad in [
        json!({ "password_hash": "not base64!" }),
        json!({ "password_hash": "AAAA" }),
        json!({ "password_hash": "", "hashing_algorithm": "rabbit_password_hashing_sha512" }),
    ] {
        call(&base, "PUT", "/api/users/bad", Some(bad), 400).await?;
    }
    call(&base, "GET", "/api/users/bad", None, 404).await?;
    Ok(())
}

#[tokio::test]
async fn a_rabbitmq_3_10_export_imports() -> anyhow::Result<()> {
    let (b, base) = start().await?;
    let file: Value = serde_json::from_str(FIXTURE_310)?;
    call(&base, "POST", "/api/definitions", Some(file), 204).await?;
    let q = call(
        &base,
        "GET",
        "/api/queues/defs-fixture/fixture.q",
        None,
        200,
    )
    .await?;
    assert_eq!(q["durable"], json!(true));
    assert_eq!(
        q["arguments"],
        json!({ "x-dead-letter-exchange": "fixture.topic", "x-max-length": 5, "x-message-ttl": 1000 })
    );
    let x = call(
        &base,
        "GET",
        "/api/exchanges/defs-fixture/fixture.headers",
        None,
        200,
    )
    .await?;
    assert_eq!(
        (&x["type"], &x["internal"]),
        (&json!("headers"), &json!(true))
    );
    let bindings = call(&base, "GET", "/api/bindings/defs-fixture", None, 200).await?;
    let explicit: Vec<&Value> = bindings
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["source"] != json!(""))
        .collect();
    assert_eq!(explicit.len(), 2, "{bindings}");
    // RabbitMQ's hash of "pw1".
    assert!(logs_in(&b, "defs-fixture-user", "pw1", "defs-fixture").await);
    // RabbitMQ 3.10.8 exports tags as a list; older exports (and files written for
    // them) have a comma-separated string, which 3.10 imports too.
    let old = json!({ "users": [{ "name": "defs-fixture-old", "password_hash": "", "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": "management,policymaker", "limits": {} }] });
    call(&base, "POST", "/api/definitions", Some(old), 204).await?;
    let u = call(&base, "GET", "/api/users/defs-fixture-old", None, 200).await?;
    assert_eq!(u["tags"], json!(["management", "policymaker"]));
    Ok(())
}

#[tokio::test]
async fn a_rabbitmq_4_0_export_imports() -> anyhow::Result<()> {
    // 4.0 adds vhost metadata, `x-queue-type: classic` on every classic queue and the
    // `cluster_tags` global parameter.
    let (b, base) = start().await?;
    let file: Value = serde_json::from_str(FIXTURE_40)?;
    call(&base, "POST", "/api/definitions", Some(file), 204).await?;
    let q = call(
        &base,
        "GET",
        "/api/queues/defs-fixture4/fixture4.q",
        None,
        200,
    )
    .await?;
    assert_eq!(q["arguments"]["x-overflow"], json!("reject-publish"));
    let bindings = call(&base, "GET", "/api/bindings/defs-fixture4", None, 200).await?;
    assert!(
        bindings
            .as_array()
            .into_iter()
            .flatten()
            .any(|b| b["source"] == json!("fixture4.direct") && b["routing_key"] == json!("k")),
        "{bindings}"
    );
    assert!(logs_in(&b, "defs-fixture4-user", "pw4", "defs-fixture4").await);
    Ok(())
}

#[tokio::test]
async fn a_form_upload_imports_as_the_management_ui_sends_it() -> anyhow::Result<()> {
    let (_b, base) = start().await?;
    let file = json!({ "queues": [{ "name": "uploaded", "vhost": "/", "durable": true, "auto_delete": false, "arguments": {} }] });
    let body = format!(
        "--b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"defs.json\"\r\nContent-Type: application/json\r\n\r\n{file}\r\n--b0undary--\r\n"
    );
    let url = format!("{base}/api/definitions");
    let status = tokio::task::spawn_blocking(move || -> anyhow::Result<u16> {
        use base64::Engine;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let auth = base64::engine::general_purpose::STANDARD.encode("guest:guest");
        let req = ureq::http::Request::builder()
            .method("POST")
            .uri(&url)
            .header("authorization", format!("Basic {auth}"))
            .header("content-type", "multipart/form-data; boundary=b0undary")
            .body(body)?;
        Ok(agent.run(req)?.status().as_u16())
    })
    .await??;
    assert_eq!(status, 204);
    call(&base, "GET", "/api/queues/%2F/uploaded", None, 200).await?;
    Ok(())
}

#[tokio::test]
async fn imported_durable_definitions_survive_a_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let builder = || broker::Broker::builder().data_dir(dir.path());
    let (b, base) = common::http::start_with_api(builder()).await?;
    let file: Value = serde_json::from_str(FIXTURE_310)?;
    call(&base, "POST", "/api/definitions", Some(file), 204).await?;
    let before = listings(&base).await?;
    b.shutdown().await;
    let (b, base) = common::http::start_with_api(builder()).await?;
    assert_eq!(listings(&base).await?, before);
    assert!(logs_in(&b, "defs-fixture-user", "pw1", "defs-fixture").await);
    Ok(())
}
