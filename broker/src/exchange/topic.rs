//! Topic patterns: the matcher for one pattern ([`topic_matches`]) and the trie a topic
//! exchange keeps its binding keys in, so that routing a key visits the patterns that
//! can match it instead of every binding.

use std::collections::{BTreeSet, HashMap, HashSet};

/// Whether a topic binding pattern matches a routing key.
///
/// Words are separated by `.`; `*` matches exactly one word, `#` zero or more.
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    // As in RabbitMQ, the empty string is zero words (so `*` does not match `""`).
    let pattern = words(pattern);
    let key = words(key);
    // Iterative matcher with one backtrack point per '#', like glob matching:
    // O(len(pattern) * len(key)) in the worst case, no recursion.
    let (mut p, mut k) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while k < key.len() {
        if p < pattern.len() && pattern[p] == "#" {
            star = Some((p, k));
            p += 1;
        } else if p < pattern.len() && (pattern[p] == "*" || pattern[p] == key[k]) {
            p += 1;
            k += 1;
        } else if let Some((sp, sk)) = star {
            p = sp + 1;
            k = sk + 1;
            star = Some((sp, sk + 1));
        } else {
            return false;
        }
    }
    while p < pattern.len() && pattern[p] == "#" {
        p += 1;
    }
    p == pattern.len()
}

/// The words of a pattern or key; the empty string has none.
pub(super) fn words(s: &str) -> Vec<&str> {
    if s.is_empty() {
        Vec::new()
    } else {
        s.split('.').collect()
    }
}

/// Binding keys of a topic exchange by word: a path from the root spells a pattern,
/// and the node it ends at holds the ids of the bindings with that pattern. `*` and `#`
/// are children like any word; matching follows the key's word, `*` and `#`.
#[derive(Debug, Default, Clone)]
pub(super) struct Trie {
    root: Node,
}

#[derive(Debug, Default, Clone)]
struct Node {
    children: HashMap<Box<str>, Node>,
    ids: BTreeSet<u64>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.ids.is_empty()
    }
}

impl Trie {
    /// Adds binding `id` under `pattern`.
    pub(super) fn insert(&mut self, pattern: &str, id: u64) {
        let mut node = &mut self.root;
        for w in words(pattern) {
            node = node.children.entry(w.into()).or_default();
        }
        node.ids.insert(id);
    }

    /// Removes binding `id` from under `pattern`, pruning the nodes left empty.
    pub(super) fn remove(&mut self, pattern: &str, id: u64) {
        fn remove_at(node: &mut Node, words: &[&str], id: u64) {
            let Some((first, rest)) = words.split_first() else {
                node.ids.remove(&id);
                return;
            };
            if let Some(child) = node.children.get_mut(*first) {
                remove_at(child, rest, id);
                if child.is_empty() {
                    node.children.remove(*first);
                }
            }
        }
        remove_at(&mut self.root, &words(pattern), id);
    }

    /// Adds to `out` the ids of the bindings whose pattern matches `key` (an id may be
    /// added more than once); returns how many trie nodes were visited.
    pub(super) fn matching(&self, key: &str, out: &mut Vec<u64>) -> usize {
        let key = words(key);
        let mut walk = Walk {
            key: &key,
            out,
            seen: HashSet::new(),
            visited: 0,
        };
        walk.node(&self.root, 0);
        walk.visited
    }

    /// Whether no pattern is stored.
    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.root.is_empty()
    }
}

/// One match of a key against the trie.
struct Walk<'k, 'o> {
    key: &'k [&'k str],
    out: &'o mut Vec<u64>,
    /// `#` nodes already tried at a key position: without it, patterns like
    /// `#.#.#.#` would be walked once per way of splitting the key between them.
    seen: HashSet<(*const Node, usize)>,
    visited: usize,
}

impl Walk<'_, '_> {
    fn node(&mut self, node: &Node, at: usize) {
        self.visited += 1;
        match self.key.get(at) {
            None => self.out.extend(node.ids.iter().copied()),
            Some(&word) => {
                if word != "*"
                    && word != "#"
                    && let Some(child) = node.children.get(word)
                {
                    self.node(child, at + 1);
                }
                if let Some(child) = node.children.get("*") {
                    self.node(child, at + 1);
                }
            }
        }
        if let Some(hash) = node.children.get("#") {
            // `#` takes zero or more of the remaining words.
            for next in at..=self.key.len() {
                if self.seen.insert((std::ptr::from_ref(hash), next)) {
                    self.node(hash, next);
                }
            }
        }
    }
}
