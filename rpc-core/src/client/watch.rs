//! Notices the connection dropping, which lapin's auto-recover does not report.
//!
//! With `enable_auto_recover()`, lapin 4 reacts to a lost connection
//! (`Channels::init_connection_recovery`) by setting every channel to
//! `ChannelState::Reconnecting` and poisoning its ackers, and nothing else: the
//! consumers' streams yield no error (they only go quiet until lapin replays them),
//! and `Connection::events_listener()` yields `Event::Error` only when the loss cannot
//! be recovered. A call waiting for its reply on the direct reply-to consumer would
//! therefore wait for its deadline. This task watches the reply channel's state (a
//! cheap read of a lock, every [`TICK`]) and the connection's `Event::Connected`
//! (a reconnect the ticks missed): on a loss it fails every pending call with
//! [`crate::RpcError::ConnectionLost`] and counts the outage in [`Recovery`].
//!
//! A second gap: lapin marks a recovering channel `Connected` (and wakes
//! `Channel::wait_for_recovery`) at `channel.open-ok`, before it replays
//! `confirm.select` and the reply consumer. A request published in that window names
//! `amq.rabbitmq.reply-to` on a channel without its consumer, and the broker closes
//! the channel (`406 PRECONDITION_FAILED - fast reply consumer does not exist`),
//! which ends the transport. So sends wait for [`Ready`]: cleared on a loss, set
//! again only after [`BARRIER_ROUND_TRIPS`] sequential round trips on the channel
//! (the broker answers a channel's methods in order, so by then lapin's replay,
//! which starts at the same `open-ok` and needs two, has been answered).

use std::time::Duration;

use futures::StreamExt;
use lapin::options::BasicQosOptions;
use lapin::{Channel, Connection, Event};
use tokio::sync::{mpsc, oneshot, watch};

use super::pending::Pending;
use crate::recovery::{RECOVERY_WAIT, Recovery, Wedged};

/// How often the reply channel's state is read.
pub(crate) const TICK: Duration = Duration::from_millis(20);

/// Sequential round trips on a recovered channel before sends go on.
const BARRIER_ROUND_TRIPS: usize = 4;

/// Whether the reply channel may be published on (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct Ready(watch::Sender<bool>);

impl Default for Ready {
    fn default() -> Self {
        Ready(watch::Sender::new(true))
    }
}

impl Ready {
    /// A send saw the channel recovering (maybe before the watch did).
    pub(crate) fn clear(&self) {
        self.0.send_replace(false);
    }

    /// Sends may go on (a new connection's channel is ready).
    pub(crate) fn open(&self) {
        self.set();
    }

    /// Waits until the channel may be published on.
    pub(crate) async fn wait(&self) {
        let mut rx = self.0.subscribe();
        // The sender lives in the transport: it cannot be gone while a send runs.
        let _ = rx.wait_for(|ready| *ready).await;
    }

    fn set(&self) {
        self.0.send_replace(true);
    }

    fn is_set(&self) -> bool {
        *self.0.borrow()
    }
}

/// When a transport that owns its connection stops waiting for lapin and connects
/// anew (`client::rebuild`): its connection's [`Wedged`] flag, and where to ask.
#[derive(Debug, Clone)]
pub(crate) struct GiveUp {
    pub(crate) wedged: Wedged,
    pub(crate) rebuild: mpsc::UnboundedSender<()>,
}

/// Watches `channel` (on `conn`) until the transport is dropped (`stop` resolves) or
/// the channel is closed for good. With `give_up`, a channel that lapin does not bring
/// back within [`RECOVERY_WAIT`] (or whose recovery is wedged), or that closes for
/// good, is handed over: the watch asks for a new connection and ends.
pub(crate) fn spawn(
    conn: &Connection,
    channel: Channel,
    pending: Pending,
    recovery: Recovery,
    ready: Ready,
    stop: oneshot::Receiver<()>,
    give_up: Option<GiveUp>,
) {
    let events = conn.events_listener();
    tokio::spawn(async move {
        let mut events = Box::pin(events);
        let mut stop = stop;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut down = false;
        let mut down_since: Option<tokio::time::Instant> = None;
        let hand_over = |why: &str| match &give_up {
            Some(g) => {
                tracing::warn!(target: "rpc_core::recovery", why, "connecting anew");
                g.rebuild.send(()).is_ok()
            }
            None => false,
        };
        loop {
            tokio::select! {
                _ = &mut stop => break,
                event = events.next() => match event {
                    // Connected again: if the ticks missed the loss, the calls still
                    // waiting were sent on the old connection.
                    Some(Event::Connected) if !down => {
                        down = true;
                        ready.clear();
                        lost(&pending, &recovery, "reconnected");
                    }
                    Some(_) => {}
                    None => break,
                },
                _ = tick.tick() => {
                    let status = channel.status();
                    if status.reconnecting() {
                        ready.clear();
                        if !down {
                            down = true;
                            lost(&pending, &recovery, "the connection dropped");
                        }
                        let since = *down_since.get_or_insert_with(tokio::time::Instant::now);
                        let wedged = give_up.as_ref().is_some_and(|g| g.wedged.is_set());
                        if (wedged || since.elapsed() >= RECOVERY_WAIT)
                            && hand_over("lapin's recovery did not bring the reply channel back")
                        {
                            break;
                        }
                    } else if status.connected() {
                        down_since = None;
                        if down || !ready.is_set() {
                            barrier(&channel).await;
                            ready.set();
                        }
                        if down {
                            down = false;
                            recovery.up("client");
                        }
                    } else if !status.initializing() && !status.closing() {
                        // Closed or failed for good.
                        if !down {
                            lost(&pending, &recovery, "the channel closed");
                        }
                        if hand_over("the reply channel closed") {
                            // Sends wait for the new connection.
                            ready.clear();
                            break;
                        }
                        // The reply reader closes the table; sends fail at once with
                        // the channel's error from now on.
                        ready.set();
                        break;
                    }
                }
            }
        }
    });
}

/// Round trips on the channel that let lapin's replay of the reply consumer go first.
/// `basic.qos` with prefetch 0 (no limit: what the reply channel has anyway).
async fn barrier(channel: &Channel) {
    for _ in 0..BARRIER_ROUND_TRIPS {
        if channel
            .basic_qos(0, BasicQosOptions::default())
            .await
            .is_err()
        {
            // Lost again: the next tick sees it.
            return;
        }
    }
}

fn lost(pending: &Pending, recovery: &Recovery, why: &str) {
    recovery.down("client", &why);
    recovery.lost(pending.fail_all());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn sends_wait_while_the_channel_is_not_ready() {
        let ready = Ready::default();
        // Ready from the start: no wait.
        ready.wait().await;
        ready.clear();
        let waiting = tokio::spawn({
            let ready = ready.clone();
            async move { ready.wait().await }
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!waiting.is_finished(), "a send went on before the replay");
        ready.set();
        waiting.await.expect("released once ready");
    }
}
