//! A transport that owns its connection ([`crate::TransportBuilder::connect_url`])
//! connects anew when lapin's own recovery does not bring its reply channel back:
//! `client::watch` asks once the channel has been recovering for
//! `recovery::RECOVERY_WAIT`, once its reconnect is wedged (lapin 4.12 cannot finish a
//! handshake after one that failed midway: `recovery::Wedged`), or once it is closed
//! for good. This task then connects to the nodes in turn with the capped backoff, for
//! as long as the transport lives, opens the reply channel again (the same callback
//! queue name) and puts it in place (`Inner::install`): calls waiting for the
//! connection go on, and the outage counters record the recovery.

use std::sync::{Arc, Weak};
use std::time::Duration;

use lapin::{Channel, Connection};
use tokio::sync::mpsc;

use super::reply::{ReplyMode, open_reply_channel};
use super::watch::GiveUp;
use crate::error::RpcError;
use crate::recovery::{self, Backoff, Nodes};
use futures::future::BoxFuture;

/// What a transport needs to connect anew (its owner information and the
/// `reply_to` to keep).
pub(super) struct Params {
    pub(super) nodes: Arc<Nodes>,
    pub(super) connection_name: Option<String>,
    pub(super) connect_timeout: Duration,
    pub(super) reply_mode: ReplyMode,
    /// Where the new connection's watch asks.
    pub(super) requests: mpsc::UnboundedSender<()>,
    pub(super) reply_to: String,
    /// Whether to open the consumer-check channel too.
    pub(super) probe: bool,
}

/// The transport, as this task sees it.
pub(super) trait Target: Send + Sync {
    /// How to connect anew; `None` if it does not own its connection.
    fn params(&self) -> Option<Params>;
    /// Puts the new connection in place.
    fn install(&self, opened: Opened) -> BoxFuture<'_, ()>;
}

/// A new connection with the transport's channels open on it.
pub(super) struct Opened {
    pub(super) conn: Connection,
    pub(super) channel: Channel,
    pub(super) consumer: lapin::Consumer,
    pub(super) probe: Option<Channel>,
    pub(super) give_up: GiveUp,
}

/// Serves the requests of `inner`'s watches until the transport is dropped.
pub(super) fn spawn(inner: Weak<dyn Target>, mut requests: mpsc::UnboundedReceiver<()>) {
    tokio::spawn(async move {
        while requests.recv().await.is_some() {
            let mut backoff = Backoff::default();
            loop {
                // No strong reference across the connect: the transport may go meanwhile.
                let Some(params) = inner.upgrade().and_then(|t| t.params()) else {
                    return;
                };
                match open(params).await {
                    Ok(opened) => {
                        let Some(target) = inner.upgrade() else {
                            return;
                        };
                        target.install(opened).await;
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(target: "rpc_core::recovery", error = %e, "connecting anew failed; retrying");
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
            }
            // Asks that came while connecting are answered.
            while requests.try_recv().is_ok() {}
        }
    });
}

/// One round over the nodes, and the transport's channels opened on the connection.
async fn open(p: Params) -> Result<Opened, RpcError> {
    let conn = recovery::connect_any(
        &p.nodes,
        p.connection_name.as_deref(),
        p.connect_timeout,
        &mut Backoff::default(),
        Some(1),
    )
    .await?;
    let give_up = GiveUp {
        wedged: p.nodes.latest_wedged(),
        rebuild: p.requests,
    };
    let (channel, consumer, _) =
        open_reply_channel(&conn, p.reply_mode, Some(p.reply_to.as_str())).await?;
    let probe = match p.probe {
        true => Some(conn.create_channel().await?),
        false => None,
    };
    Ok(Opened {
        conn,
        channel,
        consumer,
        probe,
        give_up,
    })
}
