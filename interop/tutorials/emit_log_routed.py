"""Tutorials 4-5: publish "<key>" bodies with routing keys argv[3:] to exchange argv[1]
of type argv[2] (direct or topic)."""
import sys
from common import connect

x, kind = sys.argv[1], sys.argv[2]
conn = connect()
ch = conn.channel()
ch.exchange_declare(exchange=x, exchange_type=kind)
for k in sys.argv[3:]:
    ch.basic_publish(exchange=x, routing_key=k, body=k.encode())
    print(" [x] Sent %s" % k)
ch.exchange_delete(exchange=x)
conn.close()
