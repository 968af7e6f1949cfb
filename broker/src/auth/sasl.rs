//! SASL responses: what PLAIN and AMQPLAIN clients send in `connection.start-ok`.

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
            // A field table without its length prefix, decoded recursively: refuse
            // deep nesting first.
            if crate::nesting::entries_too_deep(response) {
                return Err(
                    crate::frame::too_deep().during(crate::error::method::CONNECTION_START_OK)
                );
            }
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

pub(super) fn refused(mechanism: &str) -> AmqpError {
    AmqpError::connection(
        code::ACCESS_REFUSED,
        format_args!(
            "Login was refused using authentication mechanism {mechanism}. For details see the broker logfile."
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::auth::{Credentials as ClientCreds, SASLMechanism};

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
