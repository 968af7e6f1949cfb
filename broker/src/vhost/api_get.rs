//! Messages taken through the management API (`POST /api/queues/{vhost}/{q}/get`),
//! as RabbitMQ's management plugin takes them: `basic.get` on a channel of its own,
//! then all of them acked, or rejected with or without requeue, at once, so that a
//! requeue keeps their order and a rejection dead-letters them as a client's would.

use std::sync::Arc;

use super::consume::Got;
use super::{ChannelState, VHost};
use crate::error::AmqpError;
use crate::outbox::Outbox;
use crate::queue::ChannelKey;

/// What becomes of the messages taken (RabbitMQ's `ackmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// `ack_requeue_true`: back to the queue, marked redelivered.
    AckRequeueTrue,
    /// `ack_requeue_false`: acknowledged, gone.
    AckRequeueFalse,
    /// `reject_requeue_true`: rejected with requeue (back, marked redelivered).
    RejectRequeueTrue,
    /// `reject_requeue_false`: rejected, so dead-lettered where the queue says so.
    RejectRequeueFalse,
}

impl AckMode {
    /// RabbitMQ's name of the mode.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "ack_requeue_true" => Self::AckRequeueTrue,
            "ack_requeue_false" => Self::AckRequeueFalse,
            "reject_requeue_true" => Self::RejectRequeueTrue,
            "reject_requeue_false" => Self::RejectRequeueFalse,
            _ => return None,
        })
    }
}

/// The connection id of the API's own channel: no client connection has it.
const API_CONN: u64 = 0;

impl VHost {
    /// Takes up to `count` messages from the head of `queue` and settles them as
    /// `mode` says.
    pub fn get_for_api(
        &mut self,
        queue: &str,
        count: usize,
        mode: AckMode,
    ) -> Result<Vec<Got>, AmqpError> {
        let key = ChannelKey::new(API_CONN, 0);
        self.open_channel(
            key,
            ChannelState::new(Arc::new(Outbox::default()), 131_072, false),
        );
        let mut got = Vec::new();
        let mut taken = Ok(());
        while got.len() < count {
            match self.take_one(key, queue, false) {
                Ok(Some(g)) => got.push(g),
                Ok(None) => break,
                Err(e) => {
                    taken = Err(e);
                    break;
                }
            }
        }
        let settled = match got.last().map(|g| g.tag) {
            None => Ok(()),
            Some(last) => match mode {
                AckMode::AckRequeueFalse => self.ack(key, last, true),
                AckMode::RejectRequeueFalse => self.reject(key, last, true, false),
                AckMode::AckRequeueTrue | AckMode::RejectRequeueTrue => {
                    self.reject(key, last, true, true)
                }
            },
        };
        // Whatever is still unacked (nothing, unless settling failed) goes back.
        self.close_channel(key);
        taken.and(settled).map(|()| got)
    }
}
