//! `broker`: the built-in AMQP 0-9-1 broker as a standalone server, and `broker ctl`,
//! a `rabbitmqctl`-like client of its management API.

use std::net::SocketAddr;

use clap::{Parser, Subcommand};

mod config;
mod ctl;

/// jemalloc gives freed memory back to the system, so the broker's resident memory
/// falls again after a load (see `broker::allocator`).
#[cfg(all(feature = "jemalloc", unix, not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: broker::allocator::Jemalloc = broker::allocator::Jemalloc;

/// The management API's address when `--management-listen` is not given.
const DEFAULT_MANAGEMENT: &str = "127.0.0.1:15672";
/// The TLS port's address when a certificate is given without `--tls-listen`
/// (RabbitMQ's amqps port).
const DEFAULT_TLS_LISTEN: &str = "0.0.0.0:5671";

/// An AMQP 0-9-1 broker that clients accept as RabbitMQ (single node).
#[derive(Debug, Parser)]
#[command(
    name = "broker",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// TOML config file: every serving flag is a key (`max_connections = 100`);
    /// command-line flags and environment variables override it. See
    /// broker.example.toml.
    #[arg(long, env = "BROKER_CONFIG", value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Print the effective settings (after --config, environment and flags) as TOML,
    /// passwords masked, and exit.
    #[arg(long)]
    print_config: bool,
    #[command(flatten)]
    args: Args,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Talk to a running broker's management API, as rabbitmqctl does.
    Ctl(ctl::CtlArgs),
}

/// Serving options.
#[derive(Debug, clap::Args)]
struct Args {
    /// Address to listen on for AMQP connections.
    #[arg(long, env = "BROKER_LISTEN", default_value = "0.0.0.0:5672")]
    listen: SocketAddr,
    /// Extra user as NAME:PASSWORD[:TAG,TAG...] (repeatable), with full rights on `/`
    /// unless `--permission` says otherwise. Tags default to `administrator`.
    /// `guest:guest` exists unless deleted at run time with --data-dir (users and
    /// permissions persist there; these are applied on top at every start and win).
    /// BROKER_USER gives one user; list several in the config file.
    #[arg(
        long = "user",
        env = "BROKER_USER",
        value_name = "NAME:PASSWORD[:TAGS]"
    )]
    users: Vec<String>,
    /// A vhost to create besides `/` (repeatable; BROKER_VHOSTS takes a
    /// comma-separated list). With --data-dir vhosts also persist, so naming one that
    /// already exists there is fine.
    #[arg(
        long = "vhost",
        value_name = "NAME",
        env = "BROKER_VHOSTS",
        value_delimiter = ','
    )]
    vhosts: Vec<String>,
    /// A user's rights in a vhost as USER:VHOST:CONFIGURE:WRITE:READ, regular
    /// expressions as `rabbitmqctl set_permissions` takes them (repeatable; replaces
    /// the full rights `--user` gives on that vhost). The vhost may be one given with
    /// --vhost or one kept in --data-dir; an unknown one stops the start.
    /// BROKER_PERMISSION gives one.
    #[arg(
        long = "permission",
        env = "BROKER_PERMISSION",
        value_name = "USER:VHOST:CONF:WRITE:READ"
    )]
    permissions: Vec<String>,
    /// Users allowed to connect only from loopback, comma-separated ("" for none).
    #[arg(long, env = "BROKER_LOOPBACK_USERS", default_value = "guest")]
    loopback_users: String,
    /// Largest frame offered in connection.tune, in bytes.
    #[arg(long, env = "BROKER_FRAME_MAX", default_value_t = 131_072)]
    frame_max: u32,
    /// Highest channel number offered in connection.tune.
    #[arg(long, env = "BROKER_CHANNEL_MAX", default_value_t = 2047)]
    channel_max: u16,
    /// Heartbeat offered in connection.tune, in seconds (0 disables).
    #[arg(long, env = "BROKER_HEARTBEAT", default_value_t = 60)]
    heartbeat: u16,
    /// Largest message body accepted, in bytes (RabbitMQ's `max_message_size`; at
    /// most 512 MiB). Larger publishes get 406 PRECONDITION_FAILED.
    #[arg(long, env = "BROKER_MAX_MESSAGE_SIZE", default_value_t = broker::Limits::DEFAULT_MAX_MESSAGE_SIZE,
          value_parser = clap::value_parser!(u64).range(1..=broker::Limits::MAX_MESSAGE_SIZE_CAP))]
    max_message_size: u64,
    /// Most connections served at once (RabbitMQ's `connection_max`); beyond it new
    /// connections wait unaccepted until one closes. Unlimited by default.
    #[arg(long, env = "BROKER_MAX_CONNECTIONS", value_name = "N")]
    max_connections: Option<usize>,
    /// How long a delivery may stay unacked, in milliseconds (RabbitMQ's
    /// `consumer_timeout`, default 30 minutes; 0: no limit). Past it the channel is
    /// closed with 406 PRECONDITION_FAILED and its deliveries go back to their queues.
    /// A queue's `x-consumer-timeout` overrides it.
    #[arg(
        long,
        env = "BROKER_CONSUMER_TIMEOUT",
        value_name = "MS",
        default_value_t = 1_800_000
    )]
    consumer_timeout: u64,
    /// On a consumer timeout, cancel the consumer (`basic.cancel`, its deliveries go
    /// back) instead of closing the channel.
    #[arg(long, env = "BROKER_CONSUMER_TIMEOUT_CANCELS")]
    consumer_timeout_cancels: bool,
    /// Worker threads. 1 (the default) runs the broker as one event loop, which on
    /// small machines costs the least CPU per message (no cross-thread wake-ups).
    #[arg(long, env = "BROKER_THREADS", default_value_t = 1)]
    threads: usize,
    /// Keep durable exchanges, queues and bindings, persistent messages, vhosts, and
    /// users with their permissions in this directory, and recover them from it at
    /// start. Without it nothing survives a restart.
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
    /// Block publishers (memory alarm, `connection.blocked` "low on memory") while the
    /// broker uses more memory than this: a fraction of the machine's RAM (0.4) or a
    /// size (512MiB, 2GB, bytes), as RabbitMQ's vm_memory_high_watermark.
    #[arg(
        long,
        env = "BROKER_MEMORY_HIGH_WATERMARK",
        value_name = "FRACTION|SIZE",
        default_value = "0.4"
    )]
    memory_high_watermark: broker::MemoryWatermark,
    /// Address of the management HTTP API and `/metrics`, or `off` [default:
    /// 127.0.0.1:15672; if that default is taken the broker starts without it].
    #[arg(long, env = "BROKER_MANAGEMENT_LISTEN", value_name = "ADDR|off")]
    management_listen: Option<String>,
    /// PEM certificate chain (leaf first) for AMQP over TLS. With --tls-key, the
    /// broker also listens for amqps on --tls-listen.
    #[arg(
        long,
        env = "BROKER_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(
        long,
        env = "BROKER_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<std::path::PathBuf>,
    /// Address to listen on for AMQP over TLS [default: 0.0.0.0:5671 when
    /// --tls-cert and --tls-key are given; off without them].
    #[arg(
        long,
        env = "BROKER_TLS_LISTEN",
        value_name = "ADDR",
        requires = "tls_cert"
    )]
    tls_listen: Option<SocketAddr>,
    /// Serve the management API as HTTPS with the --tls-cert certificate.
    #[arg(long, env = "BROKER_MANAGEMENT_TLS", requires = "tls_cert")]
    management_tls: bool,
    /// Permit queues that are neither durable nor exclusive (RabbitMQ's deprecated
    /// feature `transient_nonexcl_queues`). `false` refuses declaring a new one as
    /// RabbitMQ 4.3 does: 541 INTERNAL_ERROR, closing the connection.
    #[arg(
        long = "deprecated-features.permit.transient-nonexcl-queues",
        env = "BROKER_DEPRECATED_FEATURES_PERMIT_TRANSIENT_NONEXCL_QUEUES",
        value_name = "true|false",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    permit_transient_nonexcl_queues: bool,
    /// Permit global QoS (`basic.qos` with global = true; RabbitMQ's deprecated
    /// feature `global_qos`). `false` applies it per consumer, as RabbitMQ 4.3 does.
    #[arg(
        long = "deprecated-features.permit.global-qos",
        env = "BROKER_DEPRECATED_FEATURES_PERMIT_GLOBAL_QOS",
        value_name = "true|false",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    permit_global_qos: bool,
    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `broker=debug`.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log: String,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let loaded = match config::load::<Cli>(std::env::args_os().collect()) {
        Ok(loaded) => loaded,
        Err(config::LoadError::Clap(e)) => e.exit(),
        Err(config::LoadError::Config(e)) => {
            eprintln!("Error: {e}");
            std::process::exit(1);
        }
    };
    let cli = loaded.cli;
    if let Some(Command::Ctl(ctl)) = cli.command {
        let mut stdout = std::io::stdout().lock();
        if let Err(e) = ctl::run(&ctl, &mut stdout) {
            eprintln!("Error: {e}");
            std::process::exit(match e {
                ctl::CtlError::Unreachable { .. } => 69,
                _ => 1,
            });
        }
        return Ok(());
    }
    if cli.print_config {
        print!("{}", config::to_toml(&loaded.settings));
        return Ok(());
    }
    let args = cli.args;
    let runtime = match args.threads {
        0 | 1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()?,
    };
    if let Err(e) = runtime.block_on(serve(args, loaded.file.as_deref(), &loaded.settings)) {
        // Display, not Debug: "cannot read TLS key file /path: ...".
        eprintln!("Error: {e}");
        std::process::exit(1);
    }
    Ok(())
}

async fn serve(
    args: Args,
    config_file: Option<&std::path::Path>,
    settings: &[config::Setting],
) -> Result<(), Box<dyn std::error::Error>> {
    // Logs go to stderr: stdout carries only the listening lines scripts read.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
        .with_writer(std::io::stderr)
        .init();
    config::log(config_file, settings);
    let mut builder = broker::Broker::builder()
        .listen(args.listen)
        .deprecated_features(broker::DeprecatedFeatures {
            transient_nonexcl_queues: args.permit_transient_nonexcl_queues,
            global_qos: args.permit_global_qos,
        })
        .consumer_timeout(broker::ConsumerTimeout {
            default: (args.consumer_timeout > 0)
                .then(|| std::time::Duration::from_millis(args.consumer_timeout)),
            cancels: args.consumer_timeout_cancels,
        })
        .limits(broker::Limits {
            frame_max: args.frame_max.max(4096),
            channel_max: args.channel_max,
            heartbeat: args.heartbeat,
            max_message_size: args.max_message_size,
            max_connections: args.max_connections,
        })
        .loopback_users(
            args.loopback_users
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        );
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        // A missing or bad file stops the start, naming the file.
        let config = broker::TlsConfig::from_pem_files(cert, key)?;
        let at = match args.tls_listen {
            Some(at) => at,
            None => DEFAULT_TLS_LISTEN.parse::<SocketAddr>()?,
        };
        builder = builder
            .tls(config)
            .tls_listen(at)
            .management_tls(args.management_tls);
    }
    if let Some(dir) = &args.data_dir {
        builder = builder.data_dir(dir);
    }
    if let Some(bytes) = args.max_disk_bytes {
        builder = builder.max_disk_bytes(bytes);
    }
    if let Some(bytes) = args.disk_free_limit {
        builder = builder.disk_free_limit(bytes);
    }
    builder = builder.memory_high_watermark(args.memory_high_watermark);
    #[cfg(all(feature = "jemalloc", unix, not(target_env = "msvc")))]
    {
        builder = builder.memory_probe(broker::allocator::allocated);
    }
    for vhost in args.vhosts.iter().filter(|v| !v.is_empty()) {
        builder = builder.vhost(vhost);
    }
    for user in &args.users {
        let (name, rest) = user
            .split_once(':')
            .ok_or("--user takes NAME:PASSWORD[:TAGS]")?;
        builder = match rest.split_once(':') {
            None => builder.user(name, rest),
            Some((password, tags)) => {
                let tags: Vec<&str> = tags.split(',').filter(|t| !t.is_empty()).collect();
                builder
                    .user_with_tags(name, password, &tags)
                    .permissions(name, "/", ".*", ".*", ".*")?
            }
        };
    }
    for p in &args.permissions {
        let fields: Vec<&str> = p.splitn(5, ':').collect();
        let [user, vhost, configure, write, read] = fields[..] else {
            return Err("--permission takes USER:VHOST:CONFIGURE:WRITE:READ".into());
        };
        builder = builder.permissions(user, vhost, configure, write, read)?;
    }
    let (management, explicit) = match args.management_listen.as_deref() {
        Some("off" | "none" | "") => (None, true),
        Some(addr) => (Some(addr.parse::<SocketAddr>()?), true),
        None => (Some(DEFAULT_MANAGEMENT.parse::<SocketAddr>()?), false),
    };
    let mut unavailable = None;
    let handle = match management {
        Some(at) => match builder.clone().management(at).start().await {
            Err(broker::StartError::Listen { source, .. })
                if !explicit && source.kind() == std::io::ErrorKind::AddrInUse =>
            {
                unavailable = Some(at);
                builder.start().await?
            }
            other => other?,
        },
        None => builder.start().await?,
    };
    // The first line on stdout is the AMQP address (scripts and tests read it).
    println!("broker listening on amqp://{}", handle.local_addr());
    if let Some(at) = handle.tls_addr() {
        println!("broker listening on amqps://{at}");
    }
    if let Some(at) = handle.management_addr() {
        let https = args.management_tls && args.tls_cert.is_some();
        println!(
            "broker management API on {}://{at}",
            if https { "https" } else { "http" }
        );
    }
    if let Some(at) = unavailable {
        tracing::warn!(%at, "management address in use; running without the management API");
    }
    tokio::signal::ctrl_c().await?;
    tracing::info!("shutting down");
    handle.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_loads_and_documents_every_key() {
        let example = include_str!("../../../broker.example.toml");
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        std::io::Write::write_all(&mut f, example.as_bytes()).expect("write");
        let argv = vec!["broker".into(), "--config".into(), f.path().into()];
        let loaded = match config::load::<Cli>(argv) {
            Ok(l) => l,
            Err(e) => panic!("the example does not load: {e:?}"),
        };
        assert_eq!(loaded.cli.args.listen.port(), 5672);
        for s in &loaded.settings {
            let key = s.key.replace('-', "_");
            assert!(
                example.contains(&format!("\n{key} = "))
                    || example.contains(&format!("# {key} = ")),
                "broker.example.toml does not document `{key}`"
            );
        }
        // Its values are the defaults.
        let defaults = match config::load::<Cli>(vec!["broker".into()]) {
            Ok(l) => l.settings,
            Err(e) => panic!("{e:?}"),
        };
        for d in defaults
            .iter()
            .filter(|d| d.source == config::Source::Default)
        {
            let from_example = loaded.settings.iter().find(|s| s.key == d.key);
            assert_eq!(
                from_example.map(|s| &s.values),
                Some(&d.values),
                "example value of {}",
                d.key
            );
        }
    }
}
