//! A small tmpfs mounted on a temporary directory, for the tests that need a full disk.
//! Mounting needs root: without it [`Tmpfs::mount`] fails with a message saying so
//! (the test fails, it never passes silently).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs, unmounted (and its directory removed) when dropped, also when
/// the test fails.
pub struct Tmpfs {
    dir: tempfile::TempDir,
    mounted: bool,
}

/// The file [`Tmpfs::fill`] writes.
const FILLER: &str = "filler";

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=`, e.g. `"4m"`).
    pub fn mount(size: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "this test needs root to mount a {size} tmpfs (mount said: {})",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(Self { dir, mounted: true })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A directory on the tmpfs (not created).
    pub fn join(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a filler file until the filesystem is full (`ENOSPC`).
    pub fn fill(&self) -> anyhow::Result<()> {
        let mut f = std::fs::File::create(self.dir.path().join(FILLER))?;
        let chunk = vec![0x55u8; 4096];
        loop {
            if let Err(e) = f.write_all(&chunk) {
                anyhow::ensure!(e.raw_os_error() == Some(28), "filling the tmpfs: {e}");
                return Ok(());
            }
        }
    }

    /// Removes the filler file: the space is free again.
    pub fn free(&self) -> anyhow::Result<()> {
        std::fs::remove_file(self.dir.path().join(FILLER))?;
        Ok(())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if self.mounted {
            // Lazy: a broker process still holding files must not keep it mounted.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}
