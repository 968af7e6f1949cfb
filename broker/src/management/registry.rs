//! The connection registry: who is connected, as whom, to which vhost, and a way to
//! ask one connection to close (the management API's `DELETE /api/connections/NAME`).
//!
//! Connections register when accepted and unregister when their task ends; the
//! registry holds only small copies, never the connection itself.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use tokio::sync::Notify;

/// What the management side knows about one connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The broker's id of the connection (channel keys start with it).
    pub id: u64,
    /// The client's address.
    pub peer: SocketAddr,
    /// Our address the client connected to.
    pub local: SocketAddr,
    /// The user, once logged in (empty before).
    pub user: String,
    /// The vhost, once opened (empty before).
    pub vhost: String,
    /// Milliseconds since the Unix epoch when it was accepted.
    pub connected_at: u64,
    /// Negotiated frame_max, channel_max and heartbeat, once opened.
    pub tune: Option<(u32, u16, u16)>,
    /// What TLS negotiated, for a connection to the TLS port.
    pub tls: Option<crate::tls::TlsInfo>,
    /// The client's `client-properties` from `connection.start-ok` (empty before).
    pub client_properties: amq_protocol::types::FieldTable,
    /// Its open channels.
    pub channels: u32,
}

impl ConnInfo {
    /// RabbitMQ's connection name: `"PEER -> LOCAL"`.
    pub fn name(&self) -> String {
        format!("{} -> {}", self.peer, self.local)
    }

    /// Whether `connection.open` has succeeded.
    pub fn is_open(&self) -> bool {
        self.tune.is_some()
    }
}

#[derive(Debug)]
struct Entry {
    info: ConnInfo,
    kill: Arc<Notify>,
    reason: Option<String>,
}

/// Every live connection of a broker.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    conns: Mutex<HashMap<u64, Entry>>,
    opened: AtomicU64,
    closed: AtomicU64,
}

impl Registry {
    /// Registers an accepted connection; the returned `Notify` is woken when the
    /// management side asks it to close (see [`Registry::close_reason`]).
    pub(crate) fn register(
        &self,
        id: u64,
        peer: SocketAddr,
        local: SocketAddr,
        tls: Option<crate::tls::TlsInfo>,
    ) -> Arc<Notify> {
        let kill = Arc::new(Notify::new());
        let connected_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let info = ConnInfo {
            id,
            peer,
            local,
            user: String::new(),
            vhost: String::new(),
            connected_at,
            tune: None,
            tls,
            client_properties: Default::default(),
            channels: 0,
        };
        self.conns.lock().insert(
            id,
            Entry {
                info,
                kill: Arc::clone(&kill),
                reason: None,
            },
        );
        self.opened.fetch_add(1, Ordering::Relaxed);
        kill
    }

    /// Records the client's properties from `connection.start-ok`.
    pub(crate) fn started(&self, id: u64, props: &amq_protocol::types::FieldTable) {
        if let Some(e) = self.conns.lock().get_mut(&id) {
            e.info.client_properties = props.clone();
        }
    }

    /// Records how many channels connection `id` has open.
    pub(crate) fn set_channels(&self, id: u64, channels: usize) {
        if let Some(e) = self.conns.lock().get_mut(&id) {
            e.info.channels = u32::try_from(channels).unwrap_or(u32::MAX);
        }
    }

    /// Open connections other than `id` that `which` selects.
    pub(crate) fn open_others(&self, id: u64, which: impl Fn(&ConnInfo) -> bool) -> usize {
        self.conns
            .lock()
            .values()
            .filter(|e| e.info.id != id && e.info.is_open() && which(&e.info))
            .count()
    }

    /// The channels `user` has open, over all its connections.
    pub(crate) fn channels_of(&self, user: &str) -> usize {
        self.conns
            .lock()
            .values()
            .filter(|e| e.info.user == user)
            .map(|e| e.info.channels as usize)
            .sum()
    }

    /// Records a successful `connection.open`.
    pub(crate) fn opened(&self, id: u64, user: &str, vhost: &str, tune: (u32, u16, u16)) {
        if let Some(e) = self.conns.lock().get_mut(&id) {
            e.info.user = user.to_owned();
            e.info.vhost = vhost.to_owned();
            e.info.tune = Some(tune);
        }
    }

    /// Forgets a finished connection.
    pub(crate) fn unregister(&self, id: u64) {
        if self.conns.lock().remove(&id).is_some() {
            self.closed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every live connection, by id.
    pub(crate) fn snapshot(&self) -> Vec<ConnInfo> {
        let mut out: Vec<ConnInfo> = self.conns.lock().values().map(|e| e.info.clone()).collect();
        out.sort_by_key(|c| c.id);
        out
    }

    /// Connections accepted and finished since start.
    pub(crate) fn totals(&self) -> (u64, u64) {
        (
            self.opened.load(Ordering::Relaxed),
            self.closed.load(Ordering::Relaxed),
        )
    }

    /// Asks the connection called `name` to close with `reason`; false if none is.
    pub(crate) fn close(&self, name: &str, reason: &str) -> bool {
        let mut conns = self.conns.lock();
        let Some(e) = conns.values_mut().find(|e| e.info.name() == name) else {
            return false;
        };
        e.reason = Some(reason.to_owned());
        e.kill.notify_one();
        true
    }

    /// Asks every connection opened to `vhost` to close with `reason`; how many were.
    pub(crate) fn close_vhost(&self, vhost: &str, reason: &str) -> usize {
        self.close_where(|c| c.is_open() && c.vhost == vhost, reason)
    }

    /// Asks every connection of `user` to close with `reason`; how many were.
    pub(crate) fn close_user(&self, user: &str, reason: &str) -> usize {
        self.close_where(|c| c.user == user, reason)
    }

    /// Asks every connection `which` selects to close with `reason`; how many were.
    fn close_where(&self, which: impl Fn(&ConnInfo) -> bool, reason: &str) -> usize {
        let mut n = 0;
        for e in self.conns.lock().values_mut().filter(|e| which(&e.info)) {
            e.reason = Some(reason.to_owned());
            e.kill.notify_one();
            n += 1;
        }
        n
    }

    /// Why the management side asked connection `id` to close.
    pub(crate) fn close_reason(&self, id: u64) -> String {
        self.conns
            .lock()
            .get_mut(&id)
            .and_then(|e| e.reason.take())
            .unwrap_or_else(|| "Closed via management plugin".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_open_close_unregister() {
        let r = Registry::default();
        let peer = SocketAddr::from(([127, 0, 0, 1], 40000));
        let local = SocketAddr::from(([127, 0, 0, 1], 5672));
        let kill = r.register(7, peer, local, None);
        r.opened(7, "guest", "/", (131072, 2047, 60));
        let s = r.snapshot();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].name(), "127.0.0.1:40000 -> 127.0.0.1:5672");
        assert!(s[0].is_open());
        assert!(!r.close("nope", "x"));
        assert!(r.close("127.0.0.1:40000 -> 127.0.0.1:5672", "bye"));
        // The permit is stored: a later wait returns at once.
        let waited = futures_lite_now(kill.notified());
        assert!(waited);
        assert_eq!(r.close_reason(7), "bye");
        r.unregister(7);
        assert!(r.snapshot().is_empty());
        assert_eq!(r.totals(), (1, 1));
    }

    /// Polls a future once.
    fn futures_lite_now<F: std::future::Future>(f: F) -> bool {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(f);
        f.as_mut().poll(&mut cx).is_ready()
    }
}
