//! Per-vhost and per-user resource limits, as RabbitMQ has them (`rabbitmqctl
//! set_vhost_limits`, `set_user_limits`, `/api/vhost-limits`, `/api/user-limits`):
//! a vhost's `max-connections` and `max-queues`, a user's `max-connections` and
//! `max-channels`. A negative value is no limit (RabbitMQ keeps and lists it); 0
//! allows none.
//!
//! They are enforced where RabbitMQ enforces them, with its texts: `connection.open`
//! (530 for either connection limit), `queue.declare` of a new queue (406) and
//! `channel.open` (530). With a data directory they are kept in the snapshot file
//! `limits` (JSON inside [`crate::store::snapshot`]'s checksummed framing), replaced
//! after every change.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{AmqpError, code};
use crate::store::snapshot;

const MAGIC: &[u8; 8] = b"AMQRLIM1";
/// The file's name in the data directory.
const FILE: &str = "limits";

/// The limits a vhost can have.
pub(crate) const VHOST_LIMITS: [&str; 2] = ["max-connections", "max-queues"];
/// The limits a user can have.
pub(crate) const USER_LIMITS: [&str; 2] = ["max-connections", "max-channels"];

/// Every limit set, by vhost and by user, each a map of limit name to value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ResourceLimits {
    pub(crate) vhosts: BTreeMap<String, BTreeMap<String, i64>>,
    pub(crate) users: BTreeMap<String, BTreeMap<String, i64>>,
}

/// A limit's value when it limits: `None` when unset or negative.
fn effective(map: &BTreeMap<String, BTreeMap<String, i64>>, who: &str, what: &str) -> Option<u64> {
    map.get(who)
        .and_then(|m| m.get(what))
        .and_then(|v| u64::try_from(*v).ok())
}

impl ResourceLimits {
    /// The file in `root`, if there is one.
    pub(crate) fn load(root: &Path) -> io::Result<Self> {
        snapshot::load_json(root, FILE, MAGIC)
    }

    /// Replaces the file in `root` with these limits.
    pub(crate) fn save(&self, root: &Path) -> io::Result<()> {
        snapshot::save_json(root, FILE, MAGIC, self)
    }

    /// A vhost's `max-queues`, if it limits.
    pub(crate) fn max_queues(&self, vhost: &str) -> Option<u64> {
        effective(&self.vhosts, vhost, "max-queues")
    }

    /// Refuses a connection to `vhost` by `user` with RabbitMQ's 530 when one of them
    /// already has as many open connections as its limit allows (`open_in_vhost` and
    /// `open_of_user` count the others).
    pub(crate) fn check_connection(
        &self,
        vhost: &str,
        user: &str,
        open_in_vhost: impl FnOnce() -> usize,
        open_of_user: impl FnOnce() -> usize,
    ) -> Result<(), AmqpError> {
        if let Some(max) = effective(&self.vhosts, vhost, "max-connections")
            && open_in_vhost() as u64 >= max
        {
            return Err(AmqpError::connection(
                code::NOT_ALLOWED,
                format_args!(
                    "access to vhost '{vhost}' refused for user '{user}': connection limit ({max}) is reached"
                ),
            ));
        }
        if let Some(max) = effective(&self.users, user, "max-connections")
            && open_of_user() as u64 >= max
        {
            return Err(AmqpError::connection(
                code::NOT_ALLOWED,
                format_args!(
                    "connection refused for user '{user}': user connection limit ({max}) is reached"
                ),
            ));
        }
        Ok(())
    }

    /// Refuses one more channel for `user` with RabbitMQ's 530 when the user's
    /// channels (`open_of_user` counts them, across connections) are at its limit.
    pub(crate) fn check_channel(
        &self,
        user: &str,
        open_of_user: impl FnOnce() -> usize,
    ) -> Result<(), AmqpError> {
        if let Some(max) = effective(&self.users, user, "max-channels")
            && open_of_user() as u64 >= max
        {
            return Err(AmqpError::connection(
                code::NOT_ALLOWED,
                format_args!(
                    "number of channels opened for user '{user}' has reached the maximum allowed user limit of ({max})"
                ),
            ));
        }
        Ok(())
    }

    /// Whether `user` has a channel limit (counting channels costs a walk).
    pub(crate) fn limits_channels(&self, user: &str) -> bool {
        effective(&self.users, user, "max-channels").is_some()
    }
}

/// RabbitMQ's 406 for a new queue in a vhost at its `max-queues`.
pub(crate) fn queue_limit_reached(vhost: &str, queue: &str, max: u64) -> AmqpError {
    AmqpError::precondition(format_args!(
        "cannot declare queue '{queue}': queue limit in vhost '{vhost}' ({max}) is reached"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(vhost: &[(&str, i64)], user: &[(&str, i64)]) -> ResourceLimits {
        let mut l = ResourceLimits::default();
        for (k, v) in vhost {
            l.vhosts
                .entry("/".into())
                .or_default()
                .insert((*k).into(), *v);
        }
        for (k, v) in user {
            l.users
                .entry("guest".into())
                .or_default()
                .insert((*k).into(), *v);
        }
        l
    }

    #[test]
    fn connections_are_refused_at_the_limit_with_rabbitmqs_texts() {
        let l = with(&[("max-connections", 1)], &[]);
        assert!(l.check_connection("/", "guest", || 0, || 5).is_ok());
        let e = l
            .check_connection("/", "guest", || 1, || 0)
            .expect_err("refused");
        assert_eq!(e.code, code::NOT_ALLOWED);
        assert_eq!(
            e.text,
            "NOT_ALLOWED - access to vhost '/' refused for user 'guest': connection limit (1) is reached"
        );
        let l = with(&[], &[("max-connections", 2)]);
        let e = l
            .check_connection("/", "guest", || 9, || 2)
            .expect_err("refused");
        assert_eq!(
            e.text,
            "NOT_ALLOWED - connection refused for user 'guest': user connection limit (2) is reached"
        );
        assert!(l.check_connection("/", "other", || 9, || 9).is_ok());
    }

    #[test]
    fn negative_is_no_limit_and_zero_allows_none() {
        let l = with(
            &[("max-connections", -1), ("max-queues", 0)],
            &[("max-channels", -5)],
        );
        assert!(l.check_connection("/", "guest", || 1000, || 0).is_ok());
        assert_eq!(l.max_queues("/"), Some(0));
        assert!(!l.limits_channels("guest"));
        assert!(l.check_channel("guest", || 1000).is_ok());
    }

    #[test]
    fn channels_are_refused_at_the_user_limit() {
        let l = with(&[], &[("max-channels", 1)]);
        assert!(l.limits_channels("guest"));
        assert!(l.check_channel("guest", || 0).is_ok());
        let e = l.check_channel("guest", || 1).expect_err("refused");
        assert_eq!(
            e.text,
            "NOT_ALLOWED - number of channels opened for user 'guest' has reached the maximum allowed user limit of (1)"
        );
    }

    #[test]
    fn the_file_round_trips_and_damage_is_an_error() {
        let dir = tempfile::tempdir().expect("dir");
        assert_eq!(
            ResourceLimits::load(dir.path()).expect("none"),
            ResourceLimits::default()
        );
        let l = with(&[("max-queues", 3)], &[("max-connections", 2)]);
        l.save(dir.path()).expect("save");
        assert_eq!(ResourceLimits::load(dir.path()).expect("load"), l);
        std::fs::write(dir.path().join(FILE), b"AMQRLIM1garbage").expect("write");
        assert!(ResourceLimits::load(dir.path()).is_err());
    }
}
