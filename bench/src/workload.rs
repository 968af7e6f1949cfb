//! The measured workloads: the TCP floor, one-way throughput, and RPC (raw lapin and
//! through the framework), each against a broker URL.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Mutex, oneshot};

use crate::stats::Latencies;

/// A unique name for this run's queues.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "bench.{prefix}.{}.{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Loopback TCP ping-pong with 64-byte messages against an echo server in another
/// process (as the broker is): the floor under any brokered call.
pub async fn tcp_floor(addr: &str, rounds: usize) -> anyhow::Result<Latencies> {
    let mut c = tokio::net::TcpStream::connect(addr).await?;
    c.set_nodelay(true)?;
    let mut buf = [7u8; 64];
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        c.write_all(&buf).await?;
        c.read_exact(&mut buf).await?;
        samples.push(t.elapsed());
    }
    Ok(Latencies::new(samples))
}

/// Echo-server mode: print the address of a listener on 127.0.0.1:0, then serve its
/// connections one after the other (the floor is measured several times in a run),
/// echoing 64-byte messages until EOF; the benchmark kills it at the end.
pub fn serve_echo() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("{}", listener.local_addr()?);
        loop {
            let (mut s, _) = listener.accept().await?;
            s.set_nodelay(true)?;
            let mut buf = [0u8; 64];
            while s.read_exact(&mut buf).await.is_ok() {
                if s.write_all(&buf).await.is_err() {
                    break;
                }
            }
        }
    })
}

/// One-way throughput result.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct OneWay {
    /// Messages per second, first publish to last delivery.
    pub msgs_per_sec: f64,
    /// Elapsed wall time.
    pub secs: f64,
}

/// One publisher connection, one consumer connection (no-ack), `count` messages.
///
/// `window` is how many publishes are outstanding at once: 1 awaits each
/// `basic_publish` before the next (one write per message, the broker woken per
/// message); more keeps that many publish futures in flight, so lapin coalesces their
/// frames into fewer writes.
pub async fn one_way(
    url: &str,
    size: usize,
    count: usize,
    window: usize,
) -> anyhow::Result<OneWay> {
    let pconn = Connection::connect(url, ConnectionProperties::default()).await?;
    let cconn = Connection::connect(url, ConnectionProperties::default()).await?;
    let cch = cconn.create_channel().await?;
    let q = unique("oneway");
    cch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    let mut consumer = cch
        .basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let (done_tx, done_rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut n = 0;
        while let Some(Ok(_)) = consumer.next().await {
            n += 1;
            if n == count {
                let _ = done_tx.send(Instant::now());
                break;
            }
        }
    });
    let pch = pconn.create_channel().await?;
    let body = vec![b'x'; size];
    let start = Instant::now();
    if window <= 1 {
        for _ in 0..count {
            pch.basic_publish(
                "".into(),
                q.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default(),
            )
            .await?;
        }
    } else {
        let mut outstanding = FuturesUnordered::new();
        for _ in 0..count {
            if outstanding.len() >= window
                && let Some(sent) = outstanding.next().await
            {
                sent?;
            }
            outstanding.push(pch.basic_publish(
                "".into(),
                q.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default(),
            ));
        }
        while let Some(sent) = outstanding.next().await {
            sent?;
        }
    }
    let end = tokio::time::timeout(Duration::from_secs(120), done_rx).await??;
    let secs = end.duration_since(start).as_secs_f64();
    let _ = pconn.close(200, "done".into()).await;
    let _ = cconn.close(200, "done".into()).await;
    Ok(OneWay {
        msgs_per_sec: count as f64 / secs,
        secs,
    })
}

/// A persistent-publish-with-confirms run.
#[derive(Debug, Clone)]
pub struct Persistent {
    /// Messages per second, first publish to last confirm.
    pub msgs_per_sec: f64,
    /// Per message, from issuing its publish to its confirm.
    pub confirm: Latencies,
}

/// One publisher in confirm mode publishing `count` persistent (`delivery_mode` 2)
/// messages of `size` bytes into a fresh durable queue with no consumer, `window`
/// publishes awaiting their confirm at once. The queue is purged and deleted at the
/// end, also when the run fails.
pub async fn persistent_confirms(
    url: &str,
    size: usize,
    count: usize,
    window: usize,
) -> anyhow::Result<Persistent> {
    let q = unique("persistent");
    let (conn, ch) = durable_queue(url, &q).await?;
    let run = tokio::time::timeout(
        Duration::from_secs(300),
        publish_confirmed(&ch, &q, size, count, window),
    )
    .await
    .map_err(anyhow::Error::from)
    .and_then(|r| r);
    // Clean up on a fresh channel: the publishing one may have been closed by an error.
    if let Ok(cleanup) = conn.create_channel().await {
        let _ = cleanup
            .queue_purge(q.as_str().into(), QueuePurgeOptions::default())
            .await;
        let _ = cleanup
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = conn.close(200, "done".into()).await;
    run
}

/// Fills a durable queue named `q` with `count` persistent messages of `size` bytes
/// (confirmed, `window` in flight) and leaves them there.
pub async fn fill_durable(
    url: &str,
    q: &str,
    size: usize,
    count: usize,
    window: usize,
) -> anyhow::Result<Persistent> {
    let (conn, ch) = durable_queue(url, q).await?;
    let run = publish_confirmed(&ch, q, size, count, window).await;
    let _ = conn.close(200, "done".into()).await;
    run
}

/// A connection and channel, with durable queue `q` declared.
async fn durable_queue(url: &str, q: &str) -> anyhow::Result<(Connection, lapin::Channel)> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.queue_declare(
        q.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    Ok((conn, ch))
}

/// The number of ready messages in queue `q`.
pub async fn queue_length(url: &str, q: &str) -> anyhow::Result<u32> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    let declared = ch
        .queue_declare(
            q.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let _ = conn.close(200, "done".into()).await;
    Ok(declared.message_count())
}

async fn publish_confirmed(
    ch: &lapin::Channel,
    q: &str,
    size: usize,
    count: usize,
    window: usize,
) -> anyhow::Result<Persistent> {
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let body = vec![b'x'; size];
    let props = BasicProperties::default().with_delivery_mode(2);
    let one = || async {
        // Taken at the first poll, when the publish is issued.
        let t = Instant::now();
        let confirm = ch
            .basic_publish(
                "".into(),
                q.into(),
                BasicPublishOptions::default(),
                &body,
                props.clone(),
            )
            .await?
            .await?;
        anyhow::ensure!(
            confirm.is_ack(),
            "persistent publish not confirmed: {confirm:?}"
        );
        anyhow::Ok(t.elapsed())
    };
    let mut samples = Vec::with_capacity(count);
    let mut outstanding = FuturesUnordered::new();
    let start = Instant::now();
    for _ in 0..count {
        if outstanding.len() >= window.max(1)
            && let Some(confirmed) = outstanding.next().await
        {
            samples.push(confirmed?);
        }
        outstanding.push(one());
    }
    while let Some(confirmed) = outstanding.next().await {
        samples.push(confirmed?);
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Persistent {
        msgs_per_sec: count as f64 / secs,
        confirm: Latencies::new(samples),
    })
}

/// An RPC run: throughput and per-call latency.
#[derive(Debug, Clone)]
pub struct RpcRun {
    /// Calls per second over the run.
    pub calls_per_sec: f64,
    /// Per-call latencies.
    pub latency: Latencies,
}

/// Runs `total` calls with `in_flight` concurrent callers of `call`.
pub async fn drive<F, Fut>(total: usize, in_flight: usize, call: F) -> anyhow::Result<RpcRun>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let call = Arc::new(call);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let (call, next) = (Arc::clone(&call), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let t = Instant::now();
                call().await?;
                samples.push(t.elapsed());
            }
            anyhow::Ok(samples)
        }));
    }
    let mut samples = Vec::with_capacity(total);
    for t in tasks {
        samples.extend(t.await??);
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(RpcRun {
        calls_per_sec: samples.len() as f64 / secs,
        latency: Latencies::new(samples),
    })
}

/// A raw-lapin echo RPC server on `queue`: reply to `reply_to`, then ack.
pub async fn raw_server(url: &str, queue: &str, prefetch: u16) -> anyhow::Result<Connection> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let mut requests = ch
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tokio::spawn(async move {
        while let Some(Ok(d)) = requests.next().await {
            let (Some(reply_to), Some(corr)) = (
                d.properties.reply_to().clone(),
                d.properties.correlation_id().clone(),
            ) else {
                continue;
            };
            let props = BasicProperties::default().with_correlation_id(corr);
            if ch
                .basic_publish(
                    "".into(),
                    reply_to,
                    BasicPublishOptions::default(),
                    &d.data,
                    props,
                )
                .await
                .is_err()
            {
                break;
            }
            if d.ack(BasicAckOptions::default()).await.is_err() {
                break;
            }
        }
    });
    Ok(conn)
}

/// A raw-lapin RPC client over direct reply-to, correlating replies itself.
pub struct RawClient {
    _conn: Connection,
    ch: lapin::Channel,
    queue: String,
    pending: Arc<Mutex<HashMap<String, oneshot::Sender<Vec<u8>>>>>,
    next: AtomicUsize,
}

impl RawClient {
    /// Connects and starts the reply consumer.
    pub async fn connect(url: &str, queue: &str) -> anyhow::Result<Self> {
        let conn = Connection::connect(url, ConnectionProperties::default()).await?;
        let ch = conn.create_channel().await?;
        let mut replies = ch
            .basic_consume(
                "amq.rabbitmq.reply-to".into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let pending: Arc<Mutex<HashMap<String, oneshot::Sender<Vec<u8>>>>> = Arc::default();
        let p = Arc::clone(&pending);
        tokio::spawn(async move {
            while let Some(Ok(d)) = replies.next().await {
                let Some(corr) = d.properties.correlation_id() else {
                    continue;
                };
                if let Some(tx) = p.lock().await.remove(corr.as_str()) {
                    let _ = tx.send(d.data);
                }
            }
        });
        Ok(Self {
            _conn: conn,
            ch,
            queue: queue.to_owned(),
            pending,
            next: AtomicUsize::new(0),
        })
    }

    /// One call.
    pub async fn call(&self, body: &[u8]) -> anyhow::Result<Vec<u8>> {
        let corr = self.next.fetch_add(1, Ordering::Relaxed).to_string();
        let (tx, rx) = oneshot::channel();
        self.pending.lock().await.insert(corr.clone(), tx);
        let props = BasicProperties::default()
            .with_correlation_id(corr.into())
            .with_reply_to("amq.rabbitmq.reply-to".into());
        self.ch
            .basic_publish(
                "".into(),
                self.queue.as_str().into(),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await?;
        Ok(tokio::time::timeout(Duration::from_secs(30), rx).await??)
    }
}

/// The echo service the framework runs.
#[rpc_core::service]
pub trait Echo {
    /// Returns its argument.
    async fn echo(&self, body: Vec<u8>) -> Vec<u8>;
}

/// The echo handler.
#[derive(Debug, Clone, Copy)]
pub struct EchoHandler;

impl Echo for EchoHandler {
    async fn echo(&self, body: Vec<u8>) -> Vec<u8> {
        body
    }
}
