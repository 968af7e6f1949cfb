//! The client side: a typed call becomes a [`Call`], goes through a tower stack
//! ending in the [`Transport`], and comes back as a [`Reply`] that is decoded into the
//! method's result or an [`RpcError`].
//!
//! The generated `{Trait}Client` is a thin shell over [`ClientCore`]: it builds the
//! request enum for a method and hands it here.

mod pending;
mod rebuild;
mod reply;
pub mod transport;
mod watch;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lapin::message::Delivery;
use lapin::types::FieldTable;
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tower::{Service, ServiceExt};
use tracing::Instrument;

pub use transport::{ReplyMode, Transport, TransportBuilder};

use crate::codec::{Codec, CodecError};
use crate::context::Context;
use crate::error::{BoxError, RpcError};
use crate::wire::{self, Status, TraceParent};

/// The deadline of a call when neither the client nor the call sets one.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

/// One request on its way to a service queue: what client middleware sees.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Call {
    /// The service (trait) name, for tracing.
    pub service: &'static str,
    /// The routing key: the service queue.
    pub queue: Arc<str>,
    /// The method name (the `type` property); empty sends none.
    pub method: String,
    /// The body's codec (the `content_type` property).
    pub codec: Codec,
    /// The encoded arguments.
    pub body: Vec<u8>,
    /// Unique per call; the reply carries it back.
    pub correlation_id: String,
    /// When the client stops waiting (local monotonic clock).
    pub deadline: Instant,
    /// The same deadline on the wall clock, sent in the `x-deadline` header.
    pub wire_deadline: SystemTime,
    /// The trace context sent in the `traceparent` header.
    pub traceparent: TraceParent,
    /// Extra headers to send.
    pub headers: FieldTable,
}

impl Call {
    /// A call with a fresh correlation id, a deadline `timeout` from now and the
    /// current trace continued (or a new one started).
    pub fn new(
        service: &'static str,
        queue: Arc<str>,
        method: impl Into<String>,
        codec: Codec,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Self {
        let traceparent = Context::current()
            .and_then(|c| c.traceparent().map(TraceParent::child))
            .unwrap_or_else(TraceParent::new_root);
        Call {
            service,
            queue,
            method: method.into(),
            codec,
            body,
            correlation_id: uuid::Uuid::new_v4().simple().to_string(),
            deadline: Instant::now() + timeout,
            wire_deadline: SystemTime::now() + timeout,
            traceparent,
            headers: FieldTable::default(),
        }
    }
}

/// A reply, matched to its call by correlation id.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Reply {
    /// The call's correlation id.
    pub correlation_id: String,
    /// The `x-status` header; a reply without one is `Some(Ok)` (a seed-protocol
    /// server), an unknown value is `None`.
    pub status: Option<Status>,
    /// The codec of the body, from `content_type` (`None`: use the request's).
    pub codec: Option<Codec>,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// Reads a reply from a delivery; `None` without a correlation id.
    pub fn from_delivery(delivery: Delivery) -> Option<Reply> {
        let props = &delivery.properties;
        let correlation_id = props.correlation_id().as_ref()?.to_string();
        let headers = props.headers().as_ref();
        let status = match wire::header_str(headers, wire::STATUS_HEADER) {
            None => Some(Status::Ok),
            Some(s) => Status::parse(s),
        };
        let codec = props
            .content_type()
            .as_ref()
            .and_then(|ct| Codec::from_content_type(Some(ct.as_str())).ok());
        Some(Reply {
            correlation_id,
            status,
            codec,
            body: delivery.data,
        })
    }

    /// Decodes the reply of a call made with `codec` into the method's result; the
    /// handler's error (status `error`) is decoded by `decode_error`
    /// ([`decode_handler_error`] or [`no_handler_error`]).
    pub fn decode<T: DeserializeOwned, E>(
        self,
        codec: Codec,
        decode_error: DecodeErrorFn<E>,
    ) -> Result<T, RpcError<E>> {
        let codec = self.codec.unwrap_or(codec);
        match self.status {
            Some(Status::Ok) => Ok(codec.decode(&self.body)?),
            Some(Status::Error) => Err(RpcError::Handler(decode_error(codec, &self.body)?)),
            Some(status) => Err(RpcError::from_status(
                status,
                codec.decode_message(&self.body),
            )),
            None => Err(RpcError::Codec(CodecError::UnknownStatus(
                "unrecognised x-status".into(),
            ))),
        }
    }
}

/// Decodes the body of an `error` reply into the method's error type.
pub type DecodeErrorFn<E> = fn(Codec, &[u8]) -> Result<E, CodecError>;

/// For methods returning `Result<T, E>`: decodes `E`.
pub fn decode_handler_error<E: DeserializeOwned>(
    codec: Codec,
    body: &[u8],
) -> Result<E, CodecError> {
    codec.decode(body)
}

/// For methods without an error type: an `error` reply is a protocol violation.
pub fn no_handler_error(_: Codec, _: &[u8]) -> Result<Infallible, CodecError> {
    Err(CodecError::UnknownStatus(
        "error (the method has no error type)".into(),
    ))
}

/// A request enum generated by `#[service]`: knows its method name and encodes its
/// arguments.
pub trait ServiceRequest: Send {
    /// The method name (the `type` property).
    fn method(&self) -> &'static str;
    /// The arguments in `codec`.
    fn encode(&self, codec: Codec) -> Result<Vec<u8>, CodecError>;
}

/// What every generated client holds: a transport (any tower service of [`Call`]s)
/// and the per-client settings.
#[derive(Debug, Clone)]
pub struct ClientCore<T> {
    transport: T,
    service: &'static str,
    queue: Arc<str>,
    deadline: Duration,
    codec: Codec,
}

impl<T> ClientCore<T> {
    /// A client of `service` on `queue` over `transport`.
    pub fn new(transport: T, service: &'static str, queue: &str) -> Self {
        ClientCore {
            transport,
            service,
            queue: Arc::from(queue),
            deadline: DEFAULT_DEADLINE,
            codec: Codec::default(),
        }
    }

    /// The same client with another deadline for its calls.
    pub fn with_deadline(&self, deadline: Duration) -> Self
    where
        T: Clone,
    {
        ClientCore {
            deadline,
            ..self.clone()
        }
    }

    /// The same client with another codec.
    pub fn with_codec(&self, codec: Codec) -> Self
    where
        T: Clone,
    {
        ClientCore {
            codec,
            ..self.clone()
        }
    }

    /// The same client calling another queue.
    pub fn with_queue(&self, queue: &str) -> Self
    where
        T: Clone,
    {
        ClientCore {
            queue: Arc::from(queue),
            ..self.clone()
        }
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// The service queue.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The deadline of each call.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The codec of each call.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Makes one call: encode, send through the transport stack, decode.
    pub async fn call<R, O, E>(
        &self,
        request: R,
        decode_error: DecodeErrorFn<E>,
    ) -> Result<O, RpcError<E>>
    where
        R: ServiceRequest,
        O: DeserializeOwned,
        T: Service<Call, Response = Reply> + Clone + Send,
        T::Error: Into<BoxError>,
        T::Future: Send,
    {
        let method = request.method();
        let body = request.encode(self.codec)?;
        let call = Call::new(
            self.service,
            self.queue.clone(),
            method,
            self.codec,
            body,
            self.deadline,
        );
        let span = tracing::info_span!(
            "rpc.call",
            rpc.service = self.service,
            rpc.method = method,
            rpc.correlation_id = %call.correlation_id,
            trace_id = %call.traceparent.trace_id,
        );
        let codec = self.codec;
        let mut transport = self.transport.clone();
        async move {
            let reply = async {
                let svc = transport.ready().await.map_err(Into::into)?;
                svc.call(call).await.map_err(Into::into)
            }
            .await
            .map_err(|e: BoxError| RpcError::from_box(e).cast::<E>())?;
            let result = reply.decode::<O, E>(codec, decode_error);
            if let Err(e) = &result {
                tracing::debug!(error = %DisplayKind(e), "call failed");
            }
            result
        }
        .instrument(span)
        .await
    }
}

/// Shows an error's variant without requiring `E: Display`.
struct DisplayKind<'a, E>(&'a RpcError<E>);

impl<E> std::fmt::Display for DisplayKind<'_, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            RpcError::Handler(_) => f.write_str("handler error"),
            RpcError::NoRoute { .. } => f.write_str("no route"),
            RpcError::NoServer { .. } => f.write_str("no server"),
            RpcError::Timeout => f.write_str("timeout"),
            RpcError::DeadlineExceeded => f.write_str("deadline exceeded"),
            RpcError::Panicked { .. } => f.write_str("handler panicked"),
            RpcError::UnknownMethod { .. } => f.write_str("unknown method"),
            RpcError::BadRequest { .. } => f.write_str("bad request"),
            RpcError::Unavailable { .. } => f.write_str("unavailable"),
            RpcError::Codec(e) => write!(f, "codec: {e}"),
            RpcError::Amqp(e) => write!(f, "amqp: {e}"),
            RpcError::Disconnected => f.write_str("disconnected"),
            RpcError::ConnectionLost { .. } => f.write_str("connection lost"),
            RpcError::Unreachable { .. } => f.write_str("broker unreachable"),
            RpcError::InvalidUrl { .. } => f.write_str("invalid broker URL"),
            RpcError::BadReply { .. } => f.write_str("bad reply"),
            RpcError::Middleware(e) => write!(f, "middleware: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::BasicProperties;

    fn delivery(props: BasicProperties, body: &[u8]) -> Delivery {
        let mut d = Delivery::mock(1, "".into(), "r".into(), false, body.to_vec());
        d.properties = props;
        d
    }

    fn status(s: &str) -> FieldTable {
        let mut h = FieldTable::default();
        wire::insert_str(&mut h, wire::STATUS_HEADER, s);
        h
    }

    #[test]
    fn a_seed_server_reply_is_ok_in_the_request_codec() {
        let props = BasicProperties::default().with_correlation_id("c".into());
        let reply = Reply::from_delivery(delivery(props, b"832040")).expect("reply");
        assert_eq!(reply.status, Some(Status::Ok));
        let v: Result<u64, RpcError> = reply.decode(Codec::Text, no_handler_error);
        assert_eq!(v.ok(), Some(832040));
    }

    #[test]
    fn replies_without_correlation_id_are_ignored() {
        assert!(Reply::from_delivery(delivery(BasicProperties::default(), b"1")).is_none());
    }

    #[test]
    fn error_statuses_decode_to_variants() {
        let props = BasicProperties::default()
            .with_correlation_id("c".into())
            .with_content_type("application/json".into())
            .with_headers(status("error"));
        let reply = Reply::from_delivery(delivery(props, b"\"too big\"")).expect("reply");
        let v: Result<u64, RpcError<String>> = reply.decode(Codec::MsgPack, decode_handler_error);
        assert!(matches!(v, Err(RpcError::Handler(ref e)) if e == "too big"));

        let props = BasicProperties::default()
            .with_correlation_id("c".into())
            .with_headers(status("weird"));
        let reply = Reply::from_delivery(delivery(props, b"")).expect("reply");
        let v: Result<u64, RpcError> = reply.decode(Codec::Json, no_handler_error);
        assert!(matches!(
            v,
            Err(RpcError::Codec(CodecError::UnknownStatus(_)))
        ));
    }

    #[test]
    fn calls_get_unique_ids_and_consistent_deadlines() {
        let a = Call::new(
            "S",
            Arc::from("q"),
            "m",
            Codec::Json,
            vec![],
            DEFAULT_DEADLINE,
        );
        let b = Call::new(
            "S",
            Arc::from("q"),
            "m",
            Codec::Json,
            vec![],
            DEFAULT_DEADLINE,
        );
        assert_ne!(a.correlation_id, b.correlation_id);
        assert_ne!(a.traceparent.trace_id, b.traceparent.trace_id);
        let left = a
            .wire_deadline
            .duration_since(SystemTime::now())
            .expect("future");
        assert!(left <= DEFAULT_DEADLINE && left > DEFAULT_DEADLINE - Duration::from_secs(1));
    }

    /// Records the spans opened while it is the default subscriber.
    #[derive(Clone, Default)]
    struct Spans(Arc<std::sync::Mutex<Vec<SpanRecord>>>);

    /// A span's name and its fields as text.
    type SpanRecord = (String, Vec<(String, String)>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Spans {
        fn on_new_span(
            &self,
            attrs: &tracing::span::Attributes<'_>,
            _id: &tracing::span::Id,
            _ctx: tracing_subscriber::layer::Context<'_, S>,
        ) {
            struct Fields(Vec<(String, String)>);
            impl tracing::field::Visit for Fields {
                fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                    self.0.push((f.name().to_owned(), format!("{v:?}")));
                }
                fn record_str(&mut self, f: &tracing::field::Field, v: &str) {
                    self.0.push((f.name().to_owned(), v.to_owned()));
                }
            }
            let mut fields = Fields(Vec::new());
            attrs.record(&mut fields);
            let mut spans = self.0.lock().unwrap_or_else(|e| e.into_inner());
            spans.push((attrs.metadata().name().to_owned(), fields.0));
        }
    }

    struct Ping;
    impl ServiceRequest for Ping {
        fn method(&self) -> &'static str {
            "ping"
        }
        fn encode(&self, codec: Codec) -> Result<Vec<u8>, CodecError> {
            codec.encode(&())
        }
    }

    #[tokio::test]
    async fn each_call_opens_one_span_with_service_method_and_correlation_id() {
        use tracing_subscriber::layer::SubscriberExt;
        let spans = Spans::default();
        let subscriber = tracing_subscriber::registry().with(spans.clone());
        let _guard = tracing::subscriber::set_default(subscriber);
        let seen_id = Arc::new(std::sync::Mutex::new(String::new()));
        let transport = tower::service_fn({
            let seen_id = seen_id.clone();
            move |call: Call| {
                *seen_id.lock().unwrap_or_else(|e| e.into_inner()) = call.correlation_id.clone();
                async move {
                    Ok::<_, RpcError>(Reply {
                        correlation_id: call.correlation_id,
                        status: Some(Status::Ok),
                        codec: Some(call.codec),
                        body: call.codec.encode(&7u8)?,
                    })
                }
            }
        });
        let core = ClientCore::new(transport, "Pinger", "pinger");
        let got: Result<u8, RpcError> = core.call(Ping, no_handler_error).await;
        assert_eq!(got.ok(), Some(7));
        let spans = spans.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let calls: Vec<_> = spans
            .iter()
            .filter(|(name, _)| name == "rpc.call")
            .collect();
        assert_eq!(calls.len(), 1, "{spans:?}");
        let field = |k: &str| {
            calls[0]
                .1
                .iter()
                .find(|(name, _)| name == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(field("rpc.service").as_deref(), Some("Pinger"));
        assert_eq!(field("rpc.method").as_deref(), Some("ping"));
        let id = seen_id.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert_eq!(field("rpc.correlation_id"), Some(id));
    }

    #[tokio::test]
    async fn calls_made_inside_a_handler_continue_its_trace() {
        let parent = TraceParent::new_root();
        let mut headers = FieldTable::default();
        wire::insert_str(&mut headers, wire::TRACEPARENT_HEADER, &parent.to_string());
        let delivery = delivery(BasicProperties::default().with_headers(headers), b"");
        let ctx = Context::from_delivery(&delivery);
        let call = ctx
            .scope(async {
                Call::new(
                    "S",
                    Arc::from("q"),
                    "m",
                    Codec::Json,
                    vec![],
                    DEFAULT_DEADLINE,
                )
            })
            .await;
        assert_eq!(call.traceparent.trace_id, parent.trace_id);
        assert_ne!(call.traceparent.span_id, parent.span_id);
    }
}
