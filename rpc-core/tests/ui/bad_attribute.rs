#[rpc_core::service(queu = "rpc_queue")]
pub trait Fib {
    async fn fib(&self, n: u64) -> u64;
}

fn main() {}
