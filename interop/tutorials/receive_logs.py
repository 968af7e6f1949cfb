"""Tutorials 3-5: bind a server-named exclusive queue to exchange argv[1] (type argv[2])
with binding keys argv[3:], print READY, then print "<routing key> <body>" per message."""
import sys
from common import connect

x, kind, keys = sys.argv[1], sys.argv[2], sys.argv[3:] or [""]
conn = connect()
ch = conn.channel()
ch.exchange_declare(exchange=x, exchange_type=kind)
q = ch.queue_declare(queue="", exclusive=True).method.queue
assert q.startswith("amq.gen-"), q
for k in keys:
    ch.queue_bind(exchange=x, queue=q, routing_key=k)
print("READY", flush=True)
for method, props, body in ch.consume(q, auto_ack=True, inactivity_timeout=2):
    if method is None:
        break
    print("%s %s" % (method.routing_key, body.decode()), flush=True)
conn.close()
