// SRE dashboard: polls /dashboard/data every sample interval, draws the charts (hover: time and values),
// the busiest rooms, the error breakdown, and a drill-down of one room with admin actions.
import { getToken, params, rememberToken } from "/static/common.js";

// The operations bearer token (operations.token_env/_file), when the gateway asks for one: given once in the
// URL fragment (/dashboard#ops_token=...), which never reaches a server or a log, then kept for this tab.
const OPS_TOKEN_KEY = "ops-token";
function takeOpsToken() {
  const given = new URLSearchParams(location.hash.slice(1)).get("ops_token");
  if (!given) return false;
  sessionStorage.setItem(OPS_TOKEN_KEY, given);
  history.replaceState(null, "", location.pathname + location.search);
  return true;
}
takeOpsToken();
// Pasting the address with the token into this tab changes only the fragment: the page stays loaded.
window.addEventListener("hashchange", takeOpsToken);

/** GET an operations feed, with the operations token when there is one. */
function opsFetch(url) {
  const token = sessionStorage.getItem(OPS_TOKEN_KEY);
  return fetch(url, { cache: "no-store", headers: token ? { Authorization: `Bearer ${token}` } : {} });
}

const $ = (sel) => document.querySelector(sel);
const STUTTER_TARGET = 0.005;  // configs/targets.toml
const JOIN_TARGET = 0.999;  // configs/targets.toml

const state = { points: [], rooms: [], latest: null, updates: 0, since: 0, interval: 1, errors: 0, cluster: null,
  errorTable: [], hover: null, drill: null };
window.cherryDashboard = state;  // read by the browser tests

function bits(bps) {
  if (bps >= 1e9) return `${(bps / 1e9).toFixed(2)} Gb/s`;
  if (bps >= 1e6) return `${(bps / 1e6).toFixed(2)} Mb/s`;
  if (bps >= 1e3) return `${(bps / 1e3).toFixed(0)} kb/s`;
  return `${Math.round(bps)} b/s`;
}
const bytes = (n) => n >= 1 << 30 ? `${(n / (1 << 30)).toFixed(2)} GiB` : `${(n / (1 << 20)).toFixed(0)} MiB`;
const pct = (x, digits = 2) => x == null ? "–" : `${(100 * x).toFixed(digits)} %`;
const ms = (x) => x == null ? "–" : x < 10 ? `${x.toFixed(2)} ms` : `${x.toFixed(0)} ms`;
function duration(s) {
  if (s < 60) return `${Math.floor(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

const clock = (t) => new Date(t * 1000).toTimeString().slice(0, 8);
const geometry = new WeakMap();  // canvas -> how its last drawing maps time to x (for hover)

function draw(canvas, series, { min = 0, max = null, format = String, target = null, integer = false } = {}) {
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== w * ratio || canvas.height !== h * ratio) { canvas.width = w * ratio; canvas.height = h * ratio; }
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, w, h);
  const pts = state.points;
  if (pts.length < 2) return;
  const t0 = pts[0].t, t1 = pts[pts.length - 1].t;
  let top = max;
  if (top == null) {
    top = target == null ? 0 : target * 1.5;
    for (const s of series) for (const p of pts) { const v = s.value(p); if (v != null && v > top) top = v; }
    top = top > 0 ? top * 1.15 : 1;
    if (integer) top = Math.max(2, 2 * Math.ceil(top / 2));  // whole numbers on every grid line
  }
  const left = 46, right = w - 4, bottom = h - 16;
  const x = (t) => left + (right - left) * (t1 > t0 ? (t - t0) / (t1 - t0) : 1);
  const y = (v) => bottom - (bottom - 6) * ((v - min) / (top - min || 1));
  geometry.set(canvas, { t0, t1, left, right });
  g.font = "10px system-ui, sans-serif"; g.fillStyle = "#9a9aab"; g.strokeStyle = "#2a2a36"; g.lineWidth = 1;
  for (let i = 0; i <= 2; i++) {
    const v = min + ((top - min) * i) / 2, yy = y(v);
    g.beginPath(); g.moveTo(left, yy); g.lineTo(right, yy); g.stroke();
    g.fillText(format(v), 2, yy + 3);
  }
  // Time axis: wall-clock ticks, so a spike can be matched with logs and alerts.
  const ticks = w > 420 ? 4 : 2;
  for (let i = 0; i <= ticks; i++) {
    const t = t0 + ((t1 - t0) * i) / ticks, xx = x(t);
    g.beginPath(); g.moveTo(xx, bottom); g.lineTo(xx, bottom + 3); g.stroke();
    const label = clock(t), width = g.measureText(label).width;
    g.fillText(label, Math.min(right - width, Math.max(left, xx - width / 2)), h - 2);
  }
  if (target != null) {
    g.setLineDash([4, 4]); g.strokeStyle = "#9a9aab";
    g.beginPath(); g.moveTo(left, y(target)); g.lineTo(right, y(target)); g.stroke(); g.setLineDash([]);
  }
  for (const s of series) {
    g.strokeStyle = s.color; g.lineWidth = 1.6; g.beginPath();
    let pen = false;
    for (const p of pts) {
      const v = s.value(p);
      if (v == null) { pen = false; continue; }
      if (pen) g.lineTo(x(p.t), y(v)); else g.moveTo(x(p.t), y(v));
      pen = true;
    }
    g.stroke();
  }
  const hover = state.hover && state.hover.canvas === canvas ? pts.find((p) => p.t === state.hover.t) : null;
  if (hover) {
    g.strokeStyle = "#e6e6ef"; g.lineWidth = 1;
    g.beginPath(); g.moveTo(x(hover.t), 6); g.lineTo(x(hover.t), bottom); g.stroke();
    for (const s of series) {
      const v = s.value(hover);
      if (v == null) continue;
      g.fillStyle = s.color; g.beginPath(); g.arc(x(hover.t), y(v), 3, 0, 2 * Math.PI); g.fill();
    }
  }
}

// Each chart: its series (with a label and a value format for the hover box) and drawing options.
const CHARTS = {
  "chart-audience": { series: [{ label: "viewers", color: "#e8364f", value: (q) => q.viewers },
    { label: "live rooms", color: "#f0b429", value: (q) => q.rooms_live }],
  options: { format: (v) => v.toFixed(0), integer: true } },
  "chart-bitrate": { series: [{ label: "egress", color: "#4aa3ff", value: (q) => q.egress_bps, show: bits },
    { label: "ingest", color: "#2fbf71", value: (q) => q.ingest_bps, show: bits }],
  options: { format: (v) => bits(v).replace(" ", "") } },
  "chart-stutter": { series: [{ label: "stutter", color: "#e8364f", value: (q) => q.watch_reports ? q.stutter_ratio : null,
    show: (v) => pct(v) }], options: { format: (v) => pct(v, 1), target: STUTTER_TARGET } },
  "chart-join": { series: [{ label: "join success", color: "#2fbf71", value: (q) => q.join_success, show: (v) => pct(v, 1) },
    { label: "drained (60 s)", color: null, value: (q) => q.joins_drained, show: String, hidden: true }],
  options: { max: 1, format: (v) => pct(v, 0), target: JOIN_TARGET } },
  "chart-errors": { series: [{ label: "errors/s", color: "#f0b429", value: (q) => q.errors_ps, show: (v) => v.toFixed(2) },
    { label: "5xx/s", color: "#e8364f", value: (q) => q.errors_5xx_ps, show: (v) => v.toFixed(2) }],
  options: { format: (v) => v.toFixed(v < 10 ? 1 : 0) } },
  "chart-delay": { series: [{ label: "p99", color: "#f0b429", value: (q) => q.delay_ms_p99, show: ms },
    { label: "p50", color: "#4aa3ff", value: (q) => q.delay_ms_p50, show: ms }], options: { format: (v) => ms(v) } },
  "chart-cpu": { series: [{ label: "CPU", color: "#c77dff", value: (q) => q.cpu_percent, show: (v) => `${v.toFixed(0)} %` }],
    options: { format: (v) => `${v.toFixed(0)}%` } },
};

function drawChart(id) {
  const chart = CHARTS[id];
  draw(document.getElementById(id), chart.series.filter((s) => !s.hidden), chart.options);
}

// Hover: the sample nearest the pointer, its time and every series' value, in a box by the pointer.
function hoverAt(canvas, offsetX) {
  const geo = geometry.get(canvas);
  const pts = state.points;
  if (!geo || pts.length < 2) return;
  const t = geo.t0 + (geo.t1 - geo.t0) * Math.min(1, Math.max(0, (offsetX - geo.left) / (geo.right - geo.left)));
  let nearest = pts[0];
  for (const p of pts) if (Math.abs(p.t - t) < Math.abs(nearest.t - t)) nearest = p;
  const chart = CHARTS[canvas.id];
  const values = chart.series.map((s) => {
    const v = s.value(nearest);
    return { label: s.label, color: s.color, text: v == null ? "–" : (s.show || chart.options.format)(v) };
  });
  state.hover = { canvas, x: offsetX, chart: canvas.id, t: nearest.t, time: clock(nearest.t), values };
  const tip = tipFor(canvas);
  tip.replaceChildren();
  const head = document.createElement("b");
  head.textContent = state.hover.time;
  tip.append(head);
  for (const v of values) {
    const line = document.createElement("div");
    const swatch = document.createElement("i");
    if (v.color) swatch.style.background = v.color;
    line.append(swatch, `${v.label} ${v.text}`);
    tip.append(line);
  }
  tip.hidden = false;
  const box = canvas.parentElement.getBoundingClientRect(), at = canvas.getBoundingClientRect();
  const xx = at.left - box.left + geo.left + (geo.right - geo.left) * ((nearest.t - geo.t0) / (geo.t1 - geo.t0 || 1));
  tip.style.left = `${Math.min(box.width - tip.offsetWidth - 4, Math.max(4, xx + 10))}px`;
  tip.style.top = `${at.top - box.top + 4}px`;
  drawChart(canvas.id);
}

function tipFor(canvas) {
  let tip = canvas.parentElement.querySelector(".dash-tip");
  if (!tip) {
    tip = document.createElement("div");
    tip.className = "dash-tip";
    tip.hidden = true;
    canvas.parentElement.append(tip);
  }
  return tip;
}

for (const id of Object.keys(CHARTS)) {
  const canvas = document.getElementById(id);
  canvas.addEventListener("mousemove", (event) => hoverAt(canvas, event.offsetX));
  canvas.addEventListener("mouseleave", () => {
    state.hover = null;
    tipFor(canvas).hidden = true;
    drawChart(id);
  });
}

function render() {
  const p = state.latest;
  if (!p) return;
  $("#stat-rooms").textContent = `${p.rooms_live} / ${p.rooms}`;
  $("#stat-viewers").textContent = p.viewers;
  $("#stat-sessions").textContent = p.sessions;
  $("#stat-egress").textContent = bits(p.egress_bps);
  $("#stat-ingest").textContent = bits(p.ingest_bps);
  $("#stat-stutter").textContent = p.watch_reports ? pct(p.stutter_ratio) : "–";
  $("#tile-stutter").className = "dash-stat " + (!p.watch_reports ? "" : p.stutter_ratio > STUTTER_TARGET ? "bad" : "good");
  $("#stat-join").textContent = pct(p.join_success, 1);
  $("#tile-join").className = "dash-stat " + (p.join_success == null ? "" : p.join_success < JOIN_TARGET ? "bad" : "good");
  $("#stat-delay").textContent = ms(p.delay_ms_p99);
  $("#stat-cpu").textContent = `${p.cpu_percent.toFixed(0)} %`;
  $("#stat-rss").textContent = bytes(p.rss_bytes);
  $("#now-audience").textContent = `${p.viewers} viewers, ${p.rooms_live} live`;
  $("#now-bitrate").textContent = `${bits(p.egress_bps)} out`;
  $("#now-stutter").textContent = p.watch_reports ? pct(p.stutter_ratio) : "no reports yet";
  $("#now-join").textContent = pct(p.join_success, 1);
  $("#now-delay").textContent = `p50 ${ms(p.delay_ms_p50)}, p99 ${ms(p.delay_ms_p99)}`;
  $("#now-cpu").textContent = `${p.cpu_percent.toFixed(0)} %`;

  $("#stat-drained").textContent = p.joins_drained ? ` · ${p.joins_drained} drained, not failures` : "";
  $("#now-join").textContent = pct(p.join_success, 1) + (p.joins_drained ? ` · ${p.joins_drained} drained` : "");
  $("#stat-errors").textContent = p.errors_ps.toFixed(p.errors_ps < 10 ? 2 : 0);
  $("#tile-errors").className = "dash-stat " + (p.errors_5xx_ps > 0 ? "bad" : "");
  $("#now-errors").textContent = `${p.errors_ps.toFixed(2)}/s, 5xx ${p.errors_5xx_ps.toFixed(2)}/s`;
  for (const id of Object.keys(CHARTS)) drawChart(id);
  if (state.hover) hoverAt(state.hover.canvas, state.hover.x);  // new samples move the axis under the pointer
  const body = $("#rooms-table tbody");
  const now = Date.now() / 1000;
  body.replaceChildren(...state.rooms.map((r) => {
    const tr = document.createElement("tr");
    tr.dataset.room = r.room;
    if (state.drill && state.drill.room === r.room) tr.className = "selected";
    const cells = [
      [r.title && r.title !== r.room ? `${r.room} · ${r.title}` : r.room],
      [r.host ? `${r.live ? "● " : ""}${r.host}` : "(no host)"],
      [String(r.viewers)], [bits(r.egress_bps)], [bits(r.ingest_bps), "wide"],
      [r.stutter_ratio == null ? "–" : pct(r.stutter_ratio), r.stutter_ratio > STUTTER_TARGET ? "bad" : ""],
      [r.latency_ms_p95 == null ? "–" : ms(r.latency_ms_p95), "wide"],
      [r.fps == null ? "–" : r.fps.toFixed(0), "wide"],
      [r.live_since ? duration(now - r.live_since) : "–", "wide"],
    ];
    for (const [text, cls] of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      tr.append(td);
    }
    return tr;
  }));
  $("#no-rooms").hidden = state.rooms.length > 0;
  rows($("#errors-table tbody"), state.errorTable, (e) => [
    [e.code], [e.endpoint], [String(e.status), e.status >= 500 ? "bad" : ""], [String(e.window), e.window ? "bad" : ""],
    [String(e.total)],
  ]);
  $("#no-errors").hidden = state.errorTable.length > 0;
}

async function poll() {
  try {
    const response = await opsFetch(`/dashboard/data?since=${state.since}`);
    if (response.status === 401) {
      throw new Error("this gateway needs its operations token: open /dashboard#ops_token=TOKEN");
    }
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const data = await response.json();
    state.interval = data.interval_s;
    if (data.points.length) {
      state.points.push(...data.points);
      const keep = Math.max(2, Math.round(300 / state.interval));
      if (state.points.length > keep) state.points.splice(0, state.points.length - keep);
      state.since = data.points[data.points.length - 1].t;
    }
    state.latest = data.latest;
    state.rooms = data.rooms;
    state.errorTable = data.errors || [];
    state.updates += 1;
    state.errors = 0;
    document.body.dataset.state = data.draining ? "draining" : "ok";
    $("#state").textContent = data.draining ? "DRAINING: not accepting new sessions"
      : `live · updated ${new Date(data.now * 1000).toLocaleTimeString()}`;
    render();
  } catch (error) {
    state.errors += 1;
    document.body.dataset.state = "error";
    $("#state").textContent = `cannot reach the gateway (${error.message}); retrying`;
  }
  setTimeout(poll, Math.min(5000, state.interval * 1000 * (1 + Math.min(state.errors, 4))));
}

function rows(tbody, items, cellsOf) {
  tbody.replaceChildren(...items.map((item) => {
    const tr = document.createElement("tr");
    for (const [text, cls] of cellsOf(item)) {
      const td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      tr.append(td);
    }
    return tr;
  }));
}

function renderCluster() {
  const c = state.cluster;
  $("#cluster").hidden = !(c && c.clustered);
  if (!c || !c.clustered) return;
  $("#cluster-summary").textContent = c.error ? c.error
    : `${c.nodes.length} nodes, ${c.available_workers}/${c.workers} workers serving, ${c.viewers} viewers`;
  const workers = c.nodes.flatMap((n) => n.workers.map((w) => ({ node: n.id, ...w })));
  rows($("#cluster-workers tbody"), workers, (w) => [
    [w.node], [w.id], [w.state, w.available ? "good" : "bad"], [String(w.viewers)],
    [w.load == null ? "–" : pct(w.load, 0)], [String(w.sessions), "wide"], [String(w.rooms), "wide"],
    [`${w.heartbeat_age_s.toFixed(1)} s ago`, "wide"],
  ]);
  rows($("#cluster-rooms tbody"), c.rooms.slice(0, 50), (r) => [
    [r.room], [r.origin || "(none)"], [String(r.viewers)], [String(r.origin_viewers)],
    [Object.entries(r.edges).map(([w, n]) => `${w}: ${n}`).join(", ") || "–"],
  ]);
}

// The cluster view is the registry's (one Redis read on whichever worker answers): every 2 s is plenty.
async function pollCluster() {
  try {
    const response = await opsFetch("/dashboard/cluster");
    if (response.ok) { state.cluster = await response.json(); renderCluster(); }
  } catch (error) {
    // the main poll reports an unreachable gateway
  }
  setTimeout(pollCluster, 2000);
}

// -- drill-down: one room's sessions, quality and admin actions (polled while open, one room at a time) --

const ADMIN_ROOM = "*";  // an admin token for every room, as /dev/token?room=*&role=admin mints it in dev mode

function drillStatus(text) {
  $("#drill-status").textContent = text || "";
}

function openDrill(name) {
  const changed = !state.drill || state.drill.room !== name;
  state.drill = { room: name, view: changed ? null : state.drill.view, updates: changed ? 0 : state.drill.updates,
    timer: state.drill?.timer, gone: false };
  $("#drill").hidden = false;
  $("#drill-room").textContent = name;
  if (changed) { drillStatus("loading…"); $("#drill-sessions tbody").replaceChildren(); }
  render();
  clearTimeout(state.drill.timer);
  pollDrill();
}

function closeDrill() {
  if (state.drill) clearTimeout(state.drill.timer);
  state.drill = null;
  $("#drill").hidden = true;
  render();
}

async function pollDrill() {
  const drill = state.drill;
  if (!drill) return;
  try {
    const response = await opsFetch(`/dashboard/room?room=${encodeURIComponent(drill.room)}`);
    if (drill !== state.drill) return;
    if (response.status === 404) {
      drill.gone = true;
      drill.view = null;
      renderDrill();
      drillStatus("This room has ended (or is not on this gateway).");
    } else if (response.ok) {
      drill.view = await response.json();
      drill.gone = false;
      drill.updates += 1;
      renderDrill();
    } else {
      drillStatus(`cannot read the room (HTTP ${response.status}); retrying`);
    }
  } catch (error) {
    if (drill === state.drill) drillStatus(`cannot reach the gateway (${error.message}); retrying`);
  }
  if (drill === state.drill) drill.timer = setTimeout(pollDrill, 2000);
}

function renderDrill() {
  const drill = state.drill;
  const v = drill && drill.view;
  $("#drill-end").disabled = !v;
  if (!v) {
    for (const id of ["codec", "ingest", "viewers", "stutter", "latency", "fps"]) $(`#drill-${id}`).textContent = "–";
    $("#drill-summary").textContent = "";
    $("#drill-sessions tbody").replaceChildren();
    $("#drill-more").hidden = true;
    return;
  }
  if (!drill.acted) drillStatus(v.partial ? "Some workers did not answer: the figures are partial." : "");
  $("#drill-summary").textContent = [v.title && v.title !== v.room ? v.title : "", v.live ? "live" : "not live",
    v.live_s != null ? `for ${duration(v.live_s)}` : "", v.pk_partner ? `PK with ${v.pk_partner}` : ""]
    .filter(Boolean).join(" · ");
  $("#drill-codec").textContent = v.publications.map((p) => p.codec).join(" + ") || "–";
  $("#drill-ingest").textContent = bits(v.ingest_bps);
  $("#drill-viewers").textContent = `${v.viewers} · ${v.online}`;
  const q = v.quality;
  $("#drill-stutter").textContent = q && q.reports ? pct(q.stutter_ratio) : "no reports";
  $("#drill-latency").textContent = q && q.reports ? `${ms(q.latency_ms_p50)} / ${ms(q.latency_ms_p95)}` : "–";
  $("#drill-fps").textContent = q && q.reports ? q.fps_mean.toFixed(0) : "–";
  const lines = [];
  for (const p of v.participants) {
    const sessions = p.sessions.length ? p.sessions : [null];
    sessions.forEach((s, i) => lines.push({ p, s, first: i === 0 }));
  }
  const body = $("#drill-sessions tbody");
  body.replaceChildren(...lines.map(({ p, s, first }) => {
    const tr = document.createElement("tr");
    tr.dataset.identity = p.identity;
    const who = p.display_name && p.display_name !== p.identity ? `${p.display_name} (${p.identity})` : p.identity;
    const cells = [
      [first ? who : ""], [first ? p.role + (p.on_mic && p.role !== "host" ? " · on mic" : "") : ""],
      [s ? (s.kind === "ingest" ? "ingest (WHIP)" : "playback (WHEP)") : `room socket${p.sockets > 1 ? "s" : ""} only`],
      [s ? s.state + (s.congestion && s.congestion !== "ok" ? ` · ${s.congestion}` : "") : "", s && s.state !== "connected" ? "bad" : ""],
      [s ? s.codecs.join(", ") || "–" : "", "wide"],
      [s && s.kind === "playback" ? bits(s.send_bps) : s ? bits(v.ingest_bps) : ""],
      [s && s.loss != null ? pct(s.loss, 1) : "–", s && s.loss > 0.05 ? "bad" : ""],
      [s && s.rtt_ms != null ? ms(s.rtt_ms) : "–", "wide"],
      [s ? String(s.nacks) : ""], [s ? String(s.plis) : ""], [p.worker || "–", "wide"],
    ];
    for (const [text, cls] of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      tr.append(td);
    }
    const actions = document.createElement("td");
    if (first) {
      const kick = document.createElement("button");
      kick.className = "mini";
      kick.textContent = "kick";
      kick.dataset.kick = p.identity;
      kick.onclick = () => kickParticipant(v.room, p.identity);
      actions.append(kick);
    }
    tr.append(actions);
    return tr;
  }));
  const more = v.participants_total - v.participants.length;
  $("#drill-more").hidden = more <= 0;
  $("#drill-more").textContent = `… and ${more} more participants (the first ${v.participants.length} are shown).`;
}

/** An admin token: the one kept in this tab, else one from /dev/token in dev mode, else the operator pastes one. */
async function adminToken() {
  const token = await getToken(ADMIN_ROOM, "admin").catch(() => null);
  if (token) { rememberToken(ADMIN_ROOM, "admin", token); return token; }
  $("#admin-token-row").hidden = false;
  return null;
}

async function adminAction(what, method, path, body) {
  const drill = state.drill;
  const token = await adminToken();
  if (!token) { drillStatus(`An admin token is needed to ${what}: paste one above.`); return null; }
  drill.acted = true;
  drillStatus(`${what}…`);
  const response = await fetch(path, { method, headers: { Authorization: `Bearer ${token}`,
    ...(body ? { "Content-Type": "application/json" } : {}) }, body: body ? JSON.stringify(body) : undefined });
  const answer = await response.json().catch(() => ({}));
  if (response.status === 401 || response.status === 403) {
    sessionStorage.removeItem(`token:${ADMIN_ROOM}:admin`);
    $("#admin-token-row").hidden = false;
    drillStatus(`The admin token was refused (${answer.error?.message || response.status}): paste another one.`);
    return null;
  }
  if (!response.ok) { drillStatus(`Could not ${what}: ${answer.error?.message || `HTTP ${response.status}`}`); return null; }
  return answer;
}

async function kickParticipant(room, identity) {
  if (!confirm(`Kick ${identity} out of ${room}? Their sessions and room sockets end now.`)) return;
  const path = `/api/rooms/${encodeURIComponent(room)}/kick`;
  const answer = await adminAction(`kick ${identity}`, "POST", path, { identity });
  if (answer) {
    drillStatus(`Kicked ${answer.kicked}: ${answer.sessions} session(s), ${answer.sockets} socket(s) ended.`);
    state.drill.kicked = answer;
    pollDrill();
  }
}

async function endRoom() {
  const room = state.drill?.room;
  if (!room || !confirm(`End room ${room}? Every session and room socket in it ends now.`)) return;
  const answer = await adminAction(`end ${room}`, "DELETE", `/api/rooms/${encodeURIComponent(room)}`);
  if (answer) {
    drillStatus(`Ended ${answer.ended}: ${answer.sockets_closed} room socket(s) closed.`);
    state.drill.ended = answer;
    pollDrill();
  }
}

$("#rooms-table tbody").addEventListener("click", (event) => {
  const tr = event.target.closest("tr[data-room]");
  if (tr) openDrill(tr.dataset.room);
});
$("#drill-close").onclick = closeDrill;
$("#drill-end").onclick = endRoom;
$("#admin-token-save").onclick = () => {
  const token = $("#admin-token").value.trim();
  if (!token) return;
  rememberToken(ADMIN_ROOM, "admin", token);
  $("#admin-token").value = "";
  $("#admin-token-row").hidden = true;
  drillStatus("Admin token kept for this tab. Try the action again.");
};
if (params.get("room")) openDrill(params.get("room"));

window.addEventListener("resize", render);
poll();
pollCluster();
