#!/usr/bin/env bash
# Interop proof for typed RPC (issue 3), run by CI with AMQP_URL set:
#   1. the tutorial's rpc_client.py gets fib(30) = 832040 from the Rust fib_server;
#   2. json_client.py (pika, JSON, docs/wire.md) calls the same Rust server;
#   3. the Rust fib_client in --text mode gets 832040 from the tutorial's rpc_server.py.
#
#   AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f interop/rpc/run.sh
#
# Needs python3 with pika 1.3 (pip install pika==1.3.2) and cargo. Every step is
# bounded by `timeout`; background processes are stopped on exit.
set -euo pipefail

: "${AMQP_URL:?set AMQP_URL to the broker under test}"
export AMQP_URL
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
PY="${PYTHON:-python3}"
pids=()
delete_rpc_queue() {
  timeout 30 "$PY" -c "import os, pika; c = pika.BlockingConnection(pika.URLParameters(os.environ['AMQP_URL'])); c.channel().queue_delete(queue='rpc_queue'); c.close()"
}
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  # rpc_server.py leaves a non-durable rpc_queue behind, which the durable declares of
  # later runs (tut6_rpc, fib_server) would meet: leave the broker as we found it.
  delete_rpc_queue >/dev/null 2>&1 || true
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }

# The same selection and profile as CI's build, so that in CI this builds nothing
# (building the root package alone resolves other features and rebuilds the
# dependencies).
cargo build --workspace --examples --bins
bin="$root/target/debug/examples"

echo "== 1+2: Python clients -> Rust fib_server"
"$bin/fib_server" --max-requests 3 --exit-after 60 &
pids+=($!)
server_pid=$!
sleep 1
out="$(timeout 30 "$PY" "$here/rpc_client.py")" || fail "rpc_client.py"
echo "$out"
grep -q "Got 832040" <<<"$out" || fail "rpc_client.py did not get 832040"
out="$(timeout 30 "$PY" "$here/json_client.py" 30)" || fail "json_client.py"
echo "$out"
[[ "$(tail -n1 <<<"$out")" == "832040" ]] || fail "json_client.py did not get 832040"
# 3 calls reached the handler (1 seed + 2 JSON; the bad request never does):
# the server exits by itself.
timeout 20 tail --pid="$server_pid" -f /dev/null || fail "fib_server did not exit after --max-requests"

echo "== 3: Rust fib_client --text -> Python rpc_server.py"
# The Rust server declared rpc_queue durable (RabbitMQ 4.3 refuses transient
# non-exclusive queues); the seed's rpc_server.py declares it non-durable, which a broker
# refuses for an existing durable queue (406). A Rust server meeting the seed's queue
# uses it as it is; the other way round the queue has to go first.
delete_rpc_queue || fail "could not delete rpc_queue"
"$PY" "$here/rpc_server.py" &
pids+=($!)
sleep 1
out="$(timeout 30 "$bin/fib_client" --text 30)" || fail "fib_client --text"
echo "$out"
grep -q "Got 832040" <<<"$out" || fail "fib_client did not get 832040"
out="$(timeout 30 "$bin/fib_client" --text --callback-queue 30)" || fail "fib_client --text --callback-queue"
echo "$out"
grep -q "Got 832040" <<<"$out" || fail "fib_client (callback queue) did not get 832040"

echo "interop/rpc: all passed"
