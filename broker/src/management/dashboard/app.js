// The broker's dashboard: a client of the management API's JSON, nothing else.
// Credentials stay in this tab (sessionStorage) and go with every request as HTTP
// basic auth, as RabbitMQ's own UI sends them. Names from the broker are put in the
// page as text, never as HTML. `?refresh=MS` sets the polling interval (default 5 s,
// the broker's rate sampling interval).
"use strict";

const params = new URLSearchParams(location.search);
const REFRESH = Math.max(100, Number(params.get("refresh")) || 5000);
const HISTORY = 120;
const $ = (sel) => document.querySelector(sel);

let auth = sessionStorage.getItem("auth");
let admin = false;
let tab = "overview";
let timer = null;
const samples = [];

async function api(path, method = "GET") {
  const resp = await fetch(path, {
    method,
    // No WWW-Authenticate on a 401 to this (the broker's dashboard module): the page
    // shows the error instead of the browser's own login prompt.
    headers: { authorization: "Basic " + auth, "x-requested-with": "XMLHttpRequest" },
  });
  if (resp.status === 401) {
    logout("Wrong user or password, or the user has no management tag.");
    throw new Error("unauthorized");
  }
  if (!resp.ok) {
    let reason = resp.statusText;
    try {
      const body = await resp.json();
      reason = body.reason || body.error || reason;
    } catch (_) {
      // no JSON body
    }
    throw new Error(`${method} ${path}: ${resp.status} ${reason}`);
  }
  return resp.status === 204 ? null : resp.json();
}

const seg = (s) => encodeURIComponent(s);

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text === undefined || text === null ? "" : String(text);
  if (cls) td.className = cls;
  return td;
}

function numberCell(value, field) {
  const td = cell(value ?? 0, "n");
  td.dataset.field = field;
  return td;
}

// An action button that asks once more before it acts: the first click arms it for
// three seconds, the second does it.
function actionButton(label, action, attrs, run) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.dataset.action = action;
  Object.assign(b.dataset, attrs);
  b.addEventListener("click", async () => {
    if (!b.classList.contains("armed")) {
      b.classList.add("armed");
      b.textContent = "Sure?";
      setTimeout(() => {
        b.classList.remove("armed");
        b.textContent = label;
      }, 3000);
      return;
    }
    b.disabled = true;
    try {
      await run();
      status(`${label}: done`);
    } catch (e) {
      status(e.message);
    }
    refresh();
  });
  return b;
}

function status(text) {
  $("#status").textContent = text;
}

function card(parent, label, value, field) {
  const div = document.createElement("div");
  div.className = "card";
  const b = document.createElement("b");
  b.textContent = value;
  b.dataset.field = field;
  const span = document.createElement("span");
  span.textContent = label;
  div.append(b, span);
  parent.append(div);
}

const rate = (stats, key) => {
  const r = stats && stats[key + "_details"] && stats[key + "_details"].rate;
  return typeof r === "number" ? r : 0;
};

async function showOverview() {
  const o = await api("/api/overview");
  const t = o.object_totals || {};
  const q = o.queue_totals || {};
  const totals = $("#totals");
  totals.replaceChildren();
  card(totals, "ready", q.messages_ready ?? 0, "messages_ready");
  card(totals, "unacked", q.messages_unacknowledged ?? 0, "messages_unacknowledged");
  card(totals, "queues", t.queues ?? 0, "queues");
  card(totals, "connections", t.connections ?? 0, "connections");
  card(totals, "channels", t.channels ?? 0, "channels");
  card(totals, "consumers", t.consumers ?? 0, "consumers");
  const m = o.message_stats || {};
  const rates = $("#rates");
  rates.replaceChildren();
  for (const [key, label] of [
    ["publish", "publish/s"],
    ["deliver_get", "deliver/s"],
    ["ack", "ack/s"],
    ["redeliver", "redeliver/s"],
  ]) {
    card(rates, label, rate(m, key).toFixed(1), key + "_rate");
  }
  samples.push({
    ready: q.messages_ready ?? 0,
    unacked: q.messages_unacknowledged ?? 0,
    publish: rate(m, "publish"),
    deliver: rate(m, "deliver_get"),
  });
  while (samples.length > HISTORY) samples.shift();
  drawChart();
}

function drawChart() {
  const canvas = $("#chart");
  const ctx = canvas.getContext("2d");
  const w = canvas.width;
  const h = canvas.height;
  const pad = 30;
  ctx.clearRect(0, 0, w, h);
  const series = [
    ["ready", "#f60"],
    ["unacked", "#2e90fa"],
    ["publish", "#12b76a"],
    ["deliver", "#7a5af8"],
  ];
  const max = Math.max(1, ...samples.flatMap((s) => series.map(([k]) => s[k])));
  ctx.strokeStyle = "#e4e7ec";
  ctx.fillStyle = "#667085";
  ctx.font = "11px system-ui";
  for (let i = 0; i <= 4; i++) {
    const y = pad / 2 + ((h - pad) * i) / 4;
    ctx.beginPath();
    ctx.moveTo(pad, y);
    ctx.lineTo(w - 4, y);
    ctx.stroke();
    const v = (max * (4 - i)) / 4;
    ctx.fillText(max < 10 ? v.toFixed(1) : String(Math.round(v)), 2, y + 4);
  }
  const x = (i) => pad + ((w - pad - 4) * i) / Math.max(1, HISTORY - 1);
  const y = (v) => pad / 2 + (h - pad) * (1 - v / max);
  for (const [key, color] of series) {
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    samples.forEach((s, i) => (i ? ctx.lineTo(x(i), y(s[key])) : ctx.moveTo(x(i), y(s[key]))));
    ctx.stroke();
  }
}

async function showQueues() {
  const queues = await api("/api/queues");
  const body = $("#queues tbody");
  body.replaceChildren();
  for (const q of queues) {
    const tr = document.createElement("tr");
    const id = q.vhost + " " + q.name;
    tr.dataset.queue = id;
    tr.append(
      cell(q.vhost),
      cell(q.name),
      cell(q.type),
      cell(q.policy || ""),
      numberCell(q.messages_ready, "messages_ready"),
      numberCell(q.messages_unacknowledged, "messages_unacknowledged"),
      numberCell(q.messages, "messages"),
      numberCell(q.consumers, "consumers"),
    );
    const actions = document.createElement("td");
    if (admin) {
      const path = `/api/queues/${seg(q.vhost)}/${seg(q.name)}`;
      actions.append(
        actionButton("Purge", "purge", { queue: id }, () => api(path + "/contents", "DELETE")),
        " ",
        actionButton("Delete", "delete", { queue: id }, () => api(path, "DELETE")),
      );
    }
    tr.append(actions);
    body.append(tr);
  }
}

async function showConnections() {
  const conns = await api("/api/connections");
  const body = $("#connections tbody");
  body.replaceChildren();
  for (const c of conns) {
    const tr = document.createElement("tr");
    tr.dataset.connection = c.name;
    const props = c.client_properties || {};
    const client = [props.product, props.version].filter(Boolean).join(" ");
    tr.append(
      cell(props.connection_name ? `${props.connection_name} (${c.name})` : c.name),
      cell(c.user),
      cell(c.vhost),
      cell(client),
      numberCell(c.channels, "channels"),
      cell(c.state),
    );
    const actions = document.createElement("td");
    if (admin) {
      actions.append(
        actionButton("Close", "close", { connection: c.name }, () =>
          api(`/api/connections/${seg(c.name)}`, "DELETE"),
        ),
      );
    }
    tr.append(actions);
    body.append(tr);
  }
}

async function showExchanges() {
  const exchanges = await api("/api/exchanges");
  const body = $("#exchanges tbody");
  body.replaceChildren();
  for (const x of exchanges) {
    const tr = document.createElement("tr");
    tr.dataset.exchange = x.vhost + " " + x.name;
    tr.append(
      cell(x.vhost),
      cell(x.name === "" ? "(AMQP default)" : x.name),
      cell(x.type),
      cell(x.durable ? "yes" : "no"),
      cell(x.policy || ""),
    );
    body.append(tr);
  }
}

const views = {
  overview: showOverview,
  queues: showQueues,
  connections: showConnections,
  exchanges: showExchanges,
};

async function refresh() {
  if (!auth) return;
  clearTimeout(timer);
  try {
    // The overview feeds the chart whatever tab is shown.
    if (tab !== "overview") await showOverview();
    await views[tab]();
    status(`updated ${new Date().toLocaleTimeString()}`);
  } catch (e) {
    if (e.message !== "unauthorized") status(e.message);
  }
  if (auth) timer = setTimeout(refresh, REFRESH);
}

function show(name) {
  tab = name;
  for (const b of document.querySelectorAll("#tabs button")) {
    b.classList.toggle("active", b.dataset.tab === name);
  }
  for (const s of document.querySelectorAll(".tab")) s.hidden = s.id !== name;
  refresh();
}

function logout(message) {
  auth = null;
  sessionStorage.removeItem("auth");
  clearTimeout(timer);
  $("#tabs").hidden = true;
  for (const s of document.querySelectorAll(".tab")) s.hidden = true;
  $("#login").hidden = false;
  $("#who").textContent = "";
  $("#login-error").textContent = message || "";
}

async function start() {
  try {
    const me = await api("/api/whoami");
    const tags = Array.isArray(me.tags) ? me.tags : String(me.tags || "").split(",");
    admin = tags.includes("administrator");
    $("#who").textContent = `${me.name}${admin ? " (administrator)" : ""}`;
    $("#login").hidden = true;
    $("#login-error").textContent = "";
    $("#tabs").hidden = false;
    show(tab);
  } catch (e) {
    if (e.message !== "unauthorized") logout(e.message);
  }
}

$("#login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const bytes = new TextEncoder().encode(`${$("#user").value}:${$("#password").value}`);
  auth = btoa(String.fromCharCode(...bytes));
  sessionStorage.setItem("auth", auth);
  start();
});

for (const b of document.querySelectorAll("#tabs button")) {
  b.addEventListener("click", () => show(b.dataset.tab));
}

if (auth) start();
