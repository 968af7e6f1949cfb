//! Codecs: how arguments and results become message bodies and back.
//!
//! A codec is chosen per call by the client and travels in the `content_type`
//! property; the server decodes the request with it and encodes the reply with the
//! same one. [`Codec::MsgPack`] is the default (compact, self-describing, field names
//! kept so other languages can read it), [`Codec::Json`] serves Python, Node or shell
//! clients, and [`Codec::Text`] speaks the seed tutorial's protocol: a body that is
//! just the value as text (`"30"` in, `"832040"` out).

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The content type of a MessagePack body.
pub const MSGPACK: &str = "application/msgpack";
/// The content type of a JSON body.
pub const JSON: &str = "application/json";
/// The content type of a plain-text body.
pub const TEXT: &str = "text/plain";

/// How a value is turned into a message body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Codec {
    /// MessagePack with named struct fields (`rmp_serde::to_vec_named`).
    #[default]
    MsgPack,
    /// JSON (`serde_json`).
    Json,
    /// Plain text, the seed tutorial's protocol: strings travel raw, every other value
    /// as its JSON text (`30`, `true`, `[1,2]`). A request that carries no
    /// `content_type` at all is read as text.
    Text,
}

/// A body could not be encoded or decoded, or its content type is not supported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The value could not be encoded.
    #[error("cannot encode {codec:?} body: {message}")]
    Encode {
        /// The codec in use.
        codec: Codec,
        /// What the serializer said.
        message: String,
    },
    /// The body does not decode into the expected type.
    #[error("cannot decode {codec:?} body: {message}")]
    Decode {
        /// The codec in use.
        codec: Codec,
        /// What the deserializer said.
        message: String,
    },
    /// The `content_type` names no codec this crate knows.
    #[error("unsupported content type {0:?}")]
    UnsupportedContentType(String),
    /// A reply carried a status this client does not know.
    #[error("unknown reply status {0:?}")]
    UnknownStatus(String),
}

impl Codec {
    /// The `content_type` property for this codec.
    pub fn content_type(self) -> &'static str {
        match self {
            Codec::MsgPack => MSGPACK,
            Codec::Json => JSON,
            Codec::Text => TEXT,
        }
    }

    /// The codec for a `content_type` property. No content type (or an empty one)
    /// means text, so that clients of the seed protocol work unchanged. Parameters such
    /// as `; charset=utf-8` are ignored.
    pub fn from_content_type(content_type: Option<&str>) -> Result<Codec, CodecError> {
        let Some(raw) = content_type else {
            return Ok(Codec::Text);
        };
        let essence = raw
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "" | TEXT => Ok(Codec::Text),
            JSON => Ok(Codec::Json),
            MSGPACK | "application/x-msgpack" | "application/vnd.msgpack" => Ok(Codec::MsgPack),
            _ => Err(CodecError::UnsupportedContentType(raw.to_owned())),
        }
    }

    /// Encodes a value.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>, CodecError> {
        let err = |message: String| CodecError::Encode {
            codec: self,
            message,
        };
        match self {
            Codec::MsgPack => rmp_serde::to_vec_named(value).map_err(|e| err(e.to_string())),
            Codec::Json => serde_json::to_vec(value).map_err(|e| err(e.to_string())),
            Codec::Text => match serde_json::to_value(value).map_err(|e| err(e.to_string()))? {
                // Raw, unless the raw text would read back as a JSON string literal
                // (`"x"`, `""`): then quoted, so that it round-trips.
                serde_json::Value::String(s)
                    if serde_json::from_str::<String>(s.trim()).is_err() =>
                {
                    Ok(s.into_bytes())
                }
                serde_json::Value::String(s) => {
                    serde_json::to_vec(&s).map_err(|e| err(e.to_string()))
                }
                other => serde_json::to_vec(&other).map_err(|e| err(e.to_string())),
            },
        }
    }

    /// Decodes a value.
    pub fn decode<T: DeserializeOwned>(self, body: &[u8]) -> Result<T, CodecError> {
        let err = |message: String| CodecError::Decode {
            codec: self,
            message,
        };
        match self {
            Codec::MsgPack => rmp_serde::from_slice(body).map_err(|e| err(e.to_string())),
            Codec::Json => serde_json::from_slice(body).map_err(|e| err(e.to_string())),
            Codec::Text => {
                let text = std::str::from_utf8(body).map_err(|e| err(e.to_string()))?;
                // A value's JSON text first (numbers, booleans, objects); failing that,
                // the whole body as a string.
                match serde_json::from_str::<T>(text.trim()) {
                    Ok(v) => Ok(v),
                    Err(json_err) => {
                        serde_json::from_value(serde_json::Value::String(text.to_owned()))
                            .map_err(|_| err(json_err.to_string()))
                    }
                }
            }
        }
    }

    /// Encodes a human-readable message (the body of the `bad_request`,
    /// `unknown_method`, `internal`, `deadline_exceeded` and `unavailable` replies).
    pub fn encode_message(self, message: &str) -> Vec<u8> {
        match self {
            Codec::Text => message.as_bytes().to_vec(),
            // Encoding a &str cannot fail in either codec; fall back to raw text anyway.
            _ => self
                .encode(message)
                .unwrap_or_else(|_| message.as_bytes().to_vec()),
        }
    }

    /// Decodes a message written by [`Codec::encode_message`]; never fails, a body
    /// that is not a string in this codec is shown as lossy UTF-8.
    pub fn decode_message(self, body: &[u8]) -> String {
        match self {
            Codec::Text => String::from_utf8_lossy(body).into_owned(),
            _ => self
                .decode::<String>(body)
                .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Shape {
        Unit,
        Circle { r: i32 },
        Pair(u8, String),
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Args {
        n: u64,
        name: String,
        tags: Vec<String>,
        shape: Shape,
        maybe: Option<i64>,
    }

    fn shape() -> impl Strategy<Value = Shape> {
        prop_oneof![
            Just(Shape::Unit),
            any::<i32>().prop_map(|r| Shape::Circle { r }),
            (any::<u8>(), ".*").prop_map(|(a, b)| Shape::Pair(a, b)),
        ]
    }

    fn args() -> impl Strategy<Value = Args> {
        (
            any::<u64>(),
            ".*",
            proptest::collection::vec(".*", 0..4),
            shape(),
            any::<Option<i64>>(),
        )
            .prop_map(|(n, name, tags, shape, maybe)| Args {
                n,
                name,
                tags,
                shape,
                maybe,
            })
    }

    proptest! {
        #[test]
        fn every_codec_round_trips_structs(a in args()) {
            for codec in [Codec::MsgPack, Codec::Json, Codec::Text] {
                let body = codec.encode(&a).expect("encode");
                prop_assert_eq!(codec.decode::<Args>(&body).expect("decode"), a.clone());
            }
        }

        #[test]
        fn text_strings_travel_raw(s in ".*") {
            let body = Codec::Text.encode(&s).expect("encode");
            // Raw, except text that would read back as a JSON string literal.
            if serde_json::from_str::<String>(s.trim()).is_err() {
                prop_assert_eq!(&body, s.as_bytes());
            }
            prop_assert_eq!(Codec::Text.decode::<String>(&body).expect("decode"), s);
        }

        #[test]
        fn text_numbers_are_decimal(n in any::<u64>()) {
            let body = Codec::Text.encode(&n).expect("encode");
            prop_assert_eq!(body, n.to_string().into_bytes());
        }

        #[test]
        fn garbage_never_panics(body in proptest::collection::vec(any::<u8>(), 0..64)) {
            for codec in [Codec::MsgPack, Codec::Json, Codec::Text] {
                let _ = codec.decode::<Args>(&body);
                let _ = codec.decode_message(&body);
            }
        }
    }

    #[test]
    fn seed_protocol_body_is_a_number_as_text() {
        assert_eq!(Codec::Text.decode::<u64>(b"30").expect("decode"), 30);
        assert_eq!(Codec::Text.decode::<u64>(b" 30\n").expect("decode"), 30);
        assert_eq!(Codec::Text.encode(&832040u64).expect("encode"), b"832040");
        assert!(Codec::Text.decode::<u64>(b"thirty").is_err());
    }

    #[test]
    fn content_types_map_to_codecs() {
        assert_eq!(Codec::from_content_type(None).ok(), Some(Codec::Text));
        assert_eq!(Codec::from_content_type(Some("")).ok(), Some(Codec::Text));
        assert_eq!(
            Codec::from_content_type(Some("application/json; charset=utf-8")).ok(),
            Some(Codec::Json)
        );
        assert_eq!(
            Codec::from_content_type(Some("application/msgpack")).ok(),
            Some(Codec::MsgPack)
        );
        assert!(matches!(
            Codec::from_content_type(Some("application/xml")),
            Err(CodecError::UnsupportedContentType(_))
        ));
        for c in [Codec::MsgPack, Codec::Json, Codec::Text] {
            assert_eq!(
                Codec::from_content_type(Some(c.content_type())).ok(),
                Some(c)
            );
        }
    }

    #[test]
    fn messages_round_trip_in_every_codec() {
        for c in [Codec::MsgPack, Codec::Json, Codec::Text] {
            assert_eq!(c.decode_message(&c.encode_message("boom: x")), "boom: x");
        }
    }
}
