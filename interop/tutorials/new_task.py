"""Tutorial 2: publish persistent tasks (argv[2:]) to the durable queue argv[1]."""
import sys
import pika
from common import connect

queue = sys.argv[1]
conn = connect()
ch = conn.channel()
ch.queue_declare(queue=queue, durable=True)
ch.confirm_delivery()
for task in sys.argv[2:]:
    ch.basic_publish(exchange="", routing_key=queue, body=task.encode(),
                     properties=pika.BasicProperties(delivery_mode=2))
    print(" [x] Sent %r" % task)
conn.close()
