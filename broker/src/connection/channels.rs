//! The channels of a connection: `channel.open` and `close`, and running every other
//! channel frame in its channel's context, where a channel error closes only that
//! channel.

use std::sync::Arc;

use amq_protocol::protocol::{AMQPClass, channel};

use super::Connection;
use crate::channel::{Channel, Ctx};
use crate::error::{AmqpError, Scope, code, method};
use crate::queue::ChannelKey;
use crate::vhost::{ChannelState, ChannelStats};

impl Connection {
    pub(super) fn channel_method(
        &mut self,
        id: u16,
        m: channel::AMQPMethod,
    ) -> Result<(), AmqpError> {
        match m {
            channel::AMQPMethod::Open(_) => {
                if self.channels.contains_key(&id) {
                    return Err(AmqpError::connection(
                        code::CHANNEL_ERROR,
                        "second 'channel.open' seen",
                    )
                    .during(method::CHANNEL_OPEN));
                }
                // RabbitMQ counts open channels against channel_max; the channel
                // *number* may be anything.
                if self.channel_max > 0 && self.channels.len() >= usize::from(self.channel_max) {
                    return Err(AmqpError::connection(
                        code::NOT_ALLOWED,
                        format_args!(
                            "number of channels opened ({}) has reached the negotiated channel_max ({})",
                            self.channels.len(),
                            self.channel_max
                        ),
                    ));
                }
                let Some(vhost) = &self.session.vhost else {
                    return Err(not_open());
                };
                let shared = &self.session.shared;
                let user = self.session.user.as_str();
                {
                    let limits = shared.resource_limits.read();
                    if limits.limits_channels(user) {
                        limits
                            .check_channel(user, || shared.registry.channels_of(user))
                            .map_err(|e| e.during(method::CHANNEL_OPEN))?;
                    }
                }
                let stats = Arc::<ChannelStats>::default();
                let state = ChannelState::with_stats(
                    Arc::clone(&self.session.outbox),
                    self.session.frame_max as usize,
                    self.cancel_notify,
                    Arc::clone(&stats),
                );
                vhost
                    .lock()
                    .open_channel(ChannelKey::new(self.session.id, id), state);
                self.channels.insert(id, Channel::with_stats(id, stats));
                shared
                    .registry
                    .set_channels(self.session.id, self.channels.len());
                self.session.send(
                    id,
                    AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
                );
                Ok(())
            }
            channel::AMQPMethod::Close(_) => {
                if self.remove_channel(id).is_none() {
                    return Err(AmqpError::connection(
                        code::CHANNEL_ERROR,
                        "expected 'channel.open'",
                    )
                    .during(method::CHANNEL_CLOSE));
                }
                if let Some(v) = &self.session.vhost {
                    v.lock().close_channel(ChannelKey::new(self.session.id, id));
                }
                self.session.send(
                    id,
                    AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                );
                Ok(())
            }
            channel::AMQPMethod::CloseOk(_) => {
                if self.channels.get(&id).is_some_and(|c| c.closing) {
                    self.remove_channel(id);
                }
                Ok(())
            }
            other => self.with_channel(id, |ch, ctx| ch.method(ctx, AMQPClass::Channel(other))),
        }
    }

    pub(super) fn with_channel(
        &mut self,
        id: u16,
        f: impl FnOnce(&mut Channel, &Ctx<'_>) -> Result<(), AmqpError>,
    ) -> Result<(), AmqpError> {
        let Some(ch) = self.channels.get_mut(&id) else {
            return Err(AmqpError::connection(
                code::CHANNEL_ERROR,
                "expected 'channel.open'",
            ));
        };
        if ch.closing {
            return Ok(());
        }
        let Some(ctx) = self.session.ctx() else {
            return Err(not_open());
        };
        match f(ch, &ctx) {
            Err(e) if e.scope == Scope::Channel => {
                self.close_channel_with(id, e);
                Ok(())
            }
            other => other,
        }
    }

    /// What one channel holds of a body still arriving.
    pub(super) fn partial_of(&self, id: u16) -> usize {
        self.channels.get(&id).map_or(0, Channel::partial_len)
    }

    /// How much of unfinished bodies one connection may hold: two of the largest
    /// messages accepted.
    pub(super) fn partial_limit(&self) -> usize {
        usize::try_from(
            self.session
                .shared
                .config
                .max_message_size
                .saturating_mul(2),
        )
        .unwrap_or(usize::MAX)
    }

    /// Forgets a channel, and what it held of an unfinished body.
    pub(super) fn remove_channel(&mut self, id: u16) -> Option<Channel> {
        let ch = self.channels.remove(&id)?;
        self.partial = self.partial.saturating_sub(ch.partial_len());
        self.session
            .shared
            .registry
            .set_channels(self.session.id, self.channels.len());
        Some(ch)
    }

    pub(super) fn close_channel_with(&mut self, id: u16, e: AmqpError) {
        tracing::debug!(conn = self.session.id, channel = id, error = %e, "channel error");
        if let Some(v) = &self.session.vhost {
            v.lock().close_channel(ChannelKey::new(self.session.id, id));
        }
        if let Some(ch) = self.channels.get_mut(&id) {
            ch.closing = true;
        }
        self.session.send(
            id,
            AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                reply_code: e.code,
                reply_text: e.text.into(),
                class_id: e.class_id,
                method_id: e.method_id,
            })),
        );
    }
}

/// A channel method before `connection.open` succeeded (the read loop refuses those
/// earlier; this is the fallback).
pub(super) fn not_open() -> AmqpError {
    AmqpError::connection(
        code::CHANNEL_ERROR,
        "channel frame before the connection was opened",
    )
}
