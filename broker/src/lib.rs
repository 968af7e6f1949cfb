//! The built-in AMQP 0-9-1 broker (work in progress: API stable, internals landing).
use std::net::SocketAddr;

/// Entry point: `Broker::builder().listen(addr).start().await`.
#[derive(Debug)]
pub struct Broker;

impl Broker {
    /// A builder with RabbitMQ's defaults, listening on `127.0.0.1:0`.
    pub fn builder() -> BrokerBuilder {
        BrokerBuilder { listen: SocketAddr::from(([127, 0, 0, 1], 0)) }
    }
}

/// Configures a broker before it starts.
#[derive(Debug, Clone)]
pub struct BrokerBuilder {
    listen: SocketAddr,
}

impl BrokerBuilder {
    /// The address to listen on; port 0 picks a free port.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }
    /// Binds the listener and starts serving in the background on the current tokio runtime.
    pub async fn start(self) -> std::io::Result<BrokerHandle> {
        todo!("landing")
    }
}

/// A running broker. Dropping it shuts the broker down.
#[derive(Debug)]
pub struct BrokerHandle {
    addr: SocketAddr,
}

impl BrokerHandle {
    /// The address the broker listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }
    /// Closes the listener and every connection (with 320 CONNECTION_FORCED), then returns.
    pub async fn shutdown(self) {}
}

/// Where examples and tests connect: the broker at `AMQP_URL` if that is set, else a
/// built-in broker started in-process on `127.0.0.1:0`.
#[derive(Debug)]
pub struct Endpoint {
    url: String,
    broker: Option<BrokerHandle>,
}

impl Endpoint {
    /// Uses `AMQP_URL` if set, else starts an embedded broker.
    pub async fn from_env() -> std::io::Result<Self> {
        match std::env::var("AMQP_URL") {
            Ok(url) if !url.is_empty() => Ok(Self { url, broker: None }),
            _ => Self::embedded().await,
        }
    }
    /// Always starts an embedded broker on `127.0.0.1:0`.
    pub async fn embedded() -> std::io::Result<Self> {
        let broker = Broker::builder().start().await?;
        Ok(Self { url: broker.amqp_url(), broker: Some(broker) })
    }
    /// The AMQP URL to connect to.
    pub fn url(&self) -> &str {
        &self.url
    }
    /// Whether this endpoint is a broker started in this process.
    pub fn is_embedded(&self) -> bool {
        self.broker.is_some()
    }
}
