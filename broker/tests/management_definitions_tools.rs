//! Definitions with other tools: `broker ctl export-definitions` and
//! `import-definitions` (files and `-`), and real RabbitMQ both ways.
//!
//! The RabbitMQ round trips are `#[ignore]`d; they run against the management API in
//! `RABBITMQ_MGMT_URL` (e.g. `http://guest:guest@127.0.0.1:15672`, RabbitMQ 3.10 or 4.x
//! with `rabbitmq_management` enabled), with throwaway vhosts and users named
//! `defs-rt-*`, which they delete afterwards whether they passed or not:
//!
//! ```text
//! RABBITMQ_MGMT_URL=http://guest:guest@127.0.0.1:15672 \
//!     cargo test -p broker --test management_definitions_tools -- --ignored
//! ```

mod common;

use std::collections::BTreeSet;

use common::definitions::listings;
use common::http::call;
use lapin::options::{ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use serde_json::{Value, json};

const GUEST: (&str, &str) = ("guest", "guest");
const FIXTURE_310: &str = include_str!("fixtures/rabbitmq-3.10-definitions.json");

use common::ctl::run_with_input as ctl;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_exports_to_a_file_and_imports_from_stdin() -> anyhow::Result<()> {
    let (_a, base_a) = common::http::start_with_api(broker::Broker::builder()).await?;
    let fixture: Value = serde_json::from_str(FIXTURE_310)?;
    call(
        &base_a,
        GUEST,
        "POST",
        "/api/definitions",
        Some(fixture),
        204,
    )
    .await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("defs.json");
    let path = file.to_string_lossy().into_owned();
    let (code, out, err) = ctl(&base_a, &["export-definitions", &path], "").await?;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("Exporting definitions in JSON to a file at"),
        "{out}"
    );
    let written = std::fs::read_to_string(&file)?;
    let decoded: rabbitmq_http_client::responses::ClusterDefinitionSet =
        serde_json::from_str(&written)?;
    assert!(decoded.queues.iter().any(|q| q.name == "fixture.q"));
    // `-`: the JSON alone on stdout.
    let (code, out, _) = ctl(
        &base_a,
        &["export-definitions", "-", "-p", "defs-fixture"],
        "",
    )
    .await?;
    assert_eq!(code, 0);
    let one: rabbitmq_http_client::responses::VirtualHostDefinitionSet =
        serde_json::from_str(&out)?;
    assert_eq!(one.exchanges.len(), 2);

    let (_b, base_b) = common::http::start_with_api(broker::Broker::builder()).await?;
    let (code, out, err) = ctl(&base_b, &["import-definitions", "-"], &written).await?;
    assert_eq!(code, 0, "{out} {err}");
    assert_eq!(
        listings(&base_b, GUEST).await?,
        listings(&base_a, GUEST).await?
    );
    // A refused file (a policy with nothing in it) is an error exit with the reason.
    let policy = r#"{"policies":[{"vhost":"/","name":"p","pattern":".*","apply-to":"all","definition":{},"priority":0}]}"#;
    let (code, _, err) = ctl(&base_b, &["import-definitions", "-"], policy).await?;
    assert_ne!(code, 0);
    assert!(
        err.contains("policy 'p'") && err.contains("no policy provided"),
        "{err}"
    );
    let (code, _, err) = ctl(
        &base_b,
        &["import-definitions", "/nonexistent/defs.json"],
        "",
    )
    .await?;
    assert_ne!(code, 0);
    assert!(err.contains("/nonexistent/defs.json"), "{err}");
    Ok(())
}

// ----- real RabbitMQ ------------------------------------------------------------------

/// RabbitMQ's management API from `RABBITMQ_MGMT_URL`: base URL and credentials.
fn rabbitmq() -> anyhow::Result<(String, String, String)> {
    let url = std::env::var("RABBITMQ_MGMT_URL").map_err(|_| {
        anyhow::anyhow!("set RABBITMQ_MGMT_URL, e.g. http://guest:guest@127.0.0.1:15672")
    })?;
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| anyhow::anyhow!("RABBITMQ_MGMT_URL has no scheme: {url}"))?;
    let (creds, host) = rest.rsplit_once('@').unwrap_or(("guest:guest", rest));
    let (user, password) = creds.split_once(':').unwrap_or((creds, ""));
    Ok((
        format!("{scheme}://{}", host.trim_end_matches('/')),
        user.to_owned(),
        password.to_owned(),
    ))
}

/// The lines of a listing that name `prefix` (the throwaway objects).
fn ours(all: BTreeSet<String>, prefix: &str) -> BTreeSet<String> {
    all.into_iter().filter(|l| l.contains(prefix)).collect()
}

/// A definitions file reduced to the objects that name `prefix` (and, to check that
/// they are skipped, RabbitMQ's own global parameters): never another user, so an
/// import into RabbitMQ cannot touch guest.
fn only(defs: &Value, prefix: &str) -> Value {
    let mut out = defs.clone();
    let names = |o: &Value| {
        ["name", "vhost", "user"]
            .iter()
            .any(|k| o[*k].as_str().is_some_and(|v| v.starts_with(prefix)))
    };
    if let Value::Object(m) = &mut out {
        for key in [
            "users",
            "vhosts",
            "permissions",
            "queues",
            "exchanges",
            "bindings",
            "policies",
        ] {
            if let Some(Value::Array(a)) = m.get_mut(key) {
                a.retain(names);
            }
        }
    }
    out
}

/// Deletes the throwaway vhosts and users on RabbitMQ (404s are fine).
async fn clean_rabbitmq(base: &str, auth: (&str, &str), vhosts: &[&str], users: &[&str]) {
    for v in vhosts {
        let path = format!("{base}/api/vhosts/{}", common::encode_segment(v));
        let _ = common::http::http("DELETE", path, Some(auth), None).await;
    }
    for u in users {
        let path = format!("{base}/api/users/{}", common::encode_segment(u));
        let _ = common::http::http("DELETE", path, Some(auth), None).await;
    }
}

/// Users, a vhost, permissions, a queue with arguments and a policy, made over
/// `base`'s management API (RabbitMQ or ours).
async fn populate_over_api(base: &str, auth: (&str, &str), prefix: &str) -> anyhow::Result<()> {
    let vh = format!("{prefix}vh");
    let v = common::encode_segment(&vh);
    call(
        base,
        auth,
        "PUT",
        &format!("/api/vhosts/{v}"),
        Some(json!({})),
        201,
    )
    .await?;
    let user = json!({ "password": "rt-pw", "tags": "management" });
    call(
        base,
        auth,
        "PUT",
        &format!("/api/users/{prefix}user"),
        Some(user),
        201,
    )
    .await?;
    let perm = json!({ "configure": "^rt\\.", "write": ".*", "read": ".*" });
    let path = format!("/api/permissions/{v}/{prefix}user");
    call(base, auth, "PUT", &path, Some(perm), 201).await?;
    let q = json!({ "durable": true, "arguments": { "x-message-ttl": 5000, "x-max-length": 7 } });
    call(
        base,
        auth,
        "PUT",
        &format!("/api/queues/{v}/rt.q"),
        Some(q),
        201,
    )
    .await?;
    let policy = json!({
        "pattern": "^rt\\.", "apply-to": "queues", "priority": 2,
        "definition": { "max-length": 9, "dead-letter-exchange": "rt.dlx" },
    });
    let path = format!("/api/policies/{v}/rt-policy");
    call(base, auth, "PUT", &path, Some(policy), 201).await?;
    Ok(())
}

/// Exchanges and bindings over AMQP (ours has no `PUT /api/exchanges`).
async fn populate_over_amqp(url: &str) -> anyhow::Result<()> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let mut ae = FieldTable::default();
    ae.insert(
        "alternate-exchange".into(),
        AMQPValue::LongString("rt.fanout".into()),
    );
    ch.exchange_declare("rt.topic".into(), ExchangeKind::Topic, durable, ae)
        .await?;
    ch.exchange_declare(
        "rt.fanout".into(),
        ExchangeKind::Fanout,
        durable,
        FieldTable::default(),
    )
    .await?;
    let mut bargs = FieldTable::default();
    bargs.insert("k".into(), AMQPValue::LongString("v".into()));
    ch.queue_bind(
        "rt.q".into(),
        "rt.topic".into(),
        "a.#".into(),
        QueueBindOptions::default(),
        bargs,
    )
    .await?;
    ch.exchange_bind(
        "rt.fanout".into(),
        "rt.topic".into(),
        "x".into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}

/// Exchanges and bindings over RabbitMQ's management API.
async fn populate_rabbitmq_topology(
    base: &str,
    auth: (&str, &str),
    vhost: &str,
) -> anyhow::Result<()> {
    let v = common::encode_segment(vhost);
    let topic = json!({ "type": "topic", "durable": true, "arguments": { "alternate-exchange": "rt.fanout" } });
    call(
        base,
        auth,
        "PUT",
        &format!("/api/exchanges/{v}/rt.topic"),
        Some(topic),
        201,
    )
    .await?;
    let fanout = json!({ "type": "fanout", "durable": true });
    call(
        base,
        auth,
        "PUT",
        &format!("/api/exchanges/{v}/rt.fanout"),
        Some(fanout),
        201,
    )
    .await?;
    let qb = json!({ "routing_key": "a.#", "arguments": { "k": "v" } });
    call(
        base,
        auth,
        "POST",
        &format!("/api/bindings/{v}/e/rt.topic/q/rt.q"),
        Some(qb),
        201,
    )
    .await?;
    let eb = json!({ "routing_key": "x" });
    call(
        base,
        auth,
        "POST",
        &format!("/api/bindings/{v}/e/rt.topic/e/rt.fanout"),
        Some(eb),
        201,
    )
    .await?;
    Ok(())
}

/// Whether `user`/`password` logs in to `base`'s management API.
async fn api_login(base: &str, user: &str, password: &str) -> anyhow::Result<bool> {
    let (status, _) = common::http::http(
        "GET",
        format!("{base}/api/whoami"),
        Some((user, password)),
        None,
    )
    .await?;
    Ok(status == 200)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RabbitMQ's management API in RABBITMQ_MGMT_URL"]
async fn rabbitmq_definitions_import_here_and_ours_import_into_rabbitmq() -> anyhow::Result<()> {
    let (rmq, user, password) = rabbitmq()?;
    let auth = (user.as_str(), password.as_str());
    let tag = std::process::id();
    let from = format!("defs-rt-from-{tag}-");
    let to = format!("defs-rt-to-{tag}-");
    let vhosts = [format!("{from}vh"), format!("{to}vh")];
    let users = [format!("{from}user"), format!("{to}user")];
    let result = async {
        // RabbitMQ -> here.
        populate_over_api(&rmq, auth, &from).await?;
        populate_rabbitmq_topology(&rmq, auth, &vhosts[0]).await?;
        let exported = call(&rmq, auth, "GET", "/api/definitions", None, 200).await?;
        let file = only(&exported, &from);
        let (b, base) = common::http::start_with_api(broker::Broker::builder()).await?;
        call(&base, GUEST, "POST", "/api/definitions", Some(file), 204).await?;
        let theirs = ours(listings(&rmq, auth).await?, &from);
        assert_eq!(ours(listings(&base, GUEST).await?, &from), theirs);
        assert!(theirs.len() >= 8, "{theirs:?}");
        assert!(api_login(&base, &users[0], "rt-pw").await?);
        // The per-vhost form too, into a vhost of another name.
        let v = common::encode_segment(&vhosts[0]);
        let one = call(
            &rmq,
            auth,
            "GET",
            &format!("/api/definitions/{v}"),
            None,
            200,
        )
        .await?;
        call(
            &base,
            GUEST,
            "PUT",
            "/api/vhosts/copy",
            Some(json!({})),
            201,
        )
        .await?;
        call(
            &base,
            GUEST,
            "POST",
            "/api/definitions/copy",
            Some(one),
            204,
        )
        .await?;
        let copy = call(&base, GUEST, "GET", "/api/definitions/copy", None, 200).await?;
        assert_eq!(copy["bindings"].as_array().map(Vec::len), Some(2), "{copy}");

        // Here -> RabbitMQ.
        populate_over_api(&base, GUEST, &to).await?;
        populate_over_amqp(&b.amqp_url_for_vhost(&vhosts[1])).await?;
        let ours_exported = call(&base, GUEST, "GET", "/api/definitions", None, 200).await?;
        let file = only(&ours_exported, &to);
        call(&rmq, auth, "POST", "/api/definitions", Some(file), 204).await?;
        let here = ours(listings(&base, GUEST).await?, &to);
        assert_eq!(ours(listings(&rmq, auth).await?, &to), here);
        assert!(api_login(&rmq, &users[1], "rt-pw").await?);
        anyhow::Ok(())
    }
    .await;
    let v: Vec<&str> = vhosts.iter().map(String::as_str).collect();
    let u: Vec<&str> = users.iter().map(String::as_str).collect();
    clean_rabbitmq(&rmq, auth, &v, &u).await;
    result
}
