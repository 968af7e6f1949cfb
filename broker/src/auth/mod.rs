//! Authentication: SASL PLAIN and AMQPLAIN responses (`sasl`), and the user table
//! with its permissions and topic permissions (`topic`).
//!
//! Runs once per connection, between `connection.start-ok` and `connection.tune`. As in
//! RabbitMQ, a refused login is answered with 403 ACCESS_REFUSED, and users listed in
//! `loopback_users` (by default `guest`) may only connect from a loopback address.
//!
//! Passwords are kept as RabbitMQ's `rabbit_password_hashing_sha256` hashes: 4 random
//! salt bytes then SHA-256 of salt and password (see [`User`] and `hash_with` below;
//! the layout is that of RabbitMQ's definitions export, so it must not change).
//!
//! Persistence, as in RabbitMQ: without a data directory the table lives in memory
//! only. With one, it is kept in `DATA_DIR/users` (`file`), rewritten atomically
//! after every change made at run time (management API, `broker ctl`). A fresh data
//! directory starts with `guest`/`guest`; after that the file is authoritative (a
//! deleted `guest` stays deleted), and the users and permissions given by
//! configuration are applied on top of it at every start, winning for what they name
//! (`config`). A damaged users file stops the start with an error naming it.

use std::net::SocketAddr;

use crate::error::{AmqpError, code};

mod attempts;
pub(crate) mod config;
mod file;
mod password;
mod sasl;
mod topic;

pub(crate) use attempts::AuthAttempts;
pub(crate) use file::save as save_file;
pub(crate) use password::{SHA256 as SHA256_HASHING, decode_hash};
use sasl::refused;
pub use sasl::{Credentials, parse_response};
pub use topic::TopicPermission;

/// One user: a salted password hash (empty: no password logs it in) and tags.
#[derive(Debug, Clone)]
pub struct User {
    /// RabbitMQ's `rabbit_password_hashing_sha256` layout: 4 random salt bytes, then
    /// SHA-256 of salt and password.
    hash: Vec<u8>,
    /// Tags such as `administrator` or `monitoring`.
    pub tags: Vec<String>,
}

/// A user's rights in one vhost: regular expressions over resource names, as
/// RabbitMQ's `set_permissions` takes them.
///
/// As in RabbitMQ (`re:run/3`), a pattern matches if it matches anywhere in the name:
/// `app` allows `myapp.q`; anchor it (`^app\\.`) to mean a prefix. An empty pattern
/// stands for `^$`, which no real resource name matches.
#[derive(Debug, Clone)]
pub struct Permission {
    /// Declare and delete (queues, exchanges).
    pub configure: String,
    /// Publish to exchanges, bind queues to (as destination).
    pub write: String,
    /// Consume, get, purge, bind from (as source).
    pub read: String,
    matchers: [regex::Regex; 3],
}

impl Permission {
    /// Compiles the three patterns (unanchored, as RabbitMQ runs them).
    pub fn new(configure: &str, write: &str, read: &str) -> Result<Self, AuthError> {
        let compile = |p: &str| {
            let source = if p.is_empty() { "^$" } else { p };
            regex::Regex::new(source)
                .map_err(|e| AuthError::BadPattern(p.to_owned(), e.to_string()))
        };
        Ok(Self {
            matchers: [compile(configure)?, compile(write)?, compile(read)?],
            configure: configure.to_owned(),
            write: write.to_owned(),
            read: read.to_owned(),
        })
    }

    /// Whether `name` may be configured, written or read.
    pub fn allows(&self, access: Access, name: &str) -> bool {
        let m = match access {
            Access::Configure => &self.matchers[0],
            Access::Write => &self.matchers[1],
            Access::Read => &self.matchers[2],
        };
        m.is_match(name)
    }
}

/// The three kinds of access RabbitMQ checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Declare, delete.
    Configure,
    /// Publish, bind into.
    Write,
    /// Consume, get, purge, bind from.
    Read,
}

/// The kinds of resource permissions are checked on, as named in refusal texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// A queue.
    Queue,
    /// An exchange (the default exchange is checked as `amq.default`, as RabbitMQ does).
    Exchange,
}

impl Resource {
    /// RabbitMQ's word for it in reply texts.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Queue => "queue",
            Resource::Exchange => "exchange",
        }
    }
}

/// Why a user-table change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No such user.
    #[error("no such user '{0}'")]
    NoUser(String),
    /// No such vhost.
    #[error("no such vhost '{0}'")]
    NoVhost(String),
    /// A permission pattern is not a valid regular expression.
    #[error("invalid pattern '{0}': {1}")]
    BadPattern(String, String),
}

/// The broker's users, vhosts and permissions.
#[derive(Debug, Clone)]
pub struct Users {
    users: std::collections::BTreeMap<String, User>,
    vhosts: std::collections::BTreeSet<String>,
    /// (user, vhost) to rights.
    permissions: std::collections::BTreeMap<(String, String), Permission>,
    /// Topic permissions by user, vhost and exchange (see `topic`).
    topic: topic::TopicTable,
    loopback_only: Vec<String>,
    /// Bumped by every change, so channels can cache what they checked.
    generation: u64,
}

impl Default for Users {
    /// `guest`/`guest` (administrator, all rights on `/`), allowed from loopback only,
    /// as RabbitMQ starts.
    fn default() -> Self {
        let mut users = Self {
            users: Default::default(),
            vhosts: std::iter::once("/".to_owned()).collect(),
            permissions: Default::default(),
            topic: Default::default(),
            loopback_only: vec!["guest".to_owned()],
            generation: 0,
        };
        users.add("guest", "guest");
        users
    }
}

impl Users {
    /// Adds or replaces a user with the `administrator` tag and full rights on `/`
    /// (what `--user` and the builder's `user` give).
    pub fn add(&mut self, user: &str, password: &str) {
        self.generation += 1;
        self.add_user(user, password, vec!["administrator".to_owned()]);
        if let Ok(all) = Permission::new(".*", ".*", ".*") {
            self.permissions
                .insert((user.to_owned(), "/".to_owned()), all);
        }
    }

    /// Adds or replaces a user (no permissions yet), as `rabbitmqctl add_user`.
    pub fn add_user(&mut self, user: &str, password: &str, tags: Vec<String>) {
        self.generation += 1;
        self.users.insert(
            user.to_owned(),
            User {
                hash: hash_password(password),
                tags,
            },
        );
    }

    /// Deletes a user and its permissions.
    pub fn delete_user(&mut self, user: &str) -> Result<(), AuthError> {
        self.generation += 1;
        self.users
            .remove(user)
            .ok_or_else(|| AuthError::NoUser(user.to_owned()))?;
        self.permissions.retain(|(u, _), _| u != user);
        self.topic.remove(user);
        Ok(())
    }

    /// Changes a user's password.
    pub fn change_password(&mut self, user: &str, password: &str) -> Result<(), AuthError> {
        self.generation += 1;
        let u = self
            .users
            .get_mut(user)
            .ok_or_else(|| AuthError::NoUser(user.to_owned()))?;
        u.hash = hash_password(password);
        Ok(())
    }

    /// Replaces a user's tags.
    pub fn set_tags(&mut self, user: &str, tags: Vec<String>) -> Result<(), AuthError> {
        self.generation += 1;
        let u = self
            .users
            .get_mut(user)
            .ok_or_else(|| AuthError::NoUser(user.to_owned()))?;
        u.tags = tags;
        Ok(())
    }

    /// Whether the user has this tag.
    pub fn has_tag(&self, user: &str, tag: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|u| u.tags.iter().any(|t| t == tag))
    }

    /// Users and their tags, by name.
    pub fn list_users(&self) -> Vec<(String, Vec<String>)> {
        self.users
            .iter()
            .map(|(n, u)| (n.clone(), u.tags.clone()))
            .collect()
    }

    /// Adds a vhost (existing is fine).
    pub fn add_vhost(&mut self, vhost: &str) {
        self.generation += 1;
        self.vhosts.insert(vhost.to_owned());
    }

    /// Deletes a vhost and every permission on it.
    pub fn delete_vhost(&mut self, vhost: &str) -> Result<(), AuthError> {
        self.generation += 1;
        if !self.vhosts.remove(vhost) {
            return Err(AuthError::NoVhost(vhost.to_owned()));
        }
        self.permissions.retain(|(_, v), _| v != vhost);
        for by_vhost in self.topic.values_mut() {
            by_vhost.remove(vhost);
        }
        self.topic.retain(|_, by_vhost| !by_vhost.is_empty());
        Ok(())
    }

    /// Whether the vhost exists.
    pub fn has_vhost(&self, vhost: &str) -> bool {
        self.vhosts.contains(vhost)
    }

    /// Sets a user's rights in a vhost, as `rabbitmqctl set_permissions`.
    pub fn set_permissions(
        &mut self,
        user: &str,
        vhost: &str,
        configure: &str,
        write: &str,
        read: &str,
    ) -> Result<(), AuthError> {
        self.generation += 1;
        if !self.users.contains_key(user) {
            return Err(AuthError::NoUser(user.to_owned()));
        }
        if !self.vhosts.contains(vhost) {
            return Err(AuthError::NoVhost(vhost.to_owned()));
        }
        let p = Permission::new(configure, write, read)?;
        self.permissions
            .insert((user.to_owned(), vhost.to_owned()), p);
        Ok(())
    }

    /// Removes a user's rights in a vhost.
    pub fn clear_permissions(&mut self, user: &str, vhost: &str) {
        self.generation += 1;
        self.permissions
            .remove(&(user.to_owned(), vhost.to_owned()));
    }

    /// A user's rights in a vhost (`None`: no access to it at all).
    pub fn permissions(&self, user: &str, vhost: &str) -> Option<&Permission> {
        self.permissions.get(&(user.to_owned(), vhost.to_owned()))
    }

    /// Every (user, vhost, rights), sorted.
    pub fn list_permissions(&self) -> Vec<(String, String, Permission)> {
        self.permissions
            .iter()
            .map(|((u, v), p)| (u.clone(), v.clone(), p.clone()))
            .collect()
    }

    /// A number that changes whenever users, vhosts or permissions change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Sets which users may only connect from loopback (RabbitMQ's `loopback_users`).
    #[cfg(test)]
    pub fn set_loopback_users(&mut self, users: Vec<String>) {
        self.generation += 1;
        self.loopback_only = users;
    }

    /// Checks a name and password (for the management API as for AMQP logins).
    pub fn check_password(&self, user: &str, password: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|u| verify_password(&u.hash, password))
    }

    /// `connection.open`'s check, in RabbitMQ's order: the vhost must exist (530
    /// NOT_ALLOWED "vhost X not found"), then the user must have permissions in it (530
    /// NOT_ALLOWED "access to vhost 'X' refused for user 'u'").
    pub fn check_vhost(&self, user: &str, vhost: &str) -> Result<(), AmqpError> {
        if !self.has_vhost(vhost) {
            return Err(AmqpError::connection(
                code::NOT_ALLOWED,
                format_args!("vhost {vhost} not found"),
            ));
        }
        if self.permissions(user, vhost).is_none() {
            tracing::warn!(%user, %vhost, "vhost access refused: no permissions");
            return Err(AmqpError::connection(
                code::NOT_ALLOWED,
                format_args!("access to vhost '{vhost}' refused for user '{user}'"),
            ));
        }
        Ok(())
    }

    /// A permission check as RabbitMQ's channel makes it: 403 ACCESS_REFUSED "access to
    /// queue 'q' in vhost '/' refused for user 'u'" (a channel error) unless the user's
    /// pattern for `access` in `vhost` matches `name`.
    pub fn check_access(
        &self,
        user: &str,
        vhost: &str,
        resource: Resource,
        name: &str,
        access: Access,
    ) -> Result<(), AmqpError> {
        let name = match (resource, name) {
            (Resource::Exchange, "") => "amq.default",
            _ => name,
        };
        if self
            .permissions(user, vhost)
            .is_some_and(|p| p.allows(access, name))
        {
            return Ok(());
        }
        Err(AmqpError::access_refused(format_args!(
            "access to {} '{name}' in vhost '{vhost}' refused for user '{user}'",
            resource.as_str()
        )))
    }

    /// Checks credentials from a peer address.
    pub fn authenticate(
        &self,
        creds: &Credentials,
        mechanism: &str,
        peer: SocketAddr,
    ) -> Result<(), AmqpError> {
        if !self.check_password(&creds.user, &creds.password) {
            tracing::warn!(user = %creds.user, %peer, "login refused: bad credentials");
            return Err(refused(mechanism));
        }
        // `to_canonical`: on an IPv6 listener an IPv4 client is `::ffff:a.b.c.d`.
        if self.loopback_only.contains(&creds.user) && !peer.ip().to_canonical().is_loopback() {
            tracing::warn!(user = %creds.user, %peer, "login refused: user may only connect via localhost");
            // RabbitMQ gives the client the generic refusal; the reason is in the log.
            return Err(refused(mechanism));
        }
        Ok(())
    }
}

/// Length of a password hash: 4 salt bytes and a SHA-256 digest.
const HASH_LEN: usize = 4 + 32;

/// RabbitMQ's `rabbit_password_hashing_sha256`: `salt ++ SHA-256(salt ++ password)`,
/// with a 4-byte salt. This layout is what the users file stores (see `file`) and
/// what RabbitMQ's definitions carry (base64-encoded) as `password_hash`.
fn hash_with(salt: [u8; 4], password: &str) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(salt);
    h.update(password.as_bytes());
    let mut out = salt.to_vec();
    out.extend_from_slice(&h.finalize());
    out
}

/// A new salted hash of `password`.
fn hash_password(password: &str) -> Vec<u8> {
    hash_with(rand::random(), password)
}

fn verify_password(hash: &[u8], password: &str) -> bool {
    let Some(salt) = hash.get(..4).and_then(|s| <[u8; 4]>::try_from(s).ok()) else {
        return false;
    };
    constant_time_eq(&hash_with(salt, password), hash)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Scope;

    fn local() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 5000))
    }

    #[test]
    fn bad_password_and_remote_guest_are_refused_with_403() {
        let users = Users::default();
        let bad = Credentials {
            user: "guest".into(),
            password: "nope".into(),
        };
        assert_eq!(
            users
                .authenticate(&bad, "PLAIN", local())
                .expect_err("bad")
                .code,
            code::ACCESS_REFUSED
        );
        let good = Credentials {
            user: "guest".into(),
            password: "guest".into(),
        };
        assert!(users.authenticate(&good, "PLAIN", local()).is_ok());
        let remote = SocketAddr::from(([10, 0, 0, 1], 5000));
        let err = users
            .authenticate(&good, "PLAIN", remote)
            .expect_err("remote guest");
        assert_eq!(err.code, code::ACCESS_REFUSED);
        // `--loopback-users ""`: nobody is limited to loopback.
        let mut open = Users::default();
        open.set_loopback_users(Vec::new());
        assert!(open.authenticate(&good, "PLAIN", remote).is_ok());
        open.set_loopback_users(vec!["other".into()]);
        assert!(open.authenticate(&good, "PLAIN", remote).is_ok());
    }

    #[test]
    fn an_ipv4_client_of_an_ipv6_listener_is_loopback_as_127_0_0_1() {
        // On a `[::]` listener an IPv4 client's address is IPv4-mapped.
        let users = Users::default();
        let good = Credentials {
            user: "guest".into(),
            password: "guest".into(),
        };
        let mapped = |ip: std::net::Ipv4Addr| SocketAddr::from((ip.to_ipv6_mapped(), 5000));
        assert!(
            users
                .authenticate(&good, "PLAIN", mapped([127, 0, 0, 1].into()))
                .is_ok()
        );
        assert!(
            users
                .authenticate(&good, "PLAIN", mapped([10, 0, 0, 1].into()))
                .is_err()
        );
        let v6_loopback = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 5000));
        assert!(users.authenticate(&good, "PLAIN", v6_loopback).is_ok());
    }

    #[test]
    fn passwords_are_salted_hashes() {
        let mut users = Users::default();
        users.add_user("a", "secret", vec![]);
        users.add_user("b", "secret", vec![]);
        assert_ne!(users.users["a"].hash, users.users["b"].hash, "salted");
        assert_eq!(users.users["a"].hash.len(), HASH_LEN);
        assert!(users.check_password("a", "secret"));
        assert!(!users.check_password("a", "Secret"));
        users.change_password("a", "new").expect("user");
        assert!(users.check_password("a", "new") && !users.check_password("a", "secret"));
        assert_eq!(
            users.change_password("nobody", "x"),
            Err(AuthError::NoUser("nobody".into()))
        );
    }

    #[test]
    fn permissions_search_names_as_rabbitmq_and_empty_matches_nothing() {
        let p = Permission::new("^app\\..*", "", ".*").expect("patterns");
        assert!(p.allows(Access::Configure, "app.q"));
        assert!(!p.allows(Access::Configure, "xapp.q"));
        assert!(!p.allows(Access::Write, "amq.default"), "empty pattern");
        assert!(!p.allows(Access::Write, "x"), "empty pattern");
        assert!(p.allows(Access::Read, "anything"));
        // RabbitMQ 3.10 (observed): configure 'app' allows 'myapp.q2', read 'q' too.
        let p = Permission::new("app", ".*", "q").expect("patterns");
        assert!(p.allows(Access::Configure, "myapp.q2"));
        assert!(p.allows(Access::Read, "myapp.q2"));
        assert!(!p.allows(Access::Read, "x"));
        assert!(Permission::new("(", "", "").is_err());
        let mut users = Users::default();
        assert!(users.permissions("guest", "/").is_some());
        assert!(users.has_tag("guest", "administrator"));
        assert_eq!(
            users
                .set_permissions("guest", "/nope", ".*", ".*", ".*")
                .map(drop),
            Err(AuthError::NoVhost("/nope".into()))
        );
    }

    #[test]
    fn vhost_and_resource_checks_word_refusals_as_rabbitmq() {
        let mut users = Users::default();
        users.add_user("u", "pw", vec![]);
        let err = users.check_vhost("u", "/").expect_err("no permissions");
        assert_eq!(err.code, code::NOT_ALLOWED);
        assert_eq!(
            err.text,
            "NOT_ALLOWED - access to vhost '/' refused for user 'u'"
        );
        assert_eq!(
            users.check_vhost("guest", "nope").expect_err("vhost").text,
            "NOT_ALLOWED - vhost nope not found"
        );
        let before = users.generation();
        users
            .set_permissions("u", "/", "^app\\.", "^app\\.", "")
            .expect("set");
        assert!(users.generation() > before, "changes bump the generation");
        assert!(users.check_vhost("u", "/").is_ok());
        assert!(
            users
                .check_access("u", "/", Resource::Queue, "app.q", Access::Configure)
                .is_ok()
        );
        let err = users
            .check_access("u", "/", Resource::Queue, "other.q", Access::Configure)
            .expect_err("refused");
        assert_eq!(
            (err.code, err.scope),
            (code::ACCESS_REFUSED, Scope::Channel)
        );
        assert_eq!(
            err.text,
            "ACCESS_REFUSED - access to queue 'other.q' in vhost '/' refused for user 'u'"
        );
        let err = users
            .check_access("u", "/", Resource::Exchange, "", Access::Write)
            .expect_err("refused");
        assert_eq!(
            err.text,
            "ACCESS_REFUSED - access to exchange 'amq.default' in vhost '/' refused for user 'u'"
        );
        users.clear_permissions("u", "/");
        assert!(
            users
                .check_access("u", "/", Resource::Queue, "app.q", Access::Configure)
                .is_err()
        );
    }
}
