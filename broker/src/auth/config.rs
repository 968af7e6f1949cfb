//! Users and permissions given by configuration (`--user`, `--permission`, the
//! builder's [`user`](crate::BrokerBuilder::user),
//! [`user_with_tags`](crate::BrokerBuilder::user_with_tags) and
//! [`permissions`](crate::BrokerBuilder::permissions)), and the user table a broker
//! starts with.
//!
//! As RabbitMQ does, a fresh data directory (no users file) starts with `guest`/`guest`
//! (administrator, all rights on `/`); after that the users file is authoritative, so
//! a `guest` deleted at run time stays deleted. The configuration is applied on top of
//! what was loaded at every start, and wins for what it names (a configured user gets
//! the configured password and tags; other stored users and permissions stay). The
//! result is written back before the broker serves, if it differs from the file.

use crate::error::StartError;
use std::path::Path;

use super::{AuthError, Permission, User, Users, file, hash_password};

/// What the configuration says about users, recorded until the broker starts.
#[derive(Debug, Clone, Default)]
pub(crate) struct UserConfig {
    changes: Vec<Change>,
    loopback_users: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
enum Change {
    /// Adds or replaces a user (hashed already: no password is kept in memory).
    User {
        name: String,
        user: User,
        /// Also full rights on `/`.
        all_on_default: bool,
    },
    /// Sets a user's rights in a vhost.
    Permission {
        user: String,
        vhost: String,
        permission: Permission,
    },
}

impl UserConfig {
    /// Adds or replaces a user; `all_on_default` also grants it full rights on `/`.
    pub(crate) fn user(&mut self, name: &str, password: &str, tags: Vec<String>, all: bool) {
        self.changes.push(Change::User {
            name: name.to_owned(),
            user: User {
                hash: hash_password(password),
                tags,
            },
            all_on_default: all,
        });
    }

    /// Sets a user's rights in a vhost. The patterns are checked now; the user and the
    /// vhost at start, when the stored ones are known.
    pub(crate) fn permissions(
        &mut self,
        user: &str,
        vhost: &str,
        configure: &str,
        write: &str,
        read: &str,
    ) -> Result<(), AuthError> {
        let permission = Permission::new(configure, write, read)?;
        self.changes.push(Change::Permission {
            user: user.to_owned(),
            vhost: vhost.to_owned(),
            permission,
        });
        Ok(())
    }

    /// The users limited to loopback (default: `guest`).
    pub(crate) fn loopback_users(&mut self, users: Vec<String>) {
        self.loopback_users = Some(users);
    }

    /// Applies the configuration to `users`, in the order it was given.
    fn apply(&self, users: &mut Users) -> Result<(), AuthError> {
        users.generation += 1;
        for change in &self.changes {
            match change {
                Change::User {
                    name,
                    user,
                    all_on_default,
                } => {
                    users.users.insert(name.clone(), user.clone());
                    if *all_on_default {
                        let all = Permission::new(".*", ".*", ".*")?;
                        users
                            .permissions
                            .insert((name.clone(), "/".to_owned()), all);
                    }
                }
                Change::Permission {
                    user,
                    vhost,
                    permission,
                } => {
                    if !users.users.contains_key(user) {
                        return Err(AuthError::NoUser(user.clone()));
                    }
                    if !users.vhosts.contains(vhost) {
                        return Err(AuthError::NoVhost(vhost.clone()));
                    }
                    users
                        .permissions
                        .insert((user.clone(), vhost.clone()), permission.clone());
                }
            }
        }
        if let Some(loopback) = &self.loopback_users {
            users.loopback_only = loopback.clone();
        }
        Ok(())
    }
}

/// The user table a broker starts with: loaded from `data_dir` (the defaults if it
/// has no users file yet, or without a data directory), knowing exactly `vhosts`
/// (permissions on others are dropped), with `config` applied on top, and written back
/// to `data_dir` if that changes it (a failed write is logged, not fatal).
///
/// Fails, naming the file, for a damaged users file; and for configured permissions
/// naming an unknown user or vhost.
pub(crate) fn open(
    data_dir: Option<&Path>,
    vhosts: &[String],
    config: &UserConfig,
) -> Result<Users, StartError> {
    let stored = match data_dir {
        Some(dir) => file::load(dir).map_err(StartError::Store)?,
        None => None,
    };
    let fresh = stored.is_none();
    let mut users = stored.unwrap_or_default();
    users.vhosts = vhosts.iter().cloned().collect();
    let before = users.permissions.len();
    let known = users.vhosts.clone();
    users.permissions.retain(|(_, v), _| known.contains(v));
    if users.permissions.len() != before {
        tracing::info!(
            dropped = before - users.permissions.len(),
            "dropped stored permissions on vhosts that no longer exist"
        );
    }
    config.apply(&mut users).map_err(|e| match e {
        AuthError::NoUser(u) => StartError::UnknownUser(u),
        AuthError::NoVhost(v) => StartError::UnknownVhost(v),
        AuthError::BadPattern(pattern, reason) => StartError::BadPattern { pattern, reason },
    })?;
    if let Some(dir) = data_dir {
        // Everything this write would record is derived again at the next start (the
        // configuration, the defaults, the permissions dropped), so a failure (a full
        // disk) must not stop the broker, which consumers need to drain it.
        if let Err(err) = file::save(dir, &users.encode()) {
            tracing::warn!(%err, "could not write the user table; serving the one in memory");
        }
        tracing::info!(
            file = %dir.join(file::FILE).display(),
            users = users.users.len(),
            permissions = users.permissions.len(),
            fresh,
            "user table"
        );
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(users: &Users) -> Vec<String> {
        users.list_users().into_iter().map(|(n, _)| n).collect()
    }

    #[test]
    fn fresh_dir_gets_guest_then_the_file_is_authoritative_and_config_wins() {
        let dir = tempfile::tempdir().expect("dir");
        let vhosts = ["/".to_owned(), "apps".to_owned()];
        let mut config = UserConfig::default();
        config.user("app", "one", vec!["monitoring".into()], false);
        config
            .permissions("app", "apps", "^a", "^a", "^a")
            .expect("patterns");
        let mut first = open(Some(dir.path()), &vhosts, &config).expect("fresh");
        assert_eq!(names(&first), ["app", "guest"]);
        assert!(first.check_password("guest", "guest"));
        // A run-time change, saved as the broker does.
        first.delete_user("guest").expect("guest");
        file::save(dir.path(), &first.encode()).expect("save");

        let none = UserConfig::default();
        let second = open(Some(dir.path()), &vhosts, &none).expect("restart");
        assert_eq!(names(&second), ["app"], "guest stays deleted");
        assert!(second.permissions("app", "apps").is_some());

        let mut again = UserConfig::default();
        again.user("app", "two", vec!["administrator".into()], true);
        let third = open(Some(dir.path()), &vhosts[..1], &again).expect("config");
        assert!(third.check_password("app", "two") && !third.check_password("app", "one"));
        assert!(third.has_tag("app", "administrator"));
        assert!(third.permissions("app", "/").is_some());
        assert!(third.permissions("app", "apps").is_none(), "vhost gone");

        let mut bad = UserConfig::default();
        bad.permissions("app", "nope", ".*", ".*", ".*")
            .expect("patterns");
        let err = open(Some(dir.path()), &vhosts, &bad).expect_err("unknown vhost");
        assert!(
            matches!(&err, StartError::UnknownVhost(v) if v == "nope"),
            "{err:?}"
        );
        assert!(err.to_string().contains("no such vhost 'nope'"), "{err}");
        assert!(bad.permissions("app", "/", "(", "", "").is_err());
    }

    #[test]
    fn without_a_data_dir_it_is_the_defaults_and_the_config() {
        let mut config = UserConfig::default();
        config.user("a", "pw", vec![], true);
        config.loopback_users(Vec::new());
        let users = open(None, &["/".to_owned()], &config).expect("memory");
        assert_eq!(names(&users), ["a", "guest"]);
        assert!(users.permissions("a", "/").is_some());
        assert!(users.loopback_only.is_empty());
    }
}
