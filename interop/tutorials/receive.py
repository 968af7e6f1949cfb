"""Tutorial 1: receive one message from the queue given as argv[1] and print it."""
import sys
from common import connect, consume_for

queue = sys.argv[1] if len(sys.argv) > 1 else "hello"
conn = connect()
ch = conn.channel()
ch.queue_declare(queue=queue)
got = consume_for(ch, queue, 5, lambda *a: None, stop_after=1)
for g in got:
    print(" [x] Received %r" % g)
ch.queue_delete(queue=queue)
conn.close()
