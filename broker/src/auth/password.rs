//! Password hashes as RabbitMQ's definitions and management API carry them: base64 of
//! the stored `rabbit_password_hashing_sha256` bytes (4 salt bytes, then SHA-256 of
//! salt and password; see [`super::User`]).
//!
//! This is what lets a user exported from RabbitMQ (or from this broker) be imported
//! with its hash and log in with its original password, and what `PUT /api/users/NAME`
//! with `password_hash` (rabbitmqadmin v2's `users declare`) stores. An empty hash, as
//! in RabbitMQ, is a user without a password: no password logs it in.

use base64::Engine;

use super::{HASH_LEN, User, Users};

/// The only hashing algorithm this broker stores, named as RabbitMQ names it.
pub const SHA256: &str = "rabbit_password_hashing_sha256";

/// Why a password hash from a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HashError {
    /// `hashing_algorithm` names one this broker does not verify (RabbitMQ also has
    /// `rabbit_password_hashing_sha512` and `rabbit_password_hashing_md5`).
    #[error("hashing algorithm '{0}' is not supported; only rabbit_password_hashing_sha256 is")]
    Algorithm(String),
    /// Not base64.
    #[error("password_hash is not valid base64")]
    NotBase64,
    /// Base64, but not 4 salt bytes and a SHA-256 digest.
    #[error(
        "password_hash decodes to {0} bytes; a rabbit_password_hashing_sha256 hash has 36 (4 salt bytes, 32 of SHA-256)"
    )]
    Length(usize),
}

/// The stored bytes of a base64 `password_hash` under `algorithm` (`None`: RabbitMQ's
/// default, SHA-256). `""` is no password.
pub fn decode_hash(hash: &str, algorithm: Option<&str>) -> Result<Vec<u8>, HashError> {
    if let Some(a) = algorithm.filter(|a| *a != SHA256) {
        return Err(HashError::Algorithm(a.to_owned()));
    }
    if hash.is_empty() {
        return Ok(Vec::new());
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(hash.trim())
        .map_err(|_| HashError::NotBase64)?;
    if bytes.len() != HASH_LEN {
        return Err(HashError::Length(bytes.len()));
    }
    Ok(bytes)
}

impl Users {
    /// Adds or replaces a user with a hash from [`decode_hash`] (empty: no password),
    /// as RabbitMQ's definitions import and `PUT /api/users` with `password_hash` do.
    pub fn add_user_with_hash(&mut self, user: &str, hash: Vec<u8>, tags: Vec<String>) {
        self.generation += 1;
        self.users.insert(user.to_owned(), User { hash, tags });
    }

    /// Replaces an existing user's hash (from [`decode_hash`]).
    pub fn set_password_hash(&mut self, user: &str, hash: Vec<u8>) -> Result<(), super::AuthError> {
        self.generation += 1;
        let u = self
            .users
            .get_mut(user)
            .ok_or_else(|| super::AuthError::NoUser(user.to_owned()))?;
        u.hash = hash;
        Ok(())
    }

    /// Users with their tags and base64 password hash (`""` for no password), by name:
    /// what RabbitMQ's `/api/users` and definitions show.
    pub fn list_users_with_hashes(&self) -> Vec<(String, Vec<String>, String)> {
        let b64 = base64::engine::general_purpose::STANDARD;
        self.users
            .iter()
            .map(|(n, u)| (n.clone(), u.tags.clone(), b64.encode(&u.hash)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rabbitmq_hash_logs_in_with_its_password() {
        // guest/guest as RabbitMQ 3.10 exported it.
        let hash = decode_hash("e0RbveI6rhOuN/615qrOL5+PlFJCWzfIQr96wsvvvHjLJJ8q", None)
            .expect("valid hash");
        let mut users = Users::default();
        users.add_user_with_hash("imported", hash, vec![]);
        assert!(users.check_password("imported", "guest"));
        assert!(!users.check_password("imported", "Guest"));
        let listed = users.list_users_with_hashes();
        let (_, _, b64) = listed
            .iter()
            .find(|(n, _, _)| n == "imported")
            .expect("listed");
        assert_eq!(b64, "e0RbveI6rhOuN/615qrOL5+PlFJCWzfIQr96wsvvvHjLJJ8q");
    }

    #[test]
    fn an_empty_hash_is_no_password_and_bad_hashes_are_refused() {
        let mut users = Users::default();
        users.add_user_with_hash(
            "nopw",
            decode_hash("", Some(SHA256)).expect("empty"),
            vec![],
        );
        assert!(!users.check_password("nopw", ""));
        assert!(!users.check_password("nopw", "x"));
        // The users file keeps a user without a password.
        let back = Users::decode(&users.encode()).expect("an empty hash is stored");
        assert!(back.list_users().iter().any(|(n, _)| n == "nopw"));
        assert!(!back.check_password("nopw", ""));
        assert_eq!(decode_hash("%%%", None), Err(HashError::NotBase64));
        assert_eq!(decode_hash("AAAA", None), Err(HashError::Length(3)));
        assert!(matches!(
            decode_hash("", Some("rabbit_password_hashing_sha512")),
            Err(HashError::Algorithm(_))
        ));
    }
}
