//! AMQP over TLS (`amqps`) and the management API over HTTPS, with a self-signed
//! certificate made for each test: real clients (lapin, ureq, tokio-rustls) on one
//! side, what they observe on the other.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lapin::options::*;
use lapin::tcp::OwnedTLSConfig;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A self-signed certificate for `127.0.0.1` and `localhost`.
struct Cert {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

fn make_cert() -> anyhow::Result<Cert> {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
    Ok(Cert {
        cert_pem: cert.pem(),
        key_pem: signing_key.serialize_pem(),
        der: cert.der().clone(),
    })
}

/// A broker with TLS on its own port and, if asked, the management API over HTTPS.
async fn start(cert: &Cert, management: bool) -> anyhow::Result<broker::BrokerHandle> {
    let config = broker::TlsConfig::from_pem(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes())?;
    let mut builder = broker::Broker::builder().tls(config);
    if management {
        builder = builder
            .management(SocketAddr::from(([127, 0, 0, 1], 0)))
            .management_tls(true);
    }
    Ok(builder.start().await?)
}

fn tls_addr(b: &broker::BrokerHandle) -> anyhow::Result<SocketAddr> {
    b.tls_addr().ok_or_else(|| anyhow::anyhow!("no TLS port"))
}

/// lapin over amqps, trusting only `cert`.
async fn lapin_tls(b: &broker::BrokerHandle, cert: &Cert) -> anyhow::Result<Connection> {
    let url = format!("amqps://guest:guest@{}/%2f", tls_addr(b)?);
    let tls = OwnedTLSConfig {
        identity: None,
        cert_chain: Some(cert.cert_pem.clone()),
    };
    let conn = tokio::time::timeout(
        Duration::from_secs(10),
        Connection::connect_with_config(
            &url,
            ConnectionProperties::default(),
            tls,
            lapin::runtime::default_runtime()?,
        ),
    )
    .await??;
    Ok(conn)
}

/// A rustls client trusting only `trusted`.
fn connector(trusted: &CertificateDer<'static>) -> anyhow::Result<tokio_rustls::TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// A TLS handshake with the broker's TLS port, as `name`.
async fn tls_connect(
    at: SocketAddr,
    trusted: &CertificateDer<'static>,
    name: &str,
) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(at).await?;
    let name = ServerName::try_from(name.to_owned())?;
    let tls = tokio::time::timeout(
        Duration::from_secs(5),
        connector(trusted)?.connect(name, tcp),
    )
    .await??;
    Ok(tls)
}

/// Sends the protocol header over `stream` and reads the reply up to
/// `connection.start` (class 10, method 10).
async fn expect_connection_start<S>(stream: &mut S) -> anyhow::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream.write_all(b"AMQP\x00\x00\x09\x01").await?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == [0, 10, 0, 10]) {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await??;
        anyhow::ensure!(n > 0, "closed before connection.start: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    anyhow::ensure!(got[0] == 1, "not a method frame: {got:?}");
    Ok(())
}

/// One HTTPS GET with basic auth guest:guest, trusting only `cert`: status and body.
async fn https_get(url: String, cert: &Cert) -> anyhow::Result<(u16, String)> {
    let der = cert.der.to_vec();
    tokio::task::spawn_blocking(move || -> anyhow::Result<(u16, String)> {
        let roots = ureq::tls::RootCerts::new_with_certs(&[
            ureq::tls::Certificate::from_der(&der).to_owned()
        ]);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build())
            .build()
            .into();
        let mut resp = agent
            .get(&url)
            .header("authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")
            .call()?;
        let status = resp.status().as_u16();
        Ok((status, resp.body_mut().read_to_string()?))
    })
    .await?
}

#[tokio::test]
async fn lapin_over_tls_declares_publishes_and_consumes() -> anyhow::Result<()> {
    let cert = make_cert()?;
    let b = start(&cert, false).await?;
    assert_ne!(b.tls_addr(), Some(b.local_addr()));
    let conn = lapin_tls(&b, &cert).await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    ch.queue_declare(
        "tls-q".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await?;
    // Larger than a TLS record (16 KiB), so the body spans records.
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let confirm = ch
        .basic_publish(
            "".into(),
            "tls-q".into(),
            BasicPublishOptions::default(),
            &body,
            BasicProperties::default().with_correlation_id("over-tls".into()),
        )
        .await?
        .await?;
    assert!(confirm.is_ack());
    let mut consumer = ch
        .basic_consume(
            "tls-q".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let d = common::next_delivery(&mut consumer).await?;
    assert_eq!(d.data, body);
    assert_eq!(
        d.properties.correlation_id().as_ref().map(|c| c.as_str()),
        Some("over-tls")
    );
    d.ack(BasicAckOptions::default()).await?;

    // The same queue is reachable from the plain port.
    let plain = Connection::connect(&b.amqp_url(), ConnectionProperties::default()).await?;
    let pch = plain.create_channel().await?;
    let q = pch
        .queue_declare(
            "tls-q".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    assert_eq!(q.consumer_count(), 1);
    plain.close(200, "bye".into()).await?;
    conn.close(200, "bye".into()).await?;
    b.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn the_configured_certificate_is_presented_and_others_are_refused() -> anyhow::Result<()> {
    let cert = make_cert()?;
    let b = start(&cert, false).await?;
    let at = tls_addr(&b)?;
    let mut tls = tls_connect(at, &cert.der, "127.0.0.1").await?;
    let presented = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .cloned();
    assert_eq!(presented.as_ref(), Some(&cert.der));
    let version = tls.get_ref().1.protocol_version();
    assert_eq!(version, Some(rustls::ProtocolVersion::TLSv1_3));
    expect_connection_start(&mut tls).await?;

    // A client that trusts another certificate does not get through.
    let other = make_cert()?;
    let refused = tls_connect(at, &other.der, "127.0.0.1").await;
    assert!(refused.is_err(), "handshake trusting another certificate");
    // Nor one that expects another server name.
    let refused = tls_connect(at, &cert.der, "other.example").await;
    assert!(refused.is_err(), "handshake with a wrong server name");

    // The broker still serves TLS afterwards.
    let mut again = tls_connect(at, &cert.der, "localhost").await?;
    expect_connection_start(&mut again).await?;
    b.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn plain_amqp_on_the_tls_port_fails_and_both_ports_keep_serving() -> anyhow::Result<()> {
    let cert = make_cert()?;
    let b = start(&cert, false).await?;
    let at = tls_addr(&b)?;

    // A plain client on the TLS port: no AMQP comes back, and the socket closes.
    let mut s = TcpStream::connect(at).await?;
    s.write_all(b"AMQP\x00\x00\x09\x01").await?;
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the TLS port kept a plain client open");
    assert!(
        !got.windows(4).any(|w| w == b"AMQP" || w == [0, 10, 0, 10]),
        "AMQP answered in the clear: {got:?}"
    );

    // Garbage too.
    let mut s = TcpStream::connect(at).await?;
    s.write_all(&[0xff; 64]).await?;
    let mut sink = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut sink)).await;
    assert!(read.is_ok(), "the TLS port kept a garbage client open");

    // A client that connects and says nothing does not hold the others up.
    let _silent = TcpStream::connect(at).await?;

    let mut tls = tls_connect(at, &cert.der, "127.0.0.1").await?;
    expect_connection_start(&mut tls).await?;
    let plain = common::open(b.local_addr(), 0).await?;
    drop(plain);
    let conn = lapin_tls(&b, &cert).await?;
    conn.close(200, "bye".into()).await?;
    b.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn management_over_https_shows_tls_connections() -> anyhow::Result<()> {
    let cert = make_cert()?;
    let b = start(&cert, true).await?;
    let mgmt = b
        .management_addr()
        .ok_or_else(|| anyhow::anyhow!("no management"))?;
    let base = format!("https://127.0.0.1:{}", mgmt.port());

    let (status, body) = https_get(format!("{base}/api/overview"), &cert).await?;
    assert_eq!(status, 200, "{body}");
    let overview: Value = serde_json::from_str(&body)?;
    assert_eq!(overview["product_name"], broker::internals::PRODUCT_NAME);

    let tls_conn = lapin_tls(&b, &cert).await?;
    let plain = Connection::connect(&b.amqp_url(), ConnectionProperties::default()).await?;
    let (status, body) = https_get(format!("{base}/api/connections"), &cert).await?;
    assert_eq!(status, 200, "{body}");
    let conns: Value = serde_json::from_str(&body)?;
    let conns = conns.as_array().cloned().unwrap_or_default();
    assert_eq!(conns.len(), 2, "{conns:?}");
    let on_port = |port: u16| {
        conns
            .iter()
            .find(|c| c["port"] == port)
            .cloned()
            .unwrap_or_default()
    };
    let tls_port = tls_addr(&b)?.port();
    let secure = on_port(tls_port);
    assert_eq!(secure["ssl"], true, "{secure}");
    assert_eq!(secure["ssl_protocol"], "tlsv1.3", "{secure}");
    assert!(secure["ssl_cipher"].as_str().is_some_and(|c| !c.is_empty()));
    assert_eq!(secure["user"], "guest");
    let clear = on_port(b.local_addr().port());
    assert_eq!(clear["ssl"], false, "{clear}");

    // Plain HTTP to the HTTPS port gets no answer.
    let mut s = TcpStream::connect(mgmt).await?;
    s.write_all(b"GET /api/overview HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    assert!(!got.starts_with(b"HTTP/"), "HTTP answered in the clear");
    // HTTPS still works.
    let (status, _) = https_get(format!("{base}/api/overview"), &cert).await?;
    assert_eq!(status, 200);

    tls_conn.close(200, "bye".into()).await?;
    plain.close(200, "bye".into()).await?;
    b.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn management_tls_without_a_certificate_does_not_start() {
    let started = broker::Broker::builder()
        .management(SocketAddr::from(([127, 0, 0, 1], 0)))
        .management_tls(true)
        .start()
        .await;
    assert!(started.is_err());
}

#[test]
fn a_missing_key_file_is_an_error_naming_it() -> anyhow::Result<()> {
    let cert = make_cert()?;
    let dir = tempfile::tempdir()?;
    let cert_path = dir.path().join("cert.pem");
    std::fs::write(&cert_path, &cert.cert_pem)?;
    let key_path = dir.path().join("missing-key.pem");
    let err = broker::TlsConfig::from_pem_files(&cert_path, &key_path)
        .err()
        .ok_or_else(|| anyhow::anyhow!("loaded a missing key"))?;
    assert!(
        matches!(&err, broker::TlsError::Read { what: "key", path, .. } if *path == key_path),
        "{err:?}"
    );
    assert!(err.to_string().contains("missing-key.pem"), "{err}");

    // A key that is not PEM is named as well.
    std::fs::write(&key_path, "not a key")?;
    let err = broker::TlsConfig::from_pem_files(&cert_path, &key_path)
        .err()
        .ok_or_else(|| anyhow::anyhow!("loaded a bad key"))?;
    assert!(matches!(err, broker::TlsError::Key { .. }), "{err:?}");
    assert!(err.to_string().contains("missing-key.pem"), "{err}");

    // A key of another certificate is refused.
    let other = make_cert()?;
    std::fs::write(&key_path, &other.key_pem)?;
    let err = broker::TlsConfig::from_pem_files(&cert_path, &key_path)
        .err()
        .ok_or_else(|| anyhow::anyhow!("loaded a mismatched key"))?;
    assert!(matches!(err, broker::TlsError::Config { .. }), "{err:?}");
    Ok(())
}

#[test]
fn the_binary_refuses_to_start_with_a_missing_key_and_names_it() -> anyhow::Result<()> {
    let cert = make_cert()?;
    let dir = tempfile::tempdir()?;
    let cert_path = dir.path().join("cert.pem");
    std::fs::write(&cert_path, &cert.cert_pem)?;
    let key_path = dir.path().join("no-such-key.pem");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_broker"))
        .args(["--listen", "127.0.0.1:0", "--management-listen", "off"])
        .arg("--tls-cert")
        .arg(&cert_path)
        .arg("--tls-key")
        .arg(&key_path)
        .args(["--tls-listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let exited = common::poll::blocking(Duration::from_secs(20), "the broker to exit", || {
        child.try_wait().transpose()
    });
    let status = match exited {
        Ok(status) => status?,
        Err(_) => {
            let _ = child.kill();
            anyhow::bail!("the broker started with a missing key");
        }
    };
    let out = child.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success());
    assert!(stderr.contains("no-such-key.pem"), "{stderr}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening"),
        "it started"
    );
    Ok(())
}

#[tokio::test]
async fn max_connections_counts_both_ports_and_shutdown_closes_both() -> anyhow::Result<()> {
    let cert = make_cert()?;
    let config = broker::TlsConfig::from_pem(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes())?;
    let b = broker::Broker::builder()
        .tls(config)
        .max_connections(1)
        .start()
        .await?;
    let at = tls_addr(&b)?;
    // One plain connection fills the broker: a TLS client is not even accepted.
    let plain = common::open(b.local_addr(), 0).await?;
    let waiting = tokio::time::timeout(
        Duration::from_millis(500),
        tls_connect(at, &cert.der, "127.0.0.1"),
    )
    .await;
    assert!(
        waiting.is_err() || waiting.is_ok_and(|r| r.is_err()),
        "a TLS client was served beyond max_connections"
    );
    drop(plain);
    // Once it closes, TLS gets its turn.
    let mut tls = common::poll::until(
        Duration::from_secs(5),
        "a TLS connection accepted",
        || async { tls_connect(at, &cert.der, "127.0.0.1").await.ok() },
    )
    .await?;
    expect_connection_start(&mut tls).await?;

    let plain_at = b.local_addr();
    b.shutdown().await;
    // The open TLS connection was closed, and neither port accepts any more.
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "the TLS connection outlived the shutdown");
    assert!(TcpStream::connect(at).await.is_err(), "TLS port still open");
    assert!(
        TcpStream::connect(plain_at).await.is_err(),
        "plain port still open"
    );
    Ok(())
}

/// Runs `broker ctl ARGS` to its end: exit code, stdout, stderr.
async fn ctl(args: Vec<String>) -> anyhow::Result<(Option<i32>, String, String)> {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_broker"))
            .arg("ctl")
            .args(args)
            .env_remove("BROKER_MANAGEMENT_URL")
            .env_remove("BROKER_CACERT")
            .output(),
    )
    .await??;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test]
async fn ctl_lists_queues_over_https_trusting_the_cacert() -> anyhow::Result<()> {
    let cert = make_cert()?;
    let b = start(&cert, true).await?;
    let mgmt = b
        .management_addr()
        .ok_or_else(|| anyhow::anyhow!("no management"))?;
    let conn = Connection::connect(&b.amqp_url(), ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.queue_declare(
        "over-https".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let dir = tempfile::tempdir()?;
    let cacert = dir.path().join("ca.pem");
    std::fs::write(&cacert, &cert.cert_pem)?;
    let cacert = cacert.to_string_lossy().into_owned();
    let url = format!("https://127.0.0.1:{}", mgmt.port());

    let (code, out, err) = ctl(vec![
        "--url".into(),
        url.clone(),
        "--cacert".into(),
        cacert.clone(),
        "list-queues".into(),
    ])
    .await?;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.lines()
            .any(|l| l.split('\t').next() == Some("over-https")),
        "{out}"
    );

    // By the name in the certificate, too.
    let by_name = format!("https://localhost:{}", mgmt.port());
    let (code, out, err) = ctl(vec![
        "list-queues".into(),
        "--url".into(),
        by_name,
        "--cacert".into(),
        cacert,
    ])
    .await?;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("over-https"), "{out}");

    // Without --cacert the self-signed certificate is not trusted.
    let (code, _, err) = ctl(vec!["--url".into(), url.clone(), "list-queues".into()]).await?;
    assert_eq!(code, Some(69), "{err}");
    assert!(err.contains("could not reach the management API"), "{err}");

    // A --cacert file without a certificate is refused, naming it.
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n")?;
    let empty = empty.to_string_lossy().into_owned();
    let (code, _, err) = ctl(vec![
        "--url".into(),
        url,
        "--cacert".into(),
        empty.clone(),
        "list-queues".into(),
    ])
    .await?;
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot use CA certificate file {empty}")),
        "{err}"
    );
    Ok(())
}
