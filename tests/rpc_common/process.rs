//! Real processes for the recovery tests: the `broker` binary (killed with SIGKILL and
//! started again on its data dir and port) and the `fib_server` example.
//!
//! The root package cannot name the broker crate's binary with `CARGO_BIN_EXE_*`, so
//! [`binary`] finds it next to the test executable and builds it with cargo first when
//! it is missing.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The bounded wait shared with the other test trees (here for the tests that include
/// this file and `fault.rs` without `rpc_common`).
#[path = "../../broker/tests/common/poll.rs"]
pub mod poll;

/// `target/debug` (or the profile dir the tests run from).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/rpc_recovery-HASH
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

/// The path of `target/<profile>/<rel>`, built with `cargo build <args>` if missing.
pub fn binary(rel: &str, build_args: &[&str]) -> PathBuf {
    let path = profile_dir().join(rel);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .arg("build")
            .args(build_args)
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build {build_args:?} failed");
    }
    assert!(path.exists(), "{} missing after the build", path.display());
    path
}

/// A loopback port free right now (bound to 0, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Waits (bounded) until something accepts TCP on `addr`.
pub fn wait_listening(addr: SocketAddr, within: Duration) {
    let listening = poll::blocking(within, &format!("something to listen on {addr}"), || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
    });
    if let Err(e) = listening {
        panic!("{e}");
    }
}

/// A child process killed (SIGKILL) when dropped.
pub struct Proc(pub Child);

impl Proc {
    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The built-in broker on a fixed port and data dir, so it can be killed and started
/// again where clients expect it.
pub struct Broker {
    bin: PathBuf,
    pub addr: SocketAddr,
    /// The management API (for `broker ctl`), when started with one.
    pub management: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub proc: Option<Proc>,
}

impl Broker {
    /// Starts it on a free port with a fresh data dir.
    pub fn start() -> Broker {
        Broker::start_with(false)
    }

    /// Starts it with its management API on a free port too (for `broker ctl`).
    pub fn start_with_management() -> Broker {
        Broker::start_with(true)
    }

    fn start_with(management: bool) -> Broker {
        let bin = binary("broker", &["-p", "broker", "--bin", "broker"]);
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let management = management.then(|| SocketAddr::from(([127, 0, 0, 1], free_port())));
        let data_dir = std::env::temp_dir().join(format!("rpc-recovery-{}", uuid::Uuid::new_v4()));
        let mut broker = Broker {
            bin,
            addr,
            management,
            data_dir,
            proc: None,
        };
        broker.restart();
        broker
    }

    /// `amqp://guest:guest@ADDR/%2f`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    /// kill -9.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Starts it (again) on the same port and data dir; returns once it listens.
    pub fn restart(&mut self) {
        let child = Command::new(&self.bin)
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--management-listen")
            .arg(self.management.map_or("off".into(), |a| a.to_string()))
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the broker");
        self.proc = Some(Proc(child));
        wait_listening(self.addr, Duration::from_secs(20));
        if let Some(management) = self.management {
            wait_listening(management, Duration::from_secs(20));
        }
    }

    /// `broker ctl --url http://MANAGEMENT ARGS...`; its stdout.
    pub fn ctl(&self, args: &[&str]) -> String {
        let management = self.management.expect("started with a management API");
        let out = Command::new(&self.bin)
            .arg("ctl")
            .arg("--url")
            .arg(format!("http://{management}"))
            .args(args)
            .output()
            .expect("run broker ctl");
        assert!(
            out.status.success(),
            "broker ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Closes every client connection (`broker ctl close-connection`, one by one as
    /// `list-connections` names them); returns how many.
    pub fn close_connections(&self) -> usize {
        let names: Vec<String> = self
            .ctl(&["list-connections", "name"])
            .lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect();
        for name in &names {
            self.ctl(&["close-connection", name, "test"]);
        }
        names.len()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// A `fib_server` example process on `url` serving `queue`, its connection named
/// `connection_name`, printing each handled request id to the file `log` and its
/// logs (warnings, and the recovery lines) to `log` with the extension `err`.
pub fn fib_server(
    url: &str,
    queue: &str,
    connection_name: &str,
    log: &Path,
    env: &[(&str, &str)],
) -> Proc {
    let bin = binary("examples/fib_server", &["--example", "fib_server"]);
    let stdout = std::fs::File::create(log).expect("create the server log");
    let stderr = std::fs::File::create(log.with_extension("err")).expect("create the server log");
    let child = Command::new(bin)
        .env("AMQP_URL", url)
        .env("FIB_SERVER_QUEUE", queue)
        .env("FIB_SERVER_CONNECTION_NAME", connection_name)
        .env("FIB_SERVER_LOG_IDS", "1")
        .env("RUST_LOG", "warn,rpc_core::recovery=info,lapin=off")
        .envs(env.iter().copied())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("start fib_server");
    Proc(child)
}

/// `rabbitmqctl`, or the command line in `RABBITMQCTL` (e.g. RabbitMQ 4's in its
/// chroot: `RABBITMQCTL="../shared/rabbitmq4/ctl.sh rabbitmqctl -n rabbit4a@localhost"`).
fn rabbitmqctl() -> Command {
    let line = std::env::var("RABBITMQCTL").unwrap_or_else(|_| "rabbitmqctl".into());
    let mut words = line.split_whitespace();
    let mut cmd = Command::new(words.next().unwrap_or("rabbitmqctl"));
    cmd.args(words);
    cmd
}

/// RabbitMQ's own connections whose client properties mention `tag` (their
/// `connection_name`), as `rabbitmqctl list_connections pid client_properties` lists
/// them: their pids.
pub fn rabbitmq_connections(tag: &str) -> Vec<String> {
    let out = rabbitmqctl()
        .args(["-q", "list_connections", "pid", "client_properties"])
        .output()
        .expect("run rabbitmqctl");
    assert!(out.status.success(), "rabbitmqctl list_connections failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(tag))
        .filter_map(|l| l.split('\t').next())
        .map(str::to_owned)
        .collect()
}

/// Closes only OUR RabbitMQ connections (`rabbitmqctl close_connection PID test`);
/// the broker is shared, so never all of them. Returns how many.
pub fn rabbitmq_close_connections(tag: &str) -> usize {
    let pids = rabbitmq_connections(tag);
    for pid in &pids {
        let status = rabbitmqctl()
            .args(["-q", "close_connection", pid, "test"])
            .status()
            .expect("run rabbitmqctl");
        assert!(
            status.success(),
            "rabbitmqctl close_connection {pid} failed"
        );
    }
    pids.len()
}
