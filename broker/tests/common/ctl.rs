//! `broker ctl`, the binary's client of the management API, run as a process.

#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Stdio};

/// Runs `broker ctl --url BASE ARGS` with `stdin`; (exit code, stdout, stderr).
pub async fn run_with_input(
    base: &str,
    args: &[&str],
    stdin: &str,
) -> anyhow::Result<(i32, String, String)> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_broker"));
    cmd.arg("ctl").arg("--url").arg(base).args(args);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let stdin = stdin.to_owned();
    let out = tokio::task::spawn_blocking(move || -> anyhow::Result<std::process::Output> {
        let mut child = cmd.spawn()?;
        if let Some(mut input) = child.stdin.take() {
            input.write_all(stdin.as_bytes())?;
        }
        Ok(child.wait_with_output()?)
    })
    .await??;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout)?,
        String::from_utf8(out.stderr)?,
    ))
}

/// [`run_with_input`] with nothing on stdin.
pub async fn run(base: &str, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
    run_with_input(base, args, "").await
}
