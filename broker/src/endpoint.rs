//! Where examples and tests connect: an external broker named by `AMQP_URL`, or one
//! started in-process.

use crate::{Broker, BrokerHandle, StartError};

/// Where examples and tests connect: the broker at `AMQP_URL` if that is set, else a
/// built-in broker started in-process on `127.0.0.1:0`.
#[derive(Debug)]
pub struct Endpoint {
    url: String,
    broker: Option<BrokerHandle>,
}

impl Endpoint {
    /// Uses `AMQP_URL` if set, else starts an embedded broker.
    pub async fn from_env() -> Result<Self, StartError> {
        match std::env::var("AMQP_URL") {
            Ok(url) if !url.is_empty() => Ok(Self { url, broker: None }),
            _ => Self::embedded().await,
        }
    }

    /// Always starts an embedded broker on `127.0.0.1:0`.
    pub async fn embedded() -> Result<Self, StartError> {
        let broker = Broker::builder().start().await?;
        Ok(Self {
            url: broker.amqp_url(),
            broker: Some(broker),
        })
    }

    /// The AMQP URL to connect to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether this endpoint is a broker started in this process.
    pub fn is_embedded(&self) -> bool {
        self.broker.is_some()
    }

    /// The embedded broker, if any.
    pub fn broker(&self) -> Option<&BrokerHandle> {
        self.broker.as_ref()
    }

    /// Shuts the embedded broker down, if any.
    pub async fn shutdown(self) {
        if let Some(b) = self.broker {
            b.shutdown().await;
        }
    }
}
