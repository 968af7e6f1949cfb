"""Tutorial 2: a worker with prefetch 1 and manual acks on the durable queue argv[1].

With argv[2] == "die", the worker exits without acking the first task it gets (the broker
must redeliver it). Prints one line per task: "<body> redelivered=<bool>".
"""
import os
import sys
import time
from common import connect

queue = sys.argv[1]
die = len(sys.argv) > 2 and sys.argv[2] == "die"
conn = connect()
ch = conn.channel()
ch.queue_declare(queue=queue, durable=True)
ch.basic_qos(prefetch_count=1)
for method, props, body in ch.consume(queue, inactivity_timeout=2):
    if method is None:
        break
    print("%s redelivered=%s" % (body.decode(), method.redelivered), flush=True)
    if die:
        os._exit(3)  # no ack, no close: the connection just goes away
    time.sleep(0.05 * body.count(b"."))
    ch.basic_ack(delivery_tag=method.delivery_tag)
conn.close()
