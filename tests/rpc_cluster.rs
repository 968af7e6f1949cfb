//! Cluster failover with real processes: two `fib_server` processes (quorum service
//! queue) and a client, all given the three node URLs of a RabbitMQ 4 cluster, call in
//! a loop while the node they are all connected to (the first of the list, which also
//! leads the queue) is stopped. Asserts what a user sees: both servers keep running,
//! every call either succeeds or fails within its deadline with a connection error,
//! answers come again within seconds, no request is acked twice. Prints the figures
//! (`--nocapture`) and starts the node again at the end.
//!
//! Needs `../shared/rabbitmq4/setup.sh cluster` (nodes on 5682-5684, as root), so it
//! is `#[ignore]`d; `.ci/run` runs it. The binaries must be current: `cargo build
//! --example fib_server` first.

#[path = "rpc_common/fault.rs"]
mod fault;
#[path = "../examples/fib_common/mod.rs"]
mod fib_common;
#[path = "rpc_common/process.rs"]
mod process;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use fault::Scenario;
use tokio::time::Instant;

/// The three nodes, the first one first (everyone connects to it).
const NODES: &str = "amqp://guest:guest@127.0.0.1:5682/%2f,amqp://guest:guest@127.0.0.1:5683/%2f,amqp://guest:guest@127.0.0.1:5684/%2f";
/// The node stopped.
const FIRST: &str = "rabbit4a@localhost";
/// "A few seconds": the longest stretch without an answer allowed.
const MAX_GAP: Duration = Duration::from_secs(10);

fn rabbit4(script: &str) -> PathBuf {
    std::env::var_os("RABBIT4_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/rabbitmq4"))
        .join(script)
}

fn run(script: &str, args: &[&str]) {
    let status = Command::new("timeout")
        .arg("300")
        .arg(rabbit4(script))
        .args(args)
        .status()
        .expect("run the rabbitmq4 script");
    assert!(status.success(), "{script} {args:?} failed");
}

/// Starts the stopped node again (setup.sh is idempotent), even when the test fails.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = Command::new("timeout")
            .arg("300")
            .arg(rabbit4("setup.sh"))
            .arg("cluster")
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the RabbitMQ 4 cluster: ../shared/rabbitmq4/setup.sh cluster, then cargo test --test rpc_cluster -- --ignored"]
async fn servers_and_client_fail_over_when_their_node_stops() {
    let scenario = Scenario::start_with(
        "RabbitMQ 4 cluster, node a stopped",
        NODES,
        &[("FIB_SERVER_QUEUE_TYPE", "quorum")],
    )
    .await;
    let queue = scenario.queue.clone();
    let restore = Restore;
    let fault_at = Instant::now();
    // The calls go on while the node stops (it closes its connections first).
    let stopped = tokio::task::spawn_blocking(|| {
        run("stop.sh", &[&format!("node:{FIRST}")]);
        Instant::now()
    })
    .await
    .expect("stop");
    assert!(
        scenario.transport.recovery().outages() >= 1,
        "the client saw no outage while its node stopped"
    );
    // The node stays down: the others serve from the fault on.
    let longest = scenario.finish(fault_at, fault_at).await;
    println!(
        "cluster: stopping {FIRST} took {:?}; longest time without an answer {longest:?}",
        stopped - fault_at
    );
    assert!(longest < MAX_GAP, "no answer for {longest:?}");
    // Leave nothing behind: the queue, via a node that runs.
    fault::delete_queue("amqp://guest:guest@127.0.0.1:5683/%2f", &queue).await;
    drop(restore);
}
