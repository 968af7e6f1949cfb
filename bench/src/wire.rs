//! The wire floor of an RPC call: the same request and reply as the raw-lapin run
//! (default exchange, direct reply-to, 64 B bodies), made by hand-written AMQP clients
//! that put each message on the socket in one write and read replies on the task that
//! waits for them. Nothing is left but the broker and the kernel, so the gap between
//! this figure and lapin's is what the client library costs per call.
//!
//! Frames are encoded and parsed with amq-protocol; heartbeats are off.

use std::time::{Duration, Instant};

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame, gen_frame, parse_frame};
use amq_protocol::protocol::{AMQPClass, basic, channel, connection, queue};
use amq_protocol::types::{FieldTable, ShortString};
use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::stats::Latencies;

/// Direct reply-to's pseudo-queue.
const REPLY_TO: &str = "amq.rabbitmq.reply-to";
/// Gives up on a broker that stops answering.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// One AMQP connection with channel 1 open.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
    out: Vec<u8>,
}

/// A message taken off the socket: deliver, then header, then body frames.
struct Delivery {
    properties: basic::AMQPProperties,
    body: Vec<u8>,
}

impl Conn {
    /// Connects to `url` (`amqp://user:pass@host:port/vhost`), logs in and opens
    /// channel 1.
    async fn open(url: &str) -> anyhow::Result<Self> {
        let rest = url.strip_prefix("amqp://").context("not an amqp:// URL")?;
        let (creds, rest) = rest.split_once('@').context("no user in the URL")?;
        let (user, pass) = creds.split_once(':').context("no password in the URL")?;
        let (addr, vhost) = rest.split_once('/').unwrap_or((rest, "%2f"));
        let vhost = if vhost.is_empty() || vhost.eq_ignore_ascii_case("%2f") {
            "/"
        } else {
            vhost
        };
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let mut c = Self {
            s,
            buf: Vec::with_capacity(64 * 1024),
            out: Vec::with_capacity(4096),
        };
        c.s.write_all(b"AMQP\x00\x00\x09\x01").await?;
        c.expect(|m| matches!(m, AMQPClass::Connection(connection::AMQPMethod::Start(_))))
            .await?;
        c.send(&[method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: FieldTable::default(),
                mechanism: "PLAIN".into(),
                response: format!("\0{user}\0{pass}").into(),
                locale: "en_US".into(),
            })),
        )])
        .await?;
        let tune = c
            .expect(|m| matches!(m, AMQPClass::Connection(connection::AMQPMethod::Tune(_))))
            .await?;
        let AMQPClass::Connection(connection::AMQPMethod::Tune(tune)) = tune else {
            anyhow::bail!("expected connection.tune");
        };
        c.send(&[
            method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                    channel_max: 1,
                    frame_max: tune.frame_max,
                    heartbeat: 0,
                })),
            ),
            method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                    virtual_host: vhost.into(),
                })),
            ),
            method(
                1,
                AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
            ),
        ])
        .await?;
        c.expect(|m| matches!(m, AMQPClass::Channel(channel::AMQPMethod::OpenOk(_))))
            .await?;
        Ok(c)
    }

    /// Encodes `frames` and writes them in one system call.
    async fn send(&mut self, frames: &[AMQPFrame]) -> anyhow::Result<()> {
        self.out.clear();
        for f in frames {
            let out = std::mem::take(&mut self.out);
            let (out, _) = gen_frame(f)(out.into())
                .map_err(|e| anyhow::anyhow!("cannot encode a frame: {e:?}"))?
                .into_inner();
            self.out = out;
        }
        self.s.write_all(&self.out).await?;
        Ok(())
    }

    /// The next frame, reading as needed.
    async fn next(&mut self) -> anyhow::Result<AMQPFrame> {
        loop {
            if self.buf.len() >= 7 {
                let size = u32::from_be_bytes([self.buf[3], self.buf[4], self.buf[5], self.buf[6]]);
                let len = 8 + size as usize;
                if self.buf.len() >= len {
                    let frame = parse_frame(&self.buf[..len])
                        .map(|(_, f)| f)
                        .map_err(|e| anyhow::anyhow!("bad frame from the broker: {e:?}"))?;
                    self.buf.drain(..len);
                    return Ok(frame);
                }
            }
            let n = tokio::time::timeout(READ_TIMEOUT, self.s.read_buf(&mut self.buf))
                .await
                .context("the broker stopped answering")??;
            anyhow::ensure!(n > 0, "the broker closed the connection");
        }
    }

    /// Waits for a method `want` accepts; a close from the broker is an error.
    async fn expect(&mut self, want: impl Fn(&AMQPClass) -> bool) -> anyhow::Result<AMQPClass> {
        loop {
            if let AMQPFrame::Method(_, m) = self.next().await? {
                match m {
                    AMQPClass::Connection(connection::AMQPMethod::Close(c)) => {
                        anyhow::bail!("connection closed: {} {}", c.reply_code, c.reply_text)
                    }
                    AMQPClass::Channel(channel::AMQPMethod::Close(c)) => {
                        anyhow::bail!("channel closed: {} {}", c.reply_code, c.reply_text)
                    }
                    m if want(&m) => return Ok(m),
                    _ => {}
                }
            }
        }
    }

    /// Declares `name` (auto-delete) and consumes it without acks; returns the queue.
    async fn consume(&mut self, name: &str) -> anyhow::Result<()> {
        if name != REPLY_TO {
            self.send(&[method(
                1,
                AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                    queue: name.into(),
                    passive: false,
                    durable: false,
                    exclusive: false,
                    auto_delete: true,
                    nowait: false,
                    arguments: FieldTable::default(),
                })),
            )])
            .await?;
            self.expect(|m| matches!(m, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_))))
                .await?;
        }
        self.send(&[method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                queue: name.into(),
                consumer_tag: "".into(),
                no_local: false,
                no_ack: true,
                exclusive: false,
                nowait: false,
                arguments: FieldTable::default(),
            })),
        )])
        .await?;
        self.expect(|m| matches!(m, AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(_))))
            .await?;
        Ok(())
    }

    /// Publishes `body` to the default exchange in one write.
    async fn publish(
        &mut self,
        routing_key: ShortString,
        properties: basic::AMQPProperties,
        body: &[u8],
    ) -> anyhow::Result<()> {
        self.send(&[
            method(
                1,
                AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                    exchange: "".into(),
                    routing_key,
                    mandatory: false,
                    immediate: false,
                })),
            ),
            AMQPFrame::Header(
                1,
                AMQPContentHeader {
                    class_id: 60,
                    body_size: body.len() as u64,
                    properties,
                },
            ),
            AMQPFrame::Body(1, body.to_vec()),
        ])
        .await
    }

    /// The next delivered message (bodies of one frame, as these runs send).
    async fn delivery(&mut self) -> anyhow::Result<Delivery> {
        self.expect(|m| matches!(m, AMQPClass::Basic(basic::AMQPMethod::Deliver(_))))
            .await?;
        let AMQPFrame::Header(_, header) = self.next().await? else {
            anyhow::bail!("expected a content header after basic.deliver");
        };
        let mut body = Vec::with_capacity(header.body_size as usize);
        while (body.len() as u64) < header.body_size {
            match self.next().await? {
                AMQPFrame::Body(_, chunk) => body.extend_from_slice(&chunk),
                other => anyhow::bail!("expected a body frame, got {other:?}"),
            }
        }
        Ok(Delivery {
            properties: header.properties,
            body,
        })
    }
}

fn method(channel: u16, m: AMQPClass) -> AMQPFrame {
    AMQPFrame::Method(channel, m)
}

/// Sequential calls through the broker at `url`: a hand-written server echoing from
/// `queue`, a hand-written client waiting for each reply. Returns the latencies.
pub async fn rpc_floor(url: &str, queue: &str, calls: usize) -> anyhow::Result<Latencies> {
    let mut server = Conn::open(url).await?;
    server.consume(queue).await?;
    let server = tokio::spawn(async move {
        loop {
            let d = server.delivery().await?;
            let to = d
                .properties
                .reply_to()
                .clone()
                .context("request without reply_to")?;
            let props = basic::AMQPProperties::default().with_correlation_id(
                d.properties
                    .correlation_id()
                    .clone()
                    .context("request without correlation_id")?,
            );
            server.publish(to, props, &d.body).await?;
        }
        #[allow(unreachable_code)]
        Ok::<(), anyhow::Error>(())
    });
    let mut client = Conn::open(url).await?;
    client.consume(REPLY_TO).await?;
    let body = vec![b'x'; 64];
    let mut samples = Vec::with_capacity(calls);
    for i in 0..calls + calls / 10 {
        let corr = ShortString::from(i.to_string());
        let props = basic::AMQPProperties::default()
            .with_correlation_id(corr.clone())
            .with_reply_to(REPLY_TO.into());
        let start = Instant::now();
        client.publish(queue.into(), props, &body).await?;
        let reply = client.delivery().await?;
        let took = start.elapsed();
        anyhow::ensure!(
            reply.properties.correlation_id().as_ref() == Some(&corr),
            "reply to another call"
        );
        anyhow::ensure!(reply.body == body, "the echo changed the body");
        // The first tenth warms up, as the other runs do.
        if i >= calls / 10 {
            samples.push(took);
        }
    }
    server.abort();
    Ok(Latencies::new(samples))
}
