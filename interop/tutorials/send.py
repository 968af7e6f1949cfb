"""Tutorial 1: send 'Hello World!' to the queue given as argv[1] (default hello)."""
import sys
from common import connect

queue = sys.argv[1] if len(sys.argv) > 1 else "hello"
conn = connect()
ch = conn.channel()
ch.queue_declare(queue=queue)
ch.basic_publish(exchange="", routing_key=queue, body=b"Hello World!")
print(" [x] Sent 'Hello World!'")
conn.close()
