//! Broker processes and their CPU accounting, read the same way for both brokers:
//! `utime + stime` from `/proc/<pid>/stat`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// CPU time a process has used so far (user + system), from `/proc/<pid>/stat`.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64(
        (utime + stime) as f64 / clock_ticks() as f64,
    ))
}

/// Context switches (voluntary and not) of every thread of a process so far, from
/// `/proc/<pid>/task/*/status`: how often its threads went to sleep or were put aside.
pub fn context_switches(pid: u32) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(status) = std::fs::read_to_string(task.ok()?.path().join("status")) else {
            continue; // a thread that ended meanwhile
        };
        for line in status.lines() {
            if let Some(n) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total += n.trim().parse::<u64>().ok()?;
            }
        }
    }
    Some(total)
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn clock_ticks() -> u64 {
    // USER_HZ is 100 on every Linux this runs on; `getconf CLK_TCK` confirms it.
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// The pid of the RabbitMQ node on this machine (its `beam.smp` process).
pub fn rabbitmq_pid() -> Option<u32> {
    let mut best: Option<(u32, u64)> = None;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "beam.smp" {
            let cmdline =
                std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if cmdline.contains("rabbit") {
                // Several nodes (e.g. a CLI tool) may run; the broker is the busiest.
                let cpu = cpu_time(pid).map_or(0, |d| d.as_millis() as u64);
                if best.is_none_or(|(_, c)| cpu > c) {
                    best = Some((pid, cpu));
                }
            }
        }
    }
    best.map(|(pid, _)| pid)
}

/// The built-in broker, started as a separate process (this binary in broker mode).
#[derive(Debug)]
pub struct OwnBroker {
    child: Child,
    /// Where it listens.
    pub url: String,
}

impl OwnBroker {
    /// Starts `bench --serve-broker` (with `--data-dir DIR` when given) and reads the
    /// address it prints.
    pub fn spawn(threads: usize, data_dir: Option<&Path>) -> anyhow::Result<Self> {
        let mut args = vec!["--serve-broker".as_ref()];
        if let Some(dir) = data_dir {
            args.extend(["--data-dir".as_ref(), dir.as_os_str()]);
        }
        let (child, url) = spawn_self(&args, threads)?;
        anyhow::ensure!(url.starts_with("amqp://"), "broker child said {url:?}");
        Ok(Self { child, url })
    }

    /// Its pid, for CPU and memory accounting.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts this binary with `args` and reads the first line it prints.
pub fn spawn_self<S: AsRef<std::ffi::OsStr>>(
    args: &[S],
    threads: usize,
) -> anyhow::Result<(Child, String)> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(args)
        .env("BENCH_BROKER_THREADS", threads.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    Ok((child, line.trim().to_owned()))
}

/// Broker mode: serve on 127.0.0.1:0, print the URL, run until killed. With
/// `data_dir`, persistent messages go there.
pub fn serve_broker(data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    // The same runtime choice as the `broker` binary (`--threads`, default 1).
    let threads: usize = std::env::var("BENCH_BROKER_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    let rt = match threads {
        0 | 1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()?,
    };
    rt.block_on(async {
        let mut builder = broker::Broker::builder();
        #[cfg(all(unix, not(target_env = "msvc")))]
        {
            builder = builder.memory_probe(broker::allocator::allocated);
        }
        if let Some(dir) = &data_dir {
            builder = builder.data_dir(dir);
        }
        let handle = builder.start().await?;
        println!("{}", handle.amqp_url());
        std::future::pending::<()>().await;
        #[allow(unreachable_code)]
        Ok(())
    })
}
