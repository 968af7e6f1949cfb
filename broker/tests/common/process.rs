//! The real `broker` binary as a child process, for the tests that kill it, measure
//! its memory or read its log.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `broker` process; killed when dropped, so a failing test leaves none
/// behind.
pub struct BrokerProcess {
    child: Child,
    /// Where it listens for AMQP.
    pub addr: SocketAddr,
    /// `amqp://guest:guest@ADDR/%2f`.
    pub url: String,
    /// Its stderr (the log), collected by a thread as it comes.
    log: Arc<Mutex<String>>,
}

impl BrokerProcess {
    /// Starts `broker ARGS` (with `RUST_LOG` unset and no colours) and waits for its
    /// `broker listening on amqp://ADDR` line on stdout.
    pub fn start<I, S>(args: I) -> anyhow::Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_broker"));
        cmd.args(args);
        Self::start_command(cmd)
    }

    /// As [`start`](Self::start), with the broker's open-descriptor limit
    /// (`RLIMIT_NOFILE`) lowered to `limit` (by `sh -c 'ulimit -n LIMIT; exec broker'`).
    pub fn start_with_fd_limit<I, S>(limit: u64, args: I) -> anyhow::Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_broker"))
            .args(args);
        Self::start_command(cmd)
    }

    fn start_command(mut cmd: Command) -> anyhow::Result<Self> {
        let mut child = cmd
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let log = Arc::new(Mutex::new(String::new()));
        if let Some(stderr) = child.stderr.take() {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Ok(mut l) = log.lock() {
                        l.push_str(&line);
                        l.push('\n');
                    }
                }
            });
        }
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut reader = BufReader::new(stdout);
        let addr: SocketAddr = loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                let log = log.lock().map(|l| l.clone()).unwrap_or_default();
                anyhow::bail!("broker exited before listening: {log}");
            }
            if let Some(addr) = line.trim().strip_prefix("broker listening on amqp://") {
                break addr.parse()?;
            }
        };
        // Keep draining stdout so the broker never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        Ok(Self {
            child,
            addr,
            url: format!("amqp://guest:guest@{addr}/%2f"),
            log,
        })
    }

    /// `broker --listen 127.0.0.1:0 --management-listen off --log warn EXTRA...`: the
    /// binary as the memory and slow-client tests run it.
    pub fn quiet(extra: &[&str]) -> anyhow::Result<Self> {
        let mut args = vec![
            "--listen",
            "127.0.0.1:0",
            "--management-listen",
            "off",
            "--log",
            "warn",
        ];
        args.extend_from_slice(extra);
        Self::start(args)
    }

    /// [`quiet`](Self::quiet) on the data directory `dir`: the binary as the crash and
    /// store tests run it.
    pub fn on_data_dir(dir: &std::path::Path) -> anyhow::Result<Self> {
        let quiet = [
            "--listen",
            "127.0.0.1:0",
            "--management-listen",
            "off",
            "--log",
            "warn",
        ];
        let mut args: Vec<&OsStr> = quiet.iter().map(OsStr::new).collect();
        args.extend([OsStr::new("--data-dir"), dir.as_os_str()]);
        Self::start(args)
    }

    /// Its resident memory (Linux: `VmRSS`), in bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// The highest resident memory seen over `span`, sampled every 20 ms.
    pub async fn peak_rss(&self, span: Duration) -> u64 {
        let until = Instant::now() + span;
        let mut peak = 0;
        while Instant::now() < until {
            peak = peak.max(self.rss_bytes().unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        peak
    }

    /// How many file descriptors it has open (Linux: `/proc/PID/fd`).
    pub fn fd_count(&self) -> Option<usize> {
        Some(
            std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
                .ok()?
                .count(),
        )
    }

    /// The log so far, once it holds `line` (the log arrives on its own pipe, so a
    /// line written before the listening line may still be on its way): at most 5 s.
    pub fn log_once_it_has(&self, line: &str) -> String {
        let log = || self.log.lock().map(|l| l.clone()).unwrap_or_default();
        // Not there after 5 s: the caller's assertion on the log shows what it holds.
        super::poll::blocking(Duration::from_secs(5), line, || {
            Some(log()).filter(|l| l.contains(line))
        })
        .unwrap_or_else(|_| log())
    }

    /// SIGKILL, and waits for it to be gone.
    pub fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
