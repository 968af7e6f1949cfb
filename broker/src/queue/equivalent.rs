//! Redeclaring a queue: what must match the first declaration, with RabbitMQ's
//! `inequivalent arg` texts, and the 405 of a queue another connection holds.

use amq_protocol::types::{AMQPValue, FieldTable};

use super::Queue;
use crate::args::{int_value, plain, type_name};
use crate::error::{AmqpError, code};

impl Queue {
    /// Whether a redeclare with these properties is equivalent; the 406 otherwise.
    pub fn check_equivalent(
        &self,
        vhost: &str,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        arguments: &FieldTable,
    ) -> Result<(), AmqpError> {
        let inequivalent = |arg: &str, received: String, current: String| {
            AmqpError::precondition(format_args!(
                "inequivalent arg '{arg}' for queue '{}' in vhost '{vhost}': received {received} but current is {current}",
                self.name
            ))
        };
        if self.durable != durable {
            return Err(inequivalent(
                "durable",
                format!("'{durable}'"),
                format!("'{}'", self.durable),
            ));
        }
        if exclusive && self.exclusive_owner.is_none() {
            return Err(locked(vhost, self.name.as_str()));
        }
        if self.auto_delete != auto_delete {
            return Err(inequivalent(
                "auto_delete",
                format!("'{auto_delete}'"),
                format!("'{}'", self.auto_delete),
            ));
        }
        for key in [
            "x-message-ttl",
            "x-expires",
            "x-max-length",
            "x-max-length-bytes",
            "x-overflow",
            "x-dead-letter-exchange",
            "x-queue-type",
        ] {
            let (a, b) = (arguments.inner().get(key), self.arguments.inner().get(key));
            let same = match (a, b) {
                (Some(a), Some(b)) => int_value(a)
                    .zip(int_value(b))
                    .map_or(a == b, |(x, y)| x == y),
                (None, None) => true,
                _ => false,
            };
            if !same {
                // RabbitMQ's wording: plain values when both sides have one, typed
                // values when one side is missing.
                let show = |v: Option<&AMQPValue>, typed: bool| match v {
                    None => "none".to_owned(),
                    Some(v) if typed => {
                        format!("the value '{}' of type '{}'", plain(v), type_name(v))
                    }
                    Some(v) => format!("'{}'", plain(v)),
                };
                let typed = a.is_none() || b.is_none();
                return Err(inequivalent(key, show(a, typed), show(b, typed)));
            }
        }
        Ok(())
    }
}

pub(crate) fn locked(vhost: &str, name: &str) -> AmqpError {
    AmqpError::channel(
        code::RESOURCE_LOCKED,
        format_args!(
            "cannot obtain exclusive access to locked queue '{name}' in vhost '{vhost}'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration."
        ),
    )
}
