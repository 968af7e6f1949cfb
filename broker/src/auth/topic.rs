//! Topic permissions, as RabbitMQ has them (`rabbitmqctl set_topic_permissions`,
//! `/api/topic-permissions`): per user, vhost and topic exchange, a write and a read
//! regular expression over routing keys. A publish to a topic exchange needs its
//! routing key to match `write`; binding a queue or exchange to one (and unbinding)
//! needs the binding key to match `read`. A user with no topic permission for an
//! exchange may use any key, as in RabbitMQ. `{username}` and `{vhost}` in a pattern
//! stand for the user's name and the vhost's (RabbitMQ's variable expansion).
//! They are kept in the users file with the rest of the user table.

use std::collections::BTreeMap;

use super::{Access, AuthError, Users};
use crate::error::AmqpError;

/// One user's rights on the routing keys of one topic exchange.
#[derive(Debug, Clone)]
pub struct TopicPermission {
    /// Publish with these routing keys.
    pub write: String,
    /// Bind with these binding keys.
    pub read: String,
    matchers: [regex::Regex; 2],
}

impl TopicPermission {
    /// Compiles the two patterns for `user` in `vhost` (an empty one matches nothing).
    pub fn new(user: &str, vhost: &str, write: &str, read: &str) -> Result<Self, AuthError> {
        let compile = |p: &str| {
            let expanded = p.replace("{username}", user).replace("{vhost}", vhost);
            let source = if expanded.is_empty() {
                "^$".to_owned()
            } else {
                expanded
            };
            regex::Regex::new(&source)
                .map_err(|e| AuthError::BadPattern(p.to_owned(), e.to_string()))
        };
        Ok(Self {
            matchers: [compile(write)?, compile(read)?],
            write: write.to_owned(),
            read: read.to_owned(),
        })
    }

    fn allows(&self, access: Access, key: &str) -> bool {
        match access {
            Access::Write => self.matchers[0].is_match(key),
            Access::Read => self.matchers[1].is_match(key),
            Access::Configure => true,
        }
    }
}

/// Topic permissions by user, vhost and exchange: nested so that the publish path
/// looks one up by `&str` without building a key.
pub(crate) type TopicTable = BTreeMap<String, BTreeMap<String, BTreeMap<String, TopicPermission>>>;

/// One row of [`Users::list_topic_permissions`]: user, vhost, exchange, write, read.
pub type TopicRow = (String, String, String, String, String);

impl Users {
    /// Sets a user's topic permission on `exchange` in `vhost`; whether one was
    /// replaced.
    pub fn set_topic_permission(
        &mut self,
        user: &str,
        vhost: &str,
        exchange: &str,
        write: &str,
        read: &str,
    ) -> Result<bool, AuthError> {
        if !self.users.contains_key(user) {
            return Err(AuthError::NoUser(user.to_owned()));
        }
        if !self.vhosts.contains(vhost) {
            return Err(AuthError::NoVhost(vhost.to_owned()));
        }
        let perm = TopicPermission::new(user, vhost, write, read)?;
        self.generation += 1;
        Ok(self
            .topic
            .entry(user.to_owned())
            .or_default()
            .entry(vhost.to_owned())
            .or_default()
            .insert(exchange.to_owned(), perm)
            .is_some())
    }

    /// Clears a user's topic permissions in `vhost`: on `exchange`, or all of them;
    /// whether there were any.
    pub fn clear_topic_permissions(
        &mut self,
        user: &str,
        vhost: &str,
        exchange: Option<&str>,
    ) -> bool {
        let Some(by_vhost) = self.topic.get_mut(user) else {
            return false;
        };
        let removed = match exchange {
            None => by_vhost.remove(vhost).is_some(),
            Some(x) => {
                let removed = by_vhost
                    .get_mut(vhost)
                    .is_some_and(|m| m.remove(x).is_some());
                if by_vhost.get(vhost).is_some_and(BTreeMap::is_empty) {
                    by_vhost.remove(vhost);
                }
                removed
            }
        };
        if by_vhost.is_empty() {
            self.topic.remove(user);
        }
        if removed {
            self.generation += 1;
        }
        removed
    }

    /// Every topic permission, by user, vhost and exchange.
    pub fn list_topic_permissions(&self) -> Vec<TopicRow> {
        let mut rows = Vec::new();
        for (user, by_vhost) in &self.topic {
            for (vhost, by_exchange) in by_vhost {
                for (x, p) in by_exchange {
                    rows.push((
                        user.clone(),
                        vhost.clone(),
                        x.clone(),
                        p.write.clone(),
                        p.read.clone(),
                    ));
                }
            }
        }
        rows
    }

    /// The user's topic permissions in the vhost, if any (else no routing key is ever
    /// refused there: the publish path checks this first).
    fn topic_in(&self, user: &str, vhost: &str) -> Option<&BTreeMap<String, TopicPermission>> {
        self.topic.get(user)?.get(vhost)
    }

    /// Whether the user has any topic permission in the vhost.
    pub fn has_topic_permissions(&self, user: &str, vhost: &str) -> bool {
        self.topic_in(user, vhost).is_some()
    }

    /// Checks `key` against the user's topic permission on the topic exchange
    /// `exchange` (none: allowed); RabbitMQ's 403 text otherwise.
    pub fn check_topic(
        &self,
        user: &str,
        vhost: &str,
        exchange: &str,
        key: &str,
        access: Access,
    ) -> Result<(), AmqpError> {
        let Some(perm) = self.topic_in(user, vhost).and_then(|m| m.get(exchange)) else {
            return Ok(());
        };
        if perm.allows(access, key) {
            return Ok(());
        }
        // RabbitMQ 3.10's text (it does not say which access).
        Err(AmqpError::access_refused(format_args!(
            "access to topic '{key}' in exchange '{exchange}' in vhost '{vhost}' refused for user '{user}'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_on_the_exchange_with_a_permission_only() {
        let mut users = Users::default();
        users
            .set_topic_permission("guest", "/", "amq.topic", "^{username}\\.", "^ok")
            .expect("set");
        let check = |x: &str, key: &str, a: Access| users.check_topic("guest", "/", x, key, a);
        assert!(check("amq.topic", "guest.a", Access::Write).is_ok());
        let refused = check("amq.topic", "other.a", Access::Write).expect_err("refused");
        assert_eq!(
            refused.text,
            "ACCESS_REFUSED - access to topic 'other.a' in exchange 'amq.topic' in vhost '/' refused for user 'guest'"
        );
        assert!(check("amq.topic", "ok.1", Access::Read).is_ok());
        assert!(check("amq.topic", "no", Access::Read).is_err());
        assert!(
            check("other.topic", "anything", Access::Write).is_ok(),
            "no permission there"
        );
        assert!(users.clear_topic_permissions("guest", "/", None));
        assert!(!users.has_topic_permissions("guest", "/"));
    }
}
