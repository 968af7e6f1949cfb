//! Caps the deadline of every call that passes through: a client-wide "no call may
//! take longer than this", whatever the caller asked for.
//!
//! Unlike tower's `TimeoutLayer`, which only stops the local wait, this shortens the
//! deadline that travels with the request, so the broker (`expiration`) and the server
//! (`x-deadline`) drop the work too.

mod future;

use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tower::{Layer, Service};

pub use future::ResponseFuture;

use crate::client::Call;

/// A [`Call`] service whose calls have at most `max` to live.
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
    max: Duration,
}

impl<S> Deadline<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, max: Duration) -> Self {
        Deadline { inner, max }
    }
}

/// Builds [`Deadline`] services.
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    max: Duration,
}

impl DeadlineLayer {
    /// Calls through this layer get at most `max`.
    pub fn new(max: Duration) -> Self {
        DeadlineLayer { max }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline::new(inner, self.max)
    }
}

impl<S: Service<Call>> Service<Call> for Deadline<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut call: Call) -> Self::Future {
        let cap = Instant::now() + self.max;
        if cap < call.deadline {
            call.deadline = cap;
            call.wire_deadline = SystemTime::now() + self.max;
        }
        ResponseFuture::new(self.inner.call(call))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;
    use std::sync::Arc;
    use tower::ServiceExt;

    #[tokio::test(start_paused = true)]
    async fn shortens_long_deadlines_and_keeps_short_ones() {
        let echo = tower::service_fn(|call: Call| async move {
            Ok::<_, std::convert::Infallible>(call.deadline)
        });
        let svc = DeadlineLayer::new(Duration::from_secs(1)).layer(echo);
        let now = Instant::now();
        let long = Call::new(
            "S",
            Arc::from("q"),
            "m",
            Codec::Json,
            vec![],
            Duration::from_secs(60),
        );
        let got = svc.clone().oneshot(long).await.expect("infallible");
        assert_eq!(got, now + Duration::from_secs(1));
        let short = Call::new(
            "S",
            Arc::from("q"),
            "m",
            Codec::Json,
            vec![],
            Duration::from_millis(10),
        );
        let got = svc.oneshot(short).await.expect("infallible");
        assert_eq!(got, now + Duration::from_millis(10));
    }
}
