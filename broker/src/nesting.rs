//! A guard in front of every recursive decoder: how deep the field tables and arrays
//! in a method frame nest, found without recursion.
//!
//! amq-protocol decodes tables and arrays recursively, one stack frame per level, so a
//! peer that nests a few thousand levels (some 40 KB in one `connection.start-ok`,
//! before any login) would overflow the connection task's stack and abort the whole
//! broker. [`method_too_deep`] walks the tables of the methods that carry them with an
//! explicit stack, before [`crate::frame`] hands the payload to amq-protocol, and the
//! frame is refused as soon as the nesting passes [`MAX_DEPTH`]. It checks nothing
//! else: anything malformed is left for the decoder to report, as it did before.
//!
//! The content header's `headers` table is checked to the same depth by
//! [`crate::properties`], which walks property bytes in full anyway.

/// How deep tables and arrays may nest in anything a peer sends (a top-level table is
/// depth 1). RabbitMQ sets no such limit; no client nests more than a few levels.
pub const MAX_DEPTH: usize = 32;

/// Whether the method payload (class id, method id, arguments) carries a field table
/// nested deeper than [`MAX_DEPTH`].
pub fn method_too_deep(payload: &[u8]) -> bool {
    let Some((ids, args)) = payload.split_first_chunk::<4>() else {
        return false;
    };
    let class = u16::from_be_bytes([ids[0], ids[1]]);
    let method = u16::from_be_bytes([ids[2], ids[3]]);
    // What comes before the one table of each method that has one:
    // s = short string, 2 = a short (the reserved ticket), b = the bit octet.
    let before: &[u8] = match (class, method) {
        (10, 11) => b"",           // connection.start-ok: client-properties first
        (40, 10) => b"2ssb",       // exchange.declare
        (40, 30 | 40) => b"2sssb", // exchange.bind, exchange.unbind
        (50, 10) => b"2sb",        // queue.declare
        (50, 20) => b"2sssb",      // queue.bind
        (50, 50) => b"2sss",       // queue.unbind
        (60, 20) => b"2ssb",       // basic.consume
        _ => return false,
    };
    let mut pos = 0usize;
    for field in before {
        let skip = match field {
            b's' => match args.get(pos) {
                Some(&n) => 1 + usize::from(n),
                None => return false,
            },
            b'2' => 2,
            _ => 1,
        };
        pos += skip;
    }
    match args.get(pos..) {
        Some(table) => table_too_deep(table),
        None => false,
    }
}

/// Whether the field table at the start of `buf` (with its 4-byte length) nests
/// deeper than [`MAX_DEPTH`].
pub fn table_too_deep(buf: &[u8]) -> bool {
    too_deep(buf, true)
}

/// Whether the bytes of a field table's entries, without the length prefix (as the
/// AMQPLAIN response carries them), nest deeper than [`MAX_DEPTH`] - 1 levels below it.
pub fn entries_too_deep(entries: &[u8]) -> bool {
    too_deep(entries, false)
}

fn u32_at(buf: &[u8], pos: usize) -> Option<usize> {
    let b = buf.get(pos..pos.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

/// The walk: `stack` holds, for every open table or array, where it ends and whether
/// its entries have names (tables) or not (arrays).
fn too_deep(buf: &[u8], prefixed: bool) -> bool {
    let mut pos = 0usize;
    let end = if prefixed {
        let Some(len) = u32_at(buf, 0) else {
            return false;
        };
        pos = 4;
        pos.saturating_add(len).min(buf.len())
    } else {
        buf.len()
    };
    let mut stack: Vec<(usize, bool)> = vec![(end, true)];
    while let Some(&(end, named)) = stack.last() {
        if pos >= end {
            pos = end;
            stack.pop();
            continue;
        }
        if named {
            let Some(&n) = buf.get(pos) else {
                return false;
            };
            pos += 1 + usize::from(n);
        }
        let Some(&kind) = buf.get(pos) else {
            return false;
        };
        pos += 1;
        // The type octets and sizes of `crate::properties` (checked there against
        // amq-protocol's decoder).
        let fixed = match (fixed_width(kind), kind) {
            (Some(n), _) => n,
            (None, b'S' | b'x') => match u32_at(buf, pos) {
                Some(n) => 4usize.saturating_add(n),
                None => return false,
            },
            (None, b'F' | b'A') => {
                let Some(len) = u32_at(buf, pos) else {
                    return false;
                };
                if stack.len() >= MAX_DEPTH {
                    return true;
                }
                pos += 4;
                stack.push((pos.saturating_add(len).min(end), kind == b'F'));
                continue;
            }
            // Malformed: the decoder that runs next says so.
            _ => return false,
        };
        pos = pos.saturating_add(fixed);
    }
    false
}

/// The size of a field value of type `kind` whose size is fixed (`None` for strings,
/// tables, arrays and unknown types): one table for this scan and `crate::properties`'.
pub(crate) fn fixed_width(kind: u8) -> Option<usize> {
    Some(match kind {
        b't' | b'b' | b'B' => 1,
        b's' | b'U' | b'u' => 2,
        b'I' | b'i' | b'f' => 4,
        b'L' | b'l' | b'd' | b'T' => 8,
        b'D' => 5,
        b'V' => 0,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::generation::gen_field_table;
    use amq_protocol::types::parsing::parse_field_table;
    use amq_protocol::types::{AMQPValue, FieldArray, FieldTable};
    use proptest::prelude::*;

    /// A table nesting `depth` levels: tables, or arrays inside a table.
    fn nested(depth: usize, arrays: bool) -> FieldTable {
        let mut value = AMQPValue::Boolean(true);
        for _ in 1..depth {
            value = if arrays {
                AMQPValue::FieldArray(FieldArray::from(vec![value]))
            } else {
                let mut t = FieldTable::default();
                t.insert("k".into(), value);
                AMQPValue::FieldTable(t)
            };
        }
        let mut top = FieldTable::default();
        top.insert("k".into(), value);
        top
    }

    /// The table as it goes on the wire, length prefix included.
    fn encode(t: &FieldTable) -> Vec<u8> {
        let bytes = gen_field_table(t)(Vec::new().into())
            .expect("encode")
            .into_inner()
            .0;
        let (rest, decoded) = parse_field_table(&bytes[..]).expect("decodes");
        assert!(
            rest.is_empty() && decoded == *t,
            "a whole table, prefix included"
        );
        bytes
    }

    #[test]
    fn thirty_two_levels_pass_thirty_three_do_not() {
        for arrays in [false, true] {
            assert!(!table_too_deep(&encode(&nested(MAX_DEPTH, arrays))));
            assert!(table_too_deep(&encode(&nested(MAX_DEPTH + 1, arrays))));
        }
    }

    #[test]
    fn a_deep_table_is_found_without_recursing() {
        // 100,000 levels: the walk itself must not overflow (it keeps its own stack).
        let mut bytes = Vec::new();
        let depth = 100_000usize;
        for i in 0..depth {
            let inner = 7 * (depth - i - 1);
            bytes.extend_from_slice(&[1, b'k', b'F']);
            bytes.extend_from_slice(&(inner as u32).to_be_bytes());
        }
        let mut framed = (bytes.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        assert!(table_too_deep(&framed));
        assert!(entries_too_deep(&bytes));
    }

    #[test]
    fn methods_find_their_table_after_the_fixed_fields() {
        let deep = encode(&nested(MAX_DEPTH + 1, false));
        let shallow = encode(&nested(3, true));
        let queue_declare = |table: &[u8]| {
            let mut p = vec![0, 50, 0, 10, 0, 0, 1, b'q', 0];
            p.extend_from_slice(table);
            p
        };
        assert!(method_too_deep(&queue_declare(&deep)));
        assert!(!method_too_deep(&queue_declare(&shallow)));
        let mut start_ok = vec![0, 10, 0, 11];
        start_ok.extend_from_slice(&deep);
        assert!(method_too_deep(&start_ok));
        // Methods without tables, and truncated ones, are left to the decoder.
        assert!(!method_too_deep(&[0, 60, 0, 40, 0]));
        assert!(!method_too_deep(&[0, 50, 0, 10, 0]));
    }

    proptest! {
        /// Arbitrary bytes never panic the walk, and a verdict of "too deep" is only
        /// given to input that really nests past the limit (checked by decoding it
        /// with a bounded depth is not possible, so: shallow input is never refused).
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = table_too_deep(&bytes);
            let _ = entries_too_deep(&bytes);
            let _ = method_too_deep(&bytes);
        }

        #[test]
        fn shallow_tables_are_never_refused(depth in 1usize..=MAX_DEPTH, arrays: bool) {
            prop_assert!(!table_too_deep(&encode(&nested(depth, arrays))));
        }
    }
}
