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
        format!("amqp://guest:guest@{}/{}", self.addr, encode_segment(vhost))
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

/// Percent-encodes one URL path segment: everything but RFC 3986's unreserved
/// characters. The vhost of an AMQP URL, and a name in a management API path (`broker
/// ctl` and the tests build those with it).
pub fn encode_segment(s: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

impl Drop for BrokerHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(encode_segment("/"), "%2F");
        assert_eq!(
            encode_segment("127.0.0.1:1 -> 127.0.0.1:2"),
            "127.0.0.1%3A1%20-%3E%20127.0.0.1%3A2"
        );
        assert_eq!(encode_segment("a-Z.0_~"), "a-Z.0_~");
    }
}
