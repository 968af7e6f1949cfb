//! Authentication: SASL PLAIN and AMQPLAIN responses, and the user table.
//!
//! Runs once per connection, between `connection.start-ok` and `connection.tune`. As in
//! RabbitMQ, a refused login is answered with 403 ACCESS_REFUSED, and users listed in
//! `loopback_users` (by default `guest`) may only connect from a loopback address.

use std::collections::HashMap;
use std::net::SocketAddr;

use amq_protocol::types::{AMQPValue, parsing::parse_field_table};

use crate::error::{AmqpError, code};

/// Credentials taken from a start-ok response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
}

/// Decodes the SASL response of `connection.start-ok`.
pub fn parse_response(mechanism: &str, response: &[u8]) -> Result<Credentials, AmqpError> {
    let refused = || refused(mechanism);
    match mechanism {
        "PLAIN" => {
            // [authzid] NUL authcid NUL passwd
            let mut parts = response.split(|b| *b == 0);
            let (Some(_authz), Some(user), Some(pass), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(refused());
            };
            Ok(Credentials {
                user: String::from_utf8(user.to_vec()).map_err(|_| refused())?,
                password: String::from_utf8(pass.to_vec()).map_err(|_| refused())?,
            })
        }
        "AMQPLAIN" => {
            // A field table without its length prefix.
            let mut framed = Vec::with_capacity(response.len() + 4);
            framed.extend_from_slice(&(response.len() as u32).to_be_bytes());
            framed.extend_from_slice(response);
            let table = match parse_field_table(&framed[..]) {
                Ok(([], t)) => t,
                _ => return Err(refused()),
            };
            let text = |key: &str| match table.inner().get(key) {
                Some(AMQPValue::LongString(s)) => String::from_utf8(s.as_bytes().to_vec()).ok(),
                Some(AMQPValue::ShortString(s)) => Some(s.as_str().to_owned()),
                _ => None,
            };
            match (text("LOGIN"), text("PASSWORD")) {
                (Some(user), Some(password)) => Ok(Credentials { user, password }),
                _ => Err(refused()),
            }
        }
        other => Err(AmqpError::connection(
            code::COMMAND_INVALID,
            format_args!("unknown authentication mechanism '{other}'"),
        )),
    }
}

fn refused(mechanism: &str) -> AmqpError {
    AmqpError::connection(
        code::ACCESS_REFUSED,
        format_args!(
            "Login was refused using authentication mechanism {mechanism}. For details see the broker logfile."
        ),
    )
}

/// The broker's users.
#[derive(Debug, Clone)]
pub struct Users {
    passwords: HashMap<String, String>,
    loopback_only: Vec<String>,
}

impl Default for Users {
    /// `guest`/`guest`, allowed from loopback only.
    fn default() -> Self {
        let mut passwords = HashMap::new();
        passwords.insert("guest".to_owned(), "guest".to_owned());
        Self {
            passwords,
            loopback_only: vec!["guest".to_owned()],
        }
    }
}

impl Users {
    /// Adds or replaces a user.
    pub fn add(&mut self, user: &str, password: &str) {
        self.passwords.insert(user.to_owned(), password.to_owned());
    }

    /// Sets which users may only connect from loopback (RabbitMQ's `loopback_users`).
    pub fn set_loopback_users(&mut self, users: Vec<String>) {
        self.loopback_only = users;
    }

    /// Checks credentials from a peer address.
    pub fn authenticate(
        &self,
        creds: &Credentials,
        mechanism: &str,
        peer: SocketAddr,
    ) -> Result<(), AmqpError> {
        let ok = self
            .passwords
            .get(&creds.user)
            .is_some_and(|p| constant_time_eq(p.as_bytes(), creds.password.as_bytes()));
        if !ok {
            tracing::warn!(user = %creds.user, %peer, "login refused: bad credentials");
            return Err(refused(mechanism));
        }
        if self.loopback_only.contains(&creds.user) && !peer.ip().is_loopback() {
            tracing::warn!(user = %creds.user, %peer, "login refused: user may only connect via localhost");
            // RabbitMQ gives the client the generic refusal; the reason is in the log.
            return Err(refused(mechanism));
        }
        Ok(())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::auth::{Credentials as ClientCreds, SASLMechanism};

    fn local() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 5000))
    }

    #[test]
    fn plain_and_amqplain_decode_what_clients_send() {
        let client = ClientCreds::new("guest".into(), "guest".into());
        for (name, mech) in [
            ("PLAIN", SASLMechanism::Plain),
            ("AMQPLAIN", SASLMechanism::AMQPlain),
        ] {
            let response = client.sasl_auth_string(mech);
            let creds = parse_response(name, response.as_bytes()).expect(name);
            assert_eq!(
                creds,
                Credentials {
                    user: "guest".into(),
                    password: "guest".into()
                }
            );
        }
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
    }

    #[test]
    fn garbage_responses_are_refused_not_panics() {
        for r in [&b""[..], b"\0", b"a\0b\0c\0d", &[0xff, 0xfe, 0, 1]] {
            assert!(parse_response("PLAIN", r).is_err());
            assert!(parse_response("AMQPLAIN", r).is_err());
        }
        assert_eq!(
            parse_response("EXTERNAL", b"").expect_err("mech").code,
            code::COMMAND_INVALID
        );
    }
}
