// One mistake in the trait (a method that is not async) is the only error: the
// client, server and request types that the rest of the crate names still exist.

use std::time::Duration;

#[rpc_core::service]
pub trait Fib {
    async fn fib(&self, n: u64) -> Result<u64, String>;
    fn reset(&self) -> bool;
}

struct Calc;

impl Fib for Calc {
    async fn fib(&self, n: u64) -> Result<u64, String> {
        Ok(n)
    }

    fn reset(&self) -> bool {
        true
    }
}

async fn client(url: &str) -> Result<u64, Box<dyn std::error::Error>> {
    let client = FibClient::connect_url(url).await?;
    let _ = FibClient::<rpc_core::Transport>::QUEUE;
    let _ = client.reset().await?;
    Ok(client.with_deadline(Duration::from_secs(1)).fib(10).await?)
}

async fn server(conn: &lapin::Connection) -> Result<(), rpc_core::RpcError> {
    let handle = FibServer::new(Calc).start(conn).await?;
    let _: rpc_core::Server<FibServer<Calc>> = FibServer::new(Calc).into_server();
    handle.shutdown().await
}

fn main() {
    let _ = FibRequest::Fib { n: 1 };
    let _ = (client, server);
}
