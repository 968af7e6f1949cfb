//! Bounded polling: how a test waits for what it can look at but not subscribe to (a
//! counter, a queue's depth, a listing, a child process, a log file).
//!
//! One copy for the three test trees: `broker/tests` has it as `common::poll`, the
//! root package's `tests/conformance` and `tests/rpc_common` include this file with
//! `#[path]` (it lives here, inside the `broker` package, so that package's tests stay
//! self-contained).
//!
//! Every wait has a limit and names what it waited for, so a timeout reads as "timed
//! out after 5s waiting for <what>", never as a hang. What a test can wait on directly
//! (a delivery, a notification, a join handle) it awaits under `tokio::time::timeout`
//! instead. A check that something does *not* happen within a window is [`never`].

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

/// How long between two looks.
pub const INTERVAL: Duration = Duration::from_millis(20);

/// The condition did not hold in time.
#[derive(Debug, Clone)]
pub struct TimedOut {
    /// What was waited for.
    pub what: String,
    /// For how long.
    pub limit: Duration,
}

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "timed out after {:?} waiting for {}",
            self.limit, self.what
        )
    }
}

impl std::error::Error for TimedOut {}

/// Looks at `check` every [`INTERVAL`] until it yields `Some`, for at most `limit`.
pub async fn until<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> Result<T, TimedOut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    try_until(limit, what, || {
        let look = check();
        async move { Ok(look.await) }
    })
    .await
}

/// [`until`] for a check that can fail: its error ends the wait at once.
pub async fn try_until<T, E, F, Fut>(limit: Duration, what: &str, mut check: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, E>>,
    E: From<TimedOut>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(TimedOut {
                what: what.to_owned(),
                limit,
            }
            .into());
        }
        tokio::time::sleep(INTERVAL).await;
    }
}

/// [`until`] for a plain condition (an atomic, a status flag).
pub async fn until_true(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> bool,
) -> Result<(), TimedOut> {
    until(limit, what, || std::future::ready(check().then_some(()))).await
}

/// [`until`] for code without a runtime (a child process, a listening port): blocks
/// the thread.
pub fn blocking<T>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T, TimedOut> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if std::time::Instant::now() >= deadline {
            return Err(TimedOut {
                what: what.to_owned(),
                limit,
            });
        }
        std::thread::sleep(INTERVAL);
    }
}

/// The negative check: looks at `check` every [`INTERVAL`] for the whole of `window`
/// and returns what it saw the first time the thing that must not happen did
/// (`Ok(None)`: it never did). An error of `check` ends the watch at once.
pub async fn never<T, E, F, Fut>(window: Duration, mut check: F) -> Result<Option<T>, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, E>>,
{
    let watch = async {
        loop {
            if let Some(v) = check().await? {
                return Ok(v);
            }
            tokio::time::sleep(INTERVAL).await;
        }
    };
    match tokio::time::timeout(window, watch).await {
        Ok(happened) => happened.map(Some),
        Err(_) => Ok(None),
    }
}
