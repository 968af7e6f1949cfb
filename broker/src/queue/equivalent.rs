//! Redeclaring a queue: what must match the first declaration, with RabbitMQ's
//! `inequivalent arg` texts, and the 405 of a queue another connection holds.

use amq_protocol::types::FieldTable;

use super::Queue;
use crate::args::{differs, str_value};
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
        // A queue declared without a type is a classic one (RabbitMQ 4's texts).
        let kind = |args: &FieldTable| {
            args.inner()
                .get("x-queue-type")
                .and_then(str_value)
                .map_or_else(|| "classic".to_owned(), |t| t.into_owned())
        };
        let (received, current) = (kind(arguments), kind(&self.arguments));
        if received != current {
            return Err(inequivalent(
                "x-queue-type",
                format!("'{received}'"),
                format!("'{current}'"),
            ));
        }
        for key in [
            "x-message-ttl",
            "x-expires",
            "x-max-length",
            "x-max-length-bytes",
            "x-overflow",
            "x-dead-letter-exchange",
            "x-dead-letter-routing-key",
            "x-max-priority",
            "x-single-active-consumer",
            "x-delivery-limit",
        ] {
            if let Some((received, current)) = differs(key, arguments, &self.arguments) {
                return Err(inequivalent(key, received, current));
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
