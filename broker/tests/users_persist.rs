//! Users and permissions survive a restart on the same data directory, as in RabbitMQ:
//! users, passwords, tags and permissions changed through the management API are what
//! the next start has (a deleted `guest` stays deleted, a changed password is the only
//! one that works), configuration given at a restart wins for what it names (and may
//! name a vhost recovered from the data directory), and a damaged users file stops the
//! start with an error naming it instead of starting over with `guest`.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::expect_error;
use common::http::{GUEST, call, http};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use serde_json::{Value, json};

const LOGIN_REFUSED: &str = "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile.";

/// `builder` with the management API on port 0 and `dir` as data directory, started;
/// the broker and the API's base URL.
async fn start(
    builder: broker::BrokerBuilder,
    dir: &Path,
) -> anyhow::Result<(broker::BrokerHandle, String)> {
    common::http::start_with_api(builder.data_dir(dir)).await
}

/// Adds the administrator `root`/`rootpw` and deletes `guest`, through the API.
async fn replace_guest_with_root(base: &str) -> anyhow::Result<()> {
    let root = json!({ "password": "rootpw", "tags": "administrator" });
    call(
        base,
        ("guest", "guest"),
        "PUT",
        "/api/users/root",
        Some(root),
        201,
    )
    .await?;
    call(
        base,
        ("root", "rootpw"),
        "DELETE",
        "/api/users/guest",
        None,
        204,
    )
    .await?;
    Ok(())
}

async fn connect(url: &str) -> Result<Connection, lapin::Error> {
    Connection::connect(url, ConnectionProperties::default()).await
}

async fn declare(ch: &Channel, queue: &str) -> Result<(), lapin::Error> {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .map(drop)
}

/// (user, tags) as `GET /api/users` lists them.
fn user_rows(v: &Value) -> Vec<(String, Vec<String>)> {
    let mut rows: Vec<_> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|u| {
            let tags = u["tags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect();
            (u["name"].as_str().unwrap_or_default().to_owned(), tags)
        })
        .collect();
    rows.sort();
    rows
}

/// (user, vhost, configure, write, read) as `GET /api/permissions` lists them.
fn permission_rows(v: &Value) -> Vec<[String; 5]> {
    let mut rows: Vec<_> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            ["user", "vhost", "configure", "write", "read"]
                .map(|k| p[k].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    rows.sort();
    rows
}

fn row(fields: [&str; 5]) -> [String; 5] {
    fields.map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_permissions_made_through_the_api_survive_a_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let guest = ("guest", "guest");
    let (b, base) = start(broker::Broker::builder(), dir.path()).await?;
    call(&base, guest, "PUT", "/api/vhosts/orders", None, 201).await?;
    call(&base, guest, "PUT", "/api/vhosts/scratch", None, 201).await?;
    let alice = json!({ "password": "first", "tags": "monitoring" });
    call(&base, guest, "PUT", "/api/users/alice", Some(alice), 201).await?;
    let rights = json!({ "configure": "^alice\\.", "write": "^alice\\.", "read": "^alice\\." });
    call(
        &base,
        guest,
        "PUT",
        "/api/permissions/orders/alice",
        Some(rights),
        201,
    )
    .await?;
    let all = json!({ "configure": ".*", "write": ".*", "read": ".*" });
    call(
        &base,
        guest,
        "PUT",
        "/api/permissions/scratch/alice",
        Some(all.clone()),
        201,
    )
    .await?;
    // A second administrator, so that guest can go.
    let root = json!({ "password": "rootpw", "tags": "administrator" });
    call(&base, guest, "PUT", "/api/users/root", Some(root), 201).await?;
    call(
        &base,
        guest,
        "PUT",
        "/api/permissions/%2F/root",
        Some(all),
        201,
    )
    .await?;
    // Change alice's password; delete a vhost (and so alice's rights on it); delete guest.
    let new_password = json!({ "password": "second", "tags": "monitoring" });
    call(
        &base,
        guest,
        "PUT",
        "/api/users/alice",
        Some(new_password),
        204,
    )
    .await?;
    call(&base, guest, "DELETE", "/api/vhosts/scratch", None, 204).await?;
    call(
        &base,
        ("root", "rootpw"),
        "DELETE",
        "/api/users/guest",
        None,
        204,
    )
    .await?;
    b.shutdown().await;

    let (b, base) = start(broker::Broker::builder(), dir.path()).await?;
    let at = b.local_addr();
    let root = ("root", "rootpw");
    assert_eq!(
        user_rows(&call(&base, root, "GET", "/api/users", None, 200).await?),
        [
            ("alice".to_owned(), vec!["monitoring".to_owned()]),
            ("root".to_owned(), vec!["administrator".to_owned()]),
        ],
        "guest is still gone, tags kept"
    );
    assert_eq!(
        permission_rows(&call(&base, root, "GET", "/api/permissions", None, 200).await?),
        [
            row(["alice", "orders", "^alice\\.", "^alice\\.", "^alice\\."]),
            row(["root", "/", ".*", ".*", ".*"]),
        ]
    );
    // The API refuses guest as AMQP does.
    let (status, _) = http("GET", format!("{base}/api/whoami"), GUEST, None).await?;
    assert_eq!(status, 401, "guest may not use the API any more");
    expect_error(connect(&b.amqp_url()).await, 403, LOGIN_REFUSED);
    expect_error(
        connect(&format!("amqp://alice:first@{at}/orders")).await,
        403,
        LOGIN_REFUSED,
    );
    let conn = connect(&format!("amqp://alice:second@{at}/orders")).await?;
    let ch = conn.create_channel().await?;
    declare(&ch, "alice.q").await?;
    expect_error(
        declare(&ch, "bob.q").await,
        403,
        "ACCESS_REFUSED - access to queue 'bob.q' in vhost 'orders' refused for user 'alice'",
    );
    expect_error(
        connect(&format!("amqp://alice:second@{at}/%2f")).await,
        530,
        "NOT_ALLOWED - access to vhost '/' refused for user 'alice'",
    );
    // The deleted vhost's rights were not kept: a new vhost of that name grants nothing.
    call(&base, root, "PUT", "/api/vhosts/scratch", None, 201).await?;
    expect_error(
        connect(&format!("amqp://alice:second@{at}/scratch")).await,
        530,
        "NOT_ALLOWED - access to vhost 'scratch' refused for user 'alice'",
    );
    let file = std::fs::read(dir.path().join("users"))?;
    for secret in [&b"second"[..], b"rootpw"] {
        assert!(
            !file.windows(secret.len()).any(|w| w == secret),
            "passwords are stored hashed"
        );
    }
    b.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_at_restart_wins_for_what_it_names() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let guest = ("guest", "guest");
    let (b, base) = start(broker::Broker::builder(), dir.path()).await?;
    call(&base, guest, "PUT", "/api/vhosts/orders", None, 201).await?;
    let bob = json!({ "password": "stored", "tags": "" });
    call(&base, guest, "PUT", "/api/users/bob", Some(bob), 201).await?;
    let all = json!({ "configure": ".*", "write": ".*", "read": ".*" });
    call(
        &base,
        guest,
        "PUT",
        "/api/permissions/%2F/bob",
        Some(all),
        201,
    )
    .await?;
    b.shutdown().await;

    // `orders` is not given with `.vhost()`: it is recovered from the data directory.
    let configured = broker::Broker::builder()
        .user_with_tags("bob", "configured", &["monitoring"])
        .permissions("bob", "orders", "^b\\.", "^b\\.", "^b\\.")?;
    let (b, base) = start(configured, dir.path()).await?;
    let at = b.local_addr();
    expect_error(
        connect(&format!("amqp://bob:stored@{at}/%2f")).await,
        403,
        LOGIN_REFUSED,
    );
    let conn = connect(&format!("amqp://bob:configured@{at}/orders")).await?;
    let ch = conn.create_channel().await?;
    declare(&ch, "b.q").await?;
    expect_error(
        declare(&ch, "c.q").await,
        403,
        "ACCESS_REFUSED - access to queue 'c.q' in vhost 'orders' refused for user 'bob'",
    );
    // What the configuration does not name stays as stored.
    connect(&format!("amqp://bob:configured@{at}/%2f")).await?;
    connect(&b.amqp_url()).await?;
    let users = user_rows(&call(&base, guest, "GET", "/api/users", None, 200).await?);
    assert_eq!(
        users,
        [
            ("bob".to_owned(), vec!["monitoring".to_owned()]),
            ("guest".to_owned(), vec!["administrator".to_owned()]),
        ]
    );
    b.shutdown().await;

    // The configured state was saved: a start without configuration keeps it.
    let (b, _) = start(broker::Broker::builder(), dir.path()).await?;
    connect(&format!(
        "amqp://bob:configured@{at_}/orders",
        at_ = b.local_addr()
    ))
    .await?;
    b.shutdown().await;

    // An unknown vhost is still an error, at start.
    let unknown = broker::Broker::builder().permissions("bob", "nope", ".*", ".*", ".*")?;
    let err = start(unknown, dir.path())
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("started with a permission on an unknown vhost"))?;
    assert!(err.to_string().contains("no such vhost 'nope'"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_users_file_stops_the_start_naming_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (b, base) = start(broker::Broker::builder(), dir.path()).await?;
    replace_guest_with_root(&base).await?;
    b.shutdown().await;
    let path = dir.path().join("users");
    let good = std::fs::read(&path)?;
    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01;
    for (what, bytes) in [
        ("flipped", flipped),
        ("truncated", good[..good.len() / 2].to_vec()),
    ] {
        std::fs::write(&path, &bytes)?;
        let err = start(broker::Broker::builder(), dir.path())
            .await
            .err()
            .ok_or_else(|| anyhow::anyhow!("started with a {what} users file"))?;
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{what}: {text}");
        assert!(text.contains("damaged"), "{what}: {text}");
        assert_eq!(
            std::fs::read(&path)?,
            bytes,
            "{what}: the file is left as it was"
        );
    }
    // The binary says so and exits 1.
    let out = Command::new(env!("CARGO_BIN_EXE_broker"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--management-listen", "off"])
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    // Repaired, it starts with what it held: guest stays deleted.
    std::fs::write(&path, &good)?;
    let (b, _) = start(broker::Broker::builder(), dir.path()).await?;
    expect_error(connect(&b.amqp_url()).await, 403, LOGIN_REFUSED);
    b.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_data_dir_users_live_in_memory_only() -> anyhow::Result<()> {
    let (b, base) = common::http::start_with_api(broker::Broker::builder()).await?;
    replace_guest_with_root(&base).await?;
    b.shutdown().await;
    let b = broker::Broker::builder().start().await?;
    connect(&b.amqp_url()).await?;
    b.shutdown().await;
    Ok(())
}
