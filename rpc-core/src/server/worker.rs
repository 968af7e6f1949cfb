//! One request, from delivery to ack: read the properties, run the service stack,
//! publish the reply, ack.
//!
//! The ack comes last, so a worker that dies mid-call leaves its request unacked and
//! the broker redelivers it (with `redelivered` set) to another worker. Every
//! request that reaches this point is acked exactly once, whatever happened to it: a
//! poison message gets an error reply and is never requeued.

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicPublishOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};
use tower::{Service, ServiceExt};
use tracing::Instrument;

use super::request::{Request, Response};
use crate::codec::Codec;
use crate::context::Context;
use crate::error::BoxError;
use crate::wire::{self, Status};

/// Handles one delivery.
pub(super) async fn handle<S>(service: S, channel: Channel, delivery: Delivery, name: &'static str)
where
    S: Service<Request, Response = Response> + Send,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    let context = Context::from_delivery(&delivery);
    let span = tracing::info_span!(
        "rpc.serve",
        rpc.service = name,
        rpc.method = context.method().unwrap_or(""),
        rpc.correlation_id = context.correlation_id().unwrap_or(""),
        trace_id = context
            .traceparent()
            .map(|t| t.trace_id.as_str())
            .unwrap_or(""),
        redelivered = delivery.redelivered,
    );
    process(service, channel, delivery, context)
        .instrument(span)
        .await;
}

async fn process<S>(mut service: S, channel: Channel, delivery: Delivery, context: Context)
where
    S: Service<Request, Response = Response> + Send,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    let content_type = delivery
        .properties
        .content_type()
        .as_ref()
        .map(|s| s.as_str().to_owned());
    let (codec, response) = match Codec::from_content_type(content_type.as_deref()) {
        Ok(codec) => {
            let request = Request::new(
                context.method().map(str::to_owned),
                codec,
                delivery.data.clone(),
                context.clone(),
            );
            let ready: Result<(), BoxError> = service.ready().await.map(|_| ()).map_err(Into::into);
            let response = match ready {
                Ok(()) => service.call(request).await.map_err(Into::into),
                Err(e) => Err(e),
            };
            let response = response.unwrap_or_else(|e: BoxError| {
                tracing::debug!(error = %e, "service refused the request");
                Response::message(Status::Unavailable, codec, &e.to_string())
            });
            (codec, response)
        }
        Err(e) => (
            Codec::Text,
            Response::message(Status::BadRequest, Codec::Text, &e.to_string()),
        ),
    };
    tracing::debug!(status = response.status.as_str(), "replying");
    if let Some(reply_to) = context.reply_to().filter(|r| !r.is_empty()) {
        let mut headers = FieldTable::default();
        wire::insert_str(&mut headers, wire::STATUS_HEADER, response.status.as_str());
        let mut props = BasicProperties::default()
            .with_content_type(codec.content_type().into())
            .with_headers(headers);
        if let Some(id) = context.correlation_id() {
            props = props.with_correlation_id(id.into());
        }
        // Not mandatory: a reply nobody waits for any more is dropped by the broker.
        let published = channel
            .basic_publish(
                "".into(),
                reply_to.into(),
                BasicPublishOptions::default(),
                &response.body,
                props,
            )
            .await;
        if let Err(e) = published {
            // The channel is gone; leaving the request unacked lets the broker
            // redeliver it to a worker that can answer.
            tracing::warn!(error = %e, "could not publish the reply; not acking");
            return;
        }
    } else {
        tracing::debug!("request has no reply_to; nothing to reply");
    }
    match delivery.acker.ack(BasicAckOptions::default()).await {
        Ok(true) => {}
        // The delivery came on a channel incarnation that is gone (the connection
        // dropped and recovered meanwhile): its ack must not reach the new channel;
        // the broker redelivers the request.
        Ok(false) => {
            tracing::debug!("the request's channel was lost; not acked, it will be redelivered")
        }
        Err(e) => tracing::warn!(error = %e, "could not ack the request"),
    }
}
