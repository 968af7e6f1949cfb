#[rpc_core::service]
pub trait Fib {
    fn fib(&self, n: u64) -> u64;
}

fn main() {}
