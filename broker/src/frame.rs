//! Frames on the wire: the first stage of the data path.
//!
//! Inbound, [`decode`] takes complete frames off the connection's read buffer. The
//! frame header is checked against the negotiated `frame_max` before the payload is
//! waited for, so an oversized frame is refused (501) without ever being buffered.
//! Method payloads are parsed with `amq-protocol`; content headers keep their property
//! bytes raw, so every property and header table reaches consumers byte for byte; body
//! payloads are split off the read buffer without a copy.
//!
//! Outbound, the `encode_*` functions append frames to a connection's outbox buffer
//! (see [`crate::outbox`]), splitting bodies at `frame_max`.

use amq_protocol::frame::{AMQPFrame, gen_frame};
use amq_protocol::protocol::{AMQPClass, basic, basic::AMQPProperties, parse_class};
use amq_protocol::types::FieldTable;
use bytes::{Buf, Bytes, BytesMut};

use crate::error::{AmqpError, code, method};
use crate::properties::Properties;

/// Frame type octet of a method frame.
pub const FRAME_METHOD: u8 = 1;
/// Frame type octet of a content header frame.
pub const FRAME_HEADER: u8 = 2;
/// Frame type octet of a content body frame.
pub const FRAME_BODY: u8 = 3;
/// Frame type octet of a heartbeat frame.
pub const FRAME_HEARTBEAT: u8 = 8;
/// The octet that ends every frame.
pub const FRAME_END: u8 = 0xCE;
/// Type (1) + channel (2) + size (4).
pub const FRAME_HEADER_SIZE: usize = 7;
/// Header plus the end octet: what a frame costs beyond its payload.
pub const FRAME_OVERHEAD: usize = FRAME_HEADER_SIZE + 1;
/// The protocol header a 0-9-1 client sends first, and what we answer a wrong one with.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

/// The basic class id, the only content class.
pub const CLASS_BASIC: u16 = 60;

/// One decoded inbound frame.
// Frames live for one call and are moved once; boxing the method would cost an
// allocation per frame for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Frame {
    /// A method frame.
    Method(u16, AMQPClass),
    /// A content header: properties kept raw (flags and fields), parsed once.
    Header(u16, ContentHeader),
    /// A content body chunk.
    Body(u16, Bytes),
    /// A heartbeat (the channel should be 0).
    Heartbeat(u16),
}

/// A content header frame's fields.
#[derive(Debug)]
pub struct ContentHeader {
    /// Class of the content (60 for basic).
    pub class_id: u16,
    /// Total body size announced by the publisher.
    pub body_size: u64,
    /// The property flags and fields exactly as received, checked and indexed.
    pub properties: Properties,
}

/// Takes one complete frame off the front of `buf`, if there is one.
///
/// Returns `Ok(None)` when more bytes are needed. A frame whose announced size exceeds
/// `frame_max` is refused as soon as its 7-byte header is in, before its payload is read.
pub fn decode(buf: &mut BytesMut, frame_max: u32) -> Result<Option<Frame>, AmqpError> {
    if buf.len() < FRAME_HEADER_SIZE {
        return Ok(None);
    }
    let kind = buf[0];
    let channel = u16::from_be_bytes([buf[1], buf[2]]);
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
    // RabbitMQ compares the payload size (not payload + 8) with frame_max.
    if size > frame_max as usize {
        return Err(AmqpError::connection(
            code::FRAME_ERROR,
            format_args!("frame size {size} exceeds negotiated frame_max {frame_max}"),
        ));
    }
    if buf.len() < size + FRAME_OVERHEAD {
        buf.reserve(size + FRAME_OVERHEAD - buf.len());
        return Ok(None);
    }
    if buf[FRAME_HEADER_SIZE + size] != FRAME_END {
        return Err(AmqpError::connection(
            code::FRAME_ERROR,
            format_args!(
                "bad frame end marker {:#04x}",
                buf[FRAME_HEADER_SIZE + size]
            ),
        ));
    }
    buf.advance(FRAME_HEADER_SIZE);
    let payload = buf.split_to(size).freeze();
    buf.advance(1);
    let frame = match kind {
        FRAME_METHOD => Frame::Method(channel, decode_method(&payload)?),
        FRAME_HEADER => Frame::Header(channel, decode_header(payload)?),
        FRAME_BODY => Frame::Body(channel, payload),
        FRAME_HEARTBEAT => Frame::Heartbeat(channel),
        other => {
            return Err(AmqpError::connection(
                code::FRAME_ERROR,
                format_args!("unknown frame type {other}"),
            ));
        }
    };
    Ok(Some(frame))
}

fn decode_method(payload: &[u8]) -> Result<AMQPClass, AmqpError> {
    // basic.publish is the one method per message: decoded by hand, without nom.
    if let [0, 60, 0, 40, rest @ ..] = payload
        && let Some(publish) = decode_publish(rest)
    {
        return Ok(AMQPClass::Basic(basic::AMQPMethod::Publish(publish)));
    }
    // basic.qos: amq-protocol drops prefetch_size, which RabbitMQ refuses unless 0.
    if let [0, 60, 0, 10, a, b, c, d, ..] = *payload {
        let size = u32::from_be_bytes([a, b, c, d]);
        if size != 0 {
            return Err(AmqpError::connection(
                code::NOT_IMPLEMENTED,
                format_args!("prefetch_size!=0 ({size})"),
            )
            .during(method::BASIC_QOS));
        }
    }
    // amq-protocol decodes tables recursively: refuse deep nesting before it runs.
    if crate::nesting::method_too_deep(payload) {
        let (class_id, method_id) = match payload {
            [a, b, c, d, ..] => (u16::from_be_bytes([*a, *b]), u16::from_be_bytes([*c, *d])),
            _ => (0, 0),
        };
        return Err(too_deep().on_method(class_id, method_id));
    }
    match parse_class(payload) {
        Ok(([], class)) => Ok(class),
        Ok(_) => Err(AmqpError::connection(
            code::FRAME_ERROR,
            "method frame has trailing bytes",
        )),
        Err(_) => {
            let (class_id, method_id) = match payload {
                [a, b, c, d, ..] => (u16::from_be_bytes([*a, *b]), u16::from_be_bytes([*c, *d])),
                _ => (0, 0),
            };
            let err = if known_method(class_id, method_id) {
                AmqpError::connection(
                    code::SYNTAX_ERROR,
                    format_args!("could not decode method {class_id}.{method_id}"),
                )
            } else {
                AmqpError::connection(
                    code::NOT_IMPLEMENTED,
                    format_args!("unknown method {class_id}.{method_id}"),
                )
            };
            Err(err.on_method(class_id, method_id))
        }
    }
}

/// The error for a field table nested past [`crate::nesting::MAX_DEPTH`].
pub(crate) fn too_deep() -> AmqpError {
    AmqpError::connection(
        code::SYNTAX_ERROR,
        format_args!(
            "field table nested deeper than {} levels",
            crate::nesting::MAX_DEPTH
        ),
    )
}

/// basic.publish arguments: reserved short, exchange, routing key, bits. `None` if
/// malformed (the generic decoder then reports it).
fn decode_publish(args: &[u8]) -> Option<basic::Publish> {
    let (_ticket, rest) = args.split_at_checked(2)?;
    let (exchange, rest) = short_str(rest)?;
    let (routing_key, rest) = short_str(rest)?;
    let [bits] = rest else { return None };
    Some(basic::Publish {
        exchange: exchange.into(),
        routing_key: routing_key.into(),
        mandatory: bits & 1 != 0,
        immediate: bits & 2 != 0,
    })
}

fn short_str(buf: &[u8]) -> Option<(&str, &[u8])> {
    let (&len, rest) = buf.split_first()?;
    let (s, rest) = rest.split_at_checked(usize::from(len))?;
    Some((std::str::from_utf8(s).ok()?, rest))
}

fn known_method(class_id: u16, method_id: u16) -> bool {
    let methods: &[u16] = match class_id {
        10 => &[10, 11, 20, 21, 30, 31, 40, 41, 50, 51, 60, 61, 70, 71],
        20 => &[10, 11, 20, 21, 40, 41],
        30 => &[10, 11],
        40 => &[10, 11, 20, 21, 30, 31, 40, 51],
        50 => &[10, 11, 20, 21, 30, 31, 40, 41, 50, 51],
        60 => &[
            10, 11, 20, 21, 30, 31, 40, 50, 60, 70, 71, 72, 80, 90, 100, 110, 111, 120,
        ],
        85 => &[10, 11],
        90 => &[10, 11, 20, 21, 30, 31],
        _ => &[],
    };
    methods.contains(&method_id)
}

fn decode_header(mut payload: Bytes) -> Result<ContentHeader, AmqpError> {
    if payload.len() < 14 {
        return Err(AmqpError::connection(
            code::FRAME_ERROR,
            "content header too short",
        ));
    }
    let class_id = payload.get_u16();
    let _weight = payload.get_u16();
    let body_size = payload.get_u64();
    // Copied: a slice would pin the whole read buffer for as long as the message
    // waits in a queue.
    let properties = Properties::scan(Bytes::copy_from_slice(&payload)).map_err(|_| {
        AmqpError::connection(
            code::FRAME_ERROR,
            "content header properties could not be decoded",
        )
    })?;
    Ok(ContentHeader {
        class_id,
        body_size,
        properties,
    })
}

/// Appends a method frame.
pub fn encode_method(out: &mut Vec<u8>, channel: u16, method: AMQPClass) {
    let frame = AMQPFrame::Method(channel, method);
    let taken = std::mem::take(out);
    match gen_frame(&frame)(taken.into()) {
        Ok(ctx) => *out = ctx.into_inner().0,
        // Generation into a Vec only fails on a short string over 255 bytes, which
        // our own methods never carry; log it rather than corrupt the stream.
        Err(err) => tracing::error!(%err, "could not encode method frame"),
    }
}

/// Appends `basic.deliver`, hand-encoded: it is the per-message hot path.
pub fn encode_deliver(
    out: &mut Vec<u8>,
    channel: u16,
    consumer_tag: &str,
    delivery_tag: u64,
    redelivered: bool,
    exchange: &str,
    routing_key: &str,
) {
    let start = begin_method(out, channel, 60, 60);
    put_short_str(out, consumer_tag);
    out.extend_from_slice(&delivery_tag.to_be_bytes());
    out.push(u8::from(redelivered));
    put_short_str(out, exchange);
    put_short_str(out, routing_key);
    end_method(out, start);
}

/// Appends `basic.get-ok`, hand-encoded.
pub fn encode_get_ok(
    out: &mut Vec<u8>,
    channel: u16,
    delivery_tag: u64,
    redelivered: bool,
    exchange: &str,
    routing_key: &str,
    message_count: u32,
) {
    let start = begin_method(out, channel, 60, 71);
    out.extend_from_slice(&delivery_tag.to_be_bytes());
    out.push(u8::from(redelivered));
    put_short_str(out, exchange);
    put_short_str(out, routing_key);
    out.extend_from_slice(&message_count.to_be_bytes());
    end_method(out, start);
}

/// Appends `basic.ack` (a publisher confirm), hand-encoded.
pub fn encode_ack(out: &mut Vec<u8>, channel: u16, delivery_tag: u64, multiple: bool) {
    let start = begin_method(out, channel, 60, 80);
    out.extend_from_slice(&delivery_tag.to_be_bytes());
    out.push(u8::from(multiple));
    end_method(out, start);
}

/// Appends `basic.nack` for one publish (a queue refused it), hand-encoded as the acks.
pub fn encode_nack(out: &mut Vec<u8>, channel: u16, delivery_tag: u64) {
    let start = begin_method(out, channel, 60, 120);
    out.extend_from_slice(&delivery_tag.to_be_bytes());
    // multiple = false, requeue = false
    out.push(0);
    end_method(out, start);
}

fn begin_method(out: &mut Vec<u8>, channel: u16, class_id: u16, method_id: u16) -> usize {
    out.push(FRAME_METHOD);
    out.extend_from_slice(&channel.to_be_bytes());
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&class_id.to_be_bytes());
    out.extend_from_slice(&method_id.to_be_bytes());
    start
}

fn end_method(out: &mut Vec<u8>, start: usize) {
    let size = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
    out.push(FRAME_END);
}

fn put_short_str(out: &mut Vec<u8>, s: &str) {
    // Names come from decoded short strings, so they fit; cut defensively all the same.
    let bytes = &s.as_bytes()[..s.len().min(255)];
    out.push(bytes.len() as u8);
    out.extend_from_slice(bytes);
}

/// Appends a heartbeat frame.
pub fn encode_heartbeat(out: &mut Vec<u8>) {
    out.extend_from_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
}

/// A field table as it goes on the wire, its length prefix included.
pub fn encode_table(table: &FieldTable) -> Vec<u8> {
    use amq_protocol::types::generation::gen_field_table;
    match gen_field_table(table)(Vec::new().into()) {
        Ok(ctx) => ctx.into_inner().0,
        Err(err) => {
            tracing::error!(%err, "could not encode a field table");
            vec![0, 0, 0, 0]
        }
    }
}

/// Encodes properties into their wire form (flags and fields).
pub fn encode_properties(props: &AMQPProperties) -> Bytes {
    use amq_protocol::protocol::basic::gen_properties;
    match gen_properties(props)(Vec::new().into()) {
        Ok(ctx) => Bytes::from(ctx.into_inner().0),
        Err(err) => {
            tracing::error!(%err, "could not encode properties");
            Bytes::from_static(&[0, 0])
        }
    }
}

/// Appends a content header and its body frames, each at most `frame_max` long.
pub fn encode_content(
    out: &mut Vec<u8>,
    channel: u16,
    raw_properties: &[u8],
    body: &[u8],
    frame_max: usize,
) {
    let header_size = 2 + 2 + 8 + raw_properties.len();
    out.reserve(header_size + FRAME_OVERHEAD + body.len() + FRAME_OVERHEAD);
    out.push(FRAME_HEADER);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(header_size as u32).to_be_bytes());
    out.extend_from_slice(&CLASS_BASIC.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&(body.len() as u64).to_be_bytes());
    out.extend_from_slice(raw_properties);
    out.push(FRAME_END);
    let chunk = frame_max.saturating_sub(FRAME_OVERHEAD).max(1);
    for part in body.chunks(chunk) {
        out.push(FRAME_BODY);
        out.extend_from_slice(&channel.to_be_bytes());
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part);
        out.push(FRAME_END);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::{basic, queue};
    use proptest::prelude::*;

    fn method_bytes(channel: u16, class: AMQPClass) -> Vec<u8> {
        let mut out = Vec::new();
        encode_method(&mut out, channel, class);
        out
    }

    #[test]
    fn decodes_a_method_frame_byte_fixture() {
        // queue.declare "q" on channel 1, all flags off, empty table.
        let bytes: &[u8] = &[
            1, 0, 1, 0, 0, 0, 13, 0, 50, 0, 10, 0, 0, 1, b'q', 0, 0, 0, 0, 0, FRAME_END,
        ];
        let mut buf = BytesMut::from(bytes);
        match decode(&mut buf, 131072) {
            Ok(Some(Frame::Method(1, AMQPClass::Queue(queue::AMQPMethod::Declare(d))))) => {
                assert_eq!(d.queue.as_str(), "q");
                assert!(!d.durable);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn waits_for_a_partial_frame() {
        let full = method_bytes(
            3,
            AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})),
        );
        for cut in 0..full.len() {
            let mut buf = BytesMut::from(&full[..cut]);
            assert!(matches!(decode(&mut buf, 131072), Ok(None)), "cut at {cut}");
        }
    }

    #[test]
    fn oversized_frame_is_refused_from_its_header_alone() {
        // Only the 7-byte header of a 1 MiB body frame: refused before the payload.
        let mut buf = BytesMut::from(&[3u8, 0, 1, 0, 0x10, 0, 0][..]);
        // (0x00100000 bytes announced: 1 MiB.)
        let err = decode(&mut buf, 131072).expect_err("must refuse");
        assert_eq!(err.code, code::FRAME_ERROR);
        assert_eq!(err.scope, crate::error::Scope::Connection);
    }

    #[test]
    fn bad_end_marker_is_a_frame_error() {
        let mut bytes = method_bytes(
            1,
            AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})),
        );
        let last = bytes.len() - 1;
        bytes[last] = 0;
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(
            decode(&mut buf, 131072).expect_err("bad end").code,
            code::FRAME_ERROR
        );
    }

    #[test]
    fn unknown_method_is_not_implemented() {
        let bytes: &[u8] = &[1, 0, 1, 0, 0, 0, 4, 0, 99, 0, 7, FRAME_END];
        let mut buf = BytesMut::from(bytes);
        assert_eq!(
            decode(&mut buf, 131072).expect_err("unknown").code,
            code::NOT_IMPLEMENTED
        );
    }

    #[test]
    fn content_round_trips_and_splits_at_frame_max() {
        let props = AMQPProperties::default()
            .with_correlation_id("c1".into())
            .with_reply_to("r".into());
        let raw = encode_properties(&props);
        let body = vec![7u8; 10_000];
        let mut out = Vec::new();
        encode_content(&mut out, 5, &raw, &body, 4096);
        let mut buf = BytesMut::from(&out[..]);
        let Ok(Some(Frame::Header(5, h))) = decode(&mut buf, 4096) else {
            panic!("header")
        };
        assert_eq!(h.body_size, 10_000);
        assert_eq!(h.properties.reply_to(), Some("r"));
        assert_eq!(&h.properties.raw()[..], &raw[..]);
        let mut got = Vec::new();
        while let Ok(Some(Frame::Body(5, b))) = decode(&mut buf, 4096) {
            assert!(b.len() + FRAME_OVERHEAD <= 4096);
            got.extend_from_slice(&b);
        }
        assert_eq!(got, body);
    }

    #[test]
    fn hand_encoded_methods_match_amq_protocol() {
        let mut ours = Vec::new();
        encode_deliver(&mut ours, 7, "ctag", 42, true, "ex", "rk");
        let theirs = method_bytes(
            7,
            AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                consumer_tag: "ctag".into(),
                delivery_tag: 42,
                redelivered: true,
                exchange: "ex".into(),
                routing_key: "rk".into(),
            })),
        );
        assert_eq!(ours, theirs);
        let mut ours = Vec::new();
        encode_get_ok(&mut ours, 1, 3, false, "", "q", 9);
        let theirs = method_bytes(
            1,
            AMQPClass::Basic(basic::AMQPMethod::GetOk(basic::GetOk {
                delivery_tag: 3,
                redelivered: false,
                exchange: "".into(),
                routing_key: "q".into(),
                message_count: 9,
            })),
        );
        assert_eq!(ours, theirs);
        let mut ours = Vec::new();
        encode_ack(&mut ours, 2, 5, true);
        let theirs = method_bytes(
            2,
            AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag: 5,
                multiple: true,
            })),
        );
        assert_eq!(ours, theirs);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut buf = BytesMut::from(&bytes[..]);
            // Decode until the buffer needs more bytes or an error ends the connection.
            for _ in 0..bytes.len() + 1 {
                match decode(&mut buf, 4096) {
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => break,
                }
            }
        }

        #[test]
        fn valid_frame_then_garbage_decodes_the_frame(tail in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut bytes = method_bytes(2, AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack { delivery_tag: 9, multiple: true })));
            bytes.extend_from_slice(&tail);
            let mut buf = BytesMut::from(&bytes[..]);
            let first = decode(&mut buf, 131072);
            let is_ack = matches!(first, Ok(Some(Frame::Method(2, AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack { delivery_tag: 9, multiple: true }))))));
            prop_assert!(is_ack);
        }
    }
}
