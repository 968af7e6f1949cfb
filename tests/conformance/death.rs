//! Helpers for dead-lettering scenarios: reading the `x-death` table array and the
//! `x-first-death-*` / `x-last-death-*` headers of a dead-lettered message (each field
//! checked for the type RabbitMQ sends), and the queue and exchange arguments that
//! set up a dead-letter exchange, and small declare/bind/reject shorthands.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Result, anyhow, bail, ensure};
use lapin::{
    BasicProperties, Channel,
    options::{BasicRejectOptions, ExchangeDeclareOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldArray, FieldTable},
};

use crate::harness::{Ctx, WAIT, poll};

/// One entry of `x-death`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Death {
    pub count: i64,
    pub reason: String,
    pub queue: String,
    pub exchange: String,
    pub routing_keys: Vec<String>,
    /// Seconds since the epoch (an AMQP timestamp).
    pub time: u64,
    pub original_expiration: Option<String>,
}

impl Death {
    /// Asserts queue, reason, count, exchange and routing keys (and a plausible time).
    pub fn check(
        &self,
        queue: &str,
        reason: &str,
        count: i64,
        exchange: &str,
        keys: &[&str],
    ) -> Result<()> {
        let want = (queue, reason, count, exchange, keys.to_vec());
        let got = (
            self.queue.as_str(),
            self.reason.as_str(),
            self.count,
            self.exchange.as_str(),
            self.routing_keys.iter().map(String::as_str).collect(),
        );
        ensure!(
            got == want,
            "x-death entry (queue, reason, count, exchange, routing-keys): got {got:?}, want {want:?}"
        );
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        ensure!(
            self.time + 300 >= now && self.time <= now + 300,
            "x-death time {} is not near now ({now})",
            self.time
        );
        Ok(())
    }
}

fn text(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// The message headers (empty when there are none).
pub fn headers(props: &BasicProperties) -> FieldTable {
    props.headers().clone().unwrap_or_default()
}

/// A string header, `None` when absent; an error when it is not a string.
pub fn header_str(props: &BasicProperties, key: &str) -> Result<Option<String>> {
    match headers(props).inner().get(key) {
        None => Ok(None),
        Some(v) => text(v)
            .map(Some)
            .ok_or_else(|| anyhow!("header {key} is not a string: {v:?}")),
    }
}

fn parse_death(v: &AMQPValue) -> Result<Death> {
    let AMQPValue::FieldTable(t) = v else {
        bail!("x-death entry is not a table: {v:?}");
    };
    let t = t.inner();
    let field = |k: &str| {
        t.get(k)
            .ok_or_else(|| anyhow!("x-death entry lacks {k}: {t:?}"))
    };
    let string = |k: &str| -> Result<String> {
        let v = field(k)?;
        text(v).ok_or_else(|| anyhow!("x-death {k} is not a string: {v:?}"))
    };
    let count = match field("count")? {
        AMQPValue::LongLongInt(n) => *n,
        other => bail!("x-death count is not a long long: {other:?}"),
    };
    let time = match field("time")? {
        AMQPValue::Timestamp(n) => *n,
        other => bail!("x-death time is not a timestamp: {other:?}"),
    };
    let routing_keys = match field("routing-keys")? {
        AMQPValue::FieldArray(a) => a
            .as_slice()
            .iter()
            .map(|k| text(k).ok_or_else(|| anyhow!("routing key {k:?} is not a string")))
            .collect::<Result<Vec<_>>>()?,
        other => bail!("x-death routing-keys is not an array: {other:?}"),
    };
    let original_expiration = match t.get("original-expiration") {
        None => None,
        Some(v) => Some(text(v).ok_or_else(|| anyhow!("original-expiration {v:?}"))?),
    };
    Ok(Death {
        count,
        reason: string("reason")?,
        queue: string("queue")?,
        exchange: string("exchange")?,
        routing_keys,
        time,
        original_expiration,
    })
}

/// The `x-death` entries, newest first; an error when the header is missing or malformed.
pub fn deaths(props: &BasicProperties) -> Result<Vec<Death>> {
    let h = headers(props);
    match h.inner().get("x-death") {
        Some(AMQPValue::FieldArray(a)) => a.as_slice().iter().map(parse_death).collect(),
        Some(other) => bail!("x-death is not an array: {other:?}"),
        None => bail!("no x-death header in {h:?}"),
    }
}

/// Asserts `x-first-death-{queue,reason,exchange}` and, on RabbitMQ 4 (and the built-in
/// broker), `x-last-death-*`; on RabbitMQ 3 there are no `x-last-death-*` headers.
pub fn check_first_last(
    ctx: &Ctx,
    props: &BasicProperties,
    first: (&str, &str, &str),
    last: (&str, &str, &str),
) -> Result<()> {
    let read = |prefix: &str| -> Result<[Option<String>; 3]> {
        Ok([
            header_str(props, &format!("{prefix}-queue"))?,
            header_str(props, &format!("{prefix}-reason"))?,
            header_str(props, &format!("{prefix}-exchange"))?,
        ])
    };
    let some = |(q, r, x): (&str, &str, &str)| [q, r, x].map(|s| Some(s.to_owned()));
    ensure!(
        read("x-first-death")? == some(first),
        "x-first-death-*: got {:?}, want {first:?}",
        read("x-first-death")?
    );
    let want_last = if ctx.like_rabbitmq_4() {
        some(last)
    } else {
        [None, None, None]
    };
    ensure!(
        read("x-last-death")? == want_last,
        "x-last-death-*: got {:?}, want {want_last:?}",
        read("x-last-death")?
    );
    Ok(())
}

/// Queue arguments naming a dead-letter exchange and, optionally, a routing key.
pub fn dlx(exchange: &str, routing_key: Option<&str>) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(exchange.into()),
    );
    if let Some(k) = routing_key {
        t.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(k.into()),
        );
    }
    t
}

/// `t` with `key` set to `value`.
pub fn with(mut t: FieldTable, key: &str, value: AMQPValue) -> FieldTable {
    t.insert(key.into(), value);
    t
}

/// A `CC` header with `keys`.
pub fn cc(keys: &[&str]) -> FieldTable {
    let arr: Vec<AMQPValue> = keys
        .iter()
        .map(|k| AMQPValue::LongString((*k).into()))
        .collect();
    let mut t = FieldTable::default();
    t.insert("CC".into(), AMQPValue::FieldArray(FieldArray::from(arr)));
    t
}

/// Declares the fanout exchange `x`.
pub async fn fanout(ch: &Channel, x: &str) -> Result<()> {
    ch.exchange_declare(
        x.into(),
        lapin::ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        Default::default(),
    )
    .await?;
    Ok(())
}

/// Declares the direct exchange `x`.
pub async fn direct(ch: &Channel, x: &str) -> Result<()> {
    ch.exchange_declare(
        x.into(),
        lapin::ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        Default::default(),
    )
    .await?;
    Ok(())
}

/// Binds `q` to `x` by `key`.
pub async fn bind(ch: &Channel, q: &str, x: &str, key: &str) -> Result<()> {
    ch.queue_bind(
        q.into(),
        x.into(),
        key.into(),
        Default::default(),
        Default::default(),
    )
    .await?;
    Ok(())
}

/// `basic.reject` of `tag` on `ch`.
pub async fn reject(ch: &Channel, tag: u64, requeue: bool) -> Result<()> {
    ch.basic_reject(tag, BasicRejectOptions { requeue }).await?;
    Ok(())
}

/// Declares the exclusive queue `name` with `args`.
pub async fn excl_queue(ch: &Channel, name: &str, args: FieldTable) -> Result<()> {
    let options = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    ch.queue_declare(name.into(), options, args).await?;
    Ok(())
}

/// Waits for a message in `q` and takes it with `basic.get` (acks on: the caller acks,
/// rejects or leaves it). Dead-lettering is asynchronous in RabbitMQ.
pub async fn wait_get(ch: &Channel, q: &str) -> Result<lapin::message::BasicGetMessage> {
    poll::try_until(WAIT, &format!("a message in {q}"), || async {
        anyhow::Ok(ch.basic_get(q.into(), Default::default()).await?)
    })
    .await
}

/// The body as text.
pub fn body(m: &lapin::message::Delivery) -> String {
    String::from_utf8_lossy(&m.data).into_owned()
}
