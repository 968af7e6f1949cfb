//! A minimal raw-socket AMQP 0-9-1 client for what lapin cannot express: wrong protocol
//! headers, oversized or garbage frames, out-of-order methods, exact frame ordering.
//!
//! Methods are encoded by hand ([`Enc`]); frames read back are decoded with amq-protocol's
//! parser (re-exported by lapin as `lapin::protocol`).

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context as _, Result, anyhow, bail};
use lapin::protocol::{AMQPClass, connection};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// The protocol header a 0-9-1 client sends (and a server answers a bad header with).
pub const HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
pub const FRAME_HEARTBEAT: u8 = 8;
pub const FRAME_END: u8 = 0xCE;

/// One frame read from the socket.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub channel: u16,
    pub payload: Vec<u8>,
}

impl Frame {
    /// Decodes a method frame's payload.
    pub fn method(&self) -> Result<AMQPClass> {
        if self.kind != FRAME_METHOD {
            bail!("not a method frame: {self:?}");
        }
        let (_, class) = lapin::protocol::parse_class(&self.payload[..])
            .map_err(|e| anyhow!("cannot parse method: {e:?}"))?;
        Ok(class)
    }
    /// (class id, method id) of a method frame.
    pub fn ids(&self) -> Option<(u16, u16)> {
        (self.kind == FRAME_METHOD && self.payload.len() >= 4).then(|| {
            (
                u16::from_be_bytes([self.payload[0], self.payload[1]]),
                u16::from_be_bytes([self.payload[2], self.payload[3]]),
            )
        })
    }
}

/// Encoder for method arguments.
#[derive(Default, Debug)]
pub struct Enc(pub Vec<u8>);

impl Enc {
    pub fn method(class: u16, method: u16) -> Self {
        let mut e = Enc::default();
        e.u16(class).u16(method);
        e
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn short(&mut self, s: &str) -> &mut Self {
        self.0.push(s.len() as u8);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    pub fn long(&mut self, s: &[u8]) -> &mut Self {
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s);
        self
    }
    /// An empty field table.
    pub fn empty_table(&mut self) -> &mut Self {
        self.u32(0)
    }
    pub fn bytes(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

/// Wraps a payload into a frame.
pub fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload.len() + 8);
    v.push(kind);
    v.extend_from_slice(&channel.to_be_bytes());
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v.push(FRAME_END);
    v
}

/// A raw connection.
pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
    /// Server properties from connection.start (after [`Raw::handshake`]).
    pub server_properties: Option<lapin::types::FieldTable>,
    /// Negotiated frame_max (after [`Raw::handshake`]).
    pub frame_max: u32,
}

/// What the server proposed in connection.tune.
#[derive(Debug, Clone, Copy)]
pub struct Tune {
    pub channel_max: u16,
    pub frame_max: u32,
    pub heartbeat: u16,
}

/// How the server ended a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// connection.close with code, text, class id, method id.
    Close(u16, String, u16, u16),
    /// The socket was closed (EOF or reset) without a connection.close.
    Eof,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Result<Self> {
        let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
            .await
            .context("tcp connect timed out")??;
        Self::over(stream)
    }

    /// [`Raw::connect`] from the local address `from` (another loopback address, say).
    pub async fn connect_from(addr: SocketAddr, from: std::net::IpAddr) -> Result<Self> {
        let socket = if from.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.bind(SocketAddr::new(from, 0))?;
        let stream = tokio::time::timeout(Duration::from_secs(5), socket.connect(addr))
            .await
            .context("tcp connect timed out")??;
        Self::over(stream)
    }

    fn over(stream: TcpStream) -> Result<Self> {
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::new(),
            server_properties: None,
            frame_max: 131072,
        })
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    pub async fn send_method(&mut self, channel: u16, payload: &[u8]) -> Result<()> {
        self.send(&frame(FRAME_METHOD, channel, payload)).await
    }

    /// Reads raw bytes until EOF or `secs` elapse (returns what was read).
    pub async fn read_raw(&mut self, secs: u64) -> Result<Vec<u8>> {
        let mut out = std::mem::take(&mut self.buf);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        let mut tmp = [0u8; 4096];
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut tmp)).await {
                Err(_) => return Ok(out),
                Ok(Ok(0)) => return Ok(out),
                Ok(Ok(n)) => out.extend_from_slice(&tmp[..n]),
                Ok(Err(_)) => return Ok(out),
            }
        }
    }

    /// Reads one frame; `Ok(None)` on EOF/reset. Fails after `secs` without a frame.
    pub async fn read_frame(&mut self, secs: u64) -> Result<Option<Frame>> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        let mut tmp = [0u8; 8192];
        loop {
            if self.buf.len() >= 7 {
                let size = u32::from_be_bytes([self.buf[3], self.buf[4], self.buf[5], self.buf[6]])
                    as usize;
                if self.buf.len() >= size + 8 {
                    let kind = self.buf[0];
                    let channel = u16::from_be_bytes([self.buf[1], self.buf[2]]);
                    let payload = self.buf[7..7 + size].to_vec();
                    let end = self.buf[7 + size];
                    self.buf.drain(..size + 8);
                    if end != FRAME_END {
                        bail!("server sent a frame with a bad frame-end octet {end:#x}");
                    }
                    return Ok(Some(Frame {
                        kind,
                        channel,
                        payload,
                    }));
                }
            }
            match tokio::time::timeout_at(deadline, self.stream.read(&mut tmp)).await {
                Err(_) => bail!("no frame from server within {secs}s"),
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(None),
                Ok(Ok(n)) => self.buf.extend_from_slice(&tmp[..n]),
            }
        }
    }

    /// Reads the next non-heartbeat frame.
    pub async fn next(&mut self, secs: u64) -> Result<Option<Frame>> {
        loop {
            match self.read_frame(secs).await? {
                Some(f) if f.kind == FRAME_HEARTBEAT => continue,
                other => return Ok(other),
            }
        }
    }

    /// Reads the next method frame, failing on EOF.
    pub async fn expect_method(&mut self, secs: u64) -> Result<(u16, AMQPClass)> {
        match self.next(secs).await? {
            Some(f) => Ok((f.channel, f.method()?)),
            None => bail!("connection closed while waiting for a method"),
        }
    }

    /// Sends the protocol header and reads connection.start (server properties).
    pub async fn start(&mut self) -> Result<connection::Start> {
        self.send(HEADER).await?;
        match self.expect_method(5).await? {
            (0, AMQPClass::Connection(connection::AMQPMethod::Start(s))) => {
                self.server_properties = Some(s.server_properties.clone());
                Ok(s)
            }
            other => bail!("expected connection.start, got {other:?}"),
        }
    }

    /// Sends start-ok with PLAIN credentials and reads what comes next (tune, or a close).
    pub async fn start_ok_plain(&mut self, user: &str, pass: &str) -> Result<()> {
        self.start_ok(user, pass, "PLAIN", true).await
    }

    /// Sends start-ok; `auth_failure_close` advertises the `authentication_failure_close`
    /// client capability (then a refused login gets a connection.close 403, else just EOF).
    pub async fn start_ok(
        &mut self,
        user: &str,
        pass: &str,
        mechanism: &str,
        auth_failure_close: bool,
    ) -> Result<()> {
        let resp = format!("\0{user}\0{pass}");
        let mut caps = Enc::default();
        caps.short("authentication_failure_close")
            .u8(b't')
            .u8(auth_failure_close as u8);
        let caps = caps.bytes();
        let mut props = Enc::default();
        props.short("capabilities").u8(b'F').long(&caps);
        let props = props.bytes();
        let p = Enc::method(10, 11)
            .long(&props)
            .short(mechanism)
            .long(resp.as_bytes())
            .short("en_US")
            .bytes();
        self.send_method(0, &p).await
    }

    /// Reads connection.tune.
    pub async fn tune(&mut self) -> Result<Tune> {
        match self.expect_method(5).await? {
            (0, AMQPClass::Connection(connection::AMQPMethod::Tune(t))) => Ok(Tune {
                channel_max: t.channel_max,
                frame_max: t.frame_max,
                heartbeat: t.heartbeat,
            }),
            other => bail!("expected connection.tune, got {other:?}"),
        }
    }

    /// Sends tune-ok and connection.open, reads open-ok.
    pub async fn tune_ok_open(&mut self, tune: Tune, vhost: &str) -> Result<()> {
        self.frame_max = tune.frame_max;
        let p = Enc::method(10, 31)
            .u16(tune.channel_max)
            .u32(tune.frame_max)
            .u16(tune.heartbeat)
            .bytes();
        self.send_method(0, &p).await?;
        let p = Enc::method(10, 40).short(vhost).short("").u8(0).bytes();
        self.send_method(0, &p).await?;
        match self.expect_method(5).await? {
            (0, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))) => Ok(()),
            other => bail!("expected connection.open-ok, got {other:?}"),
        }
    }

    /// Full handshake as guest/guest on vhost `/`, accepting the server's tune (heartbeat
    /// set to `heartbeat`).
    pub async fn handshake(addr: SocketAddr, heartbeat: u16) -> Result<Self> {
        let mut raw = Self::connect(addr).await?;
        raw.start().await?;
        raw.start_ok_plain("guest", "guest").await?;
        let mut tune = raw.tune().await?;
        tune.heartbeat = heartbeat;
        raw.tune_ok_open(tune, "/").await?;
        Ok(raw)
    }

    /// Opens channel `ch` and waits for open-ok.
    pub async fn open_channel(&mut self, ch: u16) -> Result<()> {
        let p = Enc::method(20, 10).short("").bytes();
        self.send_method(ch, &p).await?;
        match self.expect_method(5).await? {
            (c, AMQPClass::Channel(lapin::protocol::channel::AMQPMethod::OpenOk(_))) if c == ch => {
                Ok(())
            }
            other => bail!("expected channel.open-ok on {ch}, got {other:?}"),
        }
    }

    /// Waits for the server to end the connection: returns the connection.close it sent
    /// (after answering close-ok), or `End::Eof` if the socket just closed. Frames before
    /// the close are skipped. Fails if neither happens within `secs`.
    pub async fn expect_end(&mut self, secs: u64) -> Result<End> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                bail!("server neither closed the connection nor the socket within {secs}s");
            }
            let f = match self.read_frame(left.as_secs().max(1)).await {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(End::Eof),
                Err(e) if e.to_string().contains("bad frame-end") => return Ok(End::Eof),
                Err(e) => return Err(e),
            };
            if f.channel == 0
                && let Ok(AMQPClass::Connection(connection::AMQPMethod::Close(c))) = f.method()
            {
                let _ = self.send_method(0, &Enc::method(10, 51).bytes()).await;
                return Ok(End::Close(
                    c.reply_code,
                    c.reply_text.to_string(),
                    c.class_id,
                    c.method_id,
                ));
            }
        }
    }

    /// After a close-ok was sent or the server closed, asserts the socket reaches EOF.
    pub async fn expect_eof(&mut self, secs: u64) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        let mut tmp = [0u8; 4096];
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut tmp)).await {
                Err(_) => bail!("socket still open after {secs}s"),
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(()),
                Ok(Ok(_)) => continue,
            }
        }
    }
}
