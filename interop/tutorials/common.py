"""Shared helpers for the tutorial scripts: connection parameters from AMQP_URL."""
import os
import pika


def params():
    url = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
    p = pika.URLParameters(url)
    p.socket_timeout = 5
    p.blocked_connection_timeout = 5
    return p


def connect():
    return pika.BlockingConnection(params())


def consume_for(channel, queue, seconds, on_message, auto_ack=True, stop_after=None):
    """Consume until `stop_after` messages or `seconds` of inactivity; returns bodies."""
    got = []
    for method, props, body in channel.consume(queue, auto_ack=auto_ack, inactivity_timeout=seconds):
        if method is None:
            break
        got.append(body.decode())
        on_message(channel, method, props, body)
        if stop_after is not None and len(got) >= stop_after:
            break
    channel.cancel()
    return got
