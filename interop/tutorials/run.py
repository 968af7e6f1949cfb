#!/usr/bin/env python3
"""Runs the seed's tutorial flows end to end with pika against one broker.

Usage: run.py [--host H --port P] (or AMQP_URL). Exits non-zero on any mismatch; every
subprocess runs under a timeout.
"""
import argparse
import os
import subprocess
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
PY = sys.executable
FAILURES = []


def script(name):
    return os.path.join(HERE, name)


def run(args, timeout=30):
    p = subprocess.run([PY, script(args[0])] + args[1:], capture_output=True, text=True, timeout=timeout, cwd=HERE)
    if p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (args[0], p.returncode, p.stderr[-2000:]))
    return p.stdout


def start(args):
    return subprocess.Popen([PY, script(args[0])] + args[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=HERE)


def wait_ready(p, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = p.stdout.readline()
        if line.strip() == "READY":
            return
        if not line and p.poll() is not None:
            raise RuntimeError("subscriber exited early: %s" % p.stderr.read())
    raise RuntimeError("subscriber not ready in %ss" % timeout)


def finish(p, timeout=20):
    out, err = p.communicate(timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError("exit %d: %s" % (p.returncode, err[-2000:]))
    return out


def check(name, got, want):
    if got != want:
        FAILURES.append("%s: got %r, want %r" % (name, got, want))
        print("FAIL %s\n  got  %r\n  want %r" % (name, got, want))
    else:
        print("ok   %s" % name)


def flow(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - any failure is a mismatch
        FAILURES.append("%s: %s" % (fn.__name__, e))
        print("FAIL %s: %s" % (fn.__name__, e))


def suffix():
    return uuid.uuid4().hex[:8]


def hello_world():
    q = "hello-" + suffix()
    run(["send.py", q])
    out = run(["receive.py", q])
    check("hello_world", out.strip(), "[x] Received 'Hello World!'")


def work_queues():
    q = "task_queue-" + suffix()
    run(["new_task.py", q, "First."])  # declares the queue
    dying = start(["worker.py", q, "die"])
    dying.wait(timeout=15)
    first = dying.stdout.read().strip()
    check("work_queues: dying worker got the first task", first, "First. redelivered=False")
    run(["new_task.py", q, "Second..", "Third..."])
    out = run(["worker.py", q])
    check("work_queues: redelivered then in order", out.strip().splitlines(),
          ["First. redelivered=True", "Second.. redelivered=False", "Third... redelivered=False"])
    subprocess.run([PY, "-c", "from common import connect; c=connect(); c.channel().queue_delete(queue=%r); c.close()" % q],
                   cwd=HERE, timeout=15, check=True)


def publish_subscribe():
    x = "logs-" + suffix()
    subs = [start(["receive_logs.py", x, "fanout"]) for _ in range(2)]
    for s in subs:
        wait_ready(s)
    run(["emit_log.py", x, "info: one", "warning: two"])
    for i, s in enumerate(subs):
        check("publish_subscribe subscriber %d" % i, [l.strip() for l in finish(s).strip().splitlines()], ["info: one", "warning: two"])


def routing():
    x = "direct_logs-" + suffix()
    errors = start(["receive_logs.py", x, "direct", "error"])
    allsev = start(["receive_logs.py", x, "direct", "info", "warning", "error"])
    wait_ready(errors)
    wait_ready(allsev)
    run(["emit_log_routed.py", x, "direct", "info", "warning", "error", "debug"])
    check("routing errors-only", finish(errors).strip().splitlines(), ["error error"])
    check("routing all", finish(allsev).strip().splitlines(), ["info info", "warning warning", "error error"])


TOPIC_KEYS = ["quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox", "lazy.brown.fox",
              "lazy.pink.rabbit", "quick.brown.fox", "orange", "quick.orange.male.rabbit",
              "lazy.orange.male.rabbit"]


def topics():
    x = "topic_logs-" + suffix()
    q1 = start(["receive_logs.py", x, "topic", "*.orange.*"])
    q2 = start(["receive_logs.py", x, "topic", "*.*.rabbit", "lazy.#"])
    wait_ready(q1)
    wait_ready(q2)
    run(["emit_log_routed.py", x, "topic"] + TOPIC_KEYS)
    got1 = [l.split(" ")[0] for l in finish(q1).strip().splitlines()]
    got2 = [l.split(" ")[0] for l in finish(q2).strip().splitlines()]
    check("topics Q1", got1, ["quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox"])
    check("topics Q2", got2, ["quick.orange.rabbit", "lazy.orange.elephant", "lazy.brown.fox",
                              "lazy.pink.rabbit", "lazy.orange.male.rabbit"])


def rpc():
    q = "rpc_queue-" + suffix()
    server = start(["rpc_server.py", q, "3"])
    wait_ready(server)
    out = run(["rpc_client.py", q, "0", "10", "30"])
    check("rpc", out.strip().splitlines(), ["fib(0)=0", "fib(10)=55", "fib(30)=832040"])
    finish(server)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host")
    ap.add_argument("--port", type=int)
    a = ap.parse_args()
    if a.host or a.port:
        os.environ["AMQP_URL"] = "amqp://guest:guest@%s:%d/%%2f" % (a.host or "127.0.0.1", a.port or 5672)
    print("pika tutorials against %s" % os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"))
    for f in [hello_world, work_queues, publish_subscribe, routing, topics, rpc]:
        flow(f)
    if FAILURES:
        print("\n%d failure(s):\n  %s" % (len(FAILURES), "\n  ".join(FAILURES)))
        sys.exit(1)
    print("all tutorial flows passed")


if __name__ == "__main__":
    main()
