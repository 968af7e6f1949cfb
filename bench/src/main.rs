//! `bench`: one command, both brokers, side by side.
//!
//! Starts the built-in broker as a separate process (this binary in `--serve-broker`
//! mode, with the `broker` binary's allocator) and measures it and the broker at `AMQP_URL` (this machine's RabbitMQ by
//! default) with the same clients in the same run: the TCP floor, one-way throughput,
//! RPC with raw lapin and through the framework (sequential latency and throughput at
//! 1/16/64/256 in flight), broker CPU per message and per call (from `/proc`), and
//! broker memory. Then one-way again with the publisher pipelining (many publishes
//! outstanding, so the client coalesces writes), and persistent publishing with
//! publisher confirms (the built-in broker in a second process with `--data-dir` on a
//! fresh temporary directory). Prints a table with ratios, writes `results.json` and
//! `results.svg`.
//!
//! ```text
//! cargo run --release -p bench            # full run (~3 min)
//! cargo run --release -p bench -- --quick # smaller counts (~40 s)
//! ```

mod proc;
mod report;
mod stats;
mod wire;
mod workload;

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

/// The `broker` binary's allocator, so that this binary's `--serve-broker` process
/// holds and returns memory as the real broker does (and the clients, the same for
/// both brokers, use it too).
#[cfg(all(unix, not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: broker::allocator::Jemalloc = broker::allocator::Jemalloc;
use serde::Serialize;

use workload::{EchoClient, EchoHandler, EchoServer, RawClient};

/// Side-by-side benchmark of the built-in broker and RabbitMQ, raw lapin and the framework.
#[derive(Debug, Parser)]
#[command(name = "bench", version, about)]
struct Args {
    /// The reference broker.
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp_url: String,
    /// Smaller counts, for a quick look.
    #[arg(long)]
    quick: bool,
    /// Where results.json and results.svg go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Worker threads of the built-in broker process (as `broker --threads`).
    #[arg(long, default_value_t = 1)]
    broker_threads: usize,
    /// Internal: run a 64-byte TCP echo server (the floor) and print its address.
    #[arg(long, hide = true)]
    serve_echo: bool,
    /// Internal: run the built-in broker in this process and print its URL.
    #[arg(long, hide = true)]
    serve_broker: bool,
    /// Internal, with `--serve-broker`: the broker's data directory.
    #[arg(long, hide = true, requires = "serve_broker")]
    data_dir: Option<PathBuf>,
}

/// Everything measured against one broker.
#[derive(Debug, Clone, Serialize, Default)]
pub struct BrokerResults {
    /// Broker name.
    pub name: String,
    /// One-way 16 B messages/s.
    pub oneway_16: f64,
    /// One-way 4 KiB messages/s.
    pub oneway_4k: f64,
    /// Broker CPU per one-way 16 B message, microseconds.
    pub cpu_us_per_msg: f64,
    /// One-way 16 B messages/s with the publisher keeping `pipeline_window` publishes
    /// outstanding.
    pub oneway_pipelined_16: f64,
    /// The same with 4 KiB messages.
    pub oneway_pipelined_4k: f64,
    /// Broker CPU per pipelined one-way 16 B message, microseconds.
    pub cpu_us_per_msg_pipelined: f64,
    /// Persistent publishing with publisher confirms.
    pub persistent: PersistentResults,
    /// Raw lapin RPC: sequential p50/p99 (us) and calls/s by in-flight.
    pub raw: RpcResults,
    /// The framework: same shape.
    pub framework: RpcResults,
    /// Broker CPU per framework RPC call at 64 in flight, microseconds.
    pub cpu_us_per_call: f64,
    /// The loopback TCP round trip (p50, us) measured right before the framework's
    /// sequential calls.
    pub floor_p50_us: f64,
    /// Context switches of this process (the clients and the RPC server) per
    /// sequential call: hand-written clients, raw lapin, the framework.
    pub switches_per_call: [f64; 3],
    /// RPC with hand-written clients (the wire floor): sequential p50 and p99, us.
    pub wire_seq_us: [f64; 2],
    /// Resident memory in KiB: idle, with 1,000 idle connections, after the load.
    pub rss_kib: [u64; 3],
    /// Seconds from the end of the load to the last RSS reading.
    pub settle_secs: f64,
}

/// How long the broker is given to return memory after the load.
const AFTER_LOAD_WAIT: Duration = Duration::from_secs(20);

/// RPC figures.
#[derive(Debug, Clone, Serialize, Default)]
pub struct RpcResults {
    /// Sequential latency percentiles in us: p50, p90, p99, p99.9.
    pub seq_us: [f64; 4],
    /// (in flight, calls/s).
    pub throughput: Vec<(usize, f64)>,
}

/// Persistent (`delivery_mode` 2) messages into a durable queue, one publisher in
/// confirm mode, no consumer.
#[derive(Debug, Clone, Serialize, Default)]
pub struct PersistentResults {
    /// 16 B messages/s with `confirm_window` awaiting their confirm.
    pub msgs_per_sec_16: f64,
    /// 4 KiB messages/s, the same way.
    pub msgs_per_sec_4k: f64,
    /// 16 B, publish to its confirm, p50 and p99 in microseconds (`confirm_window` in
    /// flight).
    pub confirm_us_16: [f64; 2],
    /// 4 KiB, the same.
    pub confirm_us_4k: [f64; 2],
    /// 16 B with one publish at a time: p50 and p99 in microseconds.
    pub confirm_us_seq: [f64; 2],
}

const IN_FLIGHT: [usize; 4] = [1, 16, 64, 256];

/// Publishes the pipelined one-way publisher keeps outstanding.
const PIPELINE_WINDOW: usize = 256;

/// Persistent publishes awaiting their confirm at once.
const CONFIRM_WINDOW: usize = 256;

struct Sizes {
    oneway_16: usize,
    oneway_4k: usize,
    seq: usize,
    calls: usize,
    pipelined_16: usize,
    pipelined_4k: usize,
    persistent_16: usize,
    persistent_4k: usize,
    persistent_seq: usize,
    recovery: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.serve_broker {
        return proc::serve_broker(args.data_dir);
    }
    if args.serve_echo {
        return workload::serve_echo();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

fn progress(msg: &str) {
    eprint!("\r\x1b[2K  {msg}");
    let _ = std::io::stderr().flush();
}

async fn run(args: Args) -> anyhow::Result<()> {
    let sizes = if args.quick {
        Sizes {
            oneway_16: 20_000,
            oneway_4k: 5_000,
            seq: 500,
            calls: 4_000,
            pipelined_16: 100_000,
            pipelined_4k: 10_000,
            persistent_16: 5_000,
            persistent_4k: 2_000,
            persistent_seq: 200,
            recovery: 100_000,
        }
    } else {
        Sizes {
            oneway_16: 100_000,
            oneway_4k: 30_000,
            seq: 2_000,
            calls: 20_000,
            pipelined_16: 400_000,
            pipelined_4k: 50_000,
            persistent_16: 30_000,
            persistent_4k: 10_000,
            persistent_seq: 1_000,
            recovery: 1_000_000,
        }
    };
    progress("loopback TCP floor");
    let (mut echo, echo_addr) = proc::spawn_self(&["--serve-echo"], 1)?;
    let floor = workload::tcp_floor(&echo_addr, 5_000).await?;

    let own = proc::OwnBroker::spawn(args.broker_threads, None)?;
    let rabbit_pid = proc::rabbitmq_pid();
    let mut all = Vec::new();
    for (name, url, pid, idle) in [
        ("built-in", own.url.clone(), Some(own.pid()), true),
        ("RabbitMQ", args.amqp_url.clone(), rabbit_pid, false),
    ] {
        all.push(measure(name, &url, pid, &sizes, idle, &echo_addr).await?);
    }
    let _ = echo.kill();
    let _ = echo.wait();
    // After everything above, so those figures (RSS after the load included) are the
    // same as without these runs.
    let targets = [
        (own.url.clone(), Some(own.pid())),
        (args.amqp_url.clone(), rabbit_pid),
    ];
    for (r, (url, pid)) in all.iter_mut().zip(targets) {
        measure_pipelined(r, &url, pid, &sizes).await?;
    }
    drop(own);

    // Persistent messages: the built-in broker again, in a second process given a
    // data directory.
    let data_dir = tempfile::Builder::new().prefix("bench-store.").tempdir()?;
    let own = proc::OwnBroker::spawn(args.broker_threads, Some(data_dir.path()))?;
    let targets = [own.url.clone(), args.amqp_url.clone()];
    for (r, url) in all.iter_mut().zip(targets) {
        r.persistent = measure_persistent(&r.name, &url, &sizes).await?;
    }
    drop(own);
    drop(data_dir);
    let recovery = measure_recovery(args.broker_threads, sizes.recovery).await?;

    eprintln!("\r\x1b[2K");
    let report = report::Report {
        floor_p50_us: floor.us(0.5),
        pipeline_window: PIPELINE_WINDOW,
        confirm_window: CONFIRM_WINDOW,
        brokers: all,
        recovery,
    };
    report.print_table();
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(
        args.out.join("results.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(args.out.join("results.svg"), report.svg())?;
    println!(
        "\nwrote {0}/results.json and {0}/results.svg",
        args.out.display()
    );
    Ok(())
}

/// The built-in broker's store holding a long queue: memory with `n` persistent 16 B
/// messages queued, and the time to come back after `kill -9` with all of them.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Recovery {
    /// Messages queued.
    pub messages: usize,
    /// Publish rate while filling (confirmed, `CONFIRM_WINDOW` in flight), msg/s.
    pub fill_msgs_per_sec: f64,
    /// Broker RSS with them queued, KiB.
    pub rss_kib_loaded: u64,
    /// From starting the killed broker's process again to its queue reporting every
    /// message, seconds.
    pub restart_secs: f64,
    /// Broker RSS right after that restart, KiB.
    pub rss_kib_recovered: u64,
    /// Broker RSS 3 s later, KiB.
    pub rss_kib_settled: u64,
}

async fn measure_recovery(threads: usize, n: usize) -> anyhow::Result<Recovery> {
    let dir = tempfile::Builder::new()
        .prefix("bench-recovery.")
        .tempdir()?;
    let own = proc::OwnBroker::spawn(threads, Some(dir.path()))?;
    progress(&format!(
        "built-in: filling a durable queue with {n} messages"
    ));
    let fill = workload::fill_durable(&own.url, "recovery", 16, n, CONFIRM_WINDOW).await?;
    let rss_kib_loaded =
        proc::rss_kib(own.pid()).ok_or_else(|| anyhow::anyhow!("no RSS for the broker"))?;
    progress("built-in: kill -9 and restart");
    drop(own); // SIGKILL
    let started = Instant::now();
    let own = proc::OwnBroker::spawn(threads, Some(dir.path()))?;
    let found = workload::queue_length(&own.url, "recovery").await? as usize;
    let restart_secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(found == n, "recovered {found} of {n} messages");
    let rss_kib_recovered =
        proc::rss_kib(own.pid()).ok_or_else(|| anyhow::anyhow!("no RSS for the broker"))?;
    // Recovery reads each segment whole and lets it go: what it leaves resident once the
    // allocator has given those pages back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_kib_settled =
        proc::rss_kib(own.pid()).ok_or_else(|| anyhow::anyhow!("no RSS for the broker"))?;
    Ok(Recovery {
        rss_kib_settled,
        messages: n,
        fill_msgs_per_sec: fill.msgs_per_sec,
        rss_kib_loaded,
        restart_secs,
        rss_kib_recovered,
    })
}

async fn cpu_during<F: std::future::Future<Output = anyhow::Result<T>>, T>(
    pid: Option<u32>,
    f: F,
) -> anyhow::Result<(T, Option<Duration>)> {
    let before = pid.and_then(proc::cpu_time);
    let out = f.await?;
    let after = pid.and_then(proc::cpu_time);
    Ok((out, before.zip(after).map(|(b, a)| a.saturating_sub(b))))
}

/// One-way with the publisher keeping [`PIPELINE_WINDOW`] publishes outstanding.
async fn measure_pipelined(
    r: &mut BrokerResults,
    url: &str,
    pid: Option<u32>,
    sizes: &Sizes,
) -> anyhow::Result<()> {
    let name = &r.name;
    let n = sizes.pipelined_16;
    progress(&format!(
        "{name}: one-way pipelined ({PIPELINE_WINDOW} outstanding) 16 B x {n}"
    ));
    let (ow, cpu) = cpu_during(pid, workload::one_way(url, 16, n, PIPELINE_WINDOW)).await?;
    r.oneway_pipelined_16 = ow.msgs_per_sec;
    r.cpu_us_per_msg_pipelined = cpu.map_or(f64::NAN, |c| c.as_secs_f64() * 1e6 / n as f64);
    let n = sizes.pipelined_4k;
    progress(&format!(
        "{name}: one-way pipelined ({PIPELINE_WINDOW} outstanding) 4 KiB x {n}"
    ));
    r.oneway_pipelined_4k = workload::one_way(url, 4096, n, PIPELINE_WINDOW)
        .await?
        .msgs_per_sec;
    Ok(())
}

/// Persistent publishing with confirms: 16 B and 4 KiB with [`CONFIRM_WINDOW`] in
/// flight, and 16 B one at a time for the unloaded confirm latency.
async fn measure_persistent(
    name: &str,
    url: &str,
    sizes: &Sizes,
) -> anyhow::Result<PersistentResults> {
    let pct = |l: &stats::Latencies| [l.us(0.5), l.us(0.99)];
    let mut p = PersistentResults::default();
    let n = sizes.persistent_16;
    progress(&format!("{name}: persistent + confirms 16 B x {n}"));
    let run = workload::persistent_confirms(url, 16, n, CONFIRM_WINDOW).await?;
    p.msgs_per_sec_16 = run.msgs_per_sec;
    p.confirm_us_16 = pct(&run.confirm);
    let n = sizes.persistent_4k;
    progress(&format!("{name}: persistent + confirms 4 KiB x {n}"));
    let run = workload::persistent_confirms(url, 4096, n, CONFIRM_WINDOW).await?;
    p.msgs_per_sec_4k = run.msgs_per_sec;
    p.confirm_us_4k = pct(&run.confirm);
    let n = sizes.persistent_seq;
    progress(&format!(
        "{name}: persistent + confirms 16 B, one at a time x {n}"
    ));
    let run = workload::persistent_confirms(url, 16, n, 1).await?;
    p.confirm_us_seq = pct(&run.confirm);
    Ok(p)
}

/// Counts this process's context switches from its creation.
struct ClientSwitches(Option<u64>);

impl ClientSwitches {
    fn start() -> Self {
        Self(proc::context_switches(std::process::id()))
    }

    /// Context switches since `start`, per call (NaN if `/proc` cannot tell).
    fn per_call(&self, calls: usize) -> f64 {
        match (self.0, proc::context_switches(std::process::id())) {
            (Some(a), Some(b)) => b.saturating_sub(a) as f64 / calls as f64,
            _ => f64::NAN,
        }
    }
}

async fn measure(
    name: &str,
    url: &str,
    pid: Option<u32>,
    sizes: &Sizes,
    measure_idle: bool,
    echo_addr: &str,
) -> anyhow::Result<BrokerResults> {
    let mut r = BrokerResults {
        name: name.to_owned(),
        ..Default::default()
    };
    let rss = || pid.and_then(proc::rss_kib).unwrap_or(0);
    r.rss_kib[0] = rss();

    progress(&format!("{name}: one-way 16 B x {}", sizes.oneway_16));
    let (ow, cpu) = cpu_during(pid, workload::one_way(url, 16, sizes.oneway_16, 1)).await?;
    r.oneway_16 = ow.msgs_per_sec;
    r.cpu_us_per_msg = cpu.map_or(f64::NAN, |c| c.as_secs_f64() * 1e6 / sizes.oneway_16 as f64);
    progress(&format!("{name}: one-way 4 KiB x {}", sizes.oneway_4k));
    r.oneway_4k = workload::one_way(url, 4096, sizes.oneway_4k, 1)
        .await?
        .msgs_per_sec;

    // The wire floor: the same calls with hand-written clients.
    progress(&format!("{name}: hand-written client RPC, 1 in flight"));
    let switches = ClientSwitches::start();
    let floor = wire::rpc_floor(url, &workload::unique("wire"), sizes.seq).await?;
    r.switches_per_call[0] = switches.per_call(sizes.seq + sizes.seq / 10);
    r.wire_seq_us = [floor.us(0.5), floor.us(0.99)];

    // Raw lapin RPC.
    let q = workload::unique("raw");
    let _server = workload::raw_server(url, &q, 256).await?;
    let client = Arc::new(RawClient::connect(url, &q).await?);
    let body = vec![b'x'; 64];
    for &n in std::iter::once(&0).chain(IN_FLIGHT.iter()) {
        let (in_flight, total) = if n == 0 {
            (1, sizes.seq)
        } else {
            (n, sizes.calls)
        };
        progress(&format!("{name}: raw lapin RPC, {in_flight} in flight"));
        let (c, b) = (Arc::clone(&client), body.clone());
        let switches = ClientSwitches::start();
        let run = workload::drive(total, in_flight, move || {
            let (c, b) = (Arc::clone(&c), b.clone());
            async move { c.call(&b).await.map(drop) }
        })
        .await?;
        if n == 0 {
            r.switches_per_call[1] = switches.per_call(total);
            r.raw.seq_us = [
                run.latency.us(0.5),
                run.latency.us(0.9),
                run.latency.us(0.99),
                run.latency.us(0.999),
            ];
        } else {
            r.raw.throughput.push((n, run.calls_per_sec));
        }
    }
    drop(client);

    // The framework.
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await?;
    let q = workload::unique("fw");
    let server = EchoServer::new(EchoHandler)
        .into_server()
        .queue_name(q.clone())
        .concurrency(256)
        .start(&conn)
        .await?;
    let cconn = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await?;
    let client = EchoClient::connect(&cconn)
        .await?
        .with_queue(&q)
        .with_deadline(Duration::from_secs(30));
    // The floor again, right before the sequential calls and in the same state of the
    // machine: a loopback round trip here measures anywhere from 7 to 80 us as the
    // cores' idle states change, so the latency target compares with this one.
    progress(&format!("{name}: loopback TCP floor again"));
    r.floor_p50_us = workload::tcp_floor(echo_addr, 2_000).await?.us(0.5);
    for &n in std::iter::once(&0).chain(IN_FLIGHT.iter()) {
        let (in_flight, total) = if n == 0 {
            (1, sizes.seq)
        } else {
            (n, sizes.calls)
        };
        progress(&format!("{name}: framework RPC, {in_flight} in flight"));
        let (c, b) = (client.clone(), body.clone());
        let switches = ClientSwitches::start();
        let (run, cpu) = cpu_during(
            pid,
            workload::drive(total, in_flight, move || {
                let (c, b) = (c.clone(), b.clone());
                async move { c.echo(b).await.map(drop).map_err(anyhow::Error::from) }
            }),
        )
        .await?;
        if n == 0 {
            r.switches_per_call[2] = switches.per_call(total);
            r.framework.seq_us = [
                run.latency.us(0.5),
                run.latency.us(0.9),
                run.latency.us(0.99),
                run.latency.us(0.999),
            ];
        } else {
            r.framework.throughput.push((n, run.calls_per_sec));
            if n == 64 {
                r.cpu_us_per_call = cpu.map_or(f64::NAN, |c| c.as_secs_f64() * 1e6 / total as f64);
            }
        }
    }
    server.shutdown().await?;
    let _ = conn.close(200, "done".into()).await;
    let _ = cconn.close(200, "done".into()).await;

    // Memory with 1,000 idle connections, then after they are gone. Only for the
    // built-in broker: RabbitMQ here runs with a 1,024 file-descriptor limit, which
    // 1,000 more connections would exhaust.
    if !measure_idle {
        r.rss_kib[1] = 0;
        r.rss_kib[2] = rss();
        return Ok(r);
    }
    progress(&format!("{name}: 1,000 idle connections"));
    let mut idle = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let connect = lapin::Connection::connect(url, lapin::ConnectionProperties::default());
        idle.push(tokio::time::timeout(Duration::from_secs(10), connect).await??);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    r.rss_kib[1] = rss();
    for c in idle {
        let _ = c.close(200, "done".into()).await;
    }
    // The allocator gives freed pages back within seconds, not at once: wait (at most
    // AFTER_LOAD_WAIT) until the broker is back within 25% of its idle figure, and
    // record how long that took.
    let settled = std::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        r.rss_kib[2] = rss();
        if r.rss_kib[2] * 4 <= r.rss_kib[0] * 5 || settled.elapsed() >= AFTER_LOAD_WAIT {
            break;
        }
    }
    r.settle_secs = settled.elapsed().as_secs_f64();
    Ok(r)
}
