// A method whose cfg holds is generated everywhere: client method, request variant,
// server dispatch.

#[rpc_core::service]
pub trait Store {
    async fn get(&self, key: String) -> Option<String>;

    #[cfg(all())]
    async fn put(&self, key: String, value: u64) -> bool;

    #[cfg_attr(any(), cfg(any()))]
    async fn remove(&self, key: String) -> bool;
}

struct Memory;

impl Store for Memory {
    async fn get(&self, key: String) -> Option<String> {
        Some(key)
    }

    #[cfg(all())]
    async fn put(&self, _key: String, value: u64) -> bool {
        value > 0
    }

    async fn remove(&self, _key: String) -> bool {
        true
    }
}

async fn call(client: &StoreClient) -> Result<bool, rpc_core::RpcError> {
    client.put("k".into(), 1).await?;
    client.remove("k".into()).await
}

fn main() {
    let _server = StoreServer::new(Memory);
    let request = StoreRequest::Put { key: "k".into(), value: 1 };
    assert!(matches!(request, StoreRequest::Put { value: 1, .. }));
    let _ = StoreRequest::Remove { key: "k".into() };
    let _ = call;
}
