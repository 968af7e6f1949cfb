//! Unit tests of the vhost: prefetch and acks, requeue order on close, auto-delete
//! and exclusive queues, exchange-to-exchange routing, generated names, consumer
//! timeouts, priority order.

use super::*;
use bytes::Bytes;

fn msg(body: &'static str) -> Message {
    Message {
        exchange: "".into(),
        routing_key: "q".into(),
        priority: 0,
        properties: Bytes::from_static(&[0, 0]),
        body: Bytes::from_static(body.as_bytes()),
        ttl: None,
        expires_at: None,
        persistent: false,
        sender_keys: None,
    }
}

fn vhost_with_channel() -> (VHost, ChannelKey, Arc<Outbox>) {
    let mut v = VHost::new();
    let outbox = Arc::new(Outbox::default());
    let key = ChannelKey::new(1, 1);
    v.open_channel(key, ChannelState::new(Arc::clone(&outbox), 131072, true));
    (v, key, outbox)
}

fn consume(v: &mut VHost, key: ChannelKey, queue: &str) -> ShortString {
    v.consume(
        key,
        queue,
        ConsumeOptions {
            tag: "".into(),
            no_ack: false,
            exclusive: false,
            nowait: true,
            arguments: Default::default(),
        },
    )
    .expect("consume")
}

#[test]
fn prefetch_limits_and_acks_release_credit() {
    let (mut v, key, _out) = vhost_with_channel();
    v.declare_queue(1, "q", QueueOptions::default())
        .expect("declare");
    v.qos(key, 2, false).expect("qos");
    consume(&mut v, key, "q");
    for _ in 0..5 {
        assert!(v.publish(&|| None, msg("m")).returned.is_none(), "routed");
    }
    assert_eq!(
        v.queue_counts("q"),
        Some(QueueCounts {
            ready: 3,
            unacked: 2,
            consumers: 1
        })
    );
    v.ack(key, 2, true).expect("ack");
    assert_eq!(
        v.queue_counts("q"),
        Some(QueueCounts {
            ready: 1,
            unacked: 2,
            consumers: 1
        })
    );
    assert_eq!(
        v.ack(key, 99, false).expect_err("unknown").code,
        code::PRECONDITION_FAILED
    );
}

#[test]
fn closing_a_channel_requeues_in_order_as_redelivered() {
    let (mut v, key, _out) = vhost_with_channel();
    v.declare_queue(1, "q", QueueOptions::default())
        .expect("declare");
    consume(&mut v, key, "q");
    for b in ["a", "b", "c"] {
        v.publish(&|| None, msg(b));
    }
    v.close_channel(key);
    let q = v.queues.get("q").expect("queue");
    let bodies: Vec<&[u8]> = q.messages.iter().map(|m| &m.message.body[..]).collect();
    assert_eq!(bodies, vec![&b"a"[..], b"b", b"c"]);
    assert!(q.messages.iter().all(|m| m.redelivered));
}

#[test]
fn auto_delete_queue_goes_with_its_last_consumer() {
    let (mut v, key, _out) = vhost_with_channel();
    let opts = QueueOptions {
        auto_delete: true,
        ..Default::default()
    };
    v.declare_queue(1, "q", opts).expect("declare");
    let tag = consume(&mut v, key, "q");
    v.cancel(key, tag.as_str()).expect("cancel");
    assert!(!v.queues.contains_key("q"));
}

#[test]
fn exclusive_queue_is_locked_for_other_connections_and_dies_with_its_own() {
    let mut v = VHost::new();
    v.declare_queue(
        1,
        "q",
        QueueOptions {
            exclusive: true,
            ..Default::default()
        },
    )
    .expect("declare");
    let err = v
        .declare_queue(
            2,
            "q",
            QueueOptions {
                exclusive: true,
                ..Default::default()
            },
        )
        .expect_err("locked");
    assert_eq!(err.code, code::RESOURCE_LOCKED);
    v.close_connection(1);
    assert_eq!(v.queue_count(), 0);
}

#[test]
fn exchange_to_exchange_routing_reaches_each_queue_once() {
    let mut v = VHost::new();
    let topic = |kind: &str| ExchangeOptions {
        kind: kind.into(),
        passive: false,
        durable: false,
        auto_delete: false,
        internal: false,
        arguments: FieldTable::default(),
    };
    v.declare_exchange("a", topic("topic")).expect("a");
    v.declare_exchange("b", topic("fanout")).expect("b");
    v.declare_queue(1, "q", QueueOptions::default()).expect("q");
    v.bind_exchange("b", "a", "x.*", FieldTable::default())
        .expect("bind");
    v.bind_queue(1, "q", "b", "", FieldTable::default())
        .expect("bind");
    v.bind_queue(1, "q", "a", "#", FieldTable::default())
        .expect("bind");
    assert_eq!(
        v.route("a", "x.y", &[], &|| None),
        vec![ShortString::from("q")]
    );
    assert!(v.route("missing", "x", &[], &|| None).is_empty());
}

#[test]
fn generated_names_look_like_rabbitmqs() {
    let n = generated_name("amq.gen-");
    assert_eq!(n.len(), "amq.gen-".len() + 22);
    assert_ne!(n, generated_name("amq.gen-"));
}

/// A queue declared with one integer argument.
fn declare_with(v: &mut VHost, name: &str, arg: &str, ms: i32) {
    let mut arguments = FieldTable::default();
    arguments.insert(arg.into(), amq_protocol::types::AMQPValue::LongInt(ms));
    let opts = QueueOptions {
        arguments,
        ..QueueOptions::default()
    };
    v.declare_queue(1, name, opts).expect("declare");
}

// TTL and x-expires on a clock the test sets: the sweep takes `now`, so the deadlines
// are checked to the instant without waiting for them.

#[test]
fn a_message_ttl_drops_the_message_at_the_first_sweep_past_its_deadline() {
    let mut v = VHost::new();
    let t0 = Instant::now();
    declare_with(&mut v, "q", "x-message-ttl", 60_000);
    v.publish(&|| None, msg("m"));
    v.sweep(t0 + std::time::Duration::from_secs(59));
    assert_eq!(v.queues["q"].ready_len(), 1, "not yet expired");
    v.sweep(t0 + std::time::Duration::from_secs(61));
    assert_eq!(v.queues["q"].ready_len(), 0, "expired");
}

#[test]
fn a_per_message_ttl_is_its_own_deadline() {
    let mut v = VHost::new();
    let t0 = Instant::now();
    v.declare_queue(1, "q", QueueOptions::default())
        .expect("declare");
    let mut short = msg("short");
    short.ttl = Some(std::time::Duration::from_secs(10));
    v.publish(&|| None, short);
    v.publish(&|| None, msg("no ttl"));
    v.sweep(t0 + std::time::Duration::from_secs(9));
    assert_eq!(v.queues["q"].ready_len(), 2);
    v.sweep(t0 + std::time::Duration::from_secs(11));
    let q = &v.queues["q"];
    let bodies: Vec<&[u8]> = q.messages.iter().map(|m| &m.message.body[..]).collect();
    assert_eq!(
        bodies,
        vec![&b"no ttl"[..]],
        "only the head that expired goes"
    );
}

#[test]
fn x_expires_deletes_an_unused_queue_at_its_deadline_but_not_one_with_a_consumer() {
    let (mut v, key, _out) = vhost_with_channel();
    let t0 = Instant::now();
    declare_with(&mut v, "idle", "x-expires", 60_000);
    declare_with(&mut v, "used", "x-expires", 60_000);
    consume(&mut v, key, "used");
    v.sweep(t0 + std::time::Duration::from_secs(59));
    assert!(v.has_queue("idle"), "not yet idle for 60 s");
    v.sweep(t0 + std::time::Duration::from_secs(61));
    assert!(!v.has_queue("idle"), "idle past x-expires");
    assert!(
        v.has_queue("used"),
        "a queue with a consumer does not expire"
    );
}

#[test]
fn a_message_handed_to_a_waiting_consumer_does_not_count_against_max_length() {
    let (mut v, key, _out) = vhost_with_channel();
    declare_with(&mut v, "q", "x-max-length", 1);
    v.qos(key, 1, false).expect("qos");
    consume(&mut v, key, "q");
    for b in ["a", "b", "c"] {
        assert!(!v.publish(&|| None, msg(b)).rejected);
    }
    // "a" went to the consumer at once; of "b" and "c" only the newest stays ready.
    let q = &v.queues["q"];
    let bodies: Vec<&[u8]> = q.messages.iter().map(|m| &m.message.body[..]).collect();
    assert_eq!(bodies, vec![&b"c"[..]]);
}

// Consumer timeouts on a clock the test sets, as the TTLs above.

#[test]
fn a_delivery_over_x_consumer_timeout_closes_its_channel_with_rabbitmqs_406() {
    let (mut v, key, out) = vhost_with_channel();
    let t0 = Instant::now();
    declare_with(&mut v, "q", "x-consumer-timeout", 1_000);
    consume(&mut v, key, "q");
    v.publish(&|| None, msg("m"));
    v.sweep(t0 + std::time::Duration::from_millis(999));
    assert!(out.take_channel_errors().is_empty(), "not yet");
    v.sweep(Instant::now() + std::time::Duration::from_millis(1_001));
    let errors = out.take_channel_errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let (id, e) = &errors[0];
    assert_eq!(*id, key.channel);
    assert_eq!(e.code, code::PRECONDITION_FAILED);
    assert_eq!(
        e.text,
        "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout value used: 1000 ms. This timeout value can be configured, see consumers doc guide to learn more"
    );
    v.sweep(Instant::now() + std::time::Duration::from_millis(5_000));
    assert!(out.take_channel_errors().is_empty(), "asked once");
}

#[test]
fn the_broker_default_applies_and_cancel_mode_returns_only_that_consumers_deliveries() {
    let (mut v, key, out) = vhost_with_channel();
    v.consumer_timeout = ConsumerTimeout {
        default: Some(std::time::Duration::from_secs(60)),
        cancels: true,
    };
    v.declare_queue(1, "q", QueueOptions::default())
        .expect("declare");
    consume(&mut v, key, "q");
    v.publish(&|| None, msg("m"));
    let t0 = Instant::now();
    v.sweep(t0 + std::time::Duration::from_secs(59));
    assert_eq!(v.queue_counts("q").map(|c| c.consumers), Some(1));
    v.sweep(t0 + std::time::Duration::from_secs(61));
    assert!(out.take_channel_errors().is_empty(), "the channel stays");
    assert_eq!(
        v.queue_counts("q"),
        Some(QueueCounts {
            ready: 1,
            unacked: 0,
            consumers: 0
        }),
        "cancelled, the delivery back"
    );
    assert!(v.queues["q"].messages[0].redelivered);
}

#[test]
fn a_priority_queue_delivers_the_highest_priority_first() {
    let mut v = VHost::new();
    declare_with(&mut v, "q", "x-max-priority", 5);
    for (body, p) in [("low", 1u8), ("high", 5), ("none", 0), ("mid", 3)] {
        let mut m = msg(body);
        m.priority = p;
        v.publish(&|| None, m);
    }
    let order: Vec<Vec<u8>> = v.queues["q"]
        .messages
        .iter()
        .map(|qm| qm.message.body.to_vec())
        .collect();
    assert_eq!(
        order,
        [
            b"high".to_vec(),
            b"mid".to_vec(),
            b"low".to_vec(),
            b"none".to_vec()
        ]
    );
}
