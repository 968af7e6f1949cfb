//! Exchanges and bindings: where a published message finds its queues.
//!
//! Routing is a pure function of the exchange type, its bindings, the routing key and
//! (for headers exchanges) the message headers; [`crate::vhost::VHost::route`] follows
//! exchange-to-exchange bindings on top of it. Bindings are indexed by kind
//! ([`Bindings`]: a map for direct, a trie of patterns for topic), so a publish does
//! not look at bindings that cannot match it.

use amq_protocol::types::{AMQPValue, FieldTable, ShortString};

use crate::error::AmqpError;

mod bindings;
mod topic;

pub use bindings::{Bindings, Matched};
pub use topic::topic_matches;

/// The four exchange types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    /// Routing key equals binding key.
    Direct,
    /// Every binding.
    Fanout,
    /// Dotted words with `*` (one word) and `#` (zero or more words).
    Topic,
    /// Header table matches binding arguments (`x-match` all/any).
    Headers,
}

impl ExchangeKind {
    /// Parses the `type` field of `exchange.declare`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "direct" => Some(Self::Direct),
            "fanout" => Some(Self::Fanout),
            "topic" => Some(Self::Topic),
            "headers" => Some(Self::Headers),
            _ => None,
        }
    }

    /// The type's name as declared.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Fanout => "fanout",
            Self::Topic => "topic",
            Self::Headers => "headers",
        }
    }
}

/// Where a binding leads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    /// A queue, by name.
    Queue(ShortString),
    /// An exchange, by name (exchange-to-exchange binding).
    Exchange(ShortString),
}

/// A binding from an exchange to a destination.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// The queue or exchange messages go to.
    pub destination: Destination,
    /// The binding key.
    pub routing_key: ShortString,
    /// Binding arguments (the match table for headers exchanges).
    pub arguments: FieldTable,
}

/// An exchange and its outgoing bindings.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Name.
    pub name: ShortString,
    /// Type.
    pub kind: ExchangeKind,
    /// Survives restarts (kept for the durable store).
    pub durable: bool,
    /// Deleted when its last binding goes.
    pub auto_delete: bool,
    /// Cannot be published to directly.
    pub internal: bool,
    /// Declare arguments.
    pub arguments: FieldTable,
    /// Outgoing bindings, indexed for this exchange's kind.
    pub bindings: Bindings,
    /// The policy that applies and its `alternate-exchange` (used when the exchange
    /// declared none; see [`crate::policy`]).
    pub applied: crate::policy::Applied,
}

impl Exchange {
    /// A new exchange without bindings.
    pub fn new(name: &str, kind: ExchangeKind, durable: bool) -> Self {
        Self {
            name: name.into(),
            kind,
            durable,
            auto_delete: false,
            internal: false,
            arguments: FieldTable::default(),
            bindings: Bindings::new(kind),
            applied: Default::default(),
        }
    }

    /// The bindings that match a message with this routing key and headers; their
    /// destinations come from [`Bindings::destinations`].
    pub fn matching(&self, routing_key: &str, headers: Option<&FieldTable>) -> Matched {
        self.bindings.matching(routing_key, headers)
    }

    /// Checks the arguments of a new binding from this exchange, as RabbitMQ does: a
    /// headers exchange refuses an `x-match` other than its four modes.
    pub fn validate_binding(&self, arguments: &FieldTable) -> Result<(), AmqpError> {
        if self.kind != ExchangeKind::Headers {
            return Ok(());
        }
        let Some(value) = arguments.inner().get("x-match") else {
            return Ok(());
        };
        let Some(mode) = crate::args::str_value(value) else {
            return Err(AmqpError::precondition(format_args!(
                "Invalid x-match field type {} (value {}); expected longstr",
                crate::args::type_name(value),
                crate::args::plain(value)
            )));
        };
        match mode.as_ref() {
            "all" | "any" | "all-with-x" | "any-with-x" => Ok(()),
            // Erlang prints an empty binary as `<<>>`.
            "" => Err(AmqpError::precondition(
                "Invalid x-match field value <<>>; expected all, any, all-with-x, or any-with-x",
            )),
            _ => Err(AmqpError::precondition(format_args!(
                "Invalid x-match field value <<\"{mode}\">>; expected all, any, all-with-x, or any-with-x"
            ))),
        }
    }
}

/// Whether message headers satisfy a headers-exchange binding.
///
/// `x-match` = `all` (default) or `any`; `all-with-x` / `any-with-x` also compare
/// arguments that start with `x-`. A binding argument of type void matches any value.
pub fn headers_match(binding: &FieldTable, headers: Option<&FieldTable>) -> bool {
    // Borrowed: this runs for every binding of a headers exchange, per publish.
    let mode = binding
        .inner()
        .get("x-match")
        .and_then(crate::args::str_value);
    let (any, with_x) = match mode.as_deref().unwrap_or("all") {
        "any" => (true, false),
        "any-with-x" => (true, true),
        "all-with-x" => (false, true),
        _ => (false, false),
    };
    let empty = FieldTable::default();
    let headers = headers.unwrap_or(&empty);
    let mut considered = binding
        .inner()
        .iter()
        .filter(|(k, _)| k.as_str() != "x-match" && (with_x || !k.as_str().starts_with("x-")));
    let matches = |(k, v): (&ShortString, &AMQPValue)| match headers.inner().get(k.as_str()) {
        None => false,
        Some(_) if matches!(v, AMQPValue::Void) => true,
        Some(h) => values_equal(h, v),
    };
    if any {
        considered.any(matches)
    } else {
        considered.all(matches)
    }
}

fn values_equal(a: &AMQPValue, b: &AMQPValue) -> bool {
    match (a, b) {
        (AMQPValue::LongString(x), AMQPValue::ShortString(y))
        | (AMQPValue::ShortString(y), AMQPValue::LongString(x)) => {
            x.as_bytes() == y.as_str().as_bytes()
        }
        _ => match (number(a), number(b)) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        },
    }
}

/// An integer of any width, timestamps included (RabbitMQ compares them as numbers).
fn number(v: &AMQPValue) -> Option<i128> {
    match *v {
        AMQPValue::Timestamp(x) => Some(x.into()),
        _ => crate::args::int_value(v),
    }
}

#[cfg(test)]
mod tests {
    use super::topic::words;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_seed_topic_table() {
        let q1 = "*.orange.*";
        let q2a = "*.*.rabbit";
        let q2b = "lazy.#";
        let q2 = |k: &str| topic_matches(q2a, k) || topic_matches(q2b, k);
        let cases = [
            ("quick.orange.rabbit", true, true),
            ("lazy.orange.elephant", true, true),
            ("quick.orange.fox", true, false),
            ("lazy.brown.fox", false, true),
            ("lazy.pink.rabbit", false, true),
            ("quick.brown.fox", false, false),
            ("orange", false, false),
            ("quick.orange.male.rabbit", false, false),
            ("lazy.orange.male.rabbit", false, true),
        ];
        for (key, in_q1, in_q2) in cases {
            assert_eq!(topic_matches(q1, key), in_q1, "{key} vs Q1");
            assert_eq!(q2(key), in_q2, "{key} vs Q2");
        }
    }

    #[test]
    fn hash_edge_cases() {
        assert!(topic_matches("#", ""));
        assert!(topic_matches("#", "a.b.c"));
        assert!(topic_matches("a.#", "a"));
        assert!(topic_matches("#.a", "a"));
        assert!(topic_matches("a.#.b", "a.b"));
        assert!(topic_matches("a.#.b", "a.x.y.b"));
        assert!(!topic_matches("a.*", "a"));
        assert!(!topic_matches("*", ""));
        assert!(topic_matches("", ""));
        assert!(!topic_matches("", "a"));
        assert!(!topic_matches("a.*.b", "a.b"));
        assert!(topic_matches("#.#", "x"));
    }

    /// Reference matcher: straightforward recursion over the word lists.
    fn reference(p: &[&str], k: &[&str]) -> bool {
        match p.split_first() {
            None => k.is_empty(),
            Some((&"#", rest)) => (0..=k.len()).any(|i| reference(rest, &k[i..])),
            Some((w, rest)) => match k.split_first() {
                Some((kw, krest)) => (*w == "*" || w == kw) && reference(rest, krest),
                None => false,
            },
        }
    }

    proptest! {
        #[test]
        fn topic_matcher_agrees_with_reference(
            p in proptest::collection::vec(prop_oneof!["a", "b", Just("*".to_string()), Just("#".to_string())], 1..6),
            k in proptest::collection::vec(prop_oneof!["a", "b", "c"], 1..6),
        ) {
            let pattern = p.join(".");
            let key = k.join(".");
            let pw = words(&pattern);
            let kw = words(&key);
            prop_assert_eq!(topic_matches(&pattern, &key), reference(&pw, &kw));
        }
    }

    fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    #[test]
    fn headers_all_and_any() {
        let s = |v: &str| AMQPValue::LongString(v.into());
        let all = table(&[
            ("x-match", s("all")),
            ("format", s("pdf")),
            ("type", s("report")),
        ]);
        let any = table(&[
            ("x-match", s("any")),
            ("format", s("pdf")),
            ("type", s("report")),
        ]);
        let both = table(&[("format", s("pdf")), ("type", s("report"))]);
        let one = table(&[("format", s("pdf"))]);
        assert!(headers_match(&all, Some(&both)));
        assert!(!headers_match(&all, Some(&one)));
        assert!(headers_match(&any, Some(&one)));
        assert!(!headers_match(&any, None));
        let numeric = table(&[("n", AMQPValue::LongInt(5))]);
        assert!(headers_match(
            &numeric,
            Some(&table(&[("n", AMQPValue::LongLongInt(5))]))
        ));
    }
}
