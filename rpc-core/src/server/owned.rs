//! The connection a URL entry point owns ([`Server::serve_url`],
//! [`Server::start_url`]): its reconnect loop, for when lapin's own recovery gives
//! up or wedges, and the watch on lapin's recovery that decides it has.

use std::time::Duration;

use lapin::{Channel, Connection};
use tower::Service;

use super::{Bound, Request, Response, Server};
use crate::error::{BoxError, RpcError};
use crate::recovery::{self, Backoff};

/// The connection of a URL entry point and where in the node list it is.
pub(super) struct Owned {
    nodes: std::sync::Arc<recovery::Nodes>,
    conn: Connection,
}

impl Owned {
    /// The first connection: each node once; none answering is an error.
    pub(super) async fn connect<S>(server: &Server<S>, url: &str) -> Result<Owned, RpcError> {
        let nodes = recovery::Nodes::parse(url)?;
        let conn = recovery::connect_any(
            &nodes,
            server.connection_name.as_deref(),
            CONNECT_TIMEOUT,
            &mut Backoff::default(),
            Some(1),
        )
        .await?;
        Ok(Owned { nodes, conn })
    }

    /// Binds `server` on the connection (watching its recovery for a wedge).
    pub(super) async fn bind<S>(&self, server: Server<S>) -> Result<Bound<S>, RpcError>
    where
        S: Service<Request, Response = Response> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send,
    {
        let mut bound = server.bind(&self.conn).await?;
        bound.wedged = Some(self.nodes.latest_wedged());
        Ok(bound)
    }

    /// Serves, and when the connection is lost for good (lapin gave up), connects
    /// again (next node, backoff, for ever) and binds again.
    pub(super) async fn serve<S>(
        &mut self,
        server: Server<S>,
        mut bound: Bound<S>,
        signal: impl Future<Output = ()>,
    ) -> Result<(), RpcError>
    where
        S: Service<Request, Response = Response> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send,
    {
        let signal = futures::FutureExt::shared(Box::pin(signal));
        loop {
            let result = bound.run(signal.clone()).await;
            let stopped = futures::FutureExt::now_or_never(signal.clone()).is_some();
            match result {
                Err(e) if !stopped && is_connection_loss(&e) => {
                    if !server.recovery.is_down() {
                        server.recovery.down("server", &e);
                    }
                }
                other => return other,
            }
            // Fails at once unless the connection is open (lapin's `close` checks).
            let _ =
                tokio::time::timeout(CONNECT_TIMEOUT, self.conn.close(200, "reconnecting".into()))
                    .await;
            let mut backoff = Backoff::default();
            loop {
                let delay = backoff.next_delay();
                tokio::select! {
                    _ = signal.clone() => return Ok(()),
                    _ = tokio::time::sleep(delay) => {}
                }
                let connected = recovery::connect_any(
                    &self.nodes,
                    server.connection_name.as_deref(),
                    CONNECT_TIMEOUT,
                    &mut backoff,
                    Some(1),
                )
                .await;
                let conn = match connected {
                    Ok(conn) => conn,
                    Err(_) => continue,
                };
                // lapin may still bring the old one back: closed then (`reap`).
                recovery::reap(std::mem::replace(&mut self.conn, conn));
                match self.bind(server.clone()).await {
                    Ok(b) => {
                        bound = b;
                        server.recovery.up("server");
                        break;
                    }
                    Err(e) => tracing::debug!(error = %e, "binding again failed; retrying"),
                }
            }
        }
    }
}

/// How often a serve loop reads its channel's state (outage counters and logs).
pub(super) const RECOVERY_TICK: Duration = Duration::from_millis(50);

/// How long a serve loop lets lapin's own recovery bring the channel back before it
/// opens a new connection itself.
pub(super) const RECOVERY_WAIT: Duration = recovery::RECOVERY_WAIT;

/// How long one connect attempt of a URL entry point may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a serve loop ended because the connection went away (not a channel error
/// that a reconnect would only repeat).
fn is_connection_loss(e: &RpcError) -> bool {
    match e {
        RpcError::Disconnected => true,
        RpcError::Amqp(e) => !matches!(e.kind(), lapin::ErrorKind::ProtocolError(_)),
        _ => false,
    }
}

/// Watches `channel` while lapin recovers it: `true` once it is connected again,
/// `false` once it has been down for [`RECOVERY_WAIT`] from `since` (or from now), is
/// closed for good, or its recovery is `wedged`.
pub(super) async fn recovery_ends(
    channel: &Channel,
    since: Option<tokio::time::Instant>,
    wedged: &recovery::Wedged,
) -> bool {
    let since = since.unwrap_or_else(tokio::time::Instant::now);
    let mut tick = tokio::time::interval(RECOVERY_TICK);
    loop {
        tick.tick().await;
        let status = channel.status();
        if status.connected() {
            return true;
        }
        let dead = !status.reconnecting() && !status.initializing() && !status.closing();
        if dead || wedged.is_set() || since.elapsed() >= RECOVERY_WAIT {
            return false;
        }
    }
}
