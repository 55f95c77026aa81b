// tasknest dashboard: hand-written, no build step, no CDN.
// One snapshot per scheduler tick arrives over Server-Sent Events; each page renders it.
"use strict";

const app = document.getElementById("app");
const page = app.dataset.page;
const STREAM_MAX = 5000;          // task stream rows kept here (the server keeps more)
const WINDOW = 10;                // seconds of task stream shown
let snap = null;
const stream = [];
const marks = [];                 // transfers and spills: [seq, worker, kind, start, stop, peer, keys, bytes]
const openNodes = new Set();      // spawn tree nodes the user opened (or closed: closed)
const closedNodes = new Set();
const fetched = {};               // url -> time of last fetch (pages that ask on demand)

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined) e.setAttribute(k, v);
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined) continue;
    e.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return e;
}

function colour(name) {
  let h = 0;
  for (const ch of name) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return `hsl(${h % 360},60%,55%)`;
}

function bytes(n) {
  if (!n) return "0 B";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
}

function secs(s) {
  if (s === null || s === undefined) return "";
  if (s < 1e-3) return `${(s * 1e6).toFixed(0)} µs`;
  if (s < 1) return `${(s * 1e3).toFixed(1)} ms`;
  return `${s.toFixed(2)} s`;
}

function when(t) { return t ? new Date(t * 1000).toLocaleTimeString() : ""; }

function taskLink(key) {
  return el("a", {href: "/task/" + encodeURIComponent(key), class: "key"}, key);
}

async function api(path) {
  const r = await fetch(path, {credentials: "same-origin"});
  if (!r.ok) throw new Error(`${path}: ${r.status}`);
  return r.json();
}

function due(url, every) {    // at most one fetch of url per `every` seconds
  const now = Date.now() / 1000;
  if (fetched[url] && now - fetched[url] < every) return false;
  fetched[url] = now;
  return true;
}

function setConn(text, ok) {
  const c = document.getElementById("conn");
  c.textContent = text;
  c.className = ok ? "ok" : "bad";
}

// -- pages -------------------------------------------------------------------------------
function workersTable() {
  const rows = snap.workers.map(w => el("tr", {},
    el("td", {}, w.name), el("td", {class: "mono"}, w.address),
    el("td", {}, el("div", {class: "meter"}, el("div", {style: `width:${100 * w.busy / w.nthreads}%`})),
      ` ${w.busy}/${w.nthreads}`),
    el("td", {}, w.processing), el("td", {}, w.keys),
    el("td", {}, bytes(w.memory) + (w.memory_limit ? " / " + bytes(w.memory_limit) : "")),
    el("td", {}, `${(w.cpu || 0).toFixed(0)} %`), el("td", {}, w.spilled),
    el("td", {}, w.paused ? "paused" : "")));
  return el("table", {id: "workers"},
    el("tr", {}, ["name", "address", "threads busy", "tasks", "results held", "memory", "CPU",
                  "spilled", ""].map(t => el("th", {}, t))), rows);
}

function taskStream() {
  const canvas = el("canvas", {id: "stream", width: 1100, height: 10});
  const lanes = new Map();
  const rows = [];
  for (const r of stream) rows.push(`${r[1]} #${r[2]}`);
  for (const m of marks) rows.push(`${m[1]} transfers`);
  for (const k of rows.sort()) if (!lanes.has(k)) lanes.set(k, lanes.size);
  const laneH = 14, left = 190;
  canvas.height = Math.max(1, lanes.size) * laneH + 16;
  const ctx = canvas.getContext("2d");
  const end = snap.time, start = end - WINDOW;
  const scale = (canvas.width - left) / WINDOW;
  ctx.font = "10px sans-serif";
  ctx.fillStyle = "#444";
  for (const [k, i] of lanes) ctx.fillText(k.slice(-30), 2, i * laneH + 10);
  let bars = 0;
  // longest first: a task run inline inside its parent (same thread) is drawn on top
  const shown = stream.filter(r => r[5] >= start).sort((a, b) => (b[5] - b[4]) - (a[5] - a[4]));
  ctx.strokeStyle = "#fff";
  for (const r of shown) {
    const x = left + Math.max(0, r[4] - start) * scale;
    const w = Math.max(1, (r[5] - Math.max(r[4], start)) * scale);
    const y = lanes.get(`${r[1]} #${r[2]}`) * laneH + 1;
    ctx.fillStyle = r[6] ? colour(r[3].replace(/-[^-]*$/, "")) : "#000";
    ctx.fillRect(x, y, w, laneH - 3);
    if (w > 3) ctx.strokeRect(x + 0.5, y + 0.5, w - 1, laneH - 4);
    bars++;
  }
  let moved = 0;
  for (const m of marks) {
    if (m[4] < start) continue;
    const y = lanes.get(`${m[1]} transfers`) * laneH;
    const x = left + Math.max(0, m[3] - start) * scale;
    if (m[2] === "transfer") {      // a red bar: fetching results from another worker
      ctx.fillStyle = "#d33";
      ctx.fillRect(x, y + 4, Math.max(1, (m[4] - Math.max(m[3], start)) * scale), laneH - 8);
      moved++;
    } else {                        // a spill: a triangle at the time it was noticed
      ctx.fillStyle = "#a0a";
      ctx.beginPath();
      ctx.moveTo(x - 4, y + 2); ctx.lineTo(x + 4, y + 2); ctx.lineTo(x, y + laneH - 2);
      ctx.fill();
    }
  }
  ctx.fillStyle = "#888";
  ctx.fillText(`last ${WINDOW} s · ${bars} executions · black: erred · red: transfers ` +
    `(${moved}) · purple: spills`, left, canvas.height - 3);
  canvas.dataset.bars = bars;
  canvas.dataset.rows = stream.length;
  return canvas;
}

function progressBars() {
  const rows = snap.progress.map(p => {
    const total = p.waiting + p.processing + p.memory + p.erred + (p.done || 0);
    const part = (n, cls) => n ? el("div", {class: "seg " + cls,
      style: `width:${100 * n / Math.max(1, total)}%`, title: `${cls}: ${n}`}) : null;
    return el("tr", {class: "progress-row"},
      el("td", {class: "fn", style: `border-left:6px solid ${colour(p.function)}`}, p.function),
      el("td", {class: "bar"}, el("div", {class: "bars"},
        part(Math.max(0, (p.done || 0) - p.memory), "finished"), part(p.memory, "memory"),
        part(p.processing, "processing"), part(p.waiting, "waiting"), part(p.erred, "erred"))),
      el("td", {class: "counts"}, `${p.waiting} waiting · ${p.processing} processing · ` +
        `${p.memory} in memory · ${p.erred} erred · ${p.done || 0} ran`));
  });
  return el("table", {id: "progress"}, rows);
}

function renderStatus() {
  const t = snap.totals;
  app.replaceChildren(
    el("h2", {}, "Workers"), workersTable(),
    el("h2", {}, "Task stream"), taskStream(),
    el("h2", {}, "Progress"),
    el("p", {}, `${snap.ntasks} tasks: ${t.waiting} waiting, ${t.processing} processing, ` +
      `${t.memory} in memory, ${t.erred} erred · ${bytes(snap.bytes_held)} held`),
    progressBars(), limits());
}

function limits() {
  const l = snap.limits;
  return el("p", {class: "limits"}, `Kept: the last ${l.stream} executions, ${l.failures} ` +
    `failures, ${l.worker_log_lines} log lines per worker, ${l.progress_functions} functions; ` +
    `a tree node shows ${l.tree_children} children, the rest counted by state. ` +
    `Snapshot took ${secs(snap.scan_seconds)}; loop lag ${secs(snap.loop_lag)}.`);
}

// spawn tree: the roots from the snapshot, each subtree asked for when shown
const trees = {};
let rootList = [];
function treeNode(n) {
  const open = n.children && n.children.length && !closedNodes.has(n.key);
  const label = el("span", {class: "node"},
    el("span", {class: "dot " + n.state}), taskLink(n.key), " ",
    el("b", {}, n.function), " ", el("span", {class: "state " + n.state}, n.state),
    n.worker ? ` on ${n.worker}` : "", n.duration !== null ? ` · ${secs(n.duration)}` : "",
    n.nchildren ? ` · ${n.nchildren} children` : "");
  if (!n.nchildren) return el("li", {class: "leaf", "data-key": n.key}, label);
  const d = el("details", {"data-key": n.key}, el("summary", {}, label));
  if (open) d.open = true;
  d.addEventListener("toggle", () => {
    if (d.open) { closedNodes.delete(n.key); openNodes.add(n.key); }
    else { closedNodes.add(n.key); openNodes.delete(n.key); }
  });
  const ul = el("ul", {});
  for (const c of n.children || []) ul.append(treeNode(c));
  const rest = Object.entries(n.rolled_up || {});
  if (rest.length) ul.append(el("li", {class: "rolled"},
    "… and " + rest.map(([s, k]) => `${k} ${s}`).join(", ")));
  if (!n.children && n.nchildren) ul.append(el("li", {class: "rolled"},
    el("a", {href: "/tree?root=" + encodeURIComponent(n.key)}, `${n.nchildren} children: open`)));
  d.append(ul);
  return el("li", {"data-key": n.key}, d);
}

async function renderTree() {
  const from = new URLSearchParams(location.search).get("root");   // a tree from any task
  if (!from && due("/api/v1/roots", 1)) {
    try { rootList = await api("/api/v1/roots"); } catch (e) { /* next tick */ }
  }
  const roots = from ? [{key: from}] : rootList.slice(-10).reverse();
  await Promise.all(roots.map(async r => {
    const url = "/api/v1/tree/" + encodeURIComponent(r.key) + "?depth=6";
    if (!due(url, 1)) return;
    try { trees[r.key] = await api(url); } catch (e) { delete trees[r.key]; }
  }));
  const list = el("ul", {id: "tree", class: "tree"});
  for (const r of roots) if (trees[r.key]) list.append(treeNode(trees[r.key]));
  const count = list.querySelectorAll("li[data-key]").length;
  list.dataset.nodes = count;
  app.replaceChildren(el("h2", {}, "Spawn tree"),
    el("p", {}, from ? ["The tree under ", taskLink(from), " · ", el("a", {href: "/tree"},
      "the newest roots")] : roots.length ? `Tasks launched from tasks, from the ` +
      `${roots.length} newest roots; a parent in worker_client waiting on its children is ` +
      "marked waiting-children." : "No task has launched tasks yet."), list, limits());
}

async function renderTask() {
  const key = window.TASK_KEY;
  const url = "/api/v1/tasks/" + encodeURIComponent(key);
  if (!due(url, 1) && app.childElementCount) return;
  let t;
  try { t = await api(url); } catch (e) {
    app.replaceChildren(el("h2", {}, key), el("p", {}, "The scheduler does not know this task " +
      "(any more)."));
    return;
  }
  const row = (k, v) => el("tr", {}, el("th", {}, k), el("td", {}, v));
  const keys = ks => el("span", {}, ks.map(k => [taskLink(k), " "]));
  app.replaceChildren(el("h2", {id: "task-key"}, t.key),
    el("table", {class: "task"},
      row("function", t.function), row("state", el("span", {class: "state " + t.state}, t.state)),
      row("worker", t.worker || ""), row("started", when(t.start)),
      row("finished", when(t.stop)), row("duration", secs(t.duration)),
      row("parent", t.parent ? taskLink(t.parent) : "(a root)"),
      row("root", t.root && t.root !== t.key ? taskLink(t.root) : ""),
      row(`children (${t.nchildren})`, keys(t.children)),
      row("dependencies", keys(t.dependencies)), row("dependents", keys(t.dependents)),
      row("result held by", t.who_has.join(", ")),
      row("result", t.type ? `${t.type}, ${bytes(t.nbytes)}` : ""),
      row("wanted by", t.who_wants.join(", ")),
      row("exception", t.exception || "")),
    t.traceback ? el("pre", {class: "traceback"}, t.traceback) : "",
    t.nchildren ? el("p", {}, el("a", {href: "/tree?root=" + encodeURIComponent(t.key)},
      "the spawn tree from here")) : "");
}

const logs = {};
const stacks = {};                 // worker address -> its stacks, once asked for
async function askStacks(address) {
  try {
    const r = await api("/api/v1/workers/stacks?worker=" + encodeURIComponent(address));
    stacks[address] = r.stacks;
  } catch (e) { stacks[address] = {"(error)": String(e)}; }
  render();
}

async function renderWorkers() {
  if (due("/api/v1/workers/logs", 2)) {
    try { Object.assign(logs, await api("/api/v1/workers/logs")); } catch (e) { /* next tick */ }
  }
  const per = snap.workers.map(w => el("section", {class: "worker"},
    el("h3", {}, `${w.name} · ${w.address}`),
    el("p", {}, `${w.busy}/${w.nthreads} threads busy, ${w.processing} tasks, ` +
      `${w.seceded} waiting on their children, ${bytes(w.memory)}`,
      w.http ? [" · ", el("button", {class: "stacks", onclick: () => askStacks(w.address)},
                          "call stacks of its running tasks")] : ""),
    stacks[w.address] ? el("div", {class: "stacks"},
      Object.keys(stacks[w.address]).length ? Object.entries(stacks[w.address]).map(([k, st]) =>
        [el("h4", {}, taskLink(k)), el("pre", {class: "stack"}, st)])
        : el("p", {}, "(nothing running)")) : "",
    el("pre", {class: "logs"}, (logs[w.address] || []).slice(-30).join("\n") ||
      "(no log lines at the worker's log level)")));
  app.replaceChildren(el("h2", {}, "Workers"), workersTable(), ...per, limits());
}

function renderFailures() {
  const rows = snap.failures.slice().reverse().map(f => el("tr", {},
    el("td", {}, when(f.time)), el("td", {class: "state erred"}, f.kind),
    el("td", {}, f.key ? taskLink(f.key) : ""), el("td", {class: "mono"}, f.worker),
    el("td", {}, f.text)));
  app.replaceChildren(el("h2", {}, "Failures"),
    rows.length ? el("table", {id: "failures"}, el("tr", {},
      ["time", "kind", "task", "worker", "what"].map(t => el("th", {}, t))), rows)
      : el("p", {}, "No failure so far."), limits());
}

const RENDER = {status: renderStatus, tree: renderTree, task: renderTask,
                workers: renderWorkers, failures: renderFailures};
let rendering = false;
async function render() {
  if (rendering || !snap) return;
  rendering = true;
  try { await RENDER[page](); } finally { rendering = false; }
}

function take(s, fresh) {
  if (fresh) { stream.length = 0; marks.length = 0; }
  for (const r of s.stream) stream.push(r);
  if (stream.length > STREAM_MAX) stream.splice(0, stream.length - STREAM_MAX);
  for (const m of s.marks || []) marks.push(m);
  if (marks.length > 1000) marks.splice(0, marks.length - 1000);
  snap = s;
  render();
}

async function start() {
  try { take(await api("/api/v1/status"), true); } catch (e) {
    setConn("no access (open the link with its key)", false);
    return;
  }
  const es = new EventSource("/api/v1/events");
  // a page left (or kept in the back-forward cache) lets go of its stream: a browser
  // opens only six connections to one host, and kept streams would use them up
  window.addEventListener("pagehide", () => es.close());
  es.onopen = () => setConn("live", true);
  es.onerror = () => setConn("reconnecting…", false);
  es.onmessage = e => take(JSON.parse(e.data), false);
  es.addEventListener("resync", () => { es.close(); start(); });
}

start();
