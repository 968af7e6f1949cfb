// A service with no methods serves nothing: one error on the trait name.

#[rpc_core::service]
pub trait Nothing {}

fn main() {
    let _ = NothingClient::<rpc_core::Transport>::QUEUE;
}
