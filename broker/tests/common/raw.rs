//! Frames by hand, for the tests that play a client no library would be: one that
//! never reads, starts bodies it never finishes, or nests tables thousands deep.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Appends a short string.
pub fn short(out: &mut Vec<u8>, s: &str) {
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

/// Appends a long string.
pub fn long(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

/// One frame of `kind` on `channel` around `payload`.
pub fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![kind];
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f.push(0xCE);
    f
}

/// One method frame on `channel` with the given class, method and argument bytes.
pub fn method_frame(channel: u16, class: u16, method: u16, args: &[u8]) -> Vec<u8> {
    let mut payload = class.to_be_bytes().to_vec();
    payload.extend_from_slice(&method.to_be_bytes());
    payload.extend_from_slice(args);
    frame(1, channel, &payload)
}

/// `channel.open` on `channel`.
pub fn channel_open(channel: u16) -> Vec<u8> {
    method_frame(channel, 20, 10, &[0])
}

/// `basic.consume` of `queue` (server-named tag, no_ack as given).
pub fn consume(channel: u16, queue: &str, no_ack: bool) -> Vec<u8> {
    let mut args = vec![0, 0];
    short(&mut args, queue);
    short(&mut args, "");
    args.push(if no_ack { 0b10 } else { 0 });
    args.extend_from_slice(&[0, 0, 0, 0]);
    method_frame(channel, 60, 20, &args)
}

/// `basic.publish` to `exchange` with `routing_key`, then a header announcing
/// `body_size` (no properties), then `body` in one frame if it is not empty.
pub fn publish(
    channel: u16,
    exchange: &str,
    routing_key: &str,
    mandatory: bool,
    body_size: u64,
    body: &[u8],
) -> Vec<u8> {
    let mut args = vec![0, 0];
    short(&mut args, exchange);
    short(&mut args, routing_key);
    args.push(u8::from(mandatory));
    let mut out = method_frame(channel, 60, 40, &args);
    let mut header = vec![0, 60, 0, 0];
    header.extend_from_slice(&body_size.to_be_bytes());
    header.extend_from_slice(&[0, 0]);
    out.extend(frame(2, channel, &header));
    if !body.is_empty() {
        out.extend(frame(3, channel, body));
    }
    out
}

/// `basic.recover` with requeue.
pub fn recover(channel: u16) -> Vec<u8> {
    method_frame(channel, 60, 110, &[1])
}

/// One frame read off `s`: (type, channel, payload).
pub async fn read_frame(s: &mut (impl AsyncRead + Unpin)) -> anyhow::Result<(u8, u16, Vec<u8>)> {
    let mut head = [0u8; 7];
    s.read_exact(&mut head).await?;
    let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
    let mut payload = vec![0u8; size + 1];
    s.read_exact(&mut payload).await?;
    anyhow::ensure!(payload.pop() == Some(0xCE), "bad frame end");
    Ok((head[0], u16::from_be_bytes([head[1], head[2]]), payload))
}

/// Whether a frame is the method `class.method`.
pub fn is_method(frame: &(u8, u16, Vec<u8>), class: u16, method: u16) -> bool {
    let mut ids = class.to_be_bytes().to_vec();
    ids.extend_from_slice(&method.to_be_bytes());
    frame.0 == 1 && frame.2.starts_with(&ids)
}

/// Reads until the broker closes the socket or sends `connection.close`; returns the
/// close's reply code and text if one came. Bounded: 10 s.
pub async fn until_closed(
    s: &mut (impl AsyncRead + Unpin),
) -> anyhow::Result<Option<(u16, String)>> {
    let read = async {
        loop {
            let Ok(f) = read_frame(s).await else {
                return None;
            };
            if is_method(&f, 10, 50) {
                let rest = &f.2[4..];
                let len = usize::from(*rest.get(2)?);
                let code = u16::from_be_bytes([rest[0], rest[1]]);
                let text = String::from_utf8_lossy(rest.get(3..3 + len)?);
                return Some((code, text.into_owned()));
            }
        }
    };
    Ok(tokio::time::timeout(Duration::from_secs(10), read).await?)
}
