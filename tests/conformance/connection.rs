//! Connection class: protocol header, start/tune/open, authentication, close, heartbeats.

use anyhow::{Context as _, Result, bail};
use lapin::{protocol::AMQPClass, types::AMQPValue};

use crate::harness::{Ctx, Target, ensure_eq, expect_code, scenarios};
use crate::raw::{Enc, End, HEADER, Raw};

scenarios! {
    server_properties_and_capabilities,
    tune_defaults,
    lapin_negotiates_defaults_and_closes,
    bad_password_refused_403,
    unknown_user_refused_403,
    bad_login_raw_close_403,
    bad_login_without_capability_just_closes,
    amqplain_login,
    unknown_mechanism_refused,
    unknown_vhost_530,
    wrong_protocol_header_answered,
    http_garbage_header_answered,
    guest_from_another_loopback_address_accepted,
    heartbeats_are_sent,
    missed_heartbeats_close_connection,
    client_close_gets_close_ok,
    many_connections_concurrently,
}

async fn server_properties_and_capabilities(ctx: Ctx) -> Result<()> {
    let mut raw = Raw::connect(ctx.addr).await?;
    let start = raw.start().await?;
    ensure_eq!(start.version_major, 0);
    ensure_eq!(start.version_minor, 9);
    let mechs = String::from_utf8_lossy(start.mechanisms.as_bytes()).to_string();
    let mechs: Vec<&str> = mechs.split(' ').collect();
    for m in ["PLAIN", "AMQPLAIN"] {
        if !mechs.contains(&m) {
            bail!("mechanism {m} not offered: {mechs:?}");
        }
    }
    ensure_eq!(String::from_utf8_lossy(start.locales.as_bytes()), "en_US");
    let props = start.server_properties.inner();
    for key in ["product", "version", "platform", "capabilities"] {
        if !props.contains_key(key) {
            bail!("server property {key} missing: {props:?}");
        }
    }
    let Some(AMQPValue::FieldTable(caps)) = props.get("capabilities") else {
        bail!("capabilities is not a table");
    };
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
        "consumer_priorities",
    ] {
        match caps.inner().get(cap) {
            Some(AMQPValue::Boolean(true)) => {}
            other => bail!("capability {cap}: expected true, got {other:?}"),
        }
    }
    Ok(())
}

async fn tune_defaults(ctx: Ctx) -> Result<()> {
    let mut raw = Raw::connect(ctx.addr).await?;
    raw.start().await?;
    raw.start_ok_plain("guest", "guest").await?;
    let tune = raw.tune().await?;
    ensure_eq!(tune.channel_max, 2047);
    ensure_eq!(tune.frame_max, 131072);
    ensure_eq!(tune.heartbeat, 60);
    raw.tune_ok_open(tune, "/").await?;
    raw.send_method(
        0,
        &Enc::method(10, 50)
            .u16(200)
            .short("bye")
            .u16(0)
            .u16(0)
            .bytes(),
    )
    .await?;
    match raw.expect_method(5).await? {
        (0, AMQPClass::Connection(lapin::protocol::connection::AMQPMethod::CloseOk(_))) => {}
        other => bail!("expected close-ok, got {other:?}"),
    }
    Ok(())
}

async fn lapin_negotiates_defaults_and_closes(ctx: Ctx) -> Result<()> {
    let conn = ctx.connect().await?;
    ensure_eq!(conn.configuration().frame_max(), 131072);
    ensure_eq!(conn.configuration().channel_max(), 2047);
    ensure_eq!(conn.configuration().heartbeat(), 60);
    ensure_eq!(conn.status().vhost().to_string(), "/");
    conn.close(200, "bye".into()).await?;
    // lapin marks the connection closed from its own I/O task, a moment after close()
    // returns; poll briefly instead of racing it.
    crate::harness::poll::until_true(
        std::time::Duration::from_secs(1),
        "lapin to mark the connection closed after close-ok",
        || conn.status().closed(),
    )
    .await
    .with_context(|| format!("{:?}", conn.status()))
}

const LOGIN_REFUSED: &str = "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile.";

async fn bad_password_refused_403(ctx: Ctx) -> Result<()> {
    let url = ctx.url_with_credentials("guest", "wrong-password");
    let res = lapin::Connection::connect(&url, Default::default()).await;
    expect_code(res.map(|_| ()), 403, Some(LOGIN_REFUSED))?;
    // The broker still serves.
    ctx.connect().await?.close(200, "bye".into()).await?;
    Ok(())
}

async fn unknown_user_refused_403(ctx: Ctx) -> Result<()> {
    let url = ctx.url_with_credentials("nosuchuser", "x");
    let res = lapin::Connection::connect(&url, Default::default()).await;
    expect_code(res.map(|_| ()), 403, Some(LOGIN_REFUSED))
}

async fn bad_login_raw_close_403(ctx: Ctx) -> Result<()> {
    // Client advertises authentication_failure_close: connection.close 403, then EOF.
    let mut raw = Raw::connect(ctx.addr).await?;
    raw.start().await?;
    raw.start_ok("guest", "nope", "PLAIN", true).await?;
    match raw.expect_end(10).await? {
        End::Close(403, text, 0, 0) if text == LOGIN_REFUSED => {}
        other => bail!("expected connection.close 403 {LOGIN_REFUSED:?} (0,0), got {other:?}"),
    }
    raw.expect_eof(5).await
}

async fn bad_login_without_capability_just_closes(ctx: Ctx) -> Result<()> {
    // Without authentication_failure_close RabbitMQ closes the socket without a close method.
    let mut raw = Raw::connect(ctx.addr).await?;
    raw.start().await?;
    raw.start_ok("guest", "nope", "PLAIN", false).await?;
    ensure_eq!(raw.expect_end(10).await?, End::Eof);
    Ok(())
}

async fn amqplain_login(ctx: Ctx) -> Result<()> {
    let mut raw = Raw::connect(ctx.addr).await?;
    raw.start().await?;
    // AMQPLAIN response: a field table's contents (without the length prefix).
    let mut t = Enc::default();
    t.short("LOGIN").u8(b'S').long(b"guest");
    t.short("PASSWORD").u8(b'S').long(b"guest");
    let table = t.bytes();
    let p = Enc::method(10, 11)
        .empty_table()
        .short("AMQPLAIN")
        .long(&table)
        .short("en_US")
        .bytes();
    raw.send_method(0, &p).await?;
    let tune = raw.tune().await?;
    raw.tune_ok_open(tune, "/").await?;
    raw.open_channel(1).await
}

async fn unknown_mechanism_refused(ctx: Ctx) -> Result<()> {
    let mut raw = Raw::connect(ctx.addr).await?;
    raw.start().await?;
    raw.start_ok("guest", "guest", "NOPE", true).await?;
    // RabbitMQ drops the socket without a connection.close.
    ensure_eq!(raw.expect_end(10).await?, End::Eof);
    Ok(())
}

async fn unknown_vhost_530(ctx: Ctx) -> Result<()> {
    let mut raw = Raw::connect(ctx.addr).await?;
    raw.start().await?;
    raw.start_ok_plain("guest", "guest").await?;
    let tune = raw.tune().await?;
    raw.send_method(
        0,
        &Enc::method(10, 31)
            .u16(tune.channel_max)
            .u32(tune.frame_max)
            .u16(0)
            .bytes(),
    )
    .await?;
    let vhost = ctx.name("novhost");
    raw.send_method(
        0,
        &Enc::method(10, 40).short(&vhost).short("").u8(0).bytes(),
    )
    .await?;
    let want = format!("NOT_ALLOWED - vhost {vhost} not found");
    match raw.expect_end(10).await? {
        End::Close(530, text, 10, 40) if text == want => Ok(()),
        other => bail!("expected 530 {want:?} (10,40), got {other:?}"),
    }
}

async fn wrong_protocol_header_answered(ctx: Ctx) -> Result<()> {
    for bad in [
        &b"AMQP\x01\x01\x00\x0a"[..],
        b"AMQP\x00\x00\x08\x00",
        b"AMQP\x00\x01\x00\x00",
    ] {
        let mut raw = Raw::connect(ctx.addr).await?;
        raw.send(bad).await?;
        let got = raw.read_raw(5).await?;
        ensure_eq!(&got[..], &HEADER[..], "answer to header {bad:?}");
    }
    Ok(())
}

async fn http_garbage_header_answered(ctx: Ctx) -> Result<()> {
    let mut raw = Raw::connect(ctx.addr).await?;
    raw.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    let got = raw.read_raw(5).await?;
    ensure_eq!(&got[..], &HEADER[..]);
    // And the broker still serves.
    ctx.connect().await?.close(200, "bye".into()).await?;
    Ok(())
}

/// A local non-loopback IPv4 address of this machine, if it has one.
/// `loopback_users` (guest) is about the client's address: RabbitMQ's
/// `rabbit_net:is_loopback` and the built-in broker (`IpAddr::is_loopback`) both count
/// all of 127.0.0.0/8 as loopback, so guest logs in from 127.0.0.2 too.
async fn guest_from_another_loopback_address_accepted(ctx: Ctx) -> Result<()> {
    let from = std::net::IpAddr::from([127, 0, 0, 2]);
    let mut raw = Raw::connect_from(ctx.addr, from).await?;
    ensure_eq!(raw.stream.local_addr()?.ip(), from);
    raw.start().await?;
    raw.start_ok_plain("guest", "guest").await?;
    // A refused login gets connection.close 403 here instead of tune.
    let tune = raw.tune().await?;
    raw.tune_ok_open(tune, "/").await?;
    Ok(())
}

/// The environment variable naming an address of this machine outside loopback, for
/// [`guest_from_non_loopback_refused`].
const NON_LOOPBACK_IP: &str = "CONFORMANCE_NON_LOOPBACK_IP";

/// guest from outside loopback gets 403. Every other scenario talks to loopback only,
/// and no loopback address can stand in for this one (see
/// [`guest_from_another_loopback_address_accepted`]), so it runs only when asked to,
/// with the address given: `CONFORMANCE_NON_LOOPBACK_IP=192.0.2.2 cargo test --test
/// conformance -- --ignored guest_from_non_loopback`. Without it, it fails.
#[test]
#[ignore = "needs an address of this machine outside 127.0.0.0/8 in CONFORMANCE_NON_LOOPBACK_IP; the suite talks to loopback only, where both brokers let guest in"]
fn guest_from_non_loopback_refused() {
    crate::harness::run(
        concat!(module_path!(), "::guest_from_non_loopback_refused"),
        |c| Box::pin(non_loopback_guest_refused(c)),
        None,
    );
}

async fn non_loopback_guest_refused(ctx: Ctx) -> Result<()> {
    let ip: std::net::IpAddr = std::env::var(NON_LOOPBACK_IP)
        .with_context(|| format!("set {NON_LOOPBACK_IP} to an address of this machine"))?
        .parse()
        .with_context(|| format!("{NON_LOOPBACK_IP} is not an IP address"))?;
    if ip.is_loopback() || ip.is_unspecified() {
        bail!("{NON_LOOPBACK_IP}={ip} is not outside loopback");
    }
    // The embedded broker under test listens on loopback only; start one on `ip`.
    let mut _guard = None;
    let port = match ctx.target {
        Target::External => ctx.addr.port(),
        Target::Embedded => {
            let b = broker::Broker::builder()
                .listen(std::net::SocketAddr::new(ip, 0))
                .start()
                .await?;
            let p = b.local_addr().port();
            _guard = Some(b);
            p
        }
    };
    let addr = std::net::SocketAddr::new(ip, port);
    tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("the broker is not reachable on {addr}"))?;
    let url = format!("amqp://guest:guest@{addr}/%2f");
    let res = lapin::Connection::connect(&url, Default::default()).await;
    expect_code(res.map(|_| ()), 403, Some(LOGIN_REFUSED))
}

async fn heartbeats_are_sent(ctx: Ctx) -> Result<()> {
    let mut raw = Raw::handshake(ctx.addr, 1).await?;
    let t0 = std::time::Instant::now();
    let mut seen = 0;
    while seen < 2 && t0.elapsed().as_secs() < 6 {
        // Keep our side alive too.
        raw.send(&crate::raw::frame(crate::raw::FRAME_HEARTBEAT, 0, &[]))
            .await?;
        match raw.read_frame(2).await {
            Ok(Some(f)) if f.kind == crate::raw::FRAME_HEARTBEAT => {
                ensure_eq!(f.channel, 0);
                seen += 1;
            }
            Ok(Some(f)) => bail!("unexpected frame {f:?}"),
            Ok(None) => bail!("connection closed although we sent heartbeats"),
            Err(_) => {}
        }
    }
    if seen < 2 {
        bail!("saw {seen} heartbeats in 6 s with heartbeat=1");
    }
    Ok(())
}

async fn missed_heartbeats_close_connection(ctx: Ctx) -> Result<()> {
    let mut raw = Raw::handshake(ctx.addr, 1).await?;
    // Stay silent: the server must drop us after about two missed intervals.
    let t0 = std::time::Instant::now();
    let end = raw.expect_end(15).await?;
    let waited = t0.elapsed();
    if waited < std::time::Duration::from_millis(1000) {
        bail!("connection dropped too early ({waited:?}): {end:?}");
    }
    Ok(())
}

async fn client_close_gets_close_ok(ctx: Ctx) -> Result<()> {
    let mut raw = Raw::handshake(ctx.addr, 0).await?;
    raw.open_channel(1).await?;
    raw.send_method(
        0,
        &Enc::method(10, 50)
            .u16(200)
            .short("bye")
            .u16(0)
            .u16(0)
            .bytes(),
    )
    .await?;
    match raw.expect_method(5).await? {
        (0, AMQPClass::Connection(lapin::protocol::connection::AMQPMethod::CloseOk(_))) => {}
        other => bail!("expected close-ok, got {other:?}"),
    }
    Ok(())
}

async fn many_connections_concurrently(ctx: Ctx) -> Result<()> {
    let mut tasks = Vec::new();
    for i in 0..20 {
        let ctx = ctx.clone();
        tasks.push(tokio::spawn(async move {
            let (conn, ch) = ctx.open().await?;
            let q = ch
                .queue_declare(
                    "".into(),
                    lapin::options::QueueDeclareOptions {
                        exclusive: true,
                        ..Default::default()
                    },
                    Default::default(),
                )
                .await?;
            ch.basic_publish(
                "".into(),
                q.name().clone(),
                Default::default(),
                format!("m{i}").as_bytes(),
                Default::default(),
            )
            .await?;
            let got = crate::harness::poll::try_until(crate::harness::WAIT, "message", || {
                let ch = ch.clone();
                let q = q.name().clone();
                async move {
                    anyhow::Ok(
                        ch.basic_get(q, lapin::options::BasicGetOptions { no_ack: true })
                            .await?
                            .map(drop),
                    )
                }
            })
            .await;
            conn.close(200, "bye".into()).await?;
            got
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}
