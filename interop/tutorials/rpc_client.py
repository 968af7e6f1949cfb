"""Tutorial 6: the fib RPC client with an exclusive callback queue; calls fib(n) for each
argv[2:] on queue argv[1] and prints "fib(n)=v"."""
import sys
import time
import uuid
import pika
from common import connect


class FibonacciRpcClient:
    def __init__(self, queue):
        self.queue = queue
        self.connection = connect()
        self.channel = self.connection.channel()
        result = self.channel.queue_declare(queue="", exclusive=True)
        self.callback_queue = result.method.queue
        self.channel.basic_consume(queue=self.callback_queue, on_message_callback=self.on_response, auto_ack=True)
        self.response = None
        self.corr_id = None

    def on_response(self, ch, method, props, body):
        if self.corr_id == props.correlation_id:
            self.response = body

    def call(self, n, timeout=10):
        self.response = None
        self.corr_id = str(uuid.uuid4())
        self.channel.basic_publish(exchange="", routing_key=self.queue,
                                   properties=pika.BasicProperties(reply_to=self.callback_queue,
                                                                   correlation_id=self.corr_id),
                                   body=str(n).encode())
        deadline = time.time() + timeout
        while self.response is None:
            if time.time() > deadline:
                raise TimeoutError("no reply for fib(%d)" % n)
            self.connection.process_data_events(time_limit=0.5)
        return int(self.response)


client = FibonacciRpcClient(sys.argv[1])
for n in sys.argv[2:]:
    print("fib(%s)=%d" % (n, client.call(int(n))), flush=True)
client.connection.close()
