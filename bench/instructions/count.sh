#!/usr/bin/env bash
# Instructions the broker binary executes per message of oneway.py (publish with a
# confirm, deliver, ack), from valgrind's callgrind: the count of a 6000-message run
# minus that of a 1000-message run, over 5000. Unlike wall-clock figures on a shared
# 2-core machine this is repeatable to a few percent, so two builds can be compared:
#
#   bench/instructions/count.sh target/release/broker [ROUNDS]
#
# Needs valgrind and pika (pip install pika).
set -euo pipefail
bin=$1
rounds=${2:-3}
here=$(cd "$(dirname "$0")" && pwd)

run() { # run N -> total instructions
    local n=$1 out log port pid
    out=$(mktemp) log=$(mktemp)
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" --listen "127.0.0.1:$port" \
        --management-listen off > "$log" 2>&1 &
    pid=$!
    for _ in $(seq 1 300); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
        sleep 0.2
    done
    python3 "$here/oneway.py" "$port" "$n"
    kill -INT "$pid"
    wait "$pid" || true
    grep -m1 '^summary:\|^totals:' "$out" | awk '{print $2}'
    rm -f "$out" "$log"
}

for _ in $(seq 1 "$rounds"); do
    small=$(run 1000)
    large=$(run 6000)
    echo "instructions per message: $(( (large - small) / 5000 ))"
done
