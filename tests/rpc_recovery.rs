//! Fault tests with real processes: two `fib_server` processes serve and a client
//! calls in a loop while (1) the built-in `broker` binary is killed with SIGKILL and
//! started again on its data dir and port, (2) the built-in broker closes every
//! connection (`broker ctl close-connection`), (3) RabbitMQ closes our connections
//! (`rabbitmqctl close_connection`; runs when `AMQP_URL` names a RabbitMQ and
//! `rabbitmqctl` works), (4) the connections drop and the reconnects land on a peer
//! that accepts TCP and never answers (a proxy in the test turned black hole), with
//! the client behind it too or not. Each prints its outage figures (`--nocapture`).
//!
//! The binaries must be current: `cargo build -p broker --bin broker --example
//! fib_server` first (they are built only when missing).

#[path = "rpc_common/fault.rs"]
mod fault;
#[path = "../examples/fib_common/mod.rs"]
mod fib_common;
#[path = "rpc_common/process.rs"]
mod process;
#[path = "rpc_common/proxy.rs"]
mod proxy;

use std::time::Duration;

use fault::Scenario;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_and_client_recover_after_the_broker_is_killed_and_restarted() {
    let mut broker = process::Broker::start();
    let scenario = Scenario::start("built-in broker kill -9", &broker.url()).await;
    let fault_at = Instant::now();
    let (broker, back_at) = tokio::task::spawn_blocking(move || {
        broker.kill();
        // The outage itself: the scenario, not a synchronisation.
        std::thread::sleep(Duration::from_secs(2));
        broker.restart();
        (broker, Instant::now())
    })
    .await
    .expect("restart");
    scenario.finish(fault_at, back_at).await;
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_and_client_recover_after_the_broker_closes_their_connections() {
    let broker = process::Broker::start_with_management();
    let scenario = Scenario::start("built-in broker close-connection", &broker.url()).await;
    let fault_at = Instant::now();
    let (broker, closed) = tokio::task::spawn_blocking(move || {
        let closed = broker.close_connections();
        (broker, closed)
    })
    .await
    .expect("close");
    // Two servers and the client.
    assert!(closed >= 3, "closed {closed} connections");
    scenario.finish(fault_at, Instant::now()).await;
    drop(broker);
}

/// The connections drop and every reconnect lands on a peer that accepts TCP and never
/// answers (a load balancer without a backend, a wedged node) until the path heals.
/// lapin's reconnect has no handshake deadline, and once a handshake failed midway its
/// next ones fail too: the servers and the client cut a handshake after 10 s
/// (`HANDSHAKE_TIMEOUT`) and then connect anew themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_and_client_recover_when_reconnects_land_on_a_peer_that_never_answers() {
    black_holed_reconnect(true).await;
}

/// The same with the client on a path of its own: only the servers go; calls they had
/// taken wait for their deadline (the broker keeps the requests for the next server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_recover_when_their_reconnects_land_on_a_peer_that_never_answers() {
    black_holed_reconnect(false).await;
}

async fn black_holed_reconnect(client_too: bool) {
    let broker = process::Broker::start();
    let proxy = proxy::Proxy::start(broker.addr).await;
    let client_url = if client_too {
        proxy.url()
    } else {
        broker.url()
    };
    let scenario =
        Scenario::start_split("black-holed reconnect", &proxy.url(), &client_url, &[]).await;
    let fault_at = Instant::now();
    proxy.cut();
    // Every connection through the proxy reconnects into the black hole.
    let through = if client_too { 3 } else { 2 };
    process::poll::until(Duration::from_secs(20), "the reconnects held", || {
        std::future::ready((proxy.held() >= through).then_some(()))
    })
    .await
    .expect("the connections through the proxy reconnect");
    proxy.heal();
    // The reconnects wait out the handshake deadline (10 s), then connect anew.
    scenario
        .finish_within(fault_at, Instant::now(), Duration::from_secs(20))
        .await;
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the RabbitMQ the host's rabbitmqctl manages: AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f cargo test --test rpc_recovery -- --ignored"]
async fn servers_and_client_recover_after_rabbitmq_closes_their_connections() {
    let url = fault::rabbitmq_url();
    let scenario = Scenario::start("RabbitMQ close_connection", &url).await;
    let tag = scenario.tag.clone();
    // Our three connections are listed (the servers' and the client's names carry
    // the tag): only those are closed, the broker is shared.
    let listed = {
        let tag = tag.clone();
        tokio::task::spawn_blocking(move || process::rabbitmq_connections(&tag).len())
            .await
            .expect("list")
    };
    assert!(listed >= 3, "listed {listed} of our connections");
    let fault_at = Instant::now();
    let closed = tokio::task::spawn_blocking(move || process::rabbitmq_close_connections(&tag))
        .await
        .expect("close");
    assert!(closed >= 3, "closed {closed} connections");
    let closed_at = Instant::now();
    let queue = scenario.queue.clone();
    scenario.finish(fault_at, closed_at).await;
    fault::delete_queue(&url, &queue).await;
}

/// A client whose replies come to an exclusive callback queue (`ReplyMode::CallbackQueue`)
/// gets answers again after the broker closed its connection: lapin replays the queue's
/// declaration and consumer on the new connection, which must work for the queue's name.
async fn callback_queue_client_recovers(url: &str, close: impl FnOnce() -> usize + Send + 'static) {
    let tag = format!("rpc-recovery-cb-{}", uuid::Uuid::new_v4().simple());
    let queue = format!("{tag}-fib");
    let log = std::env::temp_dir().join(format!("{tag}-server.log"));
    let _server = process::fib_server(url, &queue, &format!("{tag} server"), &log, &[]);
    let transport = rpc_core::Transport::builder()
        .reply_mode(rpc_core::ReplyMode::CallbackQueue)
        .connection_name(format!("{tag} client"))
        .connect_url(url)
        .await
        .expect("connect");
    let client = fib_common::FibClient::new(transport.clone())
        .with_deadline(Duration::from_secs(2))
        .with_queue(&queue);
    let (_, v) = fault::answered(&client, Duration::from_secs(30)).await;
    assert_eq!(v, 55);
    let closed = tokio::task::spawn_blocking(close).await.expect("close");
    assert!(closed >= 2, "closed {closed} connections");
    let (_, v) = fault::answered(&client, Duration::from_secs(10)).await;
    assert_eq!(v, 55);
    assert!(
        transport.recovery().recoveries() >= 1,
        "the client saw no outage"
    );
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(log.with_extension("err"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_queue_client_recovers_after_the_broker_closes_its_connection() {
    let broker = std::sync::Arc::new(process::Broker::start_with_management());
    let url = broker.url();
    let b = broker.clone();
    callback_queue_client_recovers(&url, move || b.close_connections()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the RabbitMQ the host's rabbitmqctl manages: AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f cargo test --test rpc_recovery -- --ignored"]
async fn a_callback_queue_client_recovers_after_rabbitmq_closes_its_connection() {
    let url = fault::rabbitmq_url();
    // Only this test's connections: their names carry the tag the helper makes, so
    // close every connection whose name says "rpc-recovery-cb-".
    callback_queue_client_recovers(&url, || {
        process::rabbitmq_close_connections("rpc-recovery-cb-")
    })
    .await;
}
