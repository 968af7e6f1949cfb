//! The disk alarm, as RabbitMQ's: while the store cannot take more data, connections
//! that publish are blocked (see [`crate::connection`]) and consumers keep being
//! served, so they can drain queues and free space.
//!
//! The alarm is raised when any of these holds, checked on the server's sweep tick:
//!
//! - the store's sync thread is failing (a full disk, an I/O error) and retrying;
//! - the durable queues' logs hold more than `max_disk_bytes`;
//! - the data directory's filesystem has less than `disk_free_limit` bytes available
//!   (RabbitMQ's `disk_free_limit`).
//!
//! It clears when none holds any more. Every connection watches one
//! [`tokio::sync::watch`] channel.

use std::path::{Path, PathBuf};

use tokio::sync::watch;

/// The `connection.blocked` reason, as RabbitMQ words a disk alarm.
pub(crate) const BLOCKED_REASON: &str = "low on disk";

/// What the alarm watches, as configured on the builder.
#[derive(Debug, Clone, Default)]
pub(crate) struct AlarmConfig {
    /// Largest total size of the durable queues' logs.
    pub(crate) max_disk_bytes: Option<u64>,
    /// Smallest free space on the data directory's filesystem.
    pub(crate) disk_free_limit: Option<u64>,
    /// The data directory (free space is measured there).
    pub(crate) data_dir: Option<PathBuf>,
}

/// Why the alarm is on.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cause {
    /// The sync thread's writes fail.
    WritesFailing,
    /// The logs hold `bytes`, over `limit`.
    OverLimit { bytes: u64, limit: u64 },
    /// `free` bytes available on the data directory's filesystem, under `limit`.
    LowFree { free: u64, limit: u64 },
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
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
pub(crate) struct DiskAlarm {
    config: AlarmConfig,
    tx: watch::Sender<bool>,
}

impl Default for DiskAlarm {
    fn default() -> Self {
        Self::new(AlarmConfig::default())
    }
}

impl DiskAlarm {
    pub(crate) fn new(config: AlarmConfig) -> Self {
        Self {
            config,
            tx: watch::Sender::new(false),
        }
    }

    /// A receiver that sees every change of the alarm (`true`: publishers blocked).
    pub(crate) fn subscribe(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }

    /// Whether the alarm is on.
    #[cfg(test)]
    pub(crate) fn is_on(&self) -> bool {
        *self.tx.borrow()
    }

    /// Re-evaluates the alarm from the sync thread's state and the logs' size (cheap:
    /// called every sweep tick). Logs when it is raised or cleared.
    pub(crate) fn check(&self, writes_failing: bool, store_bytes: u64) {
        let cause = if writes_failing {
            Some(Cause::WritesFailing)
        } else if let Some(limit) = self.config.max_disk_bytes.filter(|&l| store_bytes > l) {
            Some(Cause::OverLimit {
                bytes: store_bytes,
                limit,
            })
        } else {
            self.low_free_space()
        };
        let on = cause.is_some();
        self.tx.send_if_modified(|state| {
            if *state == on {
                return false;
            }
            *state = on;
            match &cause {
                Some(cause) => {
                    tracing::warn!("disk alarm: {cause}; publishers blocked");
                }
                None => tracing::info!("disk alarm cleared; publishers unblocked"),
            }
            true
        });
    }

    fn low_free_space(&self) -> Option<Cause> {
        let (limit, dir) = (self.config.disk_free_limit?, self.config.data_dir.as_ref()?);
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
        let alarm = DiskAlarm::default();
        let mut rx = alarm.subscribe();
        alarm.check(false, u64::MAX);
        assert!(!alarm.is_on(), "no limit configured");
        alarm.check(true, 0);
        assert!(alarm.is_on());
        assert!(rx.has_changed()?);
        assert!(*rx.borrow_and_update());
        alarm.check(true, 0);
        assert!(!rx.has_changed()?, "no change, no wake-up");
        alarm.check(false, 0);
        assert!(!alarm.is_on());
        Ok(())
    }

    #[test]
    fn the_size_limit_is_exclusive() {
        let alarm = DiskAlarm::new(AlarmConfig {
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
        let alarm = DiskAlarm::new(AlarmConfig {
            disk_free_limit: Some(u64::MAX),
            data_dir: Some(dir.path().to_path_buf()),
            ..AlarmConfig::default()
        });
        alarm.check(false, 0);
        assert!(alarm.is_on());
        let alarm = DiskAlarm::new(AlarmConfig {
            disk_free_limit: Some(1),
            data_dir: Some(dir.path().to_path_buf()),
            ..AlarmConfig::default()
        });
        alarm.check(false, 0);
        assert!(!alarm.is_on());
        Ok(())
    }
}
