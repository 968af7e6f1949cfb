//! `broker`: the built-in AMQP 0-9-1 broker as a standalone server.

use std::net::SocketAddr;

use clap::Parser;

/// An AMQP 0-9-1 broker that clients accept as RabbitMQ (in memory, single node).
#[derive(Debug, Parser)]
#[command(name = "broker", version, about)]
struct Args {
    /// Address to listen on for AMQP connections.
    #[arg(long, env = "BROKER_LISTEN", default_value = "0.0.0.0:5672")]
    listen: SocketAddr,
    /// Extra user as NAME:PASSWORD (repeatable). `guest:guest` always exists.
    #[arg(long = "user", value_name = "NAME:PASSWORD")]
    users: Vec<String>,
    /// Users allowed to connect only from loopback, comma-separated ("" for none).
    #[arg(long, default_value = "guest")]
    loopback_users: String,
    /// Largest frame offered in connection.tune, in bytes.
    #[arg(long, default_value_t = 131_072)]
    frame_max: u32,
    /// Highest channel number offered in connection.tune.
    #[arg(long, default_value_t = 2047)]
    channel_max: u16,
    /// Heartbeat offered in connection.tune, in seconds (0 disables).
    #[arg(long, default_value_t = 60)]
    heartbeat: u16,
    /// Worker threads. 1 (the default) runs the broker as one event loop, which on
    /// small machines costs the least CPU per message (no cross-thread wake-ups).
    #[arg(long, env = "BROKER_THREADS", default_value_t = 1)]
    threads: usize,
    /// Keep durable exchanges, queues and bindings and persistent messages in this
    /// directory, and recover them from it at start. Without it nothing survives a
    /// restart.
    #[arg(long, env = "BROKER_DATA_DIR", value_name = "DIR")]
    data_dir: Option<std::path::PathBuf>,
    /// Block publishers (disk alarm) while the durable queues' logs hold more than this
    /// many bytes. Needs --data-dir. Default: no limit.
    #[arg(long, env = "BROKER_MAX_DISK_BYTES", value_name = "BYTES")]
    max_disk_bytes: Option<u64>,
    /// Block publishers (disk alarm) while the data directory's filesystem has fewer
    /// than this many bytes available, as RabbitMQ's disk_free_limit. Needs --data-dir.
    /// Default: not checked.
    #[arg(long, env = "BROKER_DISK_FREE_LIMIT", value_name = "BYTES")]
    disk_free_limit: Option<u64>,
    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `broker=debug`.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log: String,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let runtime = match args.threads {
        0 | 1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()?,
    };
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
        .init();
    let mut builder = broker::Broker::builder()
        .listen(args.listen)
        .limits(broker::Limits {
            frame_max: args.frame_max.max(4096),
            channel_max: args.channel_max,
            heartbeat: args.heartbeat,
        })
        .loopback_users(
            args.loopback_users
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        );
    if let Some(dir) = &args.data_dir {
        builder = builder.data_dir(dir);
    }
    if let Some(bytes) = args.max_disk_bytes {
        builder = builder.max_disk_bytes(bytes);
    }
    if let Some(bytes) = args.disk_free_limit {
        builder = builder.disk_free_limit(bytes);
    }
    for user in &args.users {
        let (name, password) = user.split_once(':').ok_or("--user takes NAME:PASSWORD")?;
        builder = builder.user(name, password);
    }
    let handle = builder.start().await?;
    println!("broker listening on amqp://{}", handle.local_addr());
    tokio::signal::ctrl_c().await?;
    tracing::info!("shutting down");
    handle.shutdown().await;
    Ok(())
}
