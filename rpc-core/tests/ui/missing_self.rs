#[rpc_core::service]
pub trait Fib {
    async fn fib(n: u64) -> u64;
}

fn main() {}
