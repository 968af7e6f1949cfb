//! The data directory is the broker's user's alone: every file in it (the users file
//! with its password hashes, message segments, ack files, snapshots) is created
//! `0600` and every directory `0700`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use lapin::options::{ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

/// Every file and directory under `dir`, with its permission bits.
fn modes(dir: &Path, out: &mut Vec<(PathBuf, bool, u32)>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        out.push((
            entry.path(),
            meta.is_dir(),
            meta.permissions().mode() & 0o777,
        ));
        if meta.is_dir() {
            modes(&entry.path(), out)?;
        }
    }
    Ok(())
}

#[tokio::test]
async fn data_dir_files_are_0600_and_directories_0700() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("data");
    let b = broker::Broker::builder()
        .data_dir(&dir)
        .vhost("other")
        .permissions("guest", "other", ".*", ".*", ".*")?
        .start()
        .await?;
    for vhost in ["/", "other"] {
        let conn = Connection::connect(
            &b.amqp_url_for_vhost(vhost),
            ConnectionProperties::default(),
        )
        .await?;
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.queue_declare("q".into(), durable, FieldTable::default())
            .await?;
        let confirm = ch
            .basic_publish(
                "".into(),
                "q".into(),
                Default::default(),
                b"secret",
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?
            .await?;
        assert!(confirm.is_ack());
        conn.close(200, "ok".into()).await?;
    }
    b.shutdown().await;

    let mut found = vec![(
        dir.clone(),
        true,
        std::fs::metadata(&dir)?.permissions().mode() & 0o777,
    )];
    modes(&dir, &mut found)?;
    let names: Vec<String> = found
        .iter()
        .filter_map(|(p, _, _)| Some(p.file_name()?.to_str()?.to_owned()))
        .collect();
    for want in ["users", "definitions", "vhost-names"] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
    assert!(
        names.iter().any(|n| n.ends_with(".seg")),
        "a segment in {names:?}"
    );
    let loose: Vec<String> = found
        .iter()
        .filter(|(_, is_dir, mode)| *mode != if *is_dir { 0o700 } else { 0o600 })
        .map(|(p, _, mode)| format!("{} {mode:o}", p.display()))
        .collect();
    assert!(loose.is_empty(), "readable by others: {loose:#?}");
    Ok(())
}
