//! A TCP proxy in front of a broker that a test can turn into a black hole: it cuts
//! every connection through it and then accepts new ones without ever answering (what a
//! load balancer with no backend, or a node that accepts TCP but is wedged, does), and
//! later forwards again. A client that waits for the broker's `connection.start` on a
//! black-holed connection, with no deadline of its own, waits for ever.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// The proxy; dropping it stops accepting (connections in flight stay until the
/// runtime ends).
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<State>,
    accept: AbortHandle,
}

#[derive(Default)]
struct State {
    /// Whether new connections are forwarded (else held, unanswered).
    forward: AtomicBool,
    /// The forwarding tasks, aborted (their sockets dropped) by [`Proxy::cut`].
    forwarding: Mutex<Vec<AbortHandle>>,
    /// Connections accepted and held without an answer.
    held: AtomicUsize,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(State::default());
        state.forward.store(true, Ordering::SeqCst);
        let accept = {
            let state = state.clone();
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if state.forward.load(Ordering::SeqCst) {
                        let task = tokio::spawn(async move {
                            if let Ok(mut server) = TcpStream::connect(upstream).await {
                                let _ =
                                    tokio::io::copy_bidirectional(&mut client, &mut server).await;
                            }
                        });
                        let mut forwarding = state.forwarding.lock().expect("proxy lock");
                        forwarding.retain(|t| !t.is_finished());
                        forwarding.push(task.abort_handle());
                    } else {
                        state.held.fetch_add(1, Ordering::SeqCst);
                        // Read and drop what the client sends; never answer.
                        tokio::spawn(async move {
                            let mut sink = [0u8; 1024];
                            while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {}
                        });
                    }
                }
            })
            .abort_handle()
        };
        Proxy {
            addr,
            state,
            accept,
        }
    }

    /// `amqp://guest:guest@PROXY/%2f`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    /// Becomes a black hole: closes every forwarded connection, holds new ones.
    pub fn cut(&self) {
        self.state.forward.store(false, Ordering::SeqCst);
        for task in self.state.forwarding.lock().expect("proxy lock").drain(..) {
            task.abort();
        }
    }

    /// Forwards new connections again (held ones stay held).
    pub fn heal(&self) {
        self.state.forward.store(true, Ordering::SeqCst);
    }

    /// Connections held unanswered so far.
    pub fn held(&self) -> usize {
        self.state.held.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
