// A method cfg'd out is gone from everything #[service] generates: its argument type
// does not exist, the handler does not implement it, and the service still compiles.

#[rpc_core::service]
pub trait Store {
    async fn get(&self, key: String) -> Option<String>;

    #[cfg(any())]
    async fn put(&self, key: String, value: DoesNotExist) -> bool;

    #[cfg_attr(all(), cfg(any()))]
    async fn remove(&self, key: AlsoMissing) -> bool;
}

struct Memory;

impl Store for Memory {
    async fn get(&self, key: String) -> Option<String> {
        Some(key)
    }
}

async fn call(client: &StoreClient) -> Result<Option<String>, rpc_core::RpcError> {
    client.get("k".into()).await
}

fn main() {
    let _server = StoreServer::new(Memory);
    let request = StoreRequest::Get { key: "k".into() };
    match request {
        StoreRequest::Get { key } => assert_eq!(key, "k"),
    }
    let _ = call;
}
