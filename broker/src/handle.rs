//! A running broker: its addresses and URLs, and shutting it down.

use std::net::SocketAddr;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running broker. Dropping it stops the broker (without waiting).
#[derive(Debug)]
pub struct BrokerHandle {
    pub(crate) addr: SocketAddr,
    pub(crate) tls_addr: Option<SocketAddr>,
    pub(crate) management_addr: Option<SocketAddr>,
    /// Set to `true` to stop the server and the management API.
    pub(crate) shutdown: watch::Sender<bool>,
    pub(crate) task: Option<JoinHandle<()>>,
    pub(crate) management_task: Option<JoinHandle<()>>,
}

impl BrokerHandle {
    /// The address the broker listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the TLS (`amqps`) port, if TLS was configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// `amqps://guest:guest@127.0.0.1:PORT/%2f`, if TLS was configured.
    pub fn amqps_url(&self) -> Option<String> {
        self.tls_addr
            .map(|at| format!("amqps://guest:guest@{at}/%2f"))
    }

    /// The address of the management API, if it was enabled.
    pub fn management_addr(&self) -> Option<SocketAddr> {
        self.management_addr
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/VHOST`, the vhost percent-encoded.
    pub fn amqp_url_for_vhost(&self, vhost: &str) -> String {
        let mut path = String::new();
        for b in vhost.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    path.push(char::from(b));
                }
                _ => path.push_str(&format!("%{b:02X}")),
            }
        }
        format!("amqp://guest:guest@{}/{path}", self.addr)
    }

    /// Stops accepting, closes every connection with 320 CONNECTION_FORCED, and waits
    /// for the connections to finish.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Some(task) = self.management_task.take() {
            // Idle keep-alive clients must not hold the shutdown up.
            let abort = task.abort_handle();
            if tokio::time::timeout(std::time::Duration::from_secs(2), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for BrokerHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}
