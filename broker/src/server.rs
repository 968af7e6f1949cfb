//! The listeners: accepts sockets (plain AMQP, and AMQP over TLS when configured),
//! spawns a [`crate::connection`] task for each, runs the housekeeping tick (message
//! TTL, `x-expires`, the memory and disk alarms), and shuts everything down on request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::shared::Shared;

/// How often queues are swept for expired messages and idle `x-expires` queues.
const SWEEP_INTERVAL: Duration = Duration::from_millis(25);

/// The TLS port's listener and the acceptor its handshakes use.
pub(crate) type TlsListener = (TcpListener, tokio_rustls::TlsAcceptor);

/// Accepts connections on the plain port and, if there is one, the TLS port until
/// `shutdown` turns true, then closes every connection. `max_connections` counts the
/// connections of both ports (a TLS one from its accept, handshake included).
pub(crate) async fn run(
    listener: TcpListener,
    tls: Option<TlsListener>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let room = shared
            .config
            .max_connections
            .is_none_or(|max| connections.len() < max);
        tokio::select! {
            accepted = listener.accept(), if room => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(crate::connection::serve(stream, peer, Arc::clone(&shared), shutdown.clone()));
                }
                Err(err) => accept_failed(err).await,
            },
            accepted = accept_tls(tls.as_ref()), if room && tls.is_some() => match accepted {
                Ok((stream, peer, acceptor)) => {
                    // The handshake runs in the connection's task, never here.
                    connections.spawn(crate::connection::serve_tls(stream, acceptor, peer, Arc::clone(&shared), shutdown.clone()));
                }
                Err(err) => accept_failed(err).await,
            },
            _ = sweep.tick() => {
                let now = std::time::Instant::now();
                let (mut bytes, mut failing) = (0, false);
                let [low_memory, _] = shared.alarm.state();
                shared.vhosts.for_each(|entry| {
                    let mut vhost = entry.lock();
                    vhost.set_memory_pressure(low_memory);
                    vhost.sweep(now);
                    bytes += vhost.store_bytes();
                    drop(vhost);
                    failing |= entry.store.as_ref().is_some_and(|s| s.syncer().failing());
                });
                shared.alarm.check(failing, bytes);
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
    drop(listener);
    drop(tls);
    // Connections saw the same signal and are closing with 320 CONNECTION_FORCED.
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .is_err()
    {
        connections.abort_all();
    }
    shared.vhosts.for_each(|entry| {
        entry.lock().commit_store();
        if let Some(store) = &entry.store {
            store.close();
        }
    });
}

/// Accepts on the TLS port; never ready without one.
async fn accept_tls(
    tls: Option<&TlsListener>,
) -> std::io::Result<(TcpStream, SocketAddr, tokio_rustls::TlsAcceptor)> {
    match tls {
        Some((listener, acceptor)) => {
            let (stream, peer) = listener.accept().await?;
            Ok((stream, peer, acceptor.clone()))
        }
        None => std::future::pending().await,
    }
}

/// Out of file descriptors and the like: back off instead of spinning.
async fn accept_failed(err: std::io::Error) {
    tracing::warn!(%err, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Binds the listener (split out so callers learn the port before serving starts).
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
