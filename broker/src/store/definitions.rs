//! The durable topology: exchanges, queues and bindings that survive a restart.
//!
//! Topology changes are rare, so the whole set is written as one snapshot file
//! ([`super::snapshot`]), `definitions`, replaced atomically (written to a temporary file, synced, renamed,
//! directory synced) whenever a durable entity is declared or deleted. The snapshot
//! carries a checksum: a damaged file is reported and refused, never half-loaded.
//!
//! Format: magic `AMQRDEF1`, `u32` payload length, `u32` CRC-32 of the payload, then
//! the payload (the framing of [`super::snapshot`]): the next queue directory id (`u64`), then exchanges, queues and
//! bindings, each list prefixed by its `u32` count. Names and keys are AMQP short
//! strings, arguments AMQP field tables, so anything a client can declare round-trips.

use amq_protocol::types::generation::gen_field_table;
use amq_protocol::types::parsing::parse_field_table;
use amq_protocol::types::{FieldTable, ShortString};

use super::snapshot::SnapshotError;

const MAGIC: &[u8; 8] = b"AMQRDEF1";

/// A durable exchange.
#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeDef {
    /// Name.
    pub name: ShortString,
    /// Type name (`direct`, `fanout`, `topic`, `headers`).
    pub kind: String,
    /// Deleted when its last binding goes.
    pub auto_delete: bool,
    /// Not publishable directly.
    pub internal: bool,
    /// Declare arguments.
    pub arguments: FieldTable,
}

/// A durable queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueDef {
    /// Name.
    pub name: ShortString,
    /// The queue's directory under `queues/` (names may not be valid file names).
    pub dir_id: u64,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// Declare arguments.
    pub arguments: FieldTable,
}

/// A binding between durable entities.
#[derive(Debug, Clone, PartialEq)]
pub struct BindingDef {
    /// Source exchange.
    pub source: ShortString,
    /// Destination: a queue (`false`) or an exchange (`true`).
    pub to_exchange: bool,
    /// Destination name.
    pub destination: ShortString,
    /// Binding key.
    pub routing_key: ShortString,
    /// Binding arguments.
    pub arguments: FieldTable,
}

/// Everything durable in the vhost.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Definitions {
    /// The id the next new durable queue's directory gets.
    pub next_dir_id: u64,
    /// Durable exchanges (not the predeclared ones).
    pub exchanges: Vec<ExchangeDef>,
    /// Durable, non-exclusive queues.
    pub queues: Vec<QueueDef>,
    /// Bindings whose source and destination are both durable.
    pub bindings: Vec<BindingDef>,
}

/// Why a snapshot could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionsError {
    /// Not a definitions file.
    #[error("not a definitions file (bad magic)")]
    Magic,
    /// The checksum does not match: the file is damaged.
    #[error("definitions file is damaged (checksum mismatch)")]
    Checksum,
    /// The payload ends early or holds an invalid value.
    #[error("definitions file is malformed: {0}")]
    Malformed(&'static str),
}

impl Definitions {
    /// The snapshot as file contents.
    pub fn encode(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(256);
        p.extend_from_slice(&self.next_dir_id.to_le_bytes());
        put_u32(&mut p, self.exchanges.len());
        for x in &self.exchanges {
            put_short(&mut p, x.name.as_str());
            put_short(&mut p, &x.kind);
            p.push(u8::from(x.auto_delete) | (u8::from(x.internal) << 1));
            put_table(&mut p, &x.arguments);
        }
        put_u32(&mut p, self.queues.len());
        for q in &self.queues {
            put_short(&mut p, q.name.as_str());
            p.extend_from_slice(&q.dir_id.to_le_bytes());
            p.push(u8::from(q.auto_delete));
            put_table(&mut p, &q.arguments);
        }
        put_u32(&mut p, self.bindings.len());
        for b in &self.bindings {
            put_short(&mut p, b.source.as_str());
            p.push(u8::from(b.to_exchange));
            put_short(&mut p, b.destination.as_str());
            put_short(&mut p, b.routing_key.as_str());
            put_table(&mut p, &b.arguments);
        }
        super::snapshot::seal(MAGIC, &p)
    }

    /// Reads a snapshot written by [`Definitions::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DefinitionsError> {
        let payload = super::snapshot::unseal(MAGIC, bytes).map_err(|e| match e {
            SnapshotError::Magic => DefinitionsError::Magic,
            SnapshotError::Checksum => DefinitionsError::Checksum,
            SnapshotError::Truncated => DefinitionsError::Malformed("truncated"),
        })?;
        let mut r = Reader(payload);
        let mut defs = Definitions {
            next_dir_id: r.u64()?,
            ..Default::default()
        };
        for _ in 0..r.u32()? {
            let name = r.short()?;
            let kind = r.short()?.as_str().to_owned();
            let flags = r.u8()?;
            defs.exchanges.push(ExchangeDef {
                name,
                kind,
                auto_delete: flags & 1 != 0,
                internal: flags & 2 != 0,
                arguments: r.table()?,
            });
        }
        for _ in 0..r.u32()? {
            defs.queues.push(QueueDef {
                name: r.short()?,
                dir_id: r.u64()?,
                auto_delete: r.u8()? != 0,
                arguments: r.table()?,
            });
        }
        for _ in 0..r.u32()? {
            defs.bindings.push(BindingDef {
                source: r.short()?,
                to_exchange: r.u8()? != 0,
                destination: r.short()?,
                routing_key: r.short()?,
                arguments: r.table()?,
            });
        }
        Ok(defs)
    }
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_short(out: &mut Vec<u8>, s: &str) {
    // Short strings are at most 255 bytes by construction (ShortString or a type name).
    let b = &s.as_bytes()[..s.len().min(255)];
    out.push(b.len() as u8);
    out.extend_from_slice(b);
}

fn put_table(out: &mut Vec<u8>, table: &FieldTable) {
    match gen_field_table(table)(Vec::new().into()) {
        Ok(ctx) => {
            let bytes = ctx.into_inner().0;
            put_u32(out, bytes.len());
            out.extend_from_slice(&bytes);
        }
        Err(err) => {
            // Only a short string over 255 bytes fails, and decoded tables never hold one.
            tracing::error!(%err, "could not encode arguments; storing none");
            put_u32(out, 0);
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DefinitionsError> {
        if self.0.len() < n {
            return Err(DefinitionsError::Malformed("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, DefinitionsError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, DefinitionsError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, DefinitionsError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn short(&mut self) -> Result<ShortString, DefinitionsError> {
        let n = self.u8()? as usize;
        let b = self.take(n)?;
        let s = std::str::from_utf8(b).map_err(|_| DefinitionsError::Malformed("name"))?;
        Ok(ShortString::from(s))
    }

    fn table(&mut self) -> Result<FieldTable, DefinitionsError> {
        let n = self.u32()? as usize;
        if n == 0 {
            return Ok(FieldTable::default());
        }
        let b = self.take(n)?;
        match parse_field_table(b) {
            Ok((&[], table)) => Ok(table),
            _ => Err(DefinitionsError::Malformed("arguments")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::AMQPValue;

    fn sample() -> Definitions {
        let mut args = FieldTable::default();
        args.insert("x-message-ttl".into(), AMQPValue::LongInt(5000));
        args.insert("x-note".into(), AMQPValue::LongString("é".into()));
        Definitions {
            next_dir_id: 7,
            exchanges: vec![ExchangeDef {
                name: "logs".into(),
                kind: "topic".into(),
                auto_delete: false,
                internal: true,
                arguments: FieldTable::default(),
            }],
            queues: vec![QueueDef {
                name: "task_queue".into(),
                dir_id: 6,
                auto_delete: true,
                arguments: args.clone(),
            }],
            bindings: vec![BindingDef {
                source: "logs".into(),
                to_exchange: false,
                destination: "task_queue".into(),
                routing_key: "kern.*".into(),
                arguments: args,
            }],
        }
    }

    #[test]
    fn round_trips() {
        let defs = sample();
        assert_eq!(Definitions::decode(&defs.encode()).expect("decodes"), defs);
        let empty = Definitions::default();
        assert_eq!(
            Definitions::decode(&empty.encode()).expect("decodes"),
            empty
        );
    }

    #[test]
    fn damage_is_refused_not_half_loaded() {
        let bytes = sample().encode();
        for cut in 0..bytes.len() {
            assert!(Definitions::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for i in 16..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x40;
            assert!(
                matches!(
                    Definitions::decode(&flipped),
                    Err(DefinitionsError::Checksum)
                ),
                "flip at {i}"
            );
        }
    }
}
