//! The handler's view of the request it is serving: deadline, correlation id,
//! `redelivered`, headers and trace context.
//!
//! The server reads these from the delivery before dispatching and makes them
//! available to the handler through a task-local, so service traits keep plain
//! signatures: inside a handler, [`Context::current`] returns the request's context.

use std::time::{Duration, SystemTime};

use lapin::message::Delivery;
use lapin::types::FieldTable;

use crate::wire::{self, TraceParent};

tokio::task_local! {
    static CURRENT: Context;
}

/// What the server knows about the request a handler is running for.
#[derive(Debug, Clone, Default)]
pub struct Context {
    correlation_id: Option<String>,
    method: Option<String>,
    reply_to: Option<String>,
    deadline: Option<SystemTime>,
    redelivered: bool,
    headers: FieldTable,
    traceparent: Option<TraceParent>,
}

impl Context {
    /// The context of the request the current task is handling, if it is a handler.
    pub fn current() -> Option<Context> {
        CURRENT.try_with(Context::clone).ok()
    }

    /// Reads the context from a delivery's properties.
    pub fn from_delivery(delivery: &Delivery) -> Context {
        let props = &delivery.properties;
        let headers = props.headers().clone().unwrap_or_default();
        let deadline =
            wire::header_i64(Some(&headers), wire::DEADLINE_HEADER).map(wire::from_unix_millis);
        let traceparent =
            wire::header_str(Some(&headers), wire::TRACEPARENT_HEADER).and_then(TraceParent::parse);
        Context {
            correlation_id: props.correlation_id().as_ref().map(|s| s.to_string()),
            method: props
                .kind()
                .as_ref()
                .map(|s| s.to_string())
                .filter(|s| !s.is_empty()),
            reply_to: props.reply_to().as_ref().map(|s| s.to_string()),
            deadline,
            redelivered: delivery.redelivered,
            headers,
            traceparent,
        }
    }

    /// Runs `fut` with this context as [`Context::current`].
    pub async fn scope<F: Future>(self, fut: F) -> F::Output {
        CURRENT.scope(self, fut).await
    }

    /// The request's correlation id.
    pub fn correlation_id(&self) -> Option<&str> {
        self.correlation_id.as_deref()
    }

    /// The method name from the `type` property (`None` for seed-protocol requests).
    pub fn method(&self) -> Option<&str> {
        self.method.as_deref()
    }

    /// Where the reply goes.
    pub fn reply_to(&self) -> Option<&str> {
        self.reply_to.as_deref()
    }

    /// The absolute deadline the client set, if any.
    pub fn deadline(&self) -> Option<SystemTime> {
        self.deadline
    }

    /// Time left until the deadline (`Some(ZERO)` once it has passed, `None` without a
    /// deadline).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline.map(|d| {
            d.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
        })
    }

    /// Whether the deadline has passed.
    pub fn is_expired(&self) -> bool {
        self.remaining() == Some(Duration::ZERO)
    }

    /// Whether the broker delivered this request before (to a worker that did not
    /// ack it, e.g. because it died mid-call).
    pub fn redelivered(&self) -> bool {
        self.redelivered
    }

    /// All AMQP headers of the request.
    pub fn headers(&self) -> &FieldTable {
        &self.headers
    }

    /// The W3C trace context the client sent.
    pub fn traceparent(&self) -> Option<&TraceParent> {
        self.traceparent.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::BasicProperties;

    fn delivery(props: BasicProperties, redelivered: bool) -> Delivery {
        let mut d = Delivery::mock(1, "".into(), "q".into(), redelivered, b"30".to_vec());
        d.properties = props;
        d
    }

    #[test]
    fn reads_every_field_from_the_delivery() {
        let deadline = SystemTime::now() + Duration::from_secs(60);
        let tp = TraceParent::new_root();
        let mut headers = FieldTable::default();
        headers.insert(
            wire::DEADLINE_HEADER.into(),
            lapin::types::AMQPValue::LongLongInt(wire::unix_millis(deadline)),
        );
        wire::insert_str(&mut headers, wire::TRACEPARENT_HEADER, &tp.to_string());
        let props = BasicProperties::default()
            .with_correlation_id("c1".into())
            .with_reply_to("r".into())
            .with_type("fib".into())
            .with_headers(headers);
        let ctx = Context::from_delivery(&delivery(props, true));
        assert_eq!(ctx.correlation_id(), Some("c1"));
        assert_eq!(ctx.reply_to(), Some("r"));
        assert_eq!(ctx.method(), Some("fib"));
        assert!(ctx.redelivered());
        assert_eq!(ctx.traceparent(), Some(&tp));
        let left = ctx.remaining().expect("deadline");
        assert!(left > Duration::from_secs(58) && left <= Duration::from_secs(60));
        assert!(!ctx.is_expired());
    }

    #[test]
    fn seed_requests_have_no_method_and_no_deadline() {
        let ctx = Context::from_delivery(&delivery(BasicProperties::default(), false));
        assert_eq!(ctx.method(), None);
        assert_eq!(ctx.remaining(), None);
        assert!(!ctx.is_expired());
    }

    #[tokio::test]
    async fn current_is_set_only_inside_scope() {
        assert!(Context::current().is_none());
        let ctx = Context {
            correlation_id: Some("x".into()),
            ..Context::default()
        };
        let seen = ctx
            .scope(async { Context::current().and_then(|c| c.correlation_id) })
            .await;
        assert_eq!(seen.as_deref(), Some("x"));
    }
}
