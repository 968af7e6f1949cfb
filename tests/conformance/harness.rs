//! The harness: runs one scenario against every selected broker and reports each failure.
//!
//! Targets:
//! - `embedded`: a built-in broker started in-process on `127.0.0.1:0` (one per scenario);
//! - `external`: the broker at `AMQP_URL` (CI points it at this machine's RabbitMQ).
//!
//! `CONFORMANCE_TARGET=external|embedded|both` picks them (default `both`; `external` is
//! only included when `AMQP_URL` is set). Every scenario runs under a timeout so a hung
//! broker fails the test instead of hanging CI.

use std::{future::Future, net::SocketAddr, pin::Pin, time::Duration};

use anyhow::{Context as _, Result, anyhow, bail};
use lapin::{Channel, Connection, ConnectionProperties};

/// The bounded wait shared with the other test trees.
#[path = "../../broker/tests/common/poll.rs"]
pub mod poll;

/// A boxed scenario future.
pub type BoxFut = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

/// Which broker a scenario runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Built-in broker started in this process.
    Embedded,
    /// The broker at `AMQP_URL`.
    External,
}

/// What a scenario gets: where to connect and how to name things uniquely.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub target: Target,
    pub url: String,
    /// `host:port` of the broker, for raw-socket scenarios.
    pub addr: SocketAddr,
    pub run_id: String,
    /// `product` and `version` from the server properties of connection.start.
    pub server: ServerInfo,
}

/// What the broker says it is in connection.start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerInfo {
    pub product: String,
    pub version: String,
}

impl ServerInfo {
    /// Reads connection.start on a raw connection (then drops the socket).
    async fn probe(addr: SocketAddr) -> Result<Self> {
        let mut raw = crate::raw::Raw::connect(addr).await?;
        let start = raw.start().await?;
        let props = start.server_properties.inner();
        let text = |k: &str| match props.get(k) {
            Some(lapin::types::AMQPValue::LongString(s)) => s.to_string(),
            Some(lapin::types::AMQPValue::ShortString(s)) => s.to_string(),
            _ => String::new(),
        };
        Ok(Self {
            product: text("product"),
            version: text("version"),
        })
    }
}

impl Ctx {
    /// A name unique to this run: `conf.<what>.<run id>`.
    pub fn name(&self, what: &str) -> String {
        format!("conf.{what}.{}", self.run_id)
    }

    /// A new lapin connection.
    pub async fn connect(&self) -> Result<Connection> {
        tokio::time::timeout(
            Duration::from_secs(10),
            Connection::connect(&self.url, ConnectionProperties::default()),
        )
        .await
        .context("connect timed out")?
        .context("connect")
    }

    /// A new connection with one channel.
    pub async fn open(&self) -> Result<(Connection, Channel)> {
        let conn = self.connect().await?;
        let ch = conn.create_channel().await.context("create_channel")?;
        Ok((conn, ch))
    }

    /// The URL with other credentials.
    pub fn url_with_credentials(&self, user: &str, pass: &str) -> String {
        let rest = self
            .url
            .split_once('@')
            .map(|(_, r)| r)
            .unwrap_or(self.url.trim_start_matches("amqp://"));
        format!("amqp://{user}:{pass}@{rest}")
    }

    /// `(major, minor)` of the server when it is RabbitMQ, from its `version` property.
    pub fn rabbitmq_version(&self) -> Option<(u32, u32)> {
        if self.server.product != "RabbitMQ" {
            return None;
        }
        let mut parts = self
            .server
            .version
            .split('.')
            .map(|p| p.parse::<u32>().ok());
        Some((parts.next()??, parts.next().flatten().unwrap_or(0)))
    }

    /// Whether this is the built-in broker, for what it deliberately does not have
    /// (streams), which it refuses where RabbitMQ accepts.
    pub fn is_builtin(&self) -> bool {
        self.server.product == "amqp-rpc broker"
    }

    /// Whether the broker behaves as RabbitMQ 4.x where 3.x differs: RabbitMQ >= 4, and
    /// the built-in broker (product `amqp-rpc broker`), which follows 4.x.
    pub fn like_rabbitmq_4(&self) -> bool {
        match self.rabbitmq_version() {
            Some((major, _)) => major >= 4,
            None => self.server.product == "amqp-rpc broker",
        }
    }
}

fn default_timeout() -> Duration {
    let secs = std::env::var("CONFORMANCE_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
}

fn external_url() -> Option<String> {
    std::env::var("AMQP_URL").ok().filter(|s| !s.is_empty())
}

/// Which targets are selected by the environment.
pub fn targets() -> Vec<Target> {
    let sel = std::env::var("CONFORMANCE_TARGET").unwrap_or_else(|_| "both".into());
    let mut v = Vec::new();
    let ext = external_url().is_some();
    match sel.as_str() {
        "external" => {
            assert!(ext, "CONFORMANCE_TARGET=external needs AMQP_URL");
            v.push(Target::External);
        }
        "embedded" => v.push(Target::Embedded),
        _ => {
            if ext {
                v.push(Target::External);
            }
            v.push(Target::Embedded);
        }
    }
    v
}

/// Resolves `amqp://user:pass@host:port/vhost` to a socket address.
pub fn addr_of(url: &str) -> Result<SocketAddr> {
    let uri: lapin::uri::AMQPUri = url.parse().map_err(|e| anyhow!("bad url {url}: {e}"))?;
    let host = uri.authority.host;
    let port = uri.authority.port;
    use std::net::ToSocketAddrs;
    (host.as_str(), port)
        .to_socket_addrs()?
        .find(|a| a.is_ipv4())
        .ok_or_else(|| anyhow!("cannot resolve {url}"))
}

fn run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

async fn run_external(f: fn(Ctx) -> BoxFut, limit: Duration) -> Result<()> {
    let url = external_url().ok_or_else(|| anyhow!("AMQP_URL not set"))?;
    let addr = addr_of(&url)?;
    let server = ServerInfo::probe(addr)
        .await
        .context("reading the server properties")?;
    let ctx = Ctx {
        target: Target::External,
        addr,
        url,
        run_id: run_id(),
        server,
    };
    match tokio::time::timeout(limit, f(ctx)).await {
        Ok(r) => r,
        Err(_) => bail!("scenario timed out after {limit:?}"),
    }
}

async fn run_embedded(f: fn(Ctx) -> BoxFut, limit: Duration) -> Result<()> {
    // Run in its own task so that a panicking broker (or scenario) becomes an error.
    let task = tokio::spawn(async move {
        let broker =
            tokio::time::timeout(Duration::from_secs(10), broker::Broker::builder().start())
                .await
                .context("embedded broker start timed out")?
                .context("embedded broker start")?;
        let url = broker.amqp_url();
        let server = ServerInfo::probe(broker.local_addr())
            .await
            .context("reading the server properties")?;
        let ctx = Ctx {
            target: Target::Embedded,
            addr: broker.local_addr(),
            url,
            run_id: run_id(),
            server,
        };
        let res = match tokio::time::timeout(limit, f(ctx)).await {
            Ok(r) => r,
            Err(_) => Err(anyhow!("scenario timed out after {limit:?}")),
        };
        if tokio::time::timeout(Duration::from_secs(5), broker.shutdown())
            .await
            .is_err()
        {
            return Err(res
                .err()
                .unwrap_or_else(|| anyhow!("broker shutdown timed out")));
        }
        res
    });
    match task.await {
        Ok(r) => r,
        Err(e) if e.is_panic() => {
            let p = e.into_panic();
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-string panic".into());
            Err(anyhow!("panicked: {msg}"))
        }
        Err(e) => Err(anyhow!("task failed: {e}")),
    }
}

/// Runs `f` against every selected target; panics listing every failure.
pub fn run(name: &str, f: fn(Ctx) -> BoxFut, timeout_secs: Option<u64>) {
    let limit = timeout_secs
        .map(Duration::from_secs)
        .unwrap_or_else(default_timeout);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut failures = Vec::new();
    for target in targets() {
        let res = rt.block_on(async {
            match target {
                Target::External => run_external(f, limit).await,
                Target::Embedded => run_embedded(f, limit).await,
            }
        });
        if let Err(e) = res {
            failures.push(format!("[{target:?}] {name}: {e:#}"));
        }
    }
    // Lingering client or broker tasks must not keep the test alive.
    rt.shutdown_timeout(Duration::from_secs(2));
    if !failures.is_empty() {
        panic!("{}", failures.join("\n"));
    }
}

/// Declares `#[test]`s that run the named scenarios of the enclosing module through the harness.
///
/// `scenarios! { a, b = 90 }` gives `b` a 90 s limit instead of the default.
macro_rules! scenarios {
    ($($name:ident $(= $secs:literal)?),* $(,)?) => {
        mod t {
            $(
                #[test]
                fn $name() {
                    #[allow(unused_mut, unused_assignments)]
                    let mut secs: Option<u64> = None;
                    $( secs = Some($secs); )?
                    crate::harness::run(
                        concat!(module_path!(), "::", stringify!($name)),
                        |c| Box::pin(super::$name(c)),
                        secs,
                    );
                }
            )*
        }
    };
}
pub(crate) use scenarios;

// ---------------------------------------------------------------------------------------------
// Assertion helpers shared by the scenario modules.

/// The AMQP reply code and text carried by a lapin error, if it is a protocol error.
pub fn amqp_error(e: &lapin::Error) -> Option<(u16, String)> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(p) => Some((p.get_id(), p.get_message().to_string())),
        _ => None,
    }
}

/// Asserts that `res` failed with AMQP `code`; if `text` is given the reply text must equal it.
pub fn expect_code<T: std::fmt::Debug>(
    res: std::result::Result<T, lapin::Error>,
    code: u16,
    text: Option<&str>,
) -> Result<()> {
    match res {
        Ok(v) => bail!("expected AMQP error {code}, got Ok({v:?})"),
        Err(e) => match amqp_error(&e) {
            Some((c, t)) => {
                if c != code {
                    bail!("expected AMQP error {code}, got {c} {t:?}");
                }
                if let Some(want) = text
                    && t != want
                {
                    bail!("expected reply text {want:?}, got {t:?}");
                }
                Ok(())
            }
            None => bail!("expected AMQP error {code}, got non-protocol error: {e}"),
        },
    }
}

/// Asserts that the reply text starts with `prefix` (for texts whose tail is not stable).
pub fn expect_code_prefix<T: std::fmt::Debug>(
    res: std::result::Result<T, lapin::Error>,
    code: u16,
    prefix: &str,
) -> Result<()> {
    match res {
        Ok(v) => bail!("expected AMQP error {code}, got Ok({v:?})"),
        Err(e) => match amqp_error(&e) {
            Some((c, t)) if c == code && t.starts_with(prefix) => Ok(()),
            Some((c, t)) => bail!("expected AMQP error {code} {prefix:?}..., got {c} {t:?}"),
            None => bail!("expected AMQP error {code}, got non-protocol error: {e}"),
        },
    }
}

/// Asserts a condition with a formatted message.
macro_rules! ensure_eq {
    ($left:expr, $right:expr $(,)?) => {{
        let (l, r) = (&$left, &$right);
        if l != r {
            anyhow::bail!(
                "{} == {} failed: left={:?} right={:?}",
                stringify!($left),
                stringify!($right),
                l,
                r
            );
        }
    }};
    ($left:expr, $right:expr, $($fmt:tt)+) => {{
        let (l, r) = (&$left, &$right);
        if l != r {
            anyhow::bail!("{}: left={:?} right={:?}", format!($($fmt)+), l, r);
        }
    }};
}
pub(crate) use ensure_eq;

/// Declares an exclusive queue (`""` for a server-named one) and returns its name.
pub async fn exclusive_queue(ch: &Channel, name: &str) -> Result<String> {
    let options = lapin::options::QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    let q = ch
        .queue_declare(name.into(), options, Default::default())
        .await?;
    Ok(q.name().to_string())
}

/// `basic.consume` with default options (acks on, not exclusive).
pub async fn consume(
    ch: &Channel,
    queue: lapin::types::ShortString,
    tag: lapin::types::ShortString,
) -> Result<lapin::Consumer> {
    Ok(ch
        .basic_consume(queue, tag, Default::default(), Default::default())
        .await?)
}

/// Waits up to `secs` for the next delivery from a consumer.
pub async fn next_delivery(
    consumer: &mut lapin::Consumer,
    secs: u64,
) -> Result<lapin::message::Delivery> {
    use futures::StreamExt;
    match tokio::time::timeout(Duration::from_secs(secs), consumer.next()).await {
        Ok(Some(Ok(d))) => Ok(d),
        Ok(Some(Err(e))) => bail!("consumer error: {e}"),
        Ok(None) => bail!("consumer stream ended"),
        Err(_) => bail!("no delivery within {secs}s"),
    }
}

/// Asserts that no delivery arrives within `ms` milliseconds.
pub async fn no_delivery(consumer: &mut lapin::Consumer, ms: u64) -> Result<()> {
    use futures::StreamExt;
    match tokio::time::timeout(Duration::from_millis(ms), consumer.next()).await {
        Err(_) => Ok(()),
        Ok(Some(Ok(d))) => bail!(
            "unexpected delivery: {:?}",
            String::from_utf8_lossy(&d.data)
        ),
        Ok(Some(Err(e))) => bail!("consumer error: {e}"),
        Ok(None) => bail!("consumer stream ended"),
    }
}

/// How long a scenario waits for the broker to have done something it does
/// asynchronously (a requeue, a deletion, a close), through [`poll`].
pub const WAIT: Duration = Duration::from_secs(5);

/// Message count of `queue` via a passive declare on a fresh channel of `conn`.
pub async fn message_count(conn: &Connection, queue: &str) -> Result<u32> {
    let ch = conn.create_channel().await?;
    let n = message_count_on(&ch, queue).await;
    let _ = ch.close(200, "bye".into()).await;
    n
}

/// Message count of `queue` via a passive declare on `ch` itself: answered after
/// everything `ch` sent before.
pub async fn message_count_on(ch: &Channel, queue: &str) -> Result<u32> {
    let q = ch
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await?;
    Ok(q.message_count())
}

/// Whether `queue` exists (passive declare on a fresh connection).
pub async fn queue_exists(ctx: &Ctx, queue: &str) -> Result<bool> {
    let (conn, ch) = ctx.open().await?;
    let res = ch
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await;
    let _ = conn.close(200, "bye".into()).await;
    match res {
        Ok(_) => Ok(true),
        Err(e) if amqp_error(&e).map(|(c, _)| c) == Some(404) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Whether `exchange` exists (passive declare on a fresh connection).
pub async fn exchange_exists(ctx: &Ctx, exchange: &str) -> Result<bool> {
    let (conn, ch) = ctx.open().await?;
    let res = ch
        .exchange_declare(
            exchange.into(),
            lapin::ExchangeKind::Direct,
            lapin::options::ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await;
    let _ = conn.close(200, "bye".into()).await;
    match res {
        Ok(_) => Ok(true),
        Err(e) if amqp_error(&e).map(|(c, _)| c) == Some(404) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Deletes queues on a fresh connection, ignoring errors (cleanup after a scenario).
pub async fn cleanup(ctx: &Ctx, queues: &[&str], exchanges: &[&str]) {
    let Ok(conn) = ctx.connect().await else {
        return;
    };
    for q in queues {
        if let Ok(ch) = conn.create_channel().await {
            let _ = ch.queue_delete((*q).into(), Default::default()).await;
        }
    }
    for x in exchanges {
        if let Ok(ch) = conn.create_channel().await {
            let _ = ch.exchange_delete((*x).into(), Default::default()).await;
        }
    }
    let _ = conn.close(200, "bye".into()).await;
}
