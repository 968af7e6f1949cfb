"""Tutorial 6: the fib RPC server on queue argv[1]; serves argv[2] requests then exits."""
import sys
import pika
from common import connect

queue, n_requests = sys.argv[1], int(sys.argv[2])


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


conn = connect()
ch = conn.channel()
ch.queue_declare(queue=queue)
ch.basic_qos(prefetch_count=1)
print("READY", flush=True)
served = 0
for method, props, body in ch.consume(queue, inactivity_timeout=10):
    if method is None:
        break
    n = int(body)
    print(" [.] fib(%s)" % n, flush=True)
    ch.basic_publish(exchange="", routing_key=props.reply_to,
                     properties=pika.BasicProperties(correlation_id=props.correlation_id),
                     body=str(fib(n)).encode())
    ch.basic_ack(delivery_tag=method.delivery_tag)
    served += 1
    if served >= n_requests:
        break
ch.queue_delete(queue=queue)
conn.close()
