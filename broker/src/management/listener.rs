//! The management port's listener: how many HTTP connections it serves at once and
//! how long a client may stay without sending a request.
//!
//! A hand-written accept loop serves each connection with hyper directly rather than
//! through `axum::serve`, which has neither a connection cap nor timeouts: a client
//! that connects and sends nothing, or half a request, would hold a descriptor
//! forever, and enough of them leave none for the AMQP listener.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;

/// Limits of the management listener. The defaults are those of RabbitMQ's
/// management listener (cowboy's `request_timeout` and `idle_timeout`) and a cap that
/// leaves most of a 1,024-descriptor limit to AMQP connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManagementLimits {
    /// Most HTTP connections served at once (default 256). A connection beyond it is
    /// accepted and closed at once, so that it holds no descriptor.
    pub max_connections: usize,
    /// How long a client has to send a complete request head: after connecting (TLS
    /// handshake included) and after each response on a kept-alive connection
    /// (default 5 s, cowboy's `request_timeout`).
    pub request_timeout: Duration,
    /// How long a connection may go without a byte read or written, e.g. in the
    /// middle of a request body, before it is closed (default 60 s, cowboy's
    /// `idle_timeout`).
    pub idle_timeout: Duration,
}

impl Default for ManagementLimits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            request_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Accepts on `listener` and serves `app` on each connection (after a TLS handshake
/// when given an acceptor), within `limits`, until `shutdown` turns true; then waits
/// for the connections to finish their requests.
pub(crate) async fn run(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: ManagementLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut conns = JoinSet::new();
    while !*shutdown.borrow() {
        tokio::select! {
            changed = shutdown.changed() => if changed.is_err() { break },
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Closed at once beyond the cap: held open, it would keep the
                    // descriptor that the cap is there to save.
                    let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                        tracing::debug!(%peer, max = limits.max_connections, "management connection cap reached");
                        drop(stream);
                        continue;
                    };
                    let conn = Conn { peer, app: app.clone(), limits, shutdown: shutdown.clone() };
                    conns.spawn(conn.serve(stream, tls.clone(), slot));
                }
                Err(err) => {
                    // Out of descriptors, most likely: wait rather than spin.
                    tracing::warn!(%err, "management accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

/// One management connection.
struct Conn {
    peer: SocketAddr,
    app: Router,
    limits: ManagementLimits,
    shutdown: watch::Receiver<bool>,
}

impl Conn {
    /// Serves the connection; its place under the cap (`_slot`) is freed when done.
    async fn serve(self, stream: TcpStream, tls: Option<TlsAcceptor>, _slot: OwnedSemaphorePermit) {
        let _ = stream.set_nodelay(true);
        match tls {
            None => self.http(stream).await,
            Some(acceptor) => {
                // The handshake counts against the time to send the request head.
                let limit = tokio::time::sleep(self.limits.request_timeout);
                match crate::tls::handshake(&acceptor, stream, limit).await {
                    Ok((stream, _)) => self.http(stream).await,
                    Err(err) => {
                        tracing::debug!(peer = %self.peer, %err, "management TLS handshake failed");
                    }
                }
            }
        }
    }

    /// HTTP/1.1 on `io`: hyper's header read timeout closes a connection that has not
    /// sent a whole request head within the request timeout (after connecting and
    /// between kept-alive requests); [`IdleIo`] one that moves no byte for the idle
    /// timeout.
    async fn http<S>(mut self, io: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let peer = self.peer;
        let app = TowerToHyperService::new(self.app);
        // What axum's `into_make_service_with_connect_info` would add: the login
        // checks use the peer's address (loopback-only users).
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            hyper::service::Service::call(&app, req)
        });
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.limits.request_timeout)
            .keep_alive(true);
        let io = TokioIo::new(IdleIo::new(io, self.limits.idle_timeout));
        let conn = http.serve_connection(io, service);
        tokio::pin!(conn);
        let done = tokio::select! {
            done = conn.as_mut() => done,
            () = stopped(&mut self.shutdown) => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(err) = done {
            tracing::debug!(%peer, %err, "management connection ended");
        }
    }
}

/// Resolves once `shutdown` is true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

/// A stream that fails with `TimedOut` once no byte has been read or written on it for
/// `idle`, while hyper waits on it.
struct IdleIo<S> {
    inner: S,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<S> IdleIo<S> {
    fn new(inner: S, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }

    fn active(&mut self) {
        let at = Instant::now() + self.idle;
        self.deadline.as_mut().reset(at);
    }

    /// For an operation that is pending: an error once the deadline has passed.
    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "management connection idle",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(done) => {
                if buf.filled().len() > before {
                    this.active();
                }
                Poll::Ready(done)
            }
            Poll::Pending => this.pending(cx),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(done) => {
                if matches!(done, Ok(n) if n > 0) {
                    this.active();
                }
                Poll::Ready(done)
            }
            Poll::Pending => this.pending(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(done) => {
                if matches!(done, Ok(n) if n > 0) {
                    this.active();
                }
                Poll::Ready(done)
            }
            Poll::Pending => this.pending(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.pending(cx),
            done => done,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
