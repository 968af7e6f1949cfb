//! The calls waiting for a reply, keyed by correlation id.
//!
//! The reply reader (one task per transport) looks each reply up here and hands it
//! to the waiting call; a reply whose id is unknown (late, duplicate, or for a call
//! that was dropped) is discarded. Each entry is owned by a [`Slot`] guard, so a call
//! future that is dropped or times out removes its own entry: the map never holds
//! more than the calls in flight.
//!
//! When the connection drops, [`Pending::fail_all`] fails every waiting call at once
//! with [`RpcError::ConnectionLost`] and forgets it, so a reply that arrives on the
//! new connection for one of those calls finds no entry and is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::Reply;
use crate::error::{Outcome, RpcError};

/// The table of calls in flight.
#[derive(Debug, Clone, Default)]
pub(crate) struct Pending {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    waiting: HashMap<Arc<str>, oneshot::Sender<Result<Reply, RpcError>>>,
    /// Set when the reply consumer has ended: new calls fail at once instead of
    /// waiting for replies that cannot arrive.
    closed: bool,
}

/// One call's entry; removes it when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    pending: Pending,
    /// Shared with the map key: one allocation per call.
    id: Arc<str>,
    rx: oneshot::Receiver<Result<Reply, RpcError>>,
    /// The entry is already gone (its reply came, or the table closed): dropping
    /// the slot need not take the lock again.
    settled: bool,
}

impl Pending {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a call before its request is published, so that even an immediate
    /// reply finds it.
    pub(crate) fn register(&self, id: &str) -> Result<Slot, RpcError> {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.lock();
        if inner.closed {
            return Err(RpcError::Disconnected);
        }
        let id: Arc<str> = Arc::from(id);
        inner.waiting.insert(Arc::clone(&id), tx);
        Ok(Slot {
            pending: self.clone(),
            id,
            rx,
            settled: false,
        })
    }

    /// Hands a reply to its call, or gives it back when no call waits for it (late,
    /// duplicate or unknown: the caller drops it).
    pub(crate) fn complete(&self, reply: Reply) -> Result<(), Reply> {
        let tx = self.lock().waiting.remove(reply.correlation_id.as_str());
        match tx {
            Some(tx) => match tx.send(Ok(reply)) {
                Ok(()) => Ok(()),
                // The call gave up meanwhile: nobody waits for this reply.
                Err(Ok(reply)) => Err(reply),
                Err(Err(_)) => Ok(()),
            },
            None => Err(reply),
        }
    }

    /// Fails every waiting call with [`RpcError::ConnectionLost`] (the connection
    /// dropped; it may come back, so new calls are still accepted); returns how many.
    pub(crate) fn fail_all(&self) -> usize {
        let waiting = std::mem::take(&mut self.lock().waiting);
        let n = waiting.len();
        for (_, tx) in waiting {
            let _ = tx.send(Err(RpcError::ConnectionLost {
                outcome: Outcome::Unknown,
            }));
        }
        n
    }

    /// Fails every waiting call with [`RpcError::Disconnected`] and refuses new ones.
    pub(crate) fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.waiting.clear();
    }

    /// Number of calls waiting.
    pub(crate) fn len(&self) -> usize {
        self.lock().waiting.len()
    }
}

impl Slot {
    /// Resolves when the call is settled before the caller asked for its reply: a
    /// reply that came early, the connection lost ([`Pending::fail_all`]), or the
    /// table closed ([`RpcError::Disconnected`]). Once it resolved, the slot must not
    /// be waited on again.
    pub(crate) async fn settle(&mut self) -> Result<Reply, RpcError> {
        let result = (&mut self.rx).await;
        self.settled = true;
        result.unwrap_or(Err(RpcError::Disconnected))
    }

    /// Waits for the reply until `deadline`.
    pub(crate) async fn wait(mut self, deadline: Instant) -> Result<Reply, RpcError> {
        let result = tokio::time::timeout_at(deadline, &mut self.rx).await;
        // A reply or a closed sender means the entry has been removed already.
        self.settled = result.is_ok();
        match result {
            Ok(Ok(Ok(reply))) => Ok(reply),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(RpcError::Disconnected),
            Err(_) => Err(RpcError::Timeout),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.settled {
            self.pending.lock().waiting.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;
    use crate::wire::Status;
    use std::time::Duration;

    fn reply(id: &str) -> Reply {
        Reply {
            correlation_id: id.to_owned(),
            status: Some(Status::Ok),
            codec: Some(Codec::Json),
            body: b"1".to_vec(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_times_out_exactly_at_its_deadline_and_leaves_nothing_behind() {
        let pending = Pending::default();
        let start = Instant::now();
        let slot = pending.register("a").expect("open");
        assert_eq!(pending.len(), 1);
        let err = slot
            .wait(start + Duration::from_millis(250))
            .await
            .expect_err("no reply");
        assert!(matches!(err, RpcError::Timeout));
        assert_eq!(start.elapsed(), Duration::from_millis(250));
        assert_eq!(pending.len(), 0);
        // The late reply finds nobody and is dropped.
        assert!(pending.complete(reply("a")).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn replies_reach_their_call_once_and_duplicates_are_dropped() {
        let pending = Pending::default();
        let slot = pending.register("b").expect("open");
        assert!(pending.complete(reply("someone-else")).is_err());
        assert!(pending.complete(reply("b")).is_ok());
        assert!(pending.complete(reply("b")).is_err());
        let got = slot
            .wait(Instant::now() + Duration::from_secs(1))
            .await
            .expect("reply");
        assert_eq!(got.body, b"1");
        assert_eq!(pending.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_a_call_removes_its_entry() {
        let pending = Pending::default();
        let slot = pending.register("c").expect("open");
        let fut = slot.wait(Instant::now() + Duration::from_secs(30));
        // Poll once, then drop: like a caller that gave up (select!, abort).
        let _ = tokio::time::timeout(Duration::from_millis(5), fut).await;
        assert_eq!(pending.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reconnect_fails_pending_calls_at_once_and_drops_their_late_replies() {
        let pending = Pending::default();
        let start = Instant::now();
        let deadline = start + Duration::from_secs(30);
        let old = pending.register("old").expect("open");
        let waiting = tokio::spawn(old.wait(deadline));
        tokio::task::yield_now().await;
        // The connection drops.
        assert_eq!(pending.fail_all(), 1);
        let err = waiting.await.expect("task").expect_err("lost");
        assert!(matches!(
            err,
            RpcError::ConnectionLost {
                outcome: Outcome::Unknown
            }
        ));
        // At once, not at the deadline.
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(pending.len(), 0);
        // On the new connection: a call made now works, the old call's reply is dropped.
        let new = pending.register("new").expect("still open");
        assert!(pending.complete(reply("old")).is_err());
        assert!(pending.complete(reply("new")).is_ok());
        assert_eq!(new.wait(deadline).await.expect("reply").body, b"1");
        assert_eq!(pending.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_waiting_for_its_confirm_fails_at_once_on_a_reconnect() {
        let pending = Pending::default();
        let start = Instant::now();
        let mut slot = pending.register("c").expect("open");
        // The confirm never comes (the connection dropped); the watch fails the call.
        let confirm = std::future::pending::<()>();
        let failing = async {
            tokio::task::yield_now().await;
            pending.fail_all();
            std::future::pending::<()>().await
        };
        let result = tokio::select! {
            _ = confirm => unreachable!(),
            _ = failing => unreachable!(),
            early = slot.settle() => early,
        };
        assert!(matches!(result, Err(RpcError::ConnectionLost { .. })));
        assert_eq!(start.elapsed(), Duration::ZERO);
        drop(slot);
        assert_eq!(pending.len(), 0);
    }

    #[tokio::test]
    async fn closing_fails_waiting_and_new_calls() {
        let pending = Pending::default();
        let slot = pending.register("d").expect("open");
        pending.close();
        let err = slot
            .wait(Instant::now() + Duration::from_secs(1))
            .await
            .expect_err("closed");
        assert!(matches!(err, RpcError::Disconnected));
        assert!(matches!(pending.register("e"), Err(RpcError::Disconnected)));
    }
}
