pub struct Opaque;

#[derive(serde::Serialize)]
pub struct OnlySerialize;

#[rpc_core::service]
pub trait Store {
    async fn get(&self, key: String) -> Opaque;
    async fn check(&self) -> Result<bool, OnlySerialize>;
}

fn main() {}
