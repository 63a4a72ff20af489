// Player: WHEP playback, "waiting for host" while the host is away, automatic resume and retry.
import { $, backoff, endSession, exchange, hangUp, explain, formatBitrate, GatewayError, getToken, rememberToken,
  iceFailure, mediaDevices, PageError, REFUSED_FOR_GOOD, roomFromUrl, sleep } from "/static/common.js";
import { appendCapped, feedLine, giftIcon, noticeLine, RoomEvents } from "/static/events.js";
import { UserCard } from "/static/usercard.js";
// Frames decoded after a "host offline" event before the player shows the stream as playing again.
const RESUME_FRAMES = 5;

const room = roomFromUrl();
const video = $("#player");
video.addEventListener("resize", () => fitTiles());
const SLOTS = 4;
const state = { pc: null, session: null, token: null, attempt: 0, frames: 0, framesAt: 0, last: null,
  playing: false, hostAway: false, stopped: false, openedAt: performance.now(), firstFrameMs: null };
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
  state.frames = 0; // a new connection counts its decoded frames from zero
  state.resumeAfter = 0;
  // Slot 0 is this room's host; further slots carry a PK partner or guests on mic when the layout says so.
  for (let i = 0; i < SLOTS; i++) pc.addTransceiver("video", { direction: "recvonly" });
  for (let i = 0; i < SLOTS; i++) pc.addTransceiver("audio", { direction: "recvonly" });
  const streams = [];
  pc.addEventListener("track", (event) => {
    const kind = event.track.kind;
    const slot = pc.getTransceivers().filter((t) => t.receiver.track.kind === kind).indexOf(event.transceiver);
    const element = slot === 0 ? video : tileVideo(slot);
    streams[slot] = streams[slot] || new MediaStream();
    streams[slot].addTrack(event.track);
    element.srcObject = streams[slot];
    element.play().catch(() => {});
    if (slot === 0 && kind === "video") watchFirstFrame();
  });
  let connected = false;
  pc.addEventListener("connectionstatechange", () => {
    if (pc !== state.pc) return;
    if (pc.connectionState === "connected") connected = true;
    if (pc.connectionState === "failed" || pc.connectionState === "closed") {
      retry(connected || pc.connectionState === "closed" ? "Connection lost." : explain(iceFailure(pc)));
    }
  });
  state.session = await exchange(pc, `/whep/${encodeURIComponent(room)}`, state.token);
  state.mainMid = pc.getTransceivers()[0].mid; // slot 0: this room's host, whose quality the overlay shows
}

let running = false;
// The loop's waits end early when the page starts over (a pasted token), so the old loop is gone at once.
let wake = null;
function nap(ms) {
  return new Promise((resolve) => { wake = resolve; setTimeout(resolve, ms); });
}
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
          await nap(3000);
          continue;
        }
        if (error instanceof PageError) {  // nothing a retry would change
          stage(explain(error));
          return;
        }
        if (error instanceof GatewayError && error.code === "no_common_codec") {
          stage(explain(error));
          return;
        }
        if (error instanceof GatewayError && REFUSED_FOR_GOOD.includes(error.code)) {
          refusedWith(error.code, error.message);
          return;
        }
        const wait = error.retryAfter ? Number(error.retryAfter) * 1000 : backoff(state.attempt++);
        stage(`${explain(error)} Retrying in ${Math.ceil(wait / 1000)} s…`);
        await nap(wait);
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
  if (state.pc) hangUp(state.pc, state.session, state.token);
  else if (state.session) endSession(state.session, state.token);
  state.pc = null;
  state.session = null;
}

// -- planned drain: move to another instance before the deadline (docs/protocol.md, `draining`) ------------

// The draining gateway keeps serving this session until its deadline, so the player opens the next session
// first (through the load balancer, which no longer sends new sessions to a draining instance) and drops the
// old one only once the new one is up: no gap. Reconnects are spread over `retry_after` so a whole audience
// does not arrive at once; a refusal (still draining, or the room not live there yet) keeps the old session
// and retries with backoff until the deadline. If the old session ends first, the usual retry takes over.
state.moves = 0;
state.moveAttempts = 0;
async function moveOffDrainingGateway(message) {
  if (state.moving || running || !state.pc) return;
  state.moving = true;
  const deadline = Number(message.deadline) || Date.now() + 30000;
  const spreadMs = Math.min(1000 * (Number(message.retry_after) || 5), Math.max(0, deadline - Date.now()) / 2);
  $("#chat-state").textContent = "server maintenance: moving you to another server…";
  try {
    await sleep(Math.random() * spreadMs);
    for (let attempt = 0; !state.stopped && state.pc && !running && Date.now() < deadline; attempt++) {
      const old = { pc: state.pc, session: state.session, mainMid: state.mainMid };
      state.moveAttempts += 1;
      try {
        await playOnce();
        hangUp(old.pc, old.session, state.token);
        state.moves += 1;
        $("#chat-state").textContent = "";
        return;
      } catch (error) {
        if (state.pc && state.pc !== old.pc) state.pc.close();
        Object.assign(state, old);
        if (old.pc.connectionState === "failed" || old.pc.connectionState === "closed") { retry("Connection lost."); return; }
        const wait = error instanceof GatewayError && error.retryAfter ? Number(error.retryAfter) * 1000 : backoff(attempt);
        await sleep(Math.min(wait, Math.max(0, deadline - Date.now())));
      }
    }
  } finally {
    state.moving = false;
  }
}

// -- co-stream tiles: PK partner and guests ------------------------------------------------------

function tileVideo(slot) {
  let tile = document.querySelector(`.tile[data-slot="${slot}"]`);
  if (!tile) {
    tile = document.createElement("div");
    tile.className = "tile";
    tile.dataset.slot = slot;
    tile.hidden = true;
    const element = document.createElement("video");
    element.autoplay = true;
    element.playsInline = true;
    element.muted = video.muted;
    element.volume = Number($("#volume").value);
    element.addEventListener("resize", fitTiles);
    const name = document.createElement("span");
    name.className = "tile-name";
    name.id = `name-${slot}`;
    tile.append(element, name);
    $("#tiles").append(tile);
  }
  return tile.querySelector("video");
}

function applyLayout(slots) {
  chat.layout = slots;
  let shown = 0;
  for (const slot of slots) {
    if (slot.slot >= SLOTS) continue;
    if (slot.slot > 0) tileVideo(slot.slot);
    const tile = document.querySelector(`.tile[data-slot="${slot.slot}"]`);
    const visible = slot.slot === 0 || slot.live;
    tile.hidden = !visible;
    if (visible) shown++;
    // On mic, this page's own slot comes back from the gateway too: shown (a preview) but never heard (no echo).
    const mine = slot.role === "guest" && slot.identity === chat.me && chat.guest !== null;
    if (slot.slot > 0) tile.querySelector("video").muted = mine || video.muted;
    if (mine) {
      const muted = slot.muted || [];
      $("#host-muted").textContent = muted.length ? `The host ${muted.includes("audio") ? "muted your mic" : ""}`
        + `${muted.length > 1 ? " and " : ""}${muted.includes("video") ? "hid your camera" : ""} for everyone.` : "";
    }
    const label = slot.role === "partner" ? `${slot.identity || "partner"} · ${slot.room}`
      : slot.role === "guest" ? `${mine ? "you" : slot.identity} · on mic` : (slots.length > 1 ? slot.identity || "" : "");
    $(`#name-${slot.slot}`).textContent = label;
  }
  document.querySelectorAll(".tile").forEach((tile) => {
    if (!slots.some((s) => s.slot === Number(tile.dataset.slot))) tile.hidden = Number(tile.dataset.slot) !== 0;
  });
  $("#tiles").style.setProperty("--tiles", String(Math.max(1, shown)));
  fitTiles();
}

// A PK fills the stage: the two tiles side by side, each as wide as its picture's shape asks (a portrait source
// gets a portrait tile), the stage as wide as both together within 9:8..16:9, each picture filling its tile.
const PK_ASPECT = { min: 9 / 8, max: 16 / 9 };

function fitTiles() {
  const stageBox = document.querySelector(".stage");
  // An upright picture on an upright phone fills the screen (style.css); a landscape one is shown whole.
  stageBox.dataset.shape = video.videoHeight > video.videoWidth ? "portrait" : "landscape";
  const tiles = [...document.querySelectorAll(".tile")].filter((t) => !t.hidden);
  const pk = chat.layout.some((s) => s.role === "partner" && s.live) && tiles.length === 2;
  stageBox.classList.toggle("pk", pk);
  if (!pk) {
    stageBox.style.aspectRatio = "";
    $("#tiles").style.gridTemplateColumns = "";
    return;
  }
  const aspects = tiles.map((t) => {
    const v = t.querySelector("video");
    return v.videoWidth && v.videoHeight ? v.videoWidth / v.videoHeight : 16 / 9;
  });
  const total = aspects.reduce((a, b) => a + b, 0);
  stageBox.style.aspectRatio = String(Math.min(PK_ASPECT.max, Math.max(PK_ASPECT.min, total)));
  $("#tiles").style.gridTemplateColumns = aspects.map((a) => `minmax(0, ${a.toFixed(3)}fr)`).join(" ");
}

function showBattle(battle) {
  chat.battle = battle;
  $("#scoreboard").hidden = !battle;
  $("#gift-side-box").hidden = !battle;
  if (!battle) return;
  const [a, b] = battle.rooms;
  const mine = a === room ? a : b;
  const other = mine === a ? b : a;
  $("#score-a").textContent = `${battle.hosts[mine] || mine} ${battle.scores[mine]}`;
  $("#score-b").textContent = `${battle.scores[other]} ${battle.hosts[other] || other}`;
  // This room's side is red, on the left, like its tile; an even bar before the first point.
  const sum = battle.scores[mine] + battle.scores[other];
  $("#pk-bar").style.setProperty("--red", `${sum ? (100 * battle.scores[mine]) / sum : 50}%`);
  const select = $("#gift-side");
  if (select.dataset.battle !== battle.id) {
    select.dataset.battle = battle.id;
    select.replaceChildren(new Option(battle.hosts[mine] || mine, mine), new Option(battle.hosts[other] || other, other));
  }
}

// The result over the stage for a while: who won, by how much.
function showResult(message, battle) {
  const hosts = battle?.hosts || {};
  const winner = Object.keys(message.result).find((r) => message.result[r] === "win");
  const [a, b] = [room, Object.keys(message.scores).find((r) => r !== room)];
  const score = `${message.scores[a] ?? 0} : ${message.scores[b] ?? 0}`;
  const banner = $("#pk-result");
  banner.dataset.result = message.result[room] || "draw";
  banner.textContent = winner ? `🏆 ${hosts[winner] || winner} wins · ${score}` : `Draw · ${score}`;
  banner.hidden = false;
  clearTimeout(chat.resultTimer);
  chat.resultTimer = setTimeout(() => { banner.hidden = true; }, 8000);
}

function tickBattle() {
  const battle = chat.battle;
  if (!battle) return;
  const left = Math.max(0, Math.round((battle.ends_at - Date.now()) / 1000));
  $("#pk-timer").textContent = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
}
setInterval(tickBattle, 500);

// -- room events: danmaku, chat, gifts, likes, counts ---------------------------------------------

const chat = { events: null, danmaku: true, lanes: [], likes: 0, layout: [], battle: null, guest: null, me: null,
  card: null };
window.cherryChat = chat;

function flyDanmaku(text) {
  if (!chat.danmaku || document.hidden) return;
  const layer = $("#danmaku");
  const lanes = Math.max(1, Math.floor(layer.clientHeight / 34));
  const now = performance.now();
  let lane = 0;
  for (let i = 0; i < lanes; i++) {
    if ((chat.lanes[i] || 0) < now) { lane = i; break; }
    lane = (chat.lanes[i] || 0) < (chat.lanes[lane] || 0) ? i : lane;
  }
  chat.lanes[lane] = now + 1500; // keep a lane free until the previous line has moved on
  const span = document.createElement("span");
  span.textContent = text;
  span.style.top = `${lane * 34}px`;
  span.style.animationDuration = `${7 + Math.random() * 2}s`;
  span.addEventListener("animationend", () => span.remove());
  layer.append(span);
}

function showChatError(text) {
  const box = $("#chat-error");
  box.textContent = text;
  box.hidden = !text;
  if (text) setTimeout(() => { if (box.textContent === text) box.hidden = true; }, 4000);
}

const CHAT_ERRORS = {
  rate_limited: "You are sending too fast. Wait a moment.",
  muted: "You are muted in this room for now.",
  filtered: "That message was not published.",
};

// A name opens its user card: a guest on mic moderates (mute, kick: what the protocol gives guests), anyone
// else sees the name alone. The host, admins and this page's own user are nobody's to act on.
function line(message) {
  return feedLine(message, [], message.from ? openCard : null);
}

function openCard(message, anchor) {
  const from = message.from;
  const actionable = chat.guest && from.identity !== chat.me && !["host", "admin"].includes(from.role);
  chat.card.open(from, anchor, actionable ? ["mute", "kick"] : []);
}

function startRoomEvents() {
  chat.card = chat.card || new UserCard((frame) => chat.events?.send(frame));
  chat.events = new RoomEvents(room, state.token, {
    welcome(message) {
      const snap = message.snapshot;
      chat.me = message.you.identity;
      $("#chat-state").textContent = "";
      $("#feed").replaceChildren(...snap.chat.map(line));
      $("#chat-input").maxLength = snap.max_chat_length;
      chat.likes = snap.likes;
      $("#likes").textContent = chat.likes;
      setViewers(snap.viewers, snap.online);
      $("#gift-buttons").replaceChildren(...snap.gift_catalog.map(({ kind }) => {
        const button = document.createElement("button");
        button.textContent = `${giftIcon(kind)} ${kind}`;
        button.dataset.gift = kind;
        button.onclick = () => chat.events.send({ type: "gift", kind, count: 1,
          ...(chat.battle ? { side: $("#gift-side").value } : {}) });
        return button;
      }));
      if (snap.title) $("#room-title").textContent = snap.title;
      applyLayout(snap.layout || []);
      showBattle(snap.pk);
    },
    layout(message) { applyLayout(message.slots); },
    pk_started(message) { showBattle({ ...message }); },
    pk_score(message) {
      if (!chat.battle) return;
      chat.battle.scores = message.scores;
      chat.battle.ends_at = Date.now() + message.remaining_s * 1000;
      showBattle(chat.battle);
    },
    pk_ended(message) {
      const mine = message.result[room];
      const outcome = mine === "win" ? "we won" : mine === "lose" ? "we lost" : "a draw";
      const scores = Object.entries(message.scores).map(([r, p]) => `${r} ${p}`).join(" : ");
      appendCapped($("#feed"), noticeLine(`PK over: ${outcome} (${scores})`));
      showResult(message, chat.battle);
      showBattle(null);
    },
    guest_invitation(message) {
      chat.guestInvite = message.id;
      $("#guest-text").textContent = `${message.from} invites you on mic.`;
      $("#guest-prompt").hidden = false;
    },
    guest_token(message) { goOnMic(message.token); },
    session_closed(message) {
      if (message.endpoint !== "whip" || !chat.guest) return;
      leaveMic();
      $("#mic-notice").textContent = `You are off mic: ${message.reason}.`;
      $("#mic-notice").hidden = false;
    },
    chat(message) {
      appendCapped($("#feed"), line(message));
      flyDanmaku(message.text);
    },
    gift(message) {
      appendCapped($("#feed"), line(message));
      flyDanmaku(`${message.from.name || message.from.identity} ${giftIcon(message.kind)}×${message.count}`);
    },
    likes(message) { chat.likes = message.total; $("#likes").textContent = chat.likes; },
    viewers(message) { setViewers(message.count, message.online); },
    host(message) {
      // While the host is away, frames still on their way (and the decoded count, read once a second, catching
      // up with them) must not read as the stream being back: only the host's return ends the wait.
      state.hostAway = !message.live;
      if (!message.live && state.playing) {
        state.playing = false;
        state.resumeAfter = state.frames + RESUME_FRAMES;
        stage("Waiting for host… The stream resumes when the host is back.");
      }
      if (message.live && !state.pc) connectLoop();
    },
    moderation(message) { appendCapped($("#feed"), feedLine(message)); },
    draining(message) { moveOffDrainingGateway(message); },
    error(message) { showChatError(CHAT_ERRORS[message.code] || message.message); },
    closed(code, reason) {
      if (code === 4003) return endWatching(String(reason).startsWith("banned") ? "banned" : "removed");
      if (code === 4001) return endWatching("expired");
      $("#chat-state").textContent = "reconnecting…";
    },
    refused(code, message) { refusedWith(code, message); },
  });
  chat.events.connect();
  $("#composer").onsubmit = (event) => {
    event.preventDefault();
    const text = $("#chat-input").value.trim();
    if (!text) return;
    if (chat.events.send({ type: "chat", text })) $("#chat-input").value = "";
    else showChatError("Chat is reconnecting…");
  };
  $("#like").onclick = () => chat.events.send({ type: "like", count: 1 });
  $("#guest-accept").onclick = () => chat.events.send({ type: "guest_accept", id: chat.guestInvite });
  $("#guest-decline").onclick = () => {
    chat.events.send({ type: "guest_reject", id: chat.guestInvite });
    $("#guest-prompt").hidden = true;
  };
  $("#leave-mic").onclick = leaveMic;
}

async function goOnMic(token) {
  $("#guest-prompt").hidden = true;
  $("#mic-notice").hidden = true;
  try {
    const stream = await mediaDevices().getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 360 } },
      audio: true });
    const pc = new RTCPeerConnection({ bundlePolicy: "max-bundle" });
    for (const track of stream.getTracks()) pc.addTransceiver(track, { direction: "sendonly" });
    const session = await exchange(pc, `/whip/${encodeURIComponent(room)}`, token);
    chat.guest = { pc, stream, session, token };
    chat.events.useToken(token); // on mic the socket acts as guest: moderation
    $("#on-mic").hidden = false;
    setToggle("#mic-toggle", stream.getAudioTracks(), "mic");
    setToggle("#camera-toggle", stream.getVideoTracks(), "camera");
    applyLayout(chat.layout); // its own tile goes silent now
  } catch (error) {
    showChatError(explain(error));
  }
}

// Mic and camera toggles while on mic: the track stays negotiated, it sends silence or black meanwhile.
function setToggle(selector, tracks, what) {
  const button = $(selector);
  const show = () => {
    const on = tracks.some((t) => t.enabled);
    button.textContent = on ? `Turn ${what} off` : `Turn ${what} on`;
    button.setAttribute("aria-pressed", on ? "false" : "true");
  };
  button.onclick = () => {
    const on = !tracks.some((t) => t.enabled);
    tracks.forEach((t) => { t.enabled = on; });
    show();
  };
  button.disabled = tracks.length === 0;
  show();
}

function leaveMic() {
  const guest = chat.guest;
  if (!guest) return;
  guest.stream.getTracks().forEach((t) => t.stop());
  hangUp(guest.pc, guest.session, guest.token);
  chat.guest = null;
  chat.events.useToken(state.token);
  $("#on-mic").hidden = true;
  chat.card.close();
  applyLayout(chat.layout);
}

function setViewers(count, online) {
  $("#viewers").textContent = `${count} watching · ${online} in chat`;
}

// Real-user quality goes to the gateway every few seconds: the stutter figure production tracks.
async function reportQuality() {
  while (!state.stopped) {
    await sleep(5000);
    const q = state.quality;
    if (!q || state.firstFrameMs == null || !chat.events) continue;
    const watchS = (performance.now() - state.openedAt - state.firstFrameMs) / 1000;
    chat.events.send({ type: "quality", watch_s: Math.max(0, watchS), freeze_s: q.freezeSeconds,
      fps: q.fps, latency_ms: q.latencyMs });
  }
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
      if (s.type === "inbound-rtp" && s.kind === "video" && (s.mid == null || s.mid === state.mainMid)) inbound = s;
      if (s.type === "inbound-rtp" && s.kind === "audio") audioBytes += s.bytesReceived || 0;
      if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime != null) rtt = s.currentRoundTripTime;
    });
    if (!inbound) continue;
    const now = performance.now();
    const decoded = inbound.framesDecoded || 0;
    if (decoded > state.frames) {
      if (state.firstFrameMs == null) state.firstFrameMs = now - state.openedAt;
      state.frames = decoded;
      state.framesAt = now;
      if (!state.playing && !state.hostAway && decoded >= (state.resumeAfter || 0)) { state.playing = true; stage(""); }
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
  // Volume for every slot's sound (a guest's own tile stays silent); moving it up unmutes, as players do.
  $("#volume").oninput = () => {
    const level = Number($("#volume").value);
    document.querySelectorAll("#tiles video").forEach((v) => { v.volume = level; });
    if (level > 0 && video.muted) $("#unmute").click();
    else if (level === 0 && !video.muted) $("#unmute").click();
  };
  // Fullscreen is the stage (picture, co-stream tiles, danmaku, scoreboard), not the bare <video>.
  $("#fullscreen").onclick = () => {
    if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
    else $(".stage").requestFullscreen().catch((error) => showChatError(`Fullscreen refused: ${error.message}`));
  };
  document.addEventListener("fullscreenchange", () => {
    $("#fullscreen").textContent = document.fullscreenElement ? "Exit fullscreen" : "Fullscreen";
  });
  $("#unmute").onclick = () => {
    video.muted = !video.muted;
    $("#unmute").textContent = video.muted ? "Unmute" : "Mute";
    document.querySelectorAll(".tile video").forEach((v) => { v.muted = video.muted; v.play().catch(() => {}); });
    applyLayout(chat.layout); // a guest's own tile stays silent
  };
  $("#toggle-quality").onclick = () => { $("#quality").hidden = !$("#quality").hidden; };
  $("#toggle-danmaku").onclick = () => {
    chat.danmaku = !chat.danmaku;
    $("#toggle-danmaku").textContent = chat.danmaku ? "Danmaku on" : "Danmaku off";
    $("#toggle-danmaku").setAttribute("aria-pressed", String(chat.danmaku));
    if (!chat.danmaku) $("#danmaku").replaceChildren();
  };
  $("#token-save").onclick = async () => {
    // Start over with this token: whatever the old one left running ends first.
    state.stopped = true;
    teardown();
    wake?.();
    while (running) await sleep(20);
    state.token = $("#token").value.trim();
    rememberToken(room, "viewer", state.token);
    $("#token-row").hidden = true;
    state.stopped = false;
    begin(); // the video and the room events, both with this token
  };
  window.addEventListener("pagehide", () => { state.stopped = true; teardown(); leaveMic(); chat.events?.close(); });
  const status = await roomStatus();
  if (status && status.title) $("#room-title").textContent = status.title;
  try {
    state.token = await getToken(room, "viewer");
  } catch (error) {
    stage(explain(error));
    return;
  }
  if (!state.token) { stage("A viewer token is needed to watch."); $("#token-row").hidden = false; return; }
  begin();
}

let begun = false;
function begin() {
  if (chat.events) chat.events.close(); // a new token: the room events start again with it
  startRoomEvents();
  connectLoop();
  if (begun) return;
  begun = true;
  watchQuality();
  reportQuality();
}

// The end of watching, said plainly, with nothing retried: removed, banned, or refused for a reason a retry
// would not change (a bad room name or token). The room's list is one click away.
const ENDINGS = {
  removed: "You were removed from this room.",
  banned: "You are banned from this room.",
  expired: "Your session expired. Reload the page to watch again.",
};
function endWatching(kind, text) {
  state.stopped = true;
  teardown();
  leaveMic();
  chat.events?.close();
  document.body.dataset.state = kind;
  const status = $("#stage-status");
  status.replaceChildren(document.createTextNode(`${text || ENDINGS[kind]} `));
  const back = document.createElement("a");
  back.href = "/";
  back.textContent = "Other live rooms";
  status.append(back);
  status.hidden = false;
}

function refusedWith(code, message) {
  if (code === "banned") return endWatching("banned");
  if (code === "unauthorized" || code === "forbidden") {
    endWatching("refused", `This token cannot watch this room: ${message || code}. Paste another one.`);
    $("#token-row").hidden = false;
    return;
  }
  endWatching("refused", code === "bad_room_name" ? "There is no such room: room names are 1-64 letters, digits, "
    + "'_', '-' or '.'." : `The gateway refused: ${message || code}.`);
}

init();
