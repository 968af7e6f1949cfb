#!/usr/bin/env node
// The RabbitMQ tutorial flows (1-6) with amqplib's promise API, against any broker URL.
//
// This is the Node.js counterpart of ../run.py (pika): the same flows and the same checks,
// run in one process with one connection per "program" (sender, worker, subscriber, ...).
//
// Usage: AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f node run.js
//        (AMQP_TRACE=1 prints every method frame sent and received.)
// Prints "ok   <check>" or "FAIL <check>" lines, exits non-zero on any mismatch and
// "all tutorial flows passed" otherwise. Every flow fails after FLOW_TIMEOUT_MS instead of
// hanging; names carry a random suffix so runs against a shared broker don't collide.
'use strict';

const amqp = require('amqplib');
const crypto = require('node:crypto');

const URL = process.env.AMQP_URL || 'amqp://guest:guest@127.0.0.1:5672/%2f';
const FLOW_TIMEOUT_MS = 10000;
const IDLE_MS = 700; // a consumer stops after this long without a message (like pika's inactivity_timeout)
const FAILURES = [];

if (process.env.AMQP_TRACE) installTrace();

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const suffix = () => crypto.randomBytes(4).toString('hex');

function check(name, got, want) {
  if (JSON.stringify(got) !== JSON.stringify(want)) {
    FAILURES.push(`${name}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
    console.log(`FAIL ${name}\n  got  ${JSON.stringify(got)}\n  want ${JSON.stringify(want)}`);
  } else {
    console.log(`ok   ${name}`);
  }
}

// Each flow gets a context that tracks its connections, so they are closed however it ends.
function context() {
  const conns = [];
  return {
    async connect() {
      const conn = await amqp.connect(URL, { timeout: 5000 });
      conn.on('error', (e) => console.log(`  (connection error: ${e.message})`));
      conns.push(conn);
      const ch = await conn.createChannel();
      ch.on('error', (e) => console.log(`  (channel error: ${e.message})`));
      return { conn, ch };
    },
    async closeAll() {
      await Promise.all(conns.map((c) => c.close().catch(() => {})));
    },
  };
}

async function flow(name, fn) {
  const ctx = context();
  let timer;
  try {
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${FLOW_TIMEOUT_MS} ms`)), FLOW_TIMEOUT_MS);
    });
    await Promise.race([fn(ctx), timeout]);
  } catch (e) {
    FAILURES.push(`${name}: ${e.message}`);
    console.log(`FAIL ${name}: ${e.message}`);
  } finally {
    clearTimeout(timer);
    await Promise.race([ctx.closeAll(), sleep(2000)]);
  }
}

// Consumes from `queue` until `max` messages or IDLE_MS without one, then cancels the consumer
// (unless cancel is false); returns the results of onMessage(msg) (default: the body as a
// string). With noAck false, onMessage must ack.
async function collect(ch, queue, { noAck = true, max = Infinity, cancel = true, onMessage = (m) => m.content.toString() } = {}) {
  const got = [];
  let timer;
  let finish;
  let fail;
  const done = new Promise((resolve, reject) => {
    finish = resolve;
    fail = reject;
  });
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(finish, IDLE_MS);
  };
  const reply = await ch.consume(
    queue,
    async (msg) => {
      if (msg === null) return fail(new Error(`consumer on ${queue} cancelled by the broker`));
      arm();
      try {
        got.push(await onMessage(msg));
      } catch (e) {
        return fail(e);
      }
      if (got.length >= max) finish();
    },
    { noAck },
  );
  arm();
  try {
    await done;
  } finally {
    clearTimeout(timer);
  }
  if (cancel) await ch.cancel(reply.consumerTag);
  return got;
}

// A subscriber (tutorials 3-5): a server-named exclusive queue bound to exchange x with keys.
async function subscriber(ctx, x, kind, keys) {
  const { ch } = await ctx.connect();
  await ch.assertExchange(x, kind, { durable: false });
  const { queue } = await ch.assertQueue('', { exclusive: true });
  if (!queue.startsWith('amq.gen-')) throw new Error(`server-named queue ${queue} does not start with amq.gen-`);
  for (const k of keys) await ch.bindQueue(queue, x, k);
  // Returns a function that collects "<routing key> <body>" lines until idle.
  return () => collect(ch, queue, { onMessage: (m) => `${m.fields.routingKey} ${m.content}` });
}

async function publishRouted(ctx, x, kind, keys) {
  const { ch } = await ctx.connect();
  await ch.assertExchange(x, kind, { durable: false });
  for (const k of keys) ch.publish(x, k, Buffer.from(k));
  await ch.close(); // flushes the publishes before the channel.close
}

// Tutorial 1: "Hello World!" through a named queue, sender and receiver on separate connections.
async function helloWorld(ctx) {
  const q = `hello-${suffix()}`;
  const send = await ctx.connect();
  await send.ch.assertQueue(q, { durable: false });
  send.ch.sendToQueue(q, Buffer.from('Hello World!'));
  await send.ch.close(); // closing the channel first flushes the publish
  await send.conn.close();
  const recv = await ctx.connect();
  await recv.ch.assertQueue(q, { durable: false });
  const got = await collect(recv.ch, q, { max: 1 });
  check('hello_world', got, ['Hello World!']);
  await recv.ch.deleteQueue(q);
}

// Tutorial 2: work queue, durable queue + persistent messages, prefetch 1 and manual acks.
// The first worker's channel closes with the first task unacked; the broker must requeue
// it and deliver it to the next worker with redelivered=true, ahead of the later tasks.
async function workQueues(ctx) {
  const q = `task_queue-${suffix()}`;
  const line = (m) => `${m.content} redelivered=${m.fields.redelivered} deliveryMode=${m.properties.deliveryMode}`;

  const producer = await ctx.connect();
  const pch = await producer.conn.createConfirmChannel();
  pch.on('error', (e) => console.log(`  (channel error: ${e.message})`));
  const newTask = async (...tasks) => {
    for (const t of tasks) pch.sendToQueue(q, Buffer.from(t), { persistent: true });
    await pch.waitForConfirms();
  };
  await pch.assertQueue(q, { durable: true });
  await newTask('First.');

  const dying = await ctx.connect();
  await dying.ch.assertQueue(q, { durable: true });
  await dying.ch.prefetch(1);
  const first = await collect(dying.ch, q, { noAck: false, max: 1, cancel: false, onMessage: line });
  check('work_queues: dying worker got the first task', first, ['First. redelivered=false deliveryMode=2']);
  await dying.ch.close(); // closes with the task unacked: the broker must requeue it

  await newTask('Second..', 'Third...');
  const worker = await ctx.connect();
  await worker.ch.assertQueue(q, { durable: true });
  await worker.ch.prefetch(1);
  let unacked = 0;
  let maxUnacked = 0;
  const got = await collect(worker.ch, q, {
    noAck: false,
    onMessage: async (m) => {
      maxUnacked = Math.max(maxUnacked, ++unacked);
      await sleep(50 * (m.content.toString().split('.').length - 1)); // "work": 50 ms per dot
      unacked--;
      worker.ch.ack(m);
      return line(m);
    },
  });
  check('work_queues: redelivered then in order', got, [
    'First. redelivered=true deliveryMode=2',
    'Second.. redelivered=false deliveryMode=2',
    'Third... redelivered=false deliveryMode=2',
  ]);
  check('work_queues: prefetch 1 (max unacked at the worker)', maxUnacked, 1);
  const { messageCount } = await worker.ch.deleteQueue(q);
  check('work_queues: queue empty after acks', messageCount, 0);
}

// Tutorial 3: fanout to two subscribers.
async function publishSubscribe(ctx) {
  const x = `logs-${suffix()}`;
  const subs = [await subscriber(ctx, x, 'fanout', ['']), await subscriber(ctx, x, 'fanout', [''])];
  const results = subs.map((collectLines) => collectLines());
  const { ch } = await ctx.connect();
  await ch.assertExchange(x, 'fanout', { durable: false });
  for (const m of ['info: one', 'warning: two']) ch.publish(x, '', Buffer.from(m));
  const got = await Promise.all(results);
  got.forEach((lines, i) => check(`publish_subscribe subscriber ${i}`, lines.map((l) => l.trim()), ['info: one', 'warning: two']));
  await ch.deleteExchange(x);
}

// Tutorial 4: direct routing; both queues are bound with "error".
async function routing(ctx) {
  const x = `direct_logs-${suffix()}`;
  const errors = await subscriber(ctx, x, 'direct', ['error']);
  const allsev = await subscriber(ctx, x, 'direct', ['info', 'warning', 'error']);
  const results = [errors(), allsev()];
  await publishRouted(ctx, x, 'direct', ['info', 'warning', 'error', 'debug']);
  const [gotErrors, gotAll] = await Promise.all(results);
  check('routing errors-only', gotErrors, ['error error']);
  check('routing all', gotAll, ['info info', 'warning warning', 'error error']);
  const { ch } = await ctx.connect();
  await ch.deleteExchange(x);
}

// Tutorial 5: the topic table.
const TOPIC_KEYS = ['quick.orange.rabbit', 'lazy.orange.elephant', 'quick.orange.fox', 'lazy.brown.fox',
  'lazy.pink.rabbit', 'quick.brown.fox', 'orange', 'quick.orange.male.rabbit', 'lazy.orange.male.rabbit'];

async function topics(ctx) {
  const x = `topic_logs-${suffix()}`;
  const q1 = await subscriber(ctx, x, 'topic', ['*.orange.*']);
  const q2 = await subscriber(ctx, x, 'topic', ['*.*.rabbit', 'lazy.#']);
  const results = [q1(), q2()];
  await publishRouted(ctx, x, 'topic', TOPIC_KEYS);
  const [got1, got2] = (await Promise.all(results)).map((lines) => lines.map((l) => l.split(' ')[0]));
  check('topics Q1', got1, ['quick.orange.rabbit', 'lazy.orange.elephant', 'quick.orange.fox']);
  check('topics Q2', got2, ['quick.orange.rabbit', 'lazy.orange.elephant', 'lazy.brown.fox',
    'lazy.pink.rabbit', 'lazy.orange.male.rabbit']);
  const { ch } = await ctx.connect();
  await ch.deleteExchange(x);
}

// Tutorial 6: fib RPC over rpc_queue with an exclusive callback queue, reply_to + correlation_id.
const fib = (n) => (n < 2 ? n : fib(n - 1) + fib(n - 2));

async function rpc(ctx) {
  const q = `rpc_queue-${suffix()}`;
  const server = await ctx.connect();
  await server.ch.assertQueue(q, { durable: false });
  await server.ch.prefetch(1);
  const served = collect(server.ch, q, {
    noAck: false,
    max: 3,
    onMessage: (m) => {
      const n = parseInt(m.content.toString(), 10);
      server.ch.sendToQueue(m.properties.replyTo, Buffer.from(String(fib(n))), { correlationId: m.properties.correlationId });
      server.ch.ack(m);
      return n;
    },
  });

  const client = await ctx.connect();
  const { queue: callbackQueue } = await client.ch.assertQueue('', { exclusive: true });
  const pending = new Map(); // correlation id -> resolve
  await client.ch.consume(callbackQueue, (m) => {
    const resolve = m && pending.get(m.properties.correlationId);
    if (resolve) resolve(m.content.toString()); // replies for unknown ids are ignored
  }, { noAck: true });
  const call = (n) => new Promise((resolve) => {
    const id = crypto.randomUUID();
    pending.set(id, resolve);
    client.ch.sendToQueue(q, Buffer.from(String(n)), { replyTo: callbackQueue, correlationId: id });
  });

  const lines = [];
  for (const n of [0, 10, 30]) lines.push(`fib(${n})=${parseInt(await call(n), 10)}`);
  check('rpc', lines, ['fib(0)=0', 'fib(10)=55', 'fib(30)=832040']);
  check('rpc: server requests', await served, [0, 10, 30]);
  await server.ch.deleteQueue(q);
}

// AMQP_TRACE=1: log method frames as amqplib sends and receives them.
function installTrace() {
  const lib = (m) => require(require('node:path').join(require('node:path').dirname(require.resolve('amqplib')), 'lib', m));
  const { Connection } = lib('connection');
  const { inspect } = lib('format');
  const defs = lib('defs');
  const out = (dir, s) => console.log(`  [trace] ${dir} ${s}`);
  const { sendMethod, sendMessage, recvFrame } = Connection.prototype;
  let depth = 0; // recvFrame recurses while buffering; log each frame once, at the top
  Connection.prototype.sendMethod = function (channel, Method, fields) {
    out('>>', `<${defs.info(Method).name} channel:${channel}> ${JSON.stringify(fields)}`);
    return sendMethod.apply(this, arguments);
  };
  Connection.prototype.sendMessage = function (channel, Method, fields, P, props, content) {
    out('>>', `<${defs.info(Method).name} channel:${channel}> ${JSON.stringify(props)} body=${JSON.stringify(content.toString())}`);
    return sendMessage.apply(this, arguments);
  };
  Connection.prototype.recvFrame = function () {
    depth++;
    let f;
    try {
      f = recvFrame.apply(this, arguments);
    } finally {
      depth--;
    }
    if (depth > 0) return f;
    if (f && f.id) out('<<', inspect(f, false) + ' ' + JSON.stringify(f.fields));
    else if (f && f.content) out('<<', `<Body channel:${f.channel}> ${JSON.stringify(f.content.toString())}`);
    return f;
  };
}

async function main() {
  console.log(`amqplib tutorials against ${URL}`);
  await flow('hello_world', helloWorld);
  await flow('work_queues', workQueues);
  await flow('publish_subscribe', publishSubscribe);
  await flow('routing', routing);
  await flow('topics', topics);
  await flow('rpc', rpc);
  if (FAILURES.length) {
    console.log(`\n${FAILURES.length} failure(s):\n  ${FAILURES.join('\n  ')}`);
    process.exit(1);
  }
  console.log('all tutorial flows passed');
  process.exit(0);
}

main().catch((e) => {
  console.log(`FAIL ${e.stack}`);
  process.exit(1);
});
