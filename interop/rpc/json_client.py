#!/usr/bin/env python
"""Calls a Rust service in JSON, following docs/wire.md, with nothing but pika.

Usage: json_client.py [n]   (default 30; connects to $AMQP_URL)

Calls method `fib` of the Fib service on queue `rpc_queue` over direct reply-to:
first with undecodable arguments (x-status = bad_request), then with {"n": n}
(prints the result), then fib(100) to show the handler's own error coming back
with x-status = error. Exits 1 on anything
unexpected, so CI can use it as a check.
"""
import json
import os
import sys
import time
import uuid

import pika

URL = os.environ.get('AMQP_URL', 'amqp://guest:guest@localhost:5672/%2F')
REPLY_TO = 'amq.rabbitmq.reply-to'


class JsonRpcClient:
    def __init__(self, queue):
        self.queue = queue
        self.connection = pika.BlockingConnection(pika.URLParameters(URL))
        self.channel = self.connection.channel()
        self.channel.basic_consume(queue=REPLY_TO, on_message_callback=self.on_reply, auto_ack=True)
        self.replies = {}

    def on_reply(self, ch, method, props, body):
        self.replies[props.correlation_id] = (props, body)

    def call(self, method, args, deadline_s=10.0):
        corr_id = uuid.uuid4().hex
        deadline_ms = int((time.time() + deadline_s) * 1000)
        self.channel.basic_publish(
            exchange='',
            routing_key=self.queue,
            properties=pika.BasicProperties(
                reply_to=REPLY_TO,
                correlation_id=corr_id,
                type=method,
                content_type='application/json',
                expiration=str(int(deadline_s * 1000)),
                headers={'x-deadline': deadline_ms},
            ),
            body=json.dumps(args))
        stop = time.time() + deadline_s
        while corr_id not in self.replies:
            if time.time() > stop:
                raise TimeoutError(f'no reply to {method} within {deadline_s}s')
            self.connection.process_data_events(time_limit=0.1)
        props, body = self.replies.pop(corr_id)
        status = (props.headers or {}).get('x-status', 'ok')
        if isinstance(status, bytes):
            status = status.decode()
        return status, props.content_type, json.loads(body)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    client = JsonRpcClient('rpc_queue')
    # Undecodable arguments: answered before any handler runs.
    status, _, message = client.call('fib', {'n': 'thirty'})
    print(f' [.] fib("thirty") -> status={status} message={message!r}')
    if status != 'bad_request':
        sys.exit(1)
    status, content_type, value = client.call('fib', {'n': n})
    print(f' [.] fib({n}) -> status={status} content_type={content_type} value={value}')
    if status != 'ok' or content_type != 'application/json':
        sys.exit(1)
    # The handler's own error, encoded like any value.
    status, _, error = client.call('fib', {'n': 100})
    print(f' [.] fib(100) -> status={status} error={error}')
    if status != 'error' or error != {'TooLarge': 100}:
        sys.exit(1)
    if n == 30 and value != 832040:
        sys.exit(1)
    print(value)


if __name__ == '__main__':
    main()
