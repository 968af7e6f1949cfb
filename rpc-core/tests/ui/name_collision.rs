#[rpc_core::service]
pub trait Fib {
    async fn fib(&self, n: u64) -> u64;
    async fn connect(&self) -> bool;
}

fn main() {}
