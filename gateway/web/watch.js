// Player: WHEP playback, "waiting for host" while the host is away, automatic resume and retry.
import { $, backoff, endSession, exchange, explain, formatBitrate, GatewayError, getToken, rememberToken,
  roomFromUrl, sleep } from "/static/common.js";

const room = roomFromUrl();
const video = $("#player");
const state = { pc: null, session: null, token: null, attempt: 0, frames: 0, framesAt: 0, last: null,
  playing: false, stopped: false, openedAt: performance.now(), firstFrameMs: null };
window.cherryPlayer = state; // read by tests and by curious operators in the console

function stage(text) {
  const status = $("#stage-status");
  status.textContent = text || "";
  status.hidden = !text;
  document.body.dataset.state = text ? (text.startsWith("Waiting") ? "waiting" : "connecting") : "playing";
}

async function roomStatus() {
  try {
    const response = await fetch(`/rooms/${encodeURIComponent(room)}`);
    return response.ok ? await response.json() : { live: false };
  } catch {
    return null;
  }
}

async function playOnce() {
  const pc = new RTCPeerConnection({ bundlePolicy: "max-bundle" });
  state.pc = pc;
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  const stream = new MediaStream();
  pc.addEventListener("track", (event) => {
    stream.addTrack(event.track);
    video.srcObject = stream;
    video.play().catch(() => {});
    if (event.track.kind === "video") watchFirstFrame();
  });
  pc.addEventListener("connectionstatechange", () => {
    if (pc !== state.pc) return;
    if (pc.connectionState === "failed" || pc.connectionState === "closed") retry("Connection lost.");
  });
  state.session = await exchange(pc, `/whep/${encodeURIComponent(room)}`, state.token);
}

let running = false;
async function connectLoop(reason = "") {
  if (running) return;
  running = true;
  try {
    while (!state.stopped) {
      try {
        stage(reason || "Connecting…");
        await playOnce();
        state.attempt = 0;
        return;
      } catch (error) {
        teardown();
        if (error instanceof GatewayError && error.code === "room_not_live") {
          stage("Waiting for host… The stream starts as soon as the host goes live.");
          await sleep(3000);
          continue;
        }
        if (error instanceof GatewayError && ["unauthorized", "forbidden", "no_common_codec"].includes(error.code)) {
          stage(explain(error));
          if (error.code !== "no_common_codec") $("#token-row").hidden = false;
          return;
        }
        const wait = error.retryAfter ? Number(error.retryAfter) * 1000 : backoff(state.attempt++);
        stage(`${explain(error)} Retrying in ${Math.ceil(wait / 1000)} s…`);
        await sleep(wait);
      }
    }
  } finally {
    running = false;
  }
}

function retry(why) {
  teardown();
  connectLoop(`${why} Reconnecting…`);
}

function teardown() {
  if (state.pc) { state.pc.close(); state.pc = null; }
  if (state.session) endSession(state.session, state.token);
  state.session = null;
}

// The first painted frame ends the "connecting" state at once, and times the join.
function watchFirstFrame() {
  if (!("requestVideoFrameCallback" in video)) return;
  video.requestVideoFrameCallback(() => {
    if (state.firstFrameMs == null) state.firstFrameMs = performance.now() - state.openedAt;
    state.framesAt = performance.now();
    if (!state.playing) { state.playing = true; stage(""); }
  });
}

// Frames decoded decide what the viewer sees: the picture, or words explaining why there is none.
async function watchQuality() {
  while (!state.stopped) {
    await sleep(1000);
    const pc = state.pc;
    if (!pc) continue;
    const report = await pc.getStats().catch(() => null);
    if (!report) continue;
    let inbound = null, audioBytes = 0, rtt = null;
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") inbound = s;
      if (s.type === "inbound-rtp" && s.kind === "audio") audioBytes = s.bytesReceived || 0;
      if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime != null) rtt = s.currentRoundTripTime;
    });
    if (!inbound) continue;
    const now = performance.now();
    const decoded = inbound.framesDecoded || 0;
    if (decoded > state.frames) {
      if (state.firstFrameMs == null) state.firstFrameMs = now - state.openedAt;
      state.frames = decoded;
      state.framesAt = now;
      if (!state.playing) { state.playing = true; stage(""); }
    } else if (state.playing && now - state.framesAt > 2500) {
      state.playing = false;
      const status = await roomStatus();
      stage(status && !status.live ? "Waiting for host… The stream resumes when the host is back."
        : "Stream stalled. Waiting for video…");
    }
    const bytes = (inbound.bytesReceived || 0) + audioBytes;
    const bitrate = state.last ? (bytes - state.last.bytes) * 8 / ((now - state.last.time) / 1000) : NaN;
    state.last = { bytes, time: now };
    const jitterMs = inbound.jitterBufferEmittedCount
      ? 1000 * inbound.jitterBufferDelay / inbound.jitterBufferEmittedCount : null;
    const decodeMs = decoded ? 1000 * (inbound.totalDecodeTime || 0) / decoded : 0;
    // Estimate: half the round trip + jitter buffer + decode; capture and render are not visible here.
    const latency = rtt != null && jitterMs != null ? rtt * 500 + jitterMs + decodeMs : null;
    state.quality = { fps: inbound.framesPerSecond || 0, bitrate, freezes: inbound.freezeCount || 0,
      freezeSeconds: inbound.totalFreezesDuration || 0, latencyMs: latency, framesDecoded: decoded };
    $("#quality").textContent =
      `${Math.round(state.quality.fps)} fps  ${formatBitrate(bitrate)}\n` +
      `freezes ${state.quality.freezes} (${state.quality.freezeSeconds.toFixed(1)} s)\n` +
      `latency ≈ ${latency != null ? Math.round(latency) + " ms" : "–"}`;
  }
}

async function init() {
  if (!room) { stage("No room given: open /watch?room=NAME."); return; }
  $("#room-title").textContent = room;
  $("#unmute").onclick = () => {
    video.muted = !video.muted;
    $("#unmute").textContent = video.muted ? "Unmute" : "Mute";
    video.play().catch(() => {});
  };
  $("#toggle-quality").onclick = () => { $("#quality").hidden = !$("#quality").hidden; };
  $("#token-save").onclick = () => {
    state.token = $("#token").value.trim();
    rememberToken(room, "viewer", state.token);
    $("#token-row").hidden = true;
    connectLoop();
  };
  window.addEventListener("pagehide", () => { state.stopped = true; teardown(); });
  const status = await roomStatus();
  if (status && status.title) $("#room-title").textContent = status.title;
  try {
    state.token = await getToken(room, "viewer");
  } catch (error) {
    stage(explain(error));
    return;
  }
  if (!state.token) { stage("A viewer token is needed to watch."); $("#token-row").hidden = false; return; }
  watchQuality();
  connectLoop();
}

init();
