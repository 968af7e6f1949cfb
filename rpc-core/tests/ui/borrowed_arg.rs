#[rpc_core::service]
pub trait Greeter {
    async fn greet(&self, name: &str) -> String;
}

fn main() {}
