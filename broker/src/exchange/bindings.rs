//! An exchange's bindings, indexed for routing and for duplicate checks: a map from
//! key to bindings for direct exchanges, a trie of patterns for topic exchanges, and
//! for every exchange a map from destination and key to bindings, so that adding,
//! removing and routing cost the same with one binding or a hundred thousand.
//! Fanout and headers exchanges look at every binding when routing, as RabbitMQ's do.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use amq_protocol::types::{FieldTable, ShortString};

use super::topic::Trie;
use super::{Binding, Destination, ExchangeKind, headers_match};

/// The bindings of one exchange, in the order they were made.
#[derive(Debug, Clone)]
pub struct Bindings {
    kind: ExchangeKind,
    next_id: u64,
    /// Every binding by id; ids grow, so this is binding order.
    all: BTreeMap<u64, Binding>,
    /// Ids by destination, then binding key (several when the arguments differ).
    by_destination: HashMap<Destination, HashMap<ShortString, Vec<u64>>>,
    /// Direct exchanges: ids by binding key.
    by_key: HashMap<ShortString, BTreeSet<u64>>,
    /// Topic exchanges: ids by pattern.
    trie: Trie,
    /// How many bindings lead to exchanges.
    to_exchanges: usize,
}

/// The bindings a routing key matched, in binding order, and what it cost to find them.
#[derive(Debug, Default)]
pub struct Matched {
    /// Ids of the matching bindings, each once, in binding order.
    ids: Vec<u64>,
    /// Bindings or index nodes looked at: the routing cost.
    pub examined: usize,
}

impl Bindings {
    /// No bindings, for an exchange of this kind.
    pub fn new(kind: ExchangeKind) -> Self {
        Self {
            kind,
            next_id: 0,
            all: BTreeMap::new(),
            by_destination: HashMap::new(),
            by_key: HashMap::new(),
            trie: Trie::default(),
            to_exchanges: 0,
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Every binding, in the order they were made.
    pub fn iter(&self) -> impl Iterator<Item = &Binding> {
        self.all.values()
    }

    /// Whether any binding leads to an exchange.
    pub fn has_exchange_destinations(&self) -> bool {
        self.to_exchanges > 0
    }

    /// Adds a binding; `false` (and nothing changes) if the same one exists.
    pub fn insert(&mut self, binding: Binding) -> bool {
        let same_key = self
            .by_destination
            .entry(binding.destination.clone())
            .or_default()
            .entry(binding.routing_key.clone())
            .or_default();
        if same_key.iter().any(|id| {
            self.all
                .get(id)
                .is_some_and(|b| b.arguments == binding.arguments)
        }) {
            return false;
        }
        let id = self.next_id;
        self.next_id += 1;
        same_key.push(id);
        match self.kind {
            ExchangeKind::Direct => {
                self.by_key
                    .entry(binding.routing_key.clone())
                    .or_default()
                    .insert(id);
            }
            ExchangeKind::Topic => self.trie.insert(binding.routing_key.as_str(), id),
            ExchangeKind::Fanout | ExchangeKind::Headers => {}
        }
        if matches!(binding.destination, Destination::Exchange(_)) {
            self.to_exchanges += 1;
        }
        self.all.insert(id, binding);
        true
    }

    /// Removes the binding with this destination, key and arguments; whether it existed.
    pub fn remove(
        &mut self,
        dest: &Destination,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> bool {
        let Some(keys) = self.by_destination.get_mut(dest) else {
            return false;
        };
        let Some(ids) = keys.get_mut(routing_key) else {
            return false;
        };
        let Some(at) = ids
            .iter()
            .position(|id| self.all.get(id).is_some_and(|b| &b.arguments == arguments))
        else {
            return false;
        };
        let id = ids.swap_remove(at);
        if ids.is_empty() {
            keys.remove(routing_key);
            if keys.is_empty() {
                self.by_destination.remove(dest);
            }
        }
        self.unindex(id);
        true
    }

    /// Removes every binding to `dest`; returns how many there were.
    pub fn remove_destination(&mut self, dest: &Destination) -> usize {
        let Some(keys) = self.by_destination.remove(dest) else {
            return 0;
        };
        let mut n = 0;
        for id in keys.into_values().flatten() {
            self.unindex(id);
            n += 1;
        }
        n
    }

    /// Drops binding `id` from `all` and the routing index.
    fn unindex(&mut self, id: u64) {
        let Some(b) = self.all.remove(&id) else {
            return;
        };
        match self.kind {
            ExchangeKind::Direct => {
                if let Some(ids) = self.by_key.get_mut(b.routing_key.as_str()) {
                    ids.remove(&id);
                    if ids.is_empty() {
                        self.by_key.remove(b.routing_key.as_str());
                    }
                }
            }
            ExchangeKind::Topic => self.trie.remove(b.routing_key.as_str(), id),
            ExchangeKind::Fanout | ExchangeKind::Headers => {}
        }
        if matches!(b.destination, Destination::Exchange(_)) {
            self.to_exchanges -= 1;
        }
    }

    /// The bindings that route a message with this key (and, for a headers exchange,
    /// these headers).
    pub fn matching(&self, routing_key: &str, headers: Option<&FieldTable>) -> Matched {
        let mut m = Matched::default();
        match self.kind {
            ExchangeKind::Direct => {
                if let Some(ids) = self.by_key.get(routing_key) {
                    m.ids.extend(ids.iter().copied());
                }
                m.examined = m.ids.len() + 1;
            }
            ExchangeKind::Topic => {
                m.examined = self.trie.matching(routing_key, &mut m.ids);
                m.ids.sort_unstable();
                m.ids.dedup();
            }
            ExchangeKind::Fanout => {
                m.ids.extend(self.all.keys().copied());
                m.examined = m.ids.len();
            }
            ExchangeKind::Headers => {
                let hit = |(_, b): &(&u64, &Binding)| headers_match(&b.arguments, headers);
                m.ids.extend(self.all.iter().filter(hit).map(|(id, _)| *id));
                m.examined = self.all.len();
            }
        }
        m
    }

    /// The destinations of matched bindings, in binding order.
    pub fn destinations<'a, 'm>(
        &'a self,
        m: &'m Matched,
    ) -> impl Iterator<Item = &'a Destination> + use<'a, 'm> {
        m.ids
            .iter()
            .filter_map(|id| self.all.get(id).map(|b| &b.destination))
    }
}

#[cfg(test)]
mod tests {
    use amq_protocol::types::AMQPValue;
    use proptest::prelude::*;

    use super::super::topic_matches;
    use super::*;

    fn binding(dest: &Destination, key: &str, args: &FieldTable) -> Binding {
        Binding {
            destination: dest.clone(),
            routing_key: key.into(),
            arguments: args.clone(),
        }
    }

    /// The routing the index replaces: every binding, in order, tested one by one.
    fn scan<'a>(
        kind: ExchangeKind,
        all: &'a [Binding],
        key: &str,
        headers: Option<&FieldTable>,
    ) -> Vec<&'a Destination> {
        all.iter()
            .filter(|b| match kind {
                ExchangeKind::Direct => b.routing_key.as_str() == key,
                ExchangeKind::Fanout => true,
                ExchangeKind::Topic => topic_matches(b.routing_key.as_str(), key),
                ExchangeKind::Headers => headers_match(&b.arguments, headers),
            })
            .map(|b| &b.destination)
            .collect()
    }

    #[derive(Debug, Clone)]
    enum Op {
        Bind(usize, String, usize),
        Unbind(usize, String, usize),
        DropDestination(usize),
    }

    fn destinations() -> [Destination; 4] {
        [
            Destination::Queue("q0".into()),
            Destination::Queue("q1".into()),
            Destination::Queue("q2".into()),
            Destination::Exchange("q0".into()),
        ]
    }

    fn argument_tables() -> [FieldTable; 4] {
        let mut any = FieldTable::default();
        any.insert("x-match".into(), AMQPValue::LongString("any".into()));
        any.insert("a".into(), AMQPValue::LongInt(1));
        any.insert("b".into(), AMQPValue::LongInt(2));
        let mut a1 = FieldTable::default();
        a1.insert("a".into(), AMQPValue::LongInt(1));
        let mut a2 = FieldTable::default();
        a2.insert("a".into(), AMQPValue::LongInt(2));
        [FieldTable::default(), any, a1, a2]
    }

    fn pattern() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof!["a", "b", "", Just("*".into()), Just("#".into())],
            0..4,
        )
        .prop_map(|w| w.join("."))
    }

    fn key() -> impl Strategy<Value = String> {
        proptest::collection::vec(prop_oneof!["a", "b", "c", ""], 0..5).prop_map(|w| w.join("."))
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..4usize, pattern(), 0..4usize).prop_map(|(d, k, a)| Op::Bind(d, k, a)),
            2 => (0..4usize, pattern(), 0..4usize).prop_map(|(d, k, a)| Op::Unbind(d, k, a)),
            1 => (0..4usize).prop_map(Op::DropDestination),
        ]
    }

    fn kind() -> impl Strategy<Value = ExchangeKind> {
        prop_oneof![
            Just(ExchangeKind::Direct),
            Just(ExchangeKind::Fanout),
            Just(ExchangeKind::Topic),
            Just(ExchangeKind::Headers),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// After any sequence of binds, unbinds and deleted destinations, the index
        /// holds what a plain list would and routes every key to the same destinations
        /// in the same order.
        #[test]
        fn index_agrees_with_a_scan(
            kind in kind(),
            ops in proptest::collection::vec(op(), 0..40),
            keys in proptest::collection::vec(key(), 1..6),
            header in 0..4usize,
        ) {
            let dests = destinations();
            let tables = argument_tables();
            let mut index = Bindings::new(kind);
            let mut list: Vec<Binding> = Vec::new();
            for op in ops {
                match op {
                    Op::Bind(d, k, a) => {
                        let b = binding(&dests[d], &k, &tables[a]);
                        let new = !list.contains(&b);
                        if new {
                            list.push(b.clone());
                        }
                        prop_assert_eq!(index.insert(b), new);
                    }
                    Op::Unbind(d, k, a) => {
                        let before = list.len();
                        list.retain(|b| !(b.destination == dests[d] && b.routing_key.as_str() == k && b.arguments == tables[a]));
                        prop_assert_eq!(index.remove(&dests[d], &k, &tables[a]), before > list.len());
                    }
                    Op::DropDestination(d) => {
                        let before = list.len();
                        list.retain(|b| b.destination != dests[d]);
                        prop_assert_eq!(index.remove_destination(&dests[d]), before - list.len());
                    }
                }
                prop_assert_eq!(index.iter().cloned().collect::<Vec<_>>(), list.clone());
                prop_assert_eq!(
                    index.has_exchange_destinations(),
                    list.iter().any(|b| matches!(b.destination, Destination::Exchange(_)))
                );
            }
            let headers = Some(&tables[header]);
            for k in &keys {
                let m = index.matching(k, headers);
                let got: Vec<_> = index.destinations(&m).collect();
                prop_assert_eq!(got, scan(kind, &list, k, headers), "key {:?}", k);
            }
        }
    }

    /// Emptied topic patterns leave no trie nodes behind.
    #[test]
    fn unbinding_prunes_the_trie() {
        let mut index = Bindings::new(ExchangeKind::Topic);
        let q = Destination::Queue("q".into());
        let none = FieldTable::default();
        for k in ["a.b.c", "a.*.#", "#", "a.b"] {
            index.insert(binding(&q, k, &none));
        }
        assert!(index.remove(&q, "a.b", &none));
        assert_eq!(index.remove_destination(&q), 3);
        assert!(index.is_empty());
        assert!(index.trie.is_empty());
        assert!(index.by_destination.is_empty());
    }

    /// What routing one key costs with `n` bindings that do not match it.
    fn cost(kind: ExchangeKind, n: usize) -> usize {
        let mut index = Bindings::new(kind);
        let none = FieldTable::default();
        let target = Destination::Queue("target".into());
        let (hit, key) = match kind {
            ExchangeKind::Topic => ("*.orange.*", "quick.orange.rabbit"),
            _ => ("target", "target"),
        };
        index.insert(binding(&target, hit, &none));
        for i in 1..n {
            let q = Destination::Queue(format!("q{}", i % 100).into());
            let k = match kind {
                ExchangeKind::Topic => format!("w{i}.*.rabbit"),
                _ => format!("k{i}"),
            };
            index.insert(binding(&q, &k, &none));
        }
        let m = index.matching(key, None);
        assert_eq!(index.destinations(&m).collect::<Vec<_>>(), [&target]);
        m.examined
    }

    /// Routing a key looks at the same number of bindings (direct) or trie nodes
    /// (topic) with one binding as with a hundred thousand that do not match it.
    #[test]
    fn routing_cost_does_not_grow_with_bindings() {
        for kind in [ExchangeKind::Direct, ExchangeKind::Topic] {
            assert_eq!(cost(kind, 1), cost(kind, 100_000), "{kind:?}");
        }
    }
}
