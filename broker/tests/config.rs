//! The `broker` binary with a config file (`--config`): a configured user logs in with
//! lapin and the configured `max_message_size` applies; flags and environment
//! variables override the file; bad files stop the start with exit code 1, naming the
//! file and the key; the shipped `broker.example.toml` loads.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

use common::amqp_error;
use common::process::BrokerProcess;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};

/// Runs the binary to its end (at most 20 s): exit code, stdout, stderr.
fn run(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<(Option<i32>, String, String)> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_broker"));
    cmd.args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn()?;
    let exited = common::poll::blocking(Duration::from_secs(20), "the broker to exit", || {
        child.try_wait().transpose()
    });
    let status = match exited {
        Ok(status) => status?,
        Err(timed_out) => {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("broker {args:?} did not exit: {timed_out}");
        }
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        s.read_to_string(&mut out)?;
    }
    if let Some(mut s) = child.stderr.take() {
        s.read_to_string(&mut err)?;
    }
    Ok((status.code(), out, err))
}

fn write(dir: &Path, name: &str, text: &str) -> anyhow::Result<std::path::PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path)
}

#[tokio::test]
async fn configured_user_logs_in_and_the_size_limit_applies() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = write(
        dir.path(),
        "broker.toml",
        r#"
listen = "127.0.0.1:0"
management-listen = "off"
max_message_size = 1000
user = ["app:s3cret-pw:monitoring"]
permission = ["app:/:^app\\..*:.*:.*"]
heartbeat = 0
log = "info"
"#,
    )?;
    let p = tokio::task::spawn_blocking(move || {
        BrokerProcess::start(["--config".as_ref(), config.as_os_str()])
    })
    .await??;
    let log = p.log_once_it_has("broker listening");
    assert!(log.contains("loaded config file"), "{log}");
    assert!(log.contains("broker.toml"), "{log}");
    assert!(
        log.contains("max_message_size = 1000"),
        "effective settings logged: {}",
        log
    );
    assert!(log.contains("app:****:monitoring"), "{log}");
    assert!(!log.contains("s3cret-pw"), "password logged: {log}");

    let url = format!("amqp://app:s3cret-pw@{}/%2f", p.addr);
    let conn = tokio::time::timeout(
        Duration::from_secs(10),
        Connection::connect(&url, ConnectionProperties::default()),
    )
    .await??;
    let ch = conn.create_channel().await?;
    ch.queue_declare(
        "app.q".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await?;
    // The permission applies: `app` may not declare outside `app.*`.
    let denied = ch
        .queue_declare(
            "other".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert_eq!(
        denied.as_ref().err().and_then(amqp_error).map(|(c, _)| c),
        Some(403),
        "{denied:?}"
    );
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    common::publish_confirmed(&ch, "", &[7; 1000]).await?;
    let err = common::publish_confirmed(&ch, "", &[7; 1001])
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a message over max_message_size was accepted"))?;
    assert_eq!(
        amqp_error(&err),
        Some((
            406,
            "PRECONDITION_FAILED - message size 1001 is larger than configured max size 1000"
                .to_owned()
        ))
    );

    // A wrong password is still refused.
    let bad = format!("amqp://app:nope@{}/%2f", p.addr);
    assert!(
        Connection::connect(&bad, ConnectionProperties::default())
            .await
            .is_err()
    );
    Ok(())
}

#[test]
fn flags_beat_environment_beats_file_beats_default() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = write(
        dir.path(),
        "b.toml",
        "heartbeat = 10\nframe-max = 8192\nchannel_max = 100\nmanagement_tls = false\n",
    )?;
    let config = config.to_string_lossy().into_owned();
    let (code, out, err) = run(
        &["--config", &config, "--print-config", "--channel-max", "50"],
        &[("BROKER_HEARTBEAT", "30")],
    )?;
    assert_eq!(code, Some(0), "{err}");
    let printed: toml::Table = out.parse()?;
    let int = |k: &str| printed.get(k).and_then(toml::Value::as_integer);
    assert_eq!(int("channel_max"), Some(50), "flag over file: {out}");
    assert_eq!(int("heartbeat"), Some(30), "environment over file: {out}");
    assert_eq!(int("frame_max"), Some(8192), "file over default: {out}");
    assert_eq!(int("max_message_size"), Some(134_217_728), "default: {out}");

    // BROKER_CONFIG names the file too.
    let (code, out, err) = run(&["--print-config"], &[("BROKER_CONFIG", &config)])?;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("frame_max = 8192 # config file"), "{out}");
    Ok(())
}

#[test]
fn bad_files_exit_1_naming_the_file_and_the_key() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cases = [
        ("max_mesage_size = 5\n", "unknown key `max_mesage_size`"),
        (
            "max_message_size = \"big\"\n",
            "key `max_message_size` takes an integer, not a string",
        ),
        (
            "user = \"app:pw\"\n",
            "key `user` takes an array of strings, not a string",
        ),
        (
            "heartbeat = 70000\n",
            "key `heartbeat`: invalid value '70000'",
        ),
        ("listen = 127.0.0.1\n", "TOML parse error at line 1, column"),
        (
            "[listen]\nport = 1\n",
            "key `listen` takes a string, not a table",
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let path = write(dir.path(), &format!("bad{i}.toml"), text)?;
        let path = path.to_string_lossy().into_owned();
        let (code, _, err) = run(
            &[
                "--config",
                &path,
                "--listen",
                "127.0.0.1:0",
                "--management-listen",
                "off",
            ],
            &[],
        )?;
        assert_eq!(code, Some(1), "{text:?}: {err}");
        assert!(err.contains(expected), "{text:?}: {err}");
        assert!(err.contains(&path), "{text:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let missing = dir.path().join("missing.toml");
    let missing = missing.to_string_lossy().into_owned();
    let (code, _, err) = run(&["--config", &missing], &[])?;
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot read config file {missing}")),
        "{err}"
    );
    Ok(())
}

#[test]
fn the_example_config_loads() -> anyhow::Result<()> {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/broker.example.toml");
    let (code, out, err) = run(&["--config", example, "--print-config"], &[])?;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("listen = \"0.0.0.0:5672\" # config file"),
        "{out}"
    );
    Ok(())
}
