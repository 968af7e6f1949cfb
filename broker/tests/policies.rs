//! Policies and operator policies through the management API, applied to queues and
//! exchanges as RabbitMQ applies them (each scenario run by hand against RabbitMQ
//! 3.10.8 first): by pattern, `apply-to` and priority, at once to existing queues,
//! resolved against a queue's own arguments (the lower limit wins; the queue's own
//! dead-letter exchange wins), capped by operator policies, listed in the queue's
//! `policy` and `effective_policy_definition`, refused with RabbitMQ's 400 texts, kept
//! across a restart and carried by the definitions.

mod common;

use common::http::{GUEST, call, get_json, http};
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use rabbitmq_http_client::responses as r;
use serde_json::{Value, json};

const ADMIN: (&str, &str) = ("guest", "guest");

async fn channel(url: &str) -> anyhow::Result<(Connection, Channel)> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok((conn, ch))
}

async fn declare(ch: &Channel, name: &str, args: FieldTable) -> anyhow::Result<()> {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await?;
    Ok(())
}

/// Publishes `bodies` to `queue` through the default exchange, each confirmed.
async fn publish(ch: &Channel, exchange: &str, key: &str, bodies: &[&str]) -> anyhow::Result<()> {
    for b in bodies {
        ch.basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions::default(),
            b.as_bytes(),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await?
        .await?;
    }
    Ok(())
}

/// The bodies of the queue's ready messages, taken with `basic.get` (acked).
async fn drain(ch: &Channel, queue: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await?
    {
        out.push(String::from_utf8_lossy(&m.delivery.data).into_owned());
    }
    Ok(out)
}

async fn queue_json(base: &str, name: &str) -> anyhow::Result<Value> {
    get_json(base, &format!("/api/queues/%2F/{name}")).await
}

async fn ready(base: &str, name: &str) -> anyhow::Result<u64> {
    Ok(queue_json(base, name).await?["messages_ready"]
        .as_u64()
        .unwrap_or(u64::MAX))
}

async fn put_policy(
    base: &str,
    kind: &str,
    name: &str,
    body: Value,
    status: u16,
) -> anyhow::Result<Value> {
    call(
        base,
        ADMIN,
        "PUT",
        &format!("/api/{kind}/%2F/{name}"),
        Some(body),
        status,
    )
    .await
}

fn args(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

#[tokio::test]
async fn a_policy_limits_the_queues_it_matches_at_once_until_it_is_cleared() -> anyhow::Result<()> {
    let (b, base) = common::http::start_with_api(broker::Broker::builder()).await?;
    let (_conn, ch) = channel(&b.amqp_url()).await?;
    for q in ["pol.a", "other"] {
        declare(&ch, q, FieldTable::default()).await?;
        publish(&ch, "", q, &["1", "2", "3", "4", "5"]).await?;
    }
    // RabbitMQ answers 201 for a new policy and 204 for a replaced one.
    let body = json!({"pattern": "^pol\\.", "definition": {"max-length": 2}, "apply-to": "queues"});
    put_policy(&base, "policies", "cap", body.clone(), 201).await?;
    put_policy(&base, "policies", "cap", body, 204).await?;
    assert_eq!(ready(&base, "pol.a").await?, 2, "the excess went at once");
    assert_eq!(
        ready(&base, "other").await?,
        5,
        "a queue the pattern misses"
    );
    let q = queue_json(&base, "pol.a").await?;
    assert_eq!(q["policy"], json!("cap"));
    assert_eq!(q["operator_policy"], Value::Null);
    assert_eq!(q["effective_policy_definition"], json!({"max-length": 2}));
    assert_eq!(
        queue_json(&base, "other").await?["effective_policy_definition"],
        json!({})
    );
    let listed: Vec<r::Policy> = serde_json::from_value(get_json(&base, "/api/policies").await?)?;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "cap");
    assert_eq!(
        get_json(&base, "/api/policies/%2F/cap").await?,
        json!({"vhost": "/", "name": "cap", "pattern": "^pol\\.", "apply-to": "queues",
               "definition": {"max-length": 2}, "priority": 0})
    );
    // drop-head: the oldest went.
    assert_eq!(drain(&ch, "pol.a").await?, ["4", "5"]);

    call(&base, ADMIN, "DELETE", "/api/policies/%2F/cap", None, 204).await?;
    call(&base, ADMIN, "DELETE", "/api/policies/%2F/cap", None, 404).await?;
    publish(&ch, "", "pol.a", &["6", "7", "8"]).await?;
    assert_eq!(ready(&base, "pol.a").await?, 3, "no limit once cleared");
    assert_eq!(queue_json(&base, "pol.a").await?["policy"], Value::Null);
    b.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn queue_arguments_and_operator_policies_resolve_as_in_rabbitmq() -> anyhow::Result<()> {
    let (b, base) = common::http::start_with_api(broker::Broker::builder()).await?;
    let (_conn, ch) = channel(&b.amqp_url()).await?;
    // The queue's own limit (3) is lower than the policy's (10): 3 holds. Its own
    // dead-letter exchange (the default one, to res.dead) beats the policy's.
    declare(&ch, "res.dead", FieldTable::default()).await?;
    declare(
        &ch,
        "res.q",
        args(&[
            ("x-max-length", AMQPValue::LongInt(3)),
            ("x-dead-letter-exchange", AMQPValue::LongString("".into())),
            (
                "x-dead-letter-routing-key",
                AMQPValue::LongString("res.dead".into()),
            ),
        ]),
    )
    .await?;
    put_policy(
        &base,
        "policies",
        "res",
        json!({"pattern": "^res\\.q$", "definition": {"max-length": 10, "dead-letter-exchange": "nowhere"}}),
        201,
    )
    .await?;
    publish(&ch, "", "res.q", &["a", "b", "c", "d"]).await?;
    assert_eq!(ready(&base, "res.q").await?, 3);
    assert_eq!(drain(&ch, "res.dead").await?, ["a"]);
    // An operator policy caps it lower still; the effective definition shows the
    // lower of the two policies.
    put_policy(
        &base,
        "operator-policies",
        "ops",
        json!({"pattern": "^res\\.q$", "definition": {"max-length": 1}, "apply-to": "queues"}),
        201,
    )
    .await?;
    assert_eq!(ready(&base, "res.q").await?, 1);
    assert_eq!(drain(&ch, "res.dead").await?, ["b", "c"]);
    let q = queue_json(&base, "res.q").await?;
    assert_eq!(
        (q["policy"].clone(), q["operator_policy"].clone()),
        (json!("res"), json!("ops"))
    );
    assert_eq!(
        q["effective_policy_definition"],
        json!({"max-length": 1, "dead-letter-exchange": "nowhere"})
    );
    let ops: Vec<r::Policy> =
        serde_json::from_value(get_json(&base, "/api/operator-policies/%2F").await?)?;
    assert_eq!(ops.len(), 1);
    b.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn priority_and_apply_to_choose_the_policy_and_exchanges_take_an_alternate()
-> anyhow::Result<()> {
    let (b, base) = common::http::start_with_api(broker::Broker::builder()).await?;
    let (_conn, ch) = channel(&b.amqp_url()).await?;
    put_policy(&base, "policies", "low", json!({"pattern": "^pr", "definition": {"max-length": 1}, "priority": 1, "apply-to": "queues"}), 201).await?;
    put_policy(&base, "policies", "high", json!({"pattern": "^pr", "definition": {"max-length": 2}, "priority": 5, "apply-to": "queues"}), 201).await?;
    put_policy(
        &base,
        "policies",
        "ae",
        json!({"pattern": "^pr\\.x$", "definition": {"alternate-exchange": "pr.alt"}, "priority": 9, "apply-to": "exchanges"}),
        201,
    )
    .await?;
    declare(&ch, "pr.q", FieldTable::default()).await?;
    publish(&ch, "", "pr.q", &["1", "2", "3"]).await?;
    assert_eq!(
        ready(&base, "pr.q").await?,
        2,
        "the higher priority applies"
    );
    assert_eq!(queue_json(&base, "pr.q").await?["policy"], json!("high"));

    // An exchange-only policy: the exchange routes what nothing matches to pr.alt.
    for (x, kind) in [
        ("pr.x", lapin::ExchangeKind::Direct),
        ("pr.alt", lapin::ExchangeKind::Fanout),
    ] {
        ch.exchange_declare(
            x.into(),
            kind,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    declare(&ch, "pr.unrouted", FieldTable::default()).await?;
    ch.queue_bind(
        "pr.unrouted".into(),
        "pr.alt".into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    publish(&ch, "pr.x", "no-binding", &["lost?"]).await?;
    assert_eq!(drain(&ch, "pr.unrouted").await?, ["lost?"]);
    let x = get_json(&base, "/api/exchanges/%2F/pr.x").await?;
    assert_eq!(x["policy"], json!("ae"));
    assert!(
        get_json(&base, "/api/exchanges/%2F/pr.alt")
            .await?
            .get("policy")
            .is_none()
    );
    b.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn invalid_policies_are_refused_with_rabbitmqs_texts() -> anyhow::Result<()> {
    let (b, base) = common::http::start_with_api(broker::Broker::builder()).await?;
    let reason = |v: Value| v["reason"].as_str().unwrap_or_default().to_owned();
    let refused = |body: Value| {
        let base = base.clone();
        async move {
            put_policy(&base, "policies", "bad", body, 400)
                .await
                .map(reason)
        }
    };
    assert_eq!(
        refused(json!({"pattern": "^a", "definition": {"foo": 1}})).await?,
        "Validation failed\n\n[{<<\"foo\">>,1}] are not recognised policy settings\n"
    );
    assert_eq!(
        refused(json!({"pattern": "^a", "definition": {"max-length": "x"}})).await?,
        "Validation failed\n\n<<\"x\">> is not a valid maximum length\n"
    );
    assert_eq!(
        refused(json!({"pattern": "^a", "definition": {}})).await?,
        "Validation failed\n\nno policy provided\n"
    );
    assert!(
        refused(json!({"pattern": "([", "definition": {"max-length": 1}}))
            .await?
            .starts_with(
                "Validation failed\n\npattern should be regular expression but is invalid"
            )
    );
    // Operator policies take limits only.
    let op = put_policy(
        &base,
        "operator-policies",
        "bad",
        json!({"pattern": ".", "definition": {"dead-letter-exchange": "x"}}),
        400,
    )
    .await?;
    assert!(reason(op).contains("are not recognised policy settings"));
    // No such vhost.
    let (status, _) = http(
        "PUT",
        format!("{base}/api/policies/nope/p"),
        GUEST,
        Some(json!({"pattern": ".", "definition": {"max-length": 1}})),
    )
    .await?;
    assert_eq!(status, 404);
    assert_eq!(get_json(&base, "/api/policies").await?, json!([]));
    b.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn policies_survive_a_restart_and_apply_to_the_recovered_queues() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let start = || common::http::start_with_api(broker::Broker::builder().data_dir(dir.path()));
    let (b, base) = start().await?;
    {
        let (_conn, ch) = channel(&b.amqp_url()).await?;
        declare(&ch, "keep.q", FieldTable::default()).await?;
        publish(&ch, "", "keep.q", &["1", "2", "3"]).await?;
    }
    put_policy(
        &base,
        "policies",
        "keep",
        json!({"pattern": "^keep", "definition": {"max-length": 2}}),
        201,
    )
    .await?;
    assert_eq!(ready(&base, "keep.q").await?, 2);
    b.shutdown().await;

    let (b, base) = start().await?;
    let listed: Vec<r::Policy> = serde_json::from_value(get_json(&base, "/api/policies").await?)?;
    assert_eq!(
        listed.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["keep"]
    );
    let (_conn, ch) = channel(&b.amqp_url()).await?;
    publish(&ch, "", "keep.q", &["4"]).await?;
    assert_eq!(
        ready(&base, "keep.q").await?,
        2,
        "the recovered queue is limited"
    );
    assert_eq!(drain(&ch, "keep.q").await?, ["3", "4"]);
    b.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn policies_travel_with_the_definitions() -> anyhow::Result<()> {
    let (a, base_a) = common::http::start_with_api(broker::Broker::builder()).await?;
    put_policy(&base_a, "policies", "moved", json!({"pattern": "^m", "definition": {"message-ttl": 60000}, "priority": 3, "apply-to": "queues"}), 201).await?;
    let defs = get_json(&base_a, "/api/definitions").await?;
    assert_eq!(
        defs["policies"],
        json!([{"vhost": "/", "name": "moved", "pattern": "^m", "apply-to": "queues",
                "definition": {"message-ttl": 60000}, "priority": 3}])
    );
    let one = get_json(&base_a, "/api/definitions/%2F").await?;
    assert!(
        one["policies"][0].get("vhost").is_none(),
        "the per-vhost form has no vhost"
    );
    a.shutdown().await;

    let (b, base_b) = common::http::start_with_api(broker::Broker::builder()).await?;
    call(
        &base_b,
        ADMIN,
        "POST",
        "/api/definitions",
        Some(defs.clone()),
        204,
    )
    .await?;
    assert_eq!(get_json(&base_b, "/api/policies").await?, defs["policies"]);
    // A file with a policy the API would refuse changes nothing.
    let mut bad = defs;
    bad["policies"][0]["definition"] = json!({"no-such-setting": 1});
    bad["policies"][0]["name"] = json!("bad");
    bad["queues"] = json!([{"name": "m.not.made", "vhost": "/", "durable": true, "auto_delete": false, "arguments": {}}]);
    call(&base_b, ADMIN, "POST", "/api/definitions", Some(bad), 400).await?;
    let (status, _) = http(
        "GET",
        format!("{base_b}/api/queues/%2F/m.not.made"),
        GUEST,
        None,
    )
    .await?;
    assert_eq!(status, 404);
    b.shutdown().await;
    Ok(())
}

use common::ctl::run as ctl;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_ctl_sets_lists_and_clears_policies_as_rabbitmqctl() -> anyhow::Result<()> {
    let (b, base) = common::http::start_with_api(broker::Broker::builder()).await?;
    let (code, out, err) = ctl(
        &base,
        &[
            "set-policy",
            "--priority",
            "7",
            "--apply-to",
            "queues",
            "lim",
            "^lim\\.",
            r#"{"max-length":10}"#,
        ],
    )
    .await?;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "Setting policy \"lim\" for pattern \"^lim\\.\" to \"{\"max-length\":10}\" with priority \"7\" for vhost \"/\" ...\n"
    );
    let (_, listed, _) = ctl(&base, &["list-policies"]).await?;
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines[0], "Listing policies for vhost \"/\" ...");
    assert_eq!(
        lines[1],
        "vhost\tname\tpattern\tapply-to\tdefinition\tpriority"
    );
    assert_eq!(lines[2], "/\tlim\t^lim\\.\tqueues\t{\"max-length\":10}\t7");
    // An operator policy with a setting operator policies cannot have: the API's 400.
    let (code, _, err) = ctl(
        &base,
        &[
            "set-operator-policy",
            "op",
            ".",
            r#"{"overflow":"drop-head"}"#,
        ],
    )
    .await?;
    assert_ne!(code, 0);
    assert!(err.contains("are not recognised policy settings"), "{err}");
    let (code, out, _) = ctl(&base, &["clear-policy", "lim"]).await?;
    assert_eq!(
        (code, out.as_str()),
        (0, "Clearing policy \"lim\" on vhost \"/\" ...\n")
    );
    assert_eq!(get_json(&base, "/api/policies").await?, json!([]));
    b.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_policymaker_sets_policies_in_its_vhosts_only() -> anyhow::Result<()> {
    let builder = broker::Broker::builder()
        .vhost("va")
        .user_with_tags("pam", "pw", &["policymaker"])
        .user_with_tags("mia", "pw", &["management"])
        .permissions("pam", "va", ".*", ".*", ".*")?
        .permissions("mia", "va", ".*", ".*", ".*")?;
    let (b, base) = common::http::start_with_api(builder).await?;
    let body = json!({"pattern": ".", "definition": {"max-length": 1}});
    let put = |user: &'static str, path: &'static str| {
        let (base, body) = (base.clone(), body.clone());
        async move {
            http(
                "PUT",
                format!("{base}{path}"),
                Some((user, "pw")),
                Some(body),
            )
            .await
            .map(|(status, _)| status)
        }
    };
    assert_eq!(put("pam", "/api/policies/va/p").await?, 201);
    assert_eq!(
        put("pam", "/api/policies/%2F/p").await?,
        403,
        "no permissions on /"
    );
    assert_eq!(
        put("mia", "/api/policies/va/q").await?,
        403,
        "management only"
    );
    assert_eq!(
        put("pam", "/api/operator-policies/va/o").await?,
        403,
        "administrators only"
    );
    b.shutdown().await;
    Ok(())
}
