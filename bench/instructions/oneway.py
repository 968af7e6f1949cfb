"""One-way workload for counting the built-in broker's instructions per message.

N 16-byte publishes to an exclusive queue, each confirmed, then N deliveries
consumed with manual acks (prefetch 100). Usage: oneway.py PORT N
"""
import sys

import pika

port, n = int(sys.argv[1]), int(sys.argv[2])
params = pika.ConnectionParameters(
    "127.0.0.1", port, credentials=pika.PlainCredentials("guest", "guest")
)
conn = pika.BlockingConnection(params)
ch = conn.channel()
ch.queue_declare("cg", exclusive=True)
ch.confirm_delivery()
for _ in range(n):
    ch.basic_publish("", "cg", b"x" * 16)
consumer = conn.channel()
consumer.basic_qos(prefetch_count=100)
got = 0
for method, _props, _body in consumer.consume("cg", inactivity_timeout=5):
    if method is None:
        break
    consumer.basic_ack(method.delivery_tag)
    got += 1
    if got == n:
        break
assert got == n, f"consumed {got} of {n}"
conn.close()
