//! Alarm alarms, as RabbitMQ's: while memory or the store runs short, connections
//! that publish are blocked (see [`crate::connection`]) and consumers keep being
//! served, so they can drain queues and free what the publishers filled.
//!
//! Checked on the server's sweep tick, the memory alarm is raised while the broker's
//! memory (see [`MemoryProbe`]) is over the high-water mark (RabbitMQ's
//! `vm_memory_high_watermark`, by default 0.4 of the machine's RAM); the disk alarm
//! while any of these holds:
//!
//! - the store's sync thread is failing (a full disk, an I/O error) and retrying;
//! - the durable queues' logs hold more than `max_disk_bytes`;
//! - the data directory's filesystem has less than `disk_free_limit` bytes available
//!   (RabbitMQ's `disk_free_limit`; without one, less than [`DISK_FULL_FLOOR`], so a
//!   broker started on a full disk starts with the alarm on, before any write fails).
//!
//! Each clears when its cause no longer holds. Every connection watches one
//! [`tokio::sync::watch`] channel carrying the resource that blocks publishers, if any.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use tokio::sync::watch;

/// An alarm that blocks publishers, by the resource that ran short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alarm {
    /// Over the memory high-water mark.
    Memory,
    /// The store cannot take more data.
    Disk,
}

impl Alarm {
    /// The `connection.blocked` reason, as RabbitMQ words it.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Alarm::Memory => "low on memory",
            Alarm::Disk => "low on disk",
        }
    }
}

/// Measures the memory the broker uses, in bytes (`None`: cannot tell right now).
///
/// The default is the process's resident set (from `/proc/self/statm`); the `broker`
/// binary, whose allocator is jemalloc, passes the bytes jemalloc has allocated, which
/// fall as soon as messages are freed.
pub type MemoryProbe = fn() -> Option<u64>;

/// The memory high-water mark: past it, publishers are blocked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MemoryWatermark {
    /// A fraction of the machine's RAM (RabbitMQ's `vm_memory_high_watermark.relative`,
    /// default 0.4).
    Relative(f64),
    /// A number of bytes (RabbitMQ's `vm_memory_high_watermark.absolute`).
    Absolute(u64),
}

impl Default for MemoryWatermark {
    fn default() -> Self {
        MemoryWatermark::Relative(0.4)
    }
}

impl MemoryWatermark {
    /// The limit in bytes, given the machine's RAM (`None`: unknown, no limit).
    pub fn bytes(self, total_ram: Option<u64>) -> Option<u64> {
        match self {
            MemoryWatermark::Absolute(b) => Some(b),
            MemoryWatermark::Relative(f) => total_ram.map(|t| (t as f64 * f) as u64),
        }
    }
}

/// Why a watermark did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid memory high-water mark '{0}': give a fraction of RAM (0.4) or a size (512MiB, 2GB, 1073741824)"
)]
pub struct WatermarkError(String);

impl FromStr for MemoryWatermark {
    type Err = WatermarkError;

    /// `0.4` (a fraction of RAM, above 0 and at most 1), or a size in bytes with an
    /// optional unit as RabbitMQ takes them: `kB`/`MB`/`GB` (powers of 1000),
    /// `KiB`/`MiB`/`GiB` (powers of 1024).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || WatermarkError(s.to_owned());
        let t = s.trim();
        if t.contains('.') {
            let f: f64 = t.parse().map_err(|_| err())?;
            return if f > 0.0 && f <= 1.0 {
                Ok(MemoryWatermark::Relative(f))
            } else {
                Err(err())
            };
        }
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        let n: u64 = digits.parse().map_err(|_| err())?;
        let scale: u64 = match unit.trim() {
            "" | "B" => 1,
            "kB" | "KB" | "k" | "K" => 1_000,
            "MB" | "M" => 1_000_000,
            "GB" | "G" => 1_000_000_000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            _ => return Err(err()),
        };
        n.checked_mul(scale)
            .filter(|&b| b > 0)
            .map(MemoryWatermark::Absolute)
            .ok_or_else(err)
    }
}

/// Free space under which the data directory's filesystem counts as full when no
/// `disk_free_limit` is configured: less than a few pages, and the next write fails.
pub const DISK_FULL_FLOOR: u64 = 256 * 1024;

/// What the alarms watch, as configured on the builder.
#[derive(Debug, Clone)]
pub(crate) struct AlarmConfig {
    /// Largest total size of the durable queues' logs.
    pub(crate) max_disk_bytes: Option<u64>,
    /// Smallest free space on the data directory's filesystem.
    pub(crate) disk_free_limit: Option<u64>,
    /// The data directory (free space is measured there).
    pub(crate) data_dir: Option<PathBuf>,
    /// The memory high-water mark, in bytes (`None`: not checked).
    pub(crate) memory_limit: Option<u64>,
    /// How memory is measured.
    pub(crate) memory_probe: MemoryProbe,
}

impl Default for AlarmConfig {
    fn default() -> Self {
        Self {
            max_disk_bytes: None,
            disk_free_limit: None,
            data_dir: None,
            memory_limit: None,
            memory_probe: resident_memory,
        }
    }
}

/// Why an alarm is on.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cause {
    /// The broker uses `used` bytes, over the high-water mark `limit`.
    Memory { used: u64, limit: u64 },
    /// The sync thread's writes fail.
    WritesFailing,
    /// The logs hold `bytes`, over `limit`.
    OverLimit { bytes: u64, limit: u64 },
    /// `free` bytes available on the data directory's filesystem, under `limit`.
    LowFree { free: u64, limit: u64 },
}

impl Cause {
    fn resource(&self) -> Alarm {
        match self {
            Cause::Memory { .. } => Alarm::Memory,
            _ => Alarm::Disk,
        }
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::Memory { used, limit } => write!(
                f,
                "memory use {used} bytes, over the high-water mark of {limit} bytes"
            ),
            Cause::WritesFailing => f.write_str("store writes are failing"),
            Cause::OverLimit { bytes, limit } => write!(
                f,
                "the store holds {bytes} bytes, over max_disk_bytes = {limit}"
            ),
            Cause::LowFree { free, limit } => write!(
                f,
                "{free} bytes free on the data directory's filesystem, under disk_free_limit = {limit}"
            ),
        }
    }
}

/// The alarm state shared by all connections.
#[derive(Debug)]
pub(crate) struct Alarms {
    config: AlarmConfig,
    tx: watch::Sender<Option<Alarm>>,
    /// Each resource's alarm, for logging its changes and for the management API.
    state: parking_lot::Mutex<[bool; 2]>,
    /// The memory measured on the last check, in bytes.
    memory_used: std::sync::atomic::AtomicU64,
}

impl Default for Alarms {
    fn default() -> Self {
        Self::new(AlarmConfig::default())
    }
}

impl Alarms {
    pub(crate) fn new(config: AlarmConfig) -> Self {
        Self {
            config,
            tx: watch::Sender::new(None),
            state: parking_lot::Mutex::new([false; 2]),
            memory_used: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A receiver that sees every change: the resource blocking publishers, if any.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Option<Alarm>> {
        self.tx.subscribe()
    }

    /// Whether any alarm is on.
    #[cfg(test)]
    pub(crate) fn is_on(&self) -> bool {
        self.tx.borrow().is_some()
    }

    /// The memory high-water mark in bytes, if one is set.
    pub(crate) fn memory_limit(&self) -> Option<u64> {
        self.config.memory_limit
    }

    /// The memory measured on the last check.
    pub(crate) fn memory_used(&self) -> u64 {
        self.memory_used.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the memory and the disk alarm are on, in that order.
    pub(crate) fn state(&self) -> [bool; 2] {
        *self.state.lock()
    }

    /// Re-evaluates the alarms from memory use, the sync thread's state and the logs'
    /// size (cheap: called every sweep tick). Logs when one is raised or cleared.
    pub(crate) fn check(&self, writes_failing: bool, store_bytes: u64) {
        let memory = self.memory_cause();
        let disk = if writes_failing {
            Some(Cause::WritesFailing)
        } else if let Some(limit) = self.config.max_disk_bytes.filter(|&l| store_bytes > l) {
            Some(Cause::OverLimit {
                bytes: store_bytes,
                limit,
            })
        } else {
            self.low_free_space()
        };
        {
            let mut state = self.state.lock();
            for (i, (name, cause)) in [("memory", &memory), ("disk", &disk)]
                .into_iter()
                .enumerate()
            {
                if state[i] == cause.is_some() {
                    continue;
                }
                state[i] = cause.is_some();
                match cause {
                    Some(cause) => tracing::warn!("{name} alarm: {cause}; publishers blocked"),
                    None => tracing::info!("{name} alarm cleared"),
                }
            }
        }
        let blocking = memory.or(disk).map(|c| c.resource());
        self.tx.send_if_modified(|current| {
            if *current == blocking {
                return false;
            }
            if blocking.is_none() {
                tracing::info!("publishers unblocked");
            }
            *current = blocking;
            true
        });
    }

    fn memory_cause(&self) -> Option<Cause> {
        let limit = self.config.memory_limit?;
        let used = (self.config.memory_probe)()?;
        self.memory_used
            .store(used, std::sync::atomic::Ordering::Relaxed);
        (used > limit).then_some(Cause::Memory { used, limit })
    }

    fn low_free_space(&self) -> Option<Cause> {
        let dir = self.config.data_dir.as_ref()?;
        let limit = self.config.disk_free_limit.unwrap_or(DISK_FULL_FLOOR);
        match available_space(dir) {
            Ok(free) if free < limit => Some(Cause::LowFree { free, limit }),
            Ok(_) => None,
            Err(err) => {
                tracing::debug!(%err, dir = %dir.display(), "could not measure free space");
                None
            }
        }
    }
}

/// Resident memory of this process in bytes (Linux: the second field of
/// `/proc/self/statm`, in pages).
pub fn resident_memory() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

#[cfg(unix)]
fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

#[cfg(not(unix))]
fn page_size() -> u64 {
    4096
}

/// The machine's RAM in bytes (Linux: `MemTotal` of `/proc/meminfo`).
pub fn total_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Bytes available to unprivileged users on the filesystem holding `dir`.
#[cfg(unix)]
fn available_space(dir: &Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(dir)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Free space is not measured on this platform.
#[cfg(not(unix))]
fn available_space(_dir: &Path) -> std::io::Result<u64> {
    Ok(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_writes_raise_the_alarm_until_they_succeed() -> Result<(), watch::error::RecvError> {
        let alarm = Alarms::default();
        let mut rx = alarm.subscribe();
        alarm.check(false, u64::MAX);
        assert!(!alarm.is_on(), "no limit configured");
        alarm.check(true, 0);
        assert!(alarm.is_on());
        assert!(rx.has_changed()?);
        assert_eq!(*rx.borrow_and_update(), Some(Alarm::Disk));
        alarm.check(true, 0);
        assert!(!rx.has_changed()?, "no change, no wake-up");
        alarm.check(false, 0);
        assert!(!alarm.is_on());
        Ok(())
    }

    #[test]
    fn the_size_limit_is_exclusive() {
        let alarm = Alarms::new(AlarmConfig {
            max_disk_bytes: Some(100),
            ..AlarmConfig::default()
        });
        alarm.check(false, 100);
        assert!(!alarm.is_on());
        alarm.check(false, 101);
        assert!(alarm.is_on());
        alarm.check(false, 99);
        assert!(!alarm.is_on());
    }

    #[cfg(unix)]
    #[test]
    fn free_space_below_the_limit_raises_the_alarm() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let free = available_space(dir.path())?;
        assert!(free > 0);
        let alarm = Alarms::new(AlarmConfig {
            disk_free_limit: Some(u64::MAX),
            data_dir: Some(dir.path().to_path_buf()),
            ..AlarmConfig::default()
        });
        alarm.check(false, 0);
        assert!(alarm.is_on());
        let alarm = Alarms::new(AlarmConfig {
            disk_free_limit: Some(1),
            data_dir: Some(dir.path().to_path_buf()),
            ..AlarmConfig::default()
        });
        alarm.check(false, 0);
        assert!(!alarm.is_on());
        Ok(())
    }

    #[test]
    fn watermarks_parse_as_rabbitmq_writes_them() {
        use MemoryWatermark::{Absolute, Relative};
        assert_eq!("0.4".parse(), Ok(Relative(0.4)));
        assert_eq!("1.0".parse(), Ok(Relative(1.0)));
        assert_eq!("1073741824".parse(), Ok(Absolute(1 << 30)));
        assert_eq!("512MiB".parse(), Ok(Absolute(512 << 20)));
        assert_eq!("2GB".parse(), Ok(Absolute(2_000_000_000)));
        assert_eq!("64 kB".parse(), Ok(Absolute(64_000)));
        for bad in [
            "0.0",
            "1.5",
            "-1",
            "0",
            "12XB",
            "",
            "MiB",
            "99999999999999999999GiB",
        ] {
            assert!(bad.parse::<MemoryWatermark>().is_err(), "{bad:?} parsed");
        }
        assert_eq!(Relative(0.5).bytes(Some(1000)), Some(500));
        assert_eq!(Relative(0.5).bytes(None), None);
        assert_eq!(Absolute(7).bytes(None), Some(7));
    }

    static FAKE_MEMORY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

    fn fake_probe() -> Option<u64> {
        Some(FAKE_MEMORY.load(std::sync::atomic::Ordering::Relaxed))
    }

    #[test]
    fn memory_over_the_mark_blocks_with_its_own_reason_and_wins_over_disk() {
        let alarm = Alarms::new(AlarmConfig {
            memory_limit: Some(100),
            memory_probe: fake_probe,
            ..AlarmConfig::default()
        });
        let rx = alarm.subscribe();
        let set = |b| FAKE_MEMORY.store(b, std::sync::atomic::Ordering::Relaxed);
        set(100);
        alarm.check(false, 0);
        assert_eq!(*rx.borrow(), None, "the mark itself is allowed");
        set(101);
        alarm.check(false, 0);
        assert_eq!(*rx.borrow(), Some(Alarm::Memory));
        assert_eq!(Alarm::Memory.reason(), "low on memory");
        assert_eq!(alarm.state(), [true, false]);
        assert_eq!(alarm.memory_used(), 101);
        alarm.check(true, 0);
        assert_eq!(*rx.borrow(), Some(Alarm::Memory));
        assert_eq!(alarm.state(), [true, true]);
        set(50);
        alarm.check(true, 0);
        assert_eq!(
            *rx.borrow(),
            Some(Alarm::Disk),
            "the disk alarm still holds"
        );
        alarm.check(false, 0);
        assert_eq!(*rx.borrow(), None);
        assert_eq!(alarm.state(), [false, false]);
    }
}
