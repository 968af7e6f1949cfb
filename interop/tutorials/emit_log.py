"""Tutorial 3: publish argv[2:] to the fanout exchange argv[1]."""
import sys
from common import connect

x = sys.argv[1]
conn = connect()
ch = conn.channel()
ch.exchange_declare(exchange=x, exchange_type="fanout")
for m in sys.argv[2:]:
    ch.basic_publish(exchange=x, routing_key="", body=m.encode())
    print(" [x] Sent %r" % m)
conn.close()
