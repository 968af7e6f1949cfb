//! Connections that come back: broker URL lists, the reconnect backoff, and the
//! counters a user reads to see outages.
//!
//! The URL entry points ([`crate::TransportBuilder::connect_url`],
//! [`crate::Server::serve_url`], [`crate::Server::start_url`]) own their connection
//! and open it with lapin's `enable_auto_recover()`: lapin reconnects and replays
//! the channels, queues, QoS, confirms and consumers. This module adds what lapin
//! does not: a comma-separated list of nodes (`Nodes`), where lapin's every
//! reconnect goes to the next node (a cluster node stopping moves its clients to
//! another), an exponential, jittered, capped backoff, and
//! [`Recovery`], the outage counters.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use lapin::tcp::AMQPUriTcpExt;
use lapin::tcp::AsyncTcpStream;
use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties, ConnectionStatus};

use crate::error::RpcError;

/// First delay before a reconnect.
pub const MIN_DELAY: Duration = Duration::from_millis(100);
/// The cap of the reconnect delay.
pub const MAX_DELAY: Duration = Duration::from_secs(5);
/// TCP connects lapin tries after a loss before it gives up (lapin's own default;
/// each goes to the next node; about a minute with [`MAX_DELAY`]). A server then
/// opens a new connection itself; a client transport is closed (`Disconnected`).
const LAPIN_ATTEMPTS: usize = 16;

/// Splits `AMQP_URL`-style input into broker URLs: comma-separated, blanks dropped
/// (Spring AMQP's `addresses` convention).
pub fn parse_urls(urls: &str) -> Vec<String> {
    urls.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Exponential backoff with "equal jitter": the n-th delay is uniformly drawn from
/// `[d/2, d]` where `d = min(MIN_DELAY * 2^n, MAX_DELAY)`, so reconnecting peers do
/// not stampede a node that comes back.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(MIN_DELAY, MAX_DELAY)
    }
}

impl Backoff {
    /// A backoff from `min` doubling up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The next delay; `jitter` in `[0, 1]` picks where in `[d/2, d]` it falls.
    pub fn next_delay_with(&mut self, jitter: f64) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(20));
        let ceiling = self.min.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }

    /// The next delay with random jitter.
    pub fn next_delay(&mut self) -> Duration {
        let random = uuid::Uuid::new_v4().as_u128() as u32;
        self.next_delay_with(f64::from(random) / f64::from(u32::MAX))
    }

    /// Starts over (after a successful reconnect).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// How many delays were handed out since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

/// Outage counters of one transport or server; cheap to clone, all clones share them.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    inner: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    outages: AtomicU64,
    recoveries: AtomicU64,
    lost_calls: AtomicU64,
}

impl Recovery {
    /// Connection losses seen so far.
    pub fn outages(&self) -> u64 {
        self.inner.outages.load(Ordering::Relaxed)
    }

    /// Times the connection came back.
    pub fn recoveries(&self) -> u64 {
        self.inner.recoveries.load(Ordering::Relaxed)
    }

    /// Calls failed with [`RpcError::ConnectionLost`] (clients only).
    pub fn lost_calls(&self) -> u64 {
        self.inner.lost_calls.load(Ordering::Relaxed)
    }

    /// Whether the connection is down right now.
    pub fn is_down(&self) -> bool {
        self.outages() > self.recoveries()
    }

    /// Records a loss: one warning line per outage.
    pub(crate) fn down(&self, who: &str, error: &dyn std::fmt::Display) {
        let n = self.inner.outages.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(target: "rpc_core::recovery", who, outage = n, %error, "connection lost; reconnecting");
    }

    /// Records a recovery: one info line per outage.
    pub(crate) fn up(&self, who: &str) {
        let n = self.inner.recoveries.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::info!(target: "rpc_core::recovery", who, outage = n, "connection back");
    }

    pub(crate) fn lost(&self, calls: usize) {
        self.inner
            .lost_calls
            .fetch_add(calls as u64, Ordering::Relaxed);
    }
}

/// The properties of a connection owned by a URL entry point: lapin's auto-recover,
/// with a capped, jittered backoff, and the `connection_name` the broker shows.
pub(crate) fn properties(connection_name: Option<&str>) -> ConnectionProperties {
    let props = ConnectionProperties::default()
        .enable_auto_recover()
        .configure_backoff(|b| {
            b.with_min_delay(MIN_DELAY)
                .with_max_delay(MAX_DELAY)
                .with_jitter()
                .with_max_times(LAPIN_ATTEMPTS)
        });
    match connection_name {
        Some(name) => props.with_connection_name(name.into()),
        None => props,
    }
}

/// The nodes of one URL entry point, and which one the next TCP connect goes to.
///
/// lapin's recovery reconnects through the `connect` function given to
/// `Connection::connector`; ours takes the next node of the list on every call, so a
/// reconnect after a node stops (or closes our connection) goes to the next node, and
/// lapin then replays the channels, queues, QoS and consumers there. The AMQP
/// handshake (user, vhost, `frame_max`/`heartbeat` query) is the first URL's: nodes
/// of one list must agree on scheme, user and vhost ([`Nodes::parse`] checks).
#[derive(Debug)]
pub(crate) struct Nodes {
    uris: Vec<AMQPUri>,
    next: AtomicUsize,
    /// The [`Wedged`] flag of the connection [`Nodes::open`] opened last.
    latest: std::sync::Mutex<Wedged>,
}

/// Set when a reconnect of one connection hit [`HANDSHAKE_TIMEOUT`]: lapin 4.12's
/// reconnects after a handshake that failed midway fail on a stale expected reply
/// ("invalid state ... ProtocolHeader") and then wait on the socket, so that
/// connection will not come back by itself; its owner should open a new one.
#[derive(Debug, Clone, Default)]
pub(crate) struct Wedged(Arc<std::sync::atomic::AtomicBool>);

impl Wedged {
    /// Whether the connection's recovery is wedged.
    pub(crate) fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Nodes {
    /// Parses a comma-separated list ([`parse_urls`]).
    pub(crate) fn parse(urls: &str) -> Result<Arc<Nodes>, RpcError> {
        let mut uris: Vec<AMQPUri> = Vec::new();
        for url in parse_urls(urls) {
            let uri: AMQPUri = url.parse().map_err(|e| RpcError::InvalidUrl {
                message: format!("{}: {e}", redact(&url)),
            })?;
            if let Some(first) = uris.first()
                && (first.scheme != uri.scheme
                    || first.authority.userinfo != uri.authority.userinfo
                    || first.vhost != uri.vhost)
            {
                return Err(RpcError::InvalidUrl {
                    message: format!(
                        "{}: the nodes of one list must have the first node's scheme, user and vhost",
                        redact(&url)
                    ),
                });
            }
            uris.push(uri);
        }
        if uris.is_empty() {
            return Err(RpcError::InvalidUrl {
                message: "no broker URL given".into(),
            });
        }
        Ok(Arc::new(Nodes {
            uris,
            next: AtomicUsize::new(0),
            latest: Default::default(),
        }))
    }

    /// How many nodes.
    pub(crate) fn len(&self) -> usize {
        self.uris.len()
    }

    /// The node the next connect goes to, moving on by one.
    fn take(&self) -> &AMQPUri {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        &self.uris[i % self.uris.len()]
    }

    /// Which node the next connect goes to, and a way to set it.
    fn next(&self) -> usize {
        self.next.load(Ordering::Relaxed) % self.uris.len()
    }

    fn set_next(&self, i: usize) {
        self.next.store(i % self.uris.len(), Ordering::Relaxed);
    }

    /// Opens a recovering connection whose first (and every later) TCP connect goes
    /// to [`Nodes::take`].
    async fn open(
        self: &Arc<Self>,
        connection_name: Option<&str>,
    ) -> Result<Connection, lapin::Error> {
        let runtime = lapin::runtime::default_runtime()?;
        let nodes = self.clone();
        let handshake = self.uris[0].clone();
        // The connection's status, for the reconnects' handshake deadline; set once the
        // first connect is through (which `connect_any` bounds itself).
        let status = Arc::new(OnceLock::<ConnectionStatus>::new());
        let watched = status.clone();
        let wedged = Wedged::default();
        let flag = wedged.clone();
        let conn = Connection::connector(
            handshake,
            runtime,
            async move |_, runtime| {
                let node = nodes.take();
                tracing::debug!(target: "rpc_core::recovery", node = %display(node), "connecting");
                let stream = AMQPUriTcpExt::connect_async(node, &runtime).await?;
                if let Some(status) = watched.get() {
                    handshake_deadline(&stream, status.clone(), flag.clone(), display(node));
                }
                Ok(stream)
            },
            properties(connection_name),
        )
        .await?;
        let _ = status.set(conn.status().clone());
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = wedged;
        Ok(conn)
    }

    /// The [`Wedged`] flag of the connection opened last (read right after
    /// [`connect_any`], the one it returned).
    pub(crate) fn latest_wedged(&self) -> Wedged {
        self.latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Connects to the first node of `nodes` (from its current one on) that answers
/// within `attempt_timeout`. Each failure of a whole round waits for `backoff`.
/// Gives up after `rounds` rounds with [`RpcError::Unreachable`] (`None`: never).
pub(crate) async fn connect_any(
    nodes: &Arc<Nodes>,
    connection_name: Option<&str>,
    attempt_timeout: Duration,
    backoff: &mut Backoff,
    rounds: Option<u32>,
) -> Result<Connection, RpcError> {
    let mut round = 0u32;
    loop {
        let mut last = String::new();
        for _ in 0..nodes.len() {
            let i = nodes.next();
            let uri = &nodes.uris[i];
            let connecting = async {
                // lapin retries even the first TCP connect with its backoff (a minute):
                // find a node that refuses at once first.
                reachable(uri).await?;
                // `open`'s first connect takes node `i`.
                nodes.set_next(i);
                nodes.open(connection_name).await.map_err(|e| e.to_string())
            };
            match tokio::time::timeout(attempt_timeout, connecting).await {
                Ok(Ok(conn)) => return Ok(conn),
                Ok(Err(e)) => last = format!("{}: {e}", display(uri)),
                Err(_) => last = format!("{}: connect timed out", display(uri)),
            }
            // Each node once per round, whatever lapin tried meanwhile.
            nodes.set_next(i + 1);
            tracing::debug!(target: "rpc_core::recovery", error = %last, "connect failed");
        }
        round += 1;
        if rounds.is_some_and(|r| round >= r) {
            return Err(RpcError::Unreachable { message: last });
        }
        let delay = backoff.next_delay();
        tracing::debug!(target: "rpc_core::recovery", ?delay, attempt = backoff.attempts(), "retrying");
        tokio::time::sleep(delay).await;
    }
}

/// How long the owner of a connection lets lapin's own recovery bring a channel back
/// before it opens a new connection itself (servers: `server::owned`; clients:
/// `client::rebuild`). lapin 4.12's reconnect can wedge for good (see [`Wedged`]).
pub(crate) const RECOVERY_WAIT: Duration = Duration::from_secs(15);

/// Closes a connection its owner gave up on (see [`RECOVERY_WAIT`]) once lapin, still
/// reconnecting it in the background, has brought it back: else it would replay its
/// consumers beside the new connection's (a server's consumer that nobody reads holds
/// its prefetch of requests unacked). Gives up watching after lapin's own budget.
pub(crate) fn reap(conn: Connection) {
    tokio::spawn(async move {
        let until = tokio::time::Instant::now() + REAP_FOR;
        while tokio::time::Instant::now() < until {
            let status = conn.status();
            if status.connected() {
                let _ = tokio::time::timeout(
                    Duration::from_secs(5),
                    conn.close(200, "replaced by a new connection".into()),
                )
                .await;
                return;
            }
            if status.closed() || status.errored() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

/// How long [`reap`] watches an abandoned connection: longer than lapin's
/// [`LAPIN_ATTEMPTS`] reconnects at up to [`MAX_DELAY`] (and a handshake deadline)
/// apart.
const REAP_FOR: Duration = Duration::from_secs(300);

/// How long a reconnect's AMQP handshake may take (RabbitMQ's own `handshake_timeout`
/// on the server side).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Gives a reconnect's handshake [`HANDSHAKE_TIMEOUT`]: lapin's reconnect waits for the
/// broker's `connection.start` with no deadline, so a peer that accepts TCP and never
/// answers (a load balancer with no backend, a wedged node) would hold the connection
/// in "reconnecting" for ever, however soon the broker is reachable again. If the
/// connection is not open by then, this shuts the socket down: lapin's read fails and
/// it goes on to its next attempt (the next node), and `wedged` tells the owner that
/// lapin's further attempts will not get through (see [`Wedged`]). Plain TCP only
/// (lapin is built without TLS here).
fn handshake_deadline(
    stream: &AsyncTcpStream<async_compat::Compat<tokio::net::TcpStream>>,
    status: ConnectionStatus,
    wedged: Wedged,
    node: String,
) {
    #[allow(unreachable_patterns)] // TLS variants exist only with lapin's TLS features
    let AsyncTcpStream::Plain(socket) = stream else {
        return;
    };
    let Ok(fd) = socket.get_ref().as_fd().try_clone_to_owned() else {
        return;
    };
    tokio::spawn(async move {
        tokio::time::sleep(HANDSHAKE_TIMEOUT).await;
        if !status.connected() {
            tracing::warn!(target: "rpc_core::recovery", node, timeout = ?HANDSHAKE_TIMEOUT, "the broker did not answer the handshake; trying again");
            // Shuts the socket lapin reads (a dup of it); dropping the dup closes only it.
            let _ = std::net::TcpStream::from(fd).shutdown(std::net::Shutdown::Both);
            wedged.set();
        }
    });
}

/// Whether something accepts TCP at the node's host and port.
async fn reachable(uri: &AMQPUri) -> Result<(), String> {
    let addr = (uri.authority.host.as_str(), uri.authority.port);
    match tokio::net::TcpStream::connect(addr).await {
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// `host:port` of a node, for logs and errors (never the password).
fn display(uri: &AMQPUri) -> String {
    format!("{}:{}", uri.authority.host, uri.authority.port)
}

/// A URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_comma_separated_and_trimmed() {
        assert_eq!(
            parse_urls(" amqp://a:5672 ,amqp://b:5673,, "),
            vec!["amqp://a:5672", "amqp://b:5673"]
        );
        assert!(parse_urls("").is_empty());
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let top: Vec<_> = (0..6).map(|_| b.next_delay_with(1.0)).collect();
        let ms: Vec<u128> = top.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, vec![100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay_with(0.0), Duration::from_millis(50));
        for _ in 0..100 {
            let d = b.next_delay();
            assert!(d >= Duration::from_millis(500) || b.attempts() < 5);
            assert!(d <= Duration::from_secs(1));
        }
    }

    #[test]
    fn each_connect_goes_to_the_next_node() {
        let nodes = Nodes::parse("amqp://u:p@a:1/v, amqp://u:p@b:2/v,amqp://u:p@c:3/v")
            .expect("one cluster");
        let seen: Vec<String> = (0..4).map(|_| display(nodes.take())).collect();
        assert_eq!(seen, vec!["a:1", "b:2", "c:3", "a:1"]);
    }

    #[tokio::test]
    async fn a_round_tries_each_refusing_node_once_then_is_unreachable() {
        // Two loopback ports nothing listens on (bound, then released).
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port")
        };
        let (a, b) = (free(), free());
        let nodes = Nodes::parse(&format!(
            "amqp://guest:guest@127.0.0.1:{a}/%2f,amqp://guest:guest@127.0.0.1:{b}/%2f"
        ))
        .expect("nodes");
        let result = connect_any(
            &nodes,
            None,
            Duration::from_secs(5),
            &mut Backoff::default(),
            Some(1),
        )
        .await;
        match result {
            Err(RpcError::Unreachable { message }) => {
                assert!(message.contains(&format!("127.0.0.1:{b}")), "{message}")
            }
            other => panic!("{other:?}"),
        }
        // Back at the first node for the next round.
        assert_eq!(nodes.next(), 0);
    }

    #[test]
    fn node_lists_must_agree_on_user_and_vhost() {
        for bad in [
            "amqp://u:p@a:1/v,amqp://x:p@b:2/v",
            "amqp://u:p@a:1/v,amqp://u:p@b:2/w",
            "amqp://u:p@a:1/v,amqps://u:p@b:2/v",
            "",
            "not a url at all:://",
        ] {
            match Nodes::parse(bad) {
                Err(RpcError::InvalidUrl { message }) => {
                    assert!(!message.contains(":p@"), "password in {message}")
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(redact("amqp://guest:pw@h:1/%2f"), "amqp://***@h:1/%2f");
    }
}
