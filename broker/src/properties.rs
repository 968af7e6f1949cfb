//! Message properties read in place: the content header's property bytes are checked
//! and the few fields the broker acts on are located, without building them.
//!
//! The broker forwards properties byte for byte, and looks at only a handful of them:
//! `delivery_mode`, `expiration`, `reply_to` (direct reply-to rewrites it), `user_id`
//! (checked against the login), and `headers` (only for headers exchanges, decoded on
//! demand). A full decode would allocate for every string and table on every
//! publish. Instead, [`Properties::scan`] walks the bytes once. It validates them as
//! strictly as amq-protocol's decoder does (a property test checks the two agree) and
//! records where each needed field is.

use std::ops::Range;

use amq_protocol::types::parsing::parse_field_table;
use amq_protocol::types::{AMQPValue, FieldTable, ShortString};
use bytes::{BufMut, Bytes, BytesMut};

/// Property flag bits of the basic class, in wire order.
const CONTENT_TYPE: u16 = 1 << 15;
const CONTENT_ENCODING: u16 = 1 << 14;
const HEADERS: u16 = 1 << 13;
const DELIVERY_MODE: u16 = 1 << 12;
const PRIORITY: u16 = 1 << 11;
const CORRELATION_ID: u16 = 1 << 10;
const REPLY_TO: u16 = 1 << 9;
const EXPIRATION: u16 = 1 << 8;
const MESSAGE_ID: u16 = 1 << 7;
const TIMESTAMP: u16 = 1 << 6;
const TYPE: u16 = 1 << 5;
const USER_ID: u16 = 1 << 4;
const APP_ID: u16 = 1 << 3;
const CLUSTER_ID: u16 = 1 << 2;

// How deep tables and arrays may nest before the header is refused: the same limit as
// for method frames.
use crate::nesting::{MAX_DEPTH, fixed_width};

/// Where the fields the broker acts on are, within the raw property bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    raw: Bytes,
    delivery_mode: Option<u8>,
    priority: Option<u8>,
    /// Where the headers table is, or where it would go (after the two content fields).
    headers_at: usize,
    headers: Option<Range<usize>>,
    reply_to: Option<Range<usize>>,
    expiration: Option<Range<usize>>,
    user_id: Option<Range<usize>>,
}

/// The property bytes are not well formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed content header properties")]
pub struct Malformed;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<Range<usize>, Malformed> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or(Malformed)?;
        let r = self.pos..end;
        self.pos = end;
        Ok(r)
    }

    fn u8(&mut self) -> Result<u8, Malformed> {
        let r = self.take(1)?;
        Ok(self.buf[r.start])
    }

    fn u32(&mut self) -> Result<usize, Malformed> {
        let r = self.take(4)?;
        let b = &self.buf[r];
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    /// A short string's contents (UTF-8, as amq-protocol requires).
    fn short_str(&mut self) -> Result<Range<usize>, Malformed> {
        let n = usize::from(self.u8()?);
        let r = self.take(n)?;
        std::str::from_utf8(&self.buf[r.clone()]).map_err(|_| Malformed)?;
        Ok(r)
    }

    /// A field table including its length prefix.
    fn table(&mut self, depth: usize) -> Result<Range<usize>, Malformed> {
        let start = self.pos;
        let len = self.u32()?;
        let body = self.take(len)?;
        let mut inner = Reader {
            buf: &self.buf[..body.end],
            pos: body.start,
        };
        while inner.pos < body.end {
            inner.short_str()?;
            inner.value(depth + 1)?;
        }
        Ok(start..self.pos)
    }

    fn value(&mut self, depth: usize) -> Result<(), Malformed> {
        if depth > MAX_DEPTH {
            return Err(Malformed);
        }
        let kind = self.u8()?;
        let fixed = match (fixed_width(kind), kind) {
            (Some(n), _) => n,
            (None, b'S' | b'x') => {
                let n = self.u32()?;
                self.take(n)?;
                return Ok(());
            }
            (None, b'F') => {
                self.table(depth)?;
                return Ok(());
            }
            (None, b'A') => {
                let len = self.u32()?;
                let body = self.take(len)?;
                let mut inner = Reader {
                    buf: &self.buf[..body.end],
                    pos: body.start,
                };
                while inner.pos < body.end {
                    inner.value(depth + 1)?;
                }
                return Ok(());
            }
            _ => return Err(Malformed),
        };
        self.take(fixed)?;
        Ok(())
    }
}

impl Properties {
    /// Checks raw property bytes (flags, then fields) and locates the needed fields.
    pub fn scan(raw: Bytes) -> Result<Self, Malformed> {
        let mut r = Reader { buf: &raw, pos: 0 };
        let hi = r.u8()?;
        let lo = r.u8()?;
        let flags = u16::from_be_bytes([hi, lo]);
        // The basic class has 14 properties: the low two bits (continuation and an
        // unused bit) must be clear.
        if flags & 0b11 != 0 {
            return Err(Malformed);
        }
        let mut p = Properties::default();
        let has = |bit: u16| flags & bit != 0;
        if has(CONTENT_TYPE) {
            r.short_str()?;
        }
        if has(CONTENT_ENCODING) {
            r.short_str()?;
        }
        p.headers_at = r.pos;
        if has(HEADERS) {
            p.headers = Some(r.table(0)?);
        }
        if has(DELIVERY_MODE) {
            p.delivery_mode = Some(r.u8()?);
        }
        if has(PRIORITY) {
            p.priority = Some(r.u8()?);
        }
        if has(CORRELATION_ID) {
            r.short_str()?;
        }
        if has(REPLY_TO) {
            p.reply_to = Some(r.short_str()?);
        }
        if has(EXPIRATION) {
            p.expiration = Some(r.short_str()?);
        }
        if has(MESSAGE_ID) {
            r.short_str()?;
        }
        if has(TIMESTAMP) {
            r.take(8)?;
        }
        if has(TYPE) {
            r.short_str()?;
        }
        if has(USER_ID) {
            p.user_id = Some(r.short_str()?);
        }
        if has(APP_ID) {
            r.short_str()?;
        }
        if has(CLUSTER_ID) {
            r.short_str()?;
        }
        if r.pos != raw.len() {
            return Err(Malformed);
        }
        p.raw = raw;
        Ok(p)
    }

    fn text(&self, range: &Option<Range<usize>>) -> Option<&str> {
        // Validated as UTF-8 by `scan`.
        range
            .clone()
            .and_then(|r| std::str::from_utf8(&self.raw[r]).ok())
    }

    /// The bytes as received.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// `delivery_mode` (2 = persistent).
    pub fn delivery_mode(&self) -> Option<u8> {
        self.delivery_mode
    }

    /// `priority`.
    pub fn priority(&self) -> Option<u8> {
        self.priority
    }

    /// `reply_to`.
    pub fn reply_to(&self) -> Option<&str> {
        self.text(&self.reply_to)
    }

    /// `expiration`.
    pub fn expiration(&self) -> Option<&str> {
        self.text(&self.expiration)
    }

    /// `user_id`.
    pub fn user_id(&self) -> Option<&str> {
        self.text(&self.user_id)
    }

    /// The `headers` table, decoded (for headers exchanges).
    pub fn headers(&self) -> Option<FieldTable> {
        let r = self.headers.clone()?;
        parse_field_table(&self.raw[r]).ok().map(|(_, t)| t)
    }

    /// The `CC` and `BCC` headers' routing keys (arrays of strings), if the headers
    /// have either. A byte search for the two names comes first, so a message without
    /// them is not decoded.
    pub fn sender_keys(&self) -> Option<(SenderKeys, Option<FieldTable>)> {
        let r = self.headers.clone()?;
        let raw = &self.raw[r];
        let has = |name: &[u8]| raw.windows(name.len()).any(|w| w == name);
        if !has(b"\x02CC") && !has(b"\x03BCC") {
            return None;
        }
        let headers = self.headers()?;
        let cc = header_keys(&headers, "CC");
        let bcc = header_keys(&headers, "BCC");
        if cc.is_empty() && bcc.is_empty() {
            return None;
        }
        let without_bcc = headers.inner().contains_key("BCC").then(|| {
            let mut t = FieldTable::default();
            for (k, v) in headers.inner() {
                if k.as_str() != "BCC" {
                    t.insert(k.clone(), v.clone());
                }
            }
            t
        });
        Some((SenderKeys { cc, bcc }, without_bcc))
    }

    /// The same properties with `reply_to` replaced (it must already be present).
    pub fn with_reply_to(&self, reply_to: &str) -> Result<Self, Malformed> {
        let r = self.reply_to.clone().ok_or(Malformed)?;
        let value = &reply_to.as_bytes()[..reply_to.len().min(255)];
        let mut out = BytesMut::with_capacity(self.raw.len() + value.len());
        // The length octet sits just before the string.
        out.extend_from_slice(&self.raw[..r.start - 1]);
        out.put_u8(value.len() as u8);
        out.extend_from_slice(value);
        out.extend_from_slice(&self.raw[r.end..]);
        Self::scan(out.freeze())
    }
}

impl Properties {
    /// The same properties with the headers table replaced by `headers` (already
    /// encoded, its length prefix included) and, if `drop_expiration`, no
    /// `expiration`: how a dead-lettered message is rewritten. Every other field keeps
    /// its bytes.
    pub fn with_headers(&self, headers: &[u8], drop_expiration: bool) -> Result<Self, Malformed> {
        let raw = &self.raw;
        let mut flags = u16::from_be_bytes([raw[0], raw[1]]) | HEADERS;
        let mut out = BytesMut::with_capacity(raw.len() + headers.len());
        out.put_u16(0);
        out.extend_from_slice(&raw[2..self.headers_at]);
        out.extend_from_slice(headers);
        let after = self.headers.as_ref().map_or(self.headers_at, |r| r.end);
        match self.expiration.as_ref().filter(|_| drop_expiration) {
            Some(e) => {
                flags &= !EXPIRATION;
                // The length octet sits just before the string.
                out.extend_from_slice(&raw[after..e.start - 1]);
                out.extend_from_slice(&raw[e.end..]);
            }
            None => out.extend_from_slice(&raw[after..]),
        }
        out[..2].copy_from_slice(&flags.to_be_bytes());
        Self::scan(out.freeze())
    }
}

/// The extra routing keys a publisher gave in the `CC` and `BCC` headers. `BCC` is
/// removed from the headers before the message is stored or delivered, as RabbitMQ
/// does; its keys are kept here only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SenderKeys {
    /// `CC`: routed by and shown in `x-death`'s `routing-keys`.
    pub cc: Vec<ShortString>,
    /// `BCC`: routed by, never shown.
    pub bcc: Vec<ShortString>,
}

impl SenderKeys {
    /// Every key, `CC` then `BCC`.
    pub fn all(&self) -> impl Iterator<Item = &ShortString> {
        self.cc.iter().chain(&self.bcc)
    }
}

/// The routing keys in header `name` (`CC` or `BCC`: an array of strings; anything
/// else in it is skipped).
pub fn header_keys(headers: &FieldTable, name: &str) -> Vec<ShortString> {
    match headers.inner().get(name) {
        Some(AMQPValue::FieldArray(a)) => a
            .as_slice()
            .iter()
            .filter_map(|v| match v {
                AMQPValue::LongString(s) => Some(ShortString::from(
                    String::from_utf8_lossy(s.as_bytes()).into_owned(),
                )),
                AMQPValue::ShortString(s) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::basic::{AMQPProperties, parse_properties};
    use amq_protocol::types::{AMQPValue, FieldArray, LongString, ShortString};
    use proptest::prelude::*;

    fn encode(p: &AMQPProperties) -> Bytes {
        crate::frame::encode_properties(p)
    }

    fn encode_table(t: &FieldTable) -> Vec<u8> {
        crate::frame::encode_table(t)
    }

    fn short() -> impl Strategy<Value = ShortString> {
        "[a-z0-9.é-]{0,20}".prop_map(ShortString::from)
    }

    fn value() -> impl Strategy<Value = AMQPValue> {
        let leaf = prop_oneof![
            any::<bool>().prop_map(AMQPValue::Boolean),
            any::<i8>().prop_map(AMQPValue::ShortShortInt),
            any::<i32>().prop_map(AMQPValue::LongInt),
            any::<i64>().prop_map(AMQPValue::LongLongInt),
            any::<u64>().prop_map(AMQPValue::Timestamp),
            "[ -~]{0,30}".prop_map(|s| AMQPValue::LongString(LongString::from(s.into_bytes()))),
            Just(AMQPValue::Void),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| AMQPValue::FieldArray(FieldArray::from(v))),
                proptest::collection::btree_map("[a-z-]{1,8}", inner, 0..4).prop_map(|m| {
                    let mut t = FieldTable::default();
                    for (k, v) in m {
                        t.insert(k.into(), v);
                    }
                    AMQPValue::FieldTable(t)
                }),
            ]
        })
    }

    fn props() -> impl Strategy<Value = AMQPProperties> {
        (
            proptest::option::of(short()),
            proptest::option::of(proptest::collection::btree_map(
                "[a-z-]{1,8}",
                value(),
                0..4,
            )),
            proptest::option::of(1u8..3),
            proptest::option::of(short()),
            proptest::option::of(short()),
            proptest::option::of("[0-9]{1,6}"),
            proptest::option::of(any::<u64>()),
            proptest::option::of(short()),
        )
            .prop_map(|(ct, headers, dm, corr, reply, exp, ts, user)| {
                let mut p = AMQPProperties::default();
                if let Some(v) = ct {
                    p = p.with_content_type(v);
                }
                if let Some(h) = headers {
                    let mut t = FieldTable::default();
                    for (k, v) in h {
                        t.insert(k.into(), v);
                    }
                    p = p.with_headers(t);
                }
                if let Some(v) = dm {
                    p = p.with_delivery_mode(v);
                }
                if let Some(v) = corr {
                    p = p.with_correlation_id(v);
                }
                if let Some(v) = reply {
                    p = p.with_reply_to(v);
                }
                if let Some(v) = exp {
                    p = p.with_expiration(v.into());
                }
                if let Some(v) = ts {
                    p = p.with_timestamp(v);
                }
                if let Some(v) = user {
                    p = p
                        .with_user_id(v)
                        .with_app_id("app".into())
                        .with_type("t".into());
                }
                p
            })
    }

    proptest! {
        #[test]
        fn scan_finds_what_amq_protocol_decodes(p in props()) {
            let raw = encode(&p);
            let scanned = Properties::scan(raw.clone()).expect("well formed");
            prop_assert_eq!(scanned.delivery_mode(), *p.delivery_mode());
            prop_assert_eq!(scanned.reply_to(), p.reply_to().as_ref().map(|s| s.as_str()));
            prop_assert_eq!(scanned.expiration(), p.expiration().as_ref().map(|s| s.as_str()));
            prop_assert_eq!(scanned.user_id(), p.user_id().as_ref().map(|s| s.as_str()));
            prop_assert_eq!(scanned.headers(), p.headers().clone());
            if p.reply_to().is_some() {
                let rewritten = scanned.with_reply_to("amq.rabbitmq.reply-to.xyz").expect("rewrite");
                let (_, decoded) = parse_properties(&rewritten.raw()[..]).expect("decodes");
                prop_assert_eq!(decoded, p.clone().with_reply_to("amq.rabbitmq.reply-to.xyz".into()));
            }
        }

        #[test]
        fn with_headers_replaces_headers_and_drops_expiration(p in props(), drop in any::<bool>()) {
            let scanned = Properties::scan(encode(&p)).expect("well formed");
            let mut table = FieldTable::default();
            table.insert("x-death".into(), AMQPValue::LongInt(7));
            let rewritten = scanned.with_headers(&encode_table(&table), drop).expect("rewrite");
            let (_, d) = parse_properties(&rewritten.raw()[..]).expect("decodes");
            prop_assert_eq!(d.headers(), &Some(table));
            let expiration = if drop { &None } else { p.expiration() };
            prop_assert_eq!(d.expiration(), expiration);
            prop_assert_eq!(d.content_type(), p.content_type());
            prop_assert_eq!(d.delivery_mode(), p.delivery_mode());
            prop_assert_eq!(d.correlation_id(), p.correlation_id());
            prop_assert_eq!(d.reply_to(), p.reply_to());
            prop_assert_eq!(d.timestamp(), p.timestamp());
            prop_assert_eq!(d.user_id(), p.user_id());
        }

        #[test]
        fn scan_agrees_with_amq_protocol_on_damaged_bytes(p in props(), cut in any::<prop::sample::Index>(), flip in any::<(prop::sample::Index, u8)>()) {
            let raw = encode(&p).to_vec();
            let mut damaged = raw.clone();
            let (i, x) = flip;
            let idx = i.index(damaged.len());
            damaged[idx] ^= x;
            let cut_at = cut.index(raw.len() + 1);
            for bytes in [damaged, raw[..cut_at].to_vec()] {
                let ours = Properties::scan(Bytes::from(bytes.clone())).is_ok();
                let theirs = matches!(parse_properties(&bytes[..]), Ok((rest, _)) if rest.is_empty());
                // Anything amq-protocol refuses, we refuse (we may be stricter about
                // the reserved flag bits).
                prop_assert!(!ours || theirs, "accepted what amq-protocol refuses: {bytes:?}");
            }
        }
    }
}
