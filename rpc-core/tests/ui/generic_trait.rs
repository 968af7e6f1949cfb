// Generic traits are not supported (the wire needs concrete types): one error, and
// the code naming the generated types adds none.

#[rpc_core::service]
pub trait Store<T> {
    async fn get(&self, key: T) -> Option<T>;
}

async fn lookup(client: &StoreClient) -> Option<String> {
    client.get("k".to_owned()).await.ok().flatten()
}

fn main() {
    let _ = lookup;
}
