//! Who sees what through the management API, as RabbitMQ's management plugin decides
//! it: a user without a management tag gets 401; `management` sees the objects of the
//! vhosts it has permissions on and only its own connections and channels;
//! `monitoring` sees every object; users and permissions need `administrator`.
//! `/metrics` (no login) is aggregated, per-queue detail is on `/metrics/per-object`.

mod common;

use common::http::{GUEST, get_json, http};
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use serde_json::Value;

/// `GET path` as `user` (password `pw`): the status and the body as JSON (`null` if
/// not JSON).
async fn get_as(base: &str, path: &str, user: &str) -> anyhow::Result<(u16, Value)> {
    let (status, body) = http("GET", format!("{base}{path}"), Some((user, "pw")), None).await?;
    Ok((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
}

/// `GET path` as `user`, which must answer 200: the JSON list.
async fn list_as(base: &str, path: &str, user: &str) -> anyhow::Result<Vec<Value>> {
    let (status, v) = get_as(base, path, user).await?;
    anyhow::ensure!(status == 200, "GET {path} as {user}: {status} {v}");
    Ok(v.as_array().cloned().unwrap_or_default())
}

/// The `field` of each listed object, sorted.
fn field(list: &[Value], field: &str) -> Vec<String> {
    let mut out: Vec<String> = list
        .iter()
        .map(|v| v[field].as_str().unwrap_or("?").to_owned())
        .collect();
    out.sort();
    out
}

/// Declares `queue` on a new connection and consumes from it (so it has a consumer, a
/// channel and a connection to list).
async fn connect_and_consume(
    url: &str,
    queue: &str,
) -> anyhow::Result<(Connection, lapin::Consumer)> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let consumer = ch
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((conn, consumer))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_follow_the_users_tags_and_vhosts() -> anyhow::Result<()> {
    let builder = broker::Broker::builder()
        .vhost("va")
        .vhost("vb")
        .user_with_tags("plain", "pw", &[])
        .user_with_tags("mia", "pw", &["management"])
        .user_with_tags("pam", "pw", &["policymaker"])
        .user_with_tags("mon", "pw", &["monitoring"])
        .permissions("plain", "va", ".*", ".*", ".*")?
        .permissions("mia", "va", ".*", ".*", ".*")?
        .permissions("pam", "va", ".*", ".*", ".*")?
        .permissions("guest", "vb", ".*", ".*", ".*")?;
    let (b, base) = common::http::start_with_api(builder).await?;
    let at = b.local_addr();
    let (_mia_conn, _c1) = connect_and_consume(&format!("amqp://mia:pw@{at}/va"), "qa").await?;
    let (_guest_conn, _c2) = connect_and_consume(&b.amqp_url_for_vhost("vb"), "qb").await?;
    // Both connections are listed (guest sees all) before anyone else looks.
    common::poll::until(
        std::time::Duration::from_secs(5),
        "both connections listed",
        || async {
            let n = get_json(&base, "/api/connections")
                .await
                .ok()?
                .as_array()
                .map_or(0, Vec::len);
            (n >= 2).then_some(())
        },
    )
    .await?;

    // No management tag: 401 on every API path, though the password is right.
    for path in ["/api/overview", "/api/whoami", "/api/queues", "/api/vhosts"] {
        let (status, body) = get_as(&base, path, "plain").await?;
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(body["error"], "not_authorized", "{body}");
    }

    // `management` and `policymaker`: their vhost's objects, their own connections.
    for user in ["mia", "pam"] {
        let queues = list_as(&base, "/api/queues", user).await?;
        assert_eq!(field(&queues, "name"), ["qa"], "{user}");
        let exchanges = list_as(&base, "/api/exchanges", user).await?;
        assert!(!exchanges.is_empty());
        assert!(
            exchanges.iter().all(|x| x["vhost"] == "va"),
            "{exchanges:?}"
        );
        let bindings = list_as(&base, "/api/bindings", user).await?;
        assert!(bindings.iter().all(|x| x["vhost"] == "va"), "{bindings:?}");
        assert_eq!(
            field(&list_as(&base, "/api/vhosts", user).await?, "name"),
            ["va"]
        );
        let consumers = list_as(&base, "/api/consumers", user).await?;
        assert_eq!(consumers.len(), 1, "{consumers:?}");
        assert_eq!(consumers[0]["queue"]["vhost"], "va");
        for path in [
            "/api/queues/vb",
            "/api/exchanges/vb",
            "/api/queues/vb/qb",
            "/api/vhosts/vb",
        ] {
            let (status, body) = get_as(&base, path, user).await?;
            assert_eq!(status, 401, "{user} {path}: {body}");
        }
        let overview = get_as(&base, "/api/overview", user).await?.1;
        assert_eq!(overview["object_totals"]["queues"], 1, "{overview}");
        for path in [
            "/api/users",
            "/api/users/mia",
            "/api/permissions",
            "/api/permissions/va/mia",
        ] {
            let (status, body) = get_as(&base, path, user).await?;
            assert_eq!(status, 403, "{user} {path}: {body}");
        }
    }
    let conns = list_as(&base, "/api/connections", "mia").await?;
    assert_eq!(field(&conns, "user"), ["mia"]);
    let channels = list_as(&base, "/api/channels", "mia").await?;
    assert_eq!(channels.len(), 1, "{channels:?}");
    assert_eq!(field(&channels, "user"), ["mia"]);
    assert_eq!(
        list_as(&base, "/api/connections", "pam").await?,
        Vec::<Value>::new()
    );
    let guest_conn = conns_named(&base, "guest").await?;
    let (status, _) = get_as(
        &base,
        &format!("/api/connections/{}", common::encode_segment(&guest_conn)),
        "mia",
    )
    .await?;
    assert_eq!(status, 404, "another user's connection");

    // `monitoring`: every object, every connection; still no users or permissions.
    let queues = list_as(&base, "/api/queues", "mon").await?;
    assert_eq!(field(&queues, "name"), ["qa", "qb"]);
    let conns = list_as(&base, "/api/connections", "mon").await?;
    assert_eq!(field(&conns, "user"), ["guest", "mia"]);
    assert_eq!(list_as(&base, "/api/channels", "mon").await?.len(), 2);
    let vhosts = field(&list_as(&base, "/api/vhosts", "mon").await?, "name");
    assert_eq!(vhosts, ["/", "va", "vb"]);
    for path in ["/api/users", "/api/permissions"] {
        let (status, body) = get_as(&base, path, "mon").await?;
        assert_eq!(status, 403, "mon {path}: {body}");
    }
    // `administrator` (guest): users and permissions.
    assert!(
        get_json(&base, "/api/users")
            .await?
            .as_array()
            .is_some_and(|a| a.len() == 5)
    );
    let (status, _) = http("GET", format!("{base}/api/permissions"), GUEST, None).await?;
    assert_eq!(status, 200);

    // `/metrics` without a login: totals only, no queue names.
    let (status, metrics) = http("GET", format!("{base}/metrics"), None, None).await?;
    assert_eq!(status, 200);
    assert!(
        !metrics.contains("qa") && !metrics.contains("qb"),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l == "rabbitmq_queue_consumers 2"),
        "{metrics}"
    );
    let (status, detail) = http("GET", format!("{base}/metrics/per-object"), None, None).await?;
    assert_eq!(status, 200);
    assert!(
        detail
            .lines()
            .any(|l| l == "rabbitmq_queue_consumers{vhost=\"vb\",queue=\"qb\"} 1"),
        "{detail}"
    );
    Ok(())
}

/// The name of `user`'s connection, as guest lists it.
async fn conns_named(base: &str, user: &str) -> anyhow::Result<String> {
    let conns = get_json(base, "/api/connections").await?;
    conns
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["user"] == user)
        .and_then(|c| c["name"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no connection of {user} in {conns}"))
}
