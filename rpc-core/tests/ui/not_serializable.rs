pub struct Opaque;

#[rpc_core::service]
pub trait Store {
    async fn put(&self, value: Opaque) -> bool;
}

fn main() {}
