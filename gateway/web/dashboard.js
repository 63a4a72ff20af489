// SRE dashboard: polls /dashboard/data every sample interval, draws the charts and the busiest rooms.
const $ = (sel) => document.querySelector(sel);
const STUTTER_TARGET = 0.005;  // configs/targets.toml
const JOIN_TARGET = 0.999;  // configs/targets.toml

const state = { points: [], rooms: [], latest: null, updates: 0, since: 0, interval: 1, errors: 0, cluster: null };
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
  const left = 46, bottom = h - 14;
  const x = (t) => left + (w - left - 4) * (t1 > t0 ? (t - t0) / (t1 - t0) : 1);
  const y = (v) => bottom - (bottom - 6) * ((v - min) / (top - min || 1));
  g.font = "10px system-ui, sans-serif"; g.fillStyle = "#9a9aab"; g.strokeStyle = "#2a2a36"; g.lineWidth = 1;
  for (let i = 0; i <= 2; i++) {
    const v = min + ((top - min) * i) / 2, yy = y(v);
    g.beginPath(); g.moveTo(left, yy); g.lineTo(w - 4, yy); g.stroke();
    g.fillText(format(v), 2, yy + 3);
  }
  g.fillText(`${Math.round(t1 - t0)} s`, w - 30, h - 2);
  if (target != null) {
    g.setLineDash([4, 4]); g.strokeStyle = "#9a9aab";
    g.beginPath(); g.moveTo(left, y(target)); g.lineTo(w - 4, y(target)); g.stroke(); g.setLineDash([]);
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

  draw($("#chart-audience"), [{ color: "#e8364f", value: (q) => q.viewers }, { color: "#f0b429", value: (q) => q.rooms_live }],
    { format: (v) => v.toFixed(0), integer: true });
  draw($("#chart-bitrate"), [{ color: "#4aa3ff", value: (q) => q.egress_bps }, { color: "#2fbf71", value: (q) => q.ingest_bps }],
    { format: (v) => bits(v).replace(" ", "") });
  draw($("#chart-stutter"), [{ color: "#e8364f", value: (q) => q.watch_reports ? q.stutter_ratio : null }],
    { format: (v) => pct(v, 1), target: STUTTER_TARGET });
  draw($("#chart-join"), [{ color: "#2fbf71", value: (q) => q.join_success }], { max: 1, format: (v) => pct(v, 0), target: JOIN_TARGET });
  draw($("#chart-delay"), [{ color: "#f0b429", value: (q) => q.delay_ms_p99 }, { color: "#4aa3ff", value: (q) => q.delay_ms_p50 }],
    { format: (v) => ms(v) });
  draw($("#chart-cpu"), [{ color: "#c77dff", value: (q) => q.cpu_percent }], { format: (v) => `${v.toFixed(0)}%` });

  const body = $("#rooms-table tbody");
  const now = Date.now() / 1000;
  body.replaceChildren(...state.rooms.map((r) => {
    const tr = document.createElement("tr");
    tr.dataset.room = r.room;
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
}

async function poll() {
  try {
    const response = await fetch(`/dashboard/data?since=${state.since}`, { cache: "no-store" });
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
    const response = await fetch("/dashboard/cluster", { cache: "no-store" });
    if (response.ok) { state.cluster = await response.json(); renderCluster(); }
  } catch (error) {
    // the main poll reports an unreachable gateway
  }
  setTimeout(pollCluster, 2000);
}

window.addEventListener("resize", render);
poll();
pollCluster();
