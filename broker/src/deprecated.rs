//! RabbitMQ's deprecated features that the broker can deny, as RabbitMQ 4.3 does by
//! default: transient non-exclusive queues and global QoS.
//!
//! Both are permitted by default, as in RabbitMQ 3.x and 4.0 (whose
//! `rabbitmq-diagnostics list_deprecated_features` reports them
//! `permitted_by_default`). Denied, the broker behaves as RabbitMQ 4 configured with
//! `deprecated_features.permit.<feature> = false`:
//! - declaring a new queue that is neither durable nor exclusive fails with
//!   `541 INTERNAL_ERROR` and RabbitMQ's text, closing the connection (a queue that
//!   already exists is checked for equivalence first, as RabbitMQ does);
//! - `basic.qos` with `global = true` is answered `qos-ok` and applied per consumer.

use crate::error::{AmqpError, code};

/// Which deprecated features are permitted (`true`) or denied (`false`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeprecatedFeatures {
    /// `deprecated_features.permit.transient_nonexcl_queues`: queues that are neither
    /// durable nor exclusive.
    pub transient_nonexcl_queues: bool,
    /// `deprecated_features.permit.global_qos`: `basic.qos` with `global = true`
    /// applied to the whole channel.
    pub global_qos: bool,
}

impl Default for DeprecatedFeatures {
    /// Both permitted, as RabbitMQ 3.x and 4.0 do by default.
    fn default() -> Self {
        Self {
            transient_nonexcl_queues: true,
            global_qos: true,
        }
    }
}

impl DeprecatedFeatures {
    /// Both denied, as RabbitMQ 4.3 does by default.
    pub fn denied() -> Self {
        Self {
            transient_nonexcl_queues: false,
            global_qos: false,
        }
    }
}

/// RabbitMQ's text for a denied deprecated feature; with the reply code's name in
/// front it is cut to 255 bytes, ending in `...`, as RabbitMQ cuts it.
fn denied_text(feature: &str) -> String {
    let full = format!(
        "Feature `{feature}` is deprecated.\n\
         Its use is not permitted per the configuration (overriding the default, which is permitted):\n    \
         \"deprecated_features.permit.{feature} = false\"\n\
         Its use will not be permitted by default in a future minor RabbitMQ version and \
         the feature will be removed from a future major RabbitMQ version; actual versions \
         to be determined."
    );
    let room = 255 - "INTERNAL_ERROR - ".len();
    if full.len() <= room {
        return full;
    }
    let mut end = room - 3;
    while !full.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &full[..end])
}

/// The connection error for declaring a transient non-exclusive queue while that is
/// denied.
pub(crate) fn transient_nonexcl_queue_denied() -> AmqpError {
    AmqpError::connection(
        code::INTERNAL_ERROR,
        denied_text("transient_nonexcl_queues"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_is_rabbitmq_4s() {
        // As RabbitMQ 4.0.5 sends it (check_deprecated.py against the chroot node).
        let expected = "INTERNAL_ERROR - Feature `transient_nonexcl_queues` is deprecated.\n\
            Its use is not permitted per the configuration (overriding the default, which is permitted):\n    \
            \"deprecated_features.permit.transient_nonexcl_queues = false\"\n\
            Its use will not be permit...";
        let e = transient_nonexcl_queue_denied();
        assert_eq!(e.text, expected);
        assert_eq!(e.text.len(), 255);
        assert_eq!(e.code, 541);
    }
}
