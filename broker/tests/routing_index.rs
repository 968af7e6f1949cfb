//! The routing index stays consistent as bindings, queues and exchanges come and go:
//! what routes where after each step is what a fresh vhost with the surviving
//! bindings would route.

use amq_protocol::types::FieldTable;
use broker::internals::vhost::{ExchangeOptions, QueueOptions, VHost};

fn exchange(v: &mut VHost, name: &str, kind: &str, auto_delete: bool) {
    let opts = ExchangeOptions {
        kind: kind.into(),
        passive: false,
        durable: false,
        auto_delete,
        internal: false,
        arguments: FieldTable::default(),
    };
    v.declare_exchange(name, opts).expect("exchange");
}

fn queue(v: &mut VHost, name: &str) {
    v.declare_queue(1, name, QueueOptions::default())
        .expect("queue");
}

fn bind(v: &mut VHost, q: &str, x: &str, key: &str) {
    v.bind_queue(1, q, x, key, FieldTable::default())
        .expect("bind");
}

fn route(v: &VHost, x: &str, key: &str) -> Vec<String> {
    let mut names: Vec<String> = v
        .route(x, key, &[], &|| None)
        .iter()
        .map(|q| q.as_str().to_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn deleting_a_queue_takes_it_out_of_every_index() {
    let mut v = VHost::new();
    exchange(&mut v, "t", "topic", false);
    exchange(&mut v, "d", "direct", false);
    for q in ["a", "b"] {
        queue(&mut v, q);
        bind(&mut v, q, "t", "k.#");
        bind(&mut v, q, "d", "k");
    }
    assert_eq!(route(&v, "t", "k.x"), ["a", "b"]);
    v.delete_queue(1, "a", false, false).expect("delete");
    assert_eq!(route(&v, "t", "k.x"), ["b"]);
    assert_eq!(route(&v, "d", "k"), ["b"]);
    // A new queue of the same name is not bound until it is bound again.
    queue(&mut v, "a");
    assert_eq!(route(&v, "d", "k"), ["b"]);
    bind(&mut v, "a", "d", "k");
    assert_eq!(route(&v, "d", "k"), ["a", "b"]);
    // Binding twice is one binding: one unbind removes it.
    bind(&mut v, "a", "t", "k.*");
    bind(&mut v, "a", "t", "k.*");
    v.unbind_queue(1, "a", "t", "k.*", &FieldTable::default())
        .expect("unbind");
    assert_eq!(route(&v, "t", "k.x"), ["b"]);
}

#[test]
fn deleting_an_exchange_cuts_exchange_to_exchange_routes() {
    let mut v = VHost::new();
    exchange(&mut v, "front", "fanout", false);
    exchange(&mut v, "back", "topic", false);
    queue(&mut v, "q");
    bind(&mut v, "q", "back", "#");
    v.bind_exchange("back", "front", "", FieldTable::default())
        .expect("e2e");
    assert_eq!(route(&v, "front", "any.key"), ["q"]);
    v.delete_exchange("back", false).expect("delete");
    assert!(route(&v, "front", "any.key").is_empty());
    exchange(&mut v, "back", "topic", false);
    bind(&mut v, "q", "back", "#");
    assert!(
        route(&v, "front", "any.key").is_empty(),
        "the e2e binding went with the old exchange"
    );
    v.delete_exchange("front", true)
        .expect("front has no bindings left");
}

#[test]
fn auto_delete_exchange_goes_with_its_last_binding() {
    let mut v = VHost::new();
    exchange(&mut v, "x", "topic", true);
    queue(&mut v, "q1");
    queue(&mut v, "q2");
    bind(&mut v, "q1", "x", "a.*");
    bind(&mut v, "q2", "x", "a.*");
    v.delete_queue(1, "q1", false, false).expect("delete");
    assert!(v.has_exchange("x"));
    assert_eq!(route(&v, "x", "a.b"), ["q2"]);
    v.unbind_queue(1, "q2", "x", "a.*", &FieldTable::default())
        .expect("unbind");
    assert!(!v.has_exchange("x"));
}
