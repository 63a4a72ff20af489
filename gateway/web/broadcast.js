// Host studio: pick devices, preview, go live over WHIP, show live figures, reconnect after failures.
import { appendCapped, feedLine, giftIcon, noticeLine, RoomEvents } from "/static/events.js";
import { UserCard } from "/static/usercard.js";
import { $, backoff, endSession, exchange, hangUp, explain, formatBitrate, GatewayError, getToken, rememberToken,
  iceFailure, mediaDevices, PageError, pageSettings, REFUSED_FOR_GOOD, roomFromUrl, sleep } from "/static/common.js";

const PRESETS = {
  360: { width: 640, height: 360, fps: 30, bitrate: 800_000 },
  540: { width: 960, height: 540, fps: 30, bitrate: 1_500_000 },
  720: { width: 1280, height: 720, fps: 30, bitrate: 2_500_000 },
  1080: { width: 1920, height: 1080, fps: 30, bitrate: 4_500_000 },
};

const room = roomFromUrl();
const state = { stream: null, pc: null, session: null, token: null, wantLive: false, attempt: 0, statsTimer: null,
  last: null, micOff: false, cameraOff: false, screen: null, liveSince: null };
window.cherryStudio = state; // read by tests and by curious operators in the console

function show(text, kind = "") {
  const box = $("#message");
  box.textContent = text;
  box.className = "message " + kind;
  box.hidden = !text;
}

function stage(text) {
  const status = $("#stage-status");
  status.textContent = text || "";
  status.hidden = !text;
}

function setLive(live) {
  $("#live-badge").hidden = !live;
  $("#go-live").disabled = state.wantLive || !state.stream;
  $("#stop").disabled = !state.wantLive;
  document.body.dataset.state = live ? "live" : state.wantLive ? "connecting" : "idle";
}

async function listDevices() {
  const devices = await mediaDevices().enumerateDevices();
  for (const [kind, select] of [["videoinput", $("#camera")], ["audioinput", $("#microphone")]]) {
    const current = select.value;
    select.replaceChildren(...devices.filter((d) => d.kind === kind).map((d, i) =>
      new Option(d.label || `${kind === "videoinput" ? "Camera" : "Microphone"} ${i + 1}`, d.deviceId)));
    if (current) select.value = current;
  }
}

async function openDevices() {
  const preset = PRESETS[$("#preset").value];
  // Portrait, as phone-first audiences watch: the same pixels, turned; a landscape webcam is cropped to it by the
  // browser (resizeMode crop-and-scale), as a vertical canvas would be.
  const portrait = $("#orientation").value === "portrait";
  const [width, height] = portrait ? [preset.height, preset.width] : [preset.width, preset.height];
  const constraints = {
    video: { deviceId: $("#camera").value ? { exact: $("#camera").value } : undefined,
      width: { ideal: width }, height: { ideal: height }, frameRate: { ideal: preset.fps },
      ...(portrait ? { aspectRatio: { exact: width / height }, resizeMode: "crop-and-scale" } : {}) },
    audio: { deviceId: $("#microphone").value ? { exact: $("#microphone").value } : undefined },
  };
  let stream;
  try {
    stream = await mediaDevices().getUserMedia(constraints);
  } catch (error) {
    if (!portrait || error.name !== "OverconstrainedError") throw error;
    delete constraints.video.aspectRatio; // a camera that cannot crop: its own shape, the closest it has
    stream = await mediaDevices().getUserMedia(constraints);
  }
  if (state.stream) state.stream.getTracks().forEach((t) => t.stop());
  state.stream = stream;
  applyToggles();
  await useTracks();
  stage("");
}

// -- what goes out: the camera or a shared screen, the microphone; toggles keep the tracks negotiated ----

function outgoingTracks() {
  const audio = state.stream.getAudioTracks();
  const video = state.screen ? [state.screen] : state.stream.getVideoTracks();
  return [...video, ...audio];
}

async function useTracks() {
  const tracks = outgoingTracks();
  $("#preview").srcObject = new MediaStream(tracks.filter((t) => t.kind === "video"));
  if (!state.pc) return;
  for (const sender of state.pc.getSenders()) { // swap without renegotiating
    const track = tracks.find((t) => t.kind === sender.track?.kind);
    if (track && track !== sender.track) await sender.replaceTrack(track);
  }
}

function applyToggles() {
  // A disabled track sends silence or black: viewers keep their session and see the host come back at once.
  state.stream.getAudioTracks().forEach((t) => { t.enabled = !state.micOff; });
  state.stream.getVideoTracks().forEach((t) => { t.enabled = !state.cameraOff; });
  const set = (selector, off, what) => {
    $(selector).textContent = off ? `${what} on` : `${what} off`;
    $(selector).setAttribute("aria-pressed", String(off));
    $(selector).disabled = false;
  };
  set("#mic-toggle", state.micOff, "Mic");
  set("#camera-toggle", state.cameraOff, "Camera");
  $("#screen-share").textContent = state.screen ? "Stop sharing" : "Share screen";
  $("#screen-share").setAttribute("aria-pressed", String(Boolean(state.screen)));
  $("#screen-share").disabled = !navigator.mediaDevices?.getDisplayMedia;
}

async function toggleScreen() {
  if (state.screen) {
    const screen = state.screen;
    state.screen = null;
    screen.stop();
  } else {
    try {
      const display = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 30 } }, audio: false });
      state.screen = display.getVideoTracks()[0];
      // The browser's own "Stop sharing" bar ends the track: back to the camera.
      state.screen.addEventListener("ended", () => { if (state.screen) toggleScreen(); });
    } catch (error) {
      if (error.name !== "NotAllowedError") show(`Cannot share the screen: ${explain(error)}`, "error");
      return;
    }
  }
  applyToggles();
  await useTracks();
}

function formatUptime(ms) {
  const s = Math.floor(ms / 1000);
  const [h, m] = [Math.floor(s / 3600), Math.floor((s % 3600) / 60)];
  const mmss = `${String(m).padStart(h ? 2 : 1, "0")}:${String(s % 60).padStart(2, "0")}`;
  return h ? `${h}:${mmss}` : mmss;
}
setInterval(() => {
  $("#fig-uptime").textContent = state.liveSince && state.wantLive ? formatUptime(Date.now() - state.liveSince) : "–";
}, 500);

async function applyBitrate() {
  if (!state.pc) return;
  const preset = PRESETS[$("#preset").value];
  for (const sender of state.pc.getSenders()) {
    if (sender.track?.kind !== "video") continue;
    const parameters = sender.getParameters();
    parameters.encodings = parameters.encodings?.length ? parameters.encodings : [{}];
    parameters.encodings[0].maxBitrate = preset.bitrate;
    parameters.encodings[0].maxFramerate = preset.fps;
    await sender.setParameters(parameters).catch(() => {});
  }
}

async function publishOnce() {
  const pc = new RTCPeerConnection({ bundlePolicy: "max-bundle" });
  state.pc = pc;
  for (const track of outgoingTracks()) pc.addTransceiver(track, { direction: "sendonly" });
  let connected = false;
  pc.addEventListener("connectionstatechange", () => {
    if (pc !== state.pc) return;
    if (pc.connectionState === "connected") {
      connected = true;
      state.attempt = 0;
      state.liveSince = state.liveSince || Date.now(); // a reconnect keeps the broadcast's own start
      setLive(true);
      show("You are live.", "ok");
    } else if (pc.connectionState === "failed" || pc.connectionState === "disconnected") {
      setLive(false);
      if (state.wantLive) reconnect(connected ? "Connection lost. Reconnecting…" : explain(iceFailure(pc)));
    }
  });
  // How the room shows in the room list: its title, category and tags (a few words, comma-separated).
  const listing = new URLSearchParams();
  for (const [key, value] of [["title", $("#title").value], ["category", $("#category").value], ["tags", $("#tags").value]]) {
    if (value.trim()) listing.set(key, value.trim());
  }
  const url = `/whip/${encodeURIComponent(room)}` + (listing.size ? `?${listing}` : "");
  state.session = await exchange(pc, url, state.token);
  await applyBitrate();
}

async function goLive() {
  if (!state.token) { show("A host token is needed to go live.", "error"); return; }
  state.wantLive = true;
  setLive(false);
  show("Connecting…");
  try {
    await publishOnce();
    startStats();
  } catch (error) {
    failed(error);
  }
}

// Refusals a retry would not change for a host: the shared ones, a room already live, an unusable offer.
const PERMANENT = [...REFUSED_FOR_GOOD, "host_already_live", "no_common_codec", "bad_sdp"];

function permanentError(error) {
  return (error instanceof GatewayError && PERMANENT.includes(error.code))
    || (error instanceof PageError && error.code !== "ice_failed");
}

function failed(error) {
  const permanent = permanentError(error);
  if (permanent || !state.wantLive) {
    state.wantLive = false;
    teardown();
    setLive(false);
    show(explain(error), "error");
    if (error.code === "unauthorized" || error.code === "forbidden") $("#token-row").hidden = false;
  } else {
    reconnect(explain(error));
  }
}

let reconnecting = false;
async function reconnect(why) {
  if (reconnecting) return;
  reconnecting = true;
  try {
    while (state.wantLive) {
      teardown();
      const wait = backoff(state.attempt++);
      show(`${why} Retrying in ${Math.ceil(wait / 1000)} s…`, "error");
      await sleep(wait);
      if (!state.wantLive) break;
      try {
        await publishOnce();
        return;
      } catch (error) {
        if (permanentError(error)) {
          failed(error);
          return;
        }
        why = explain(error);
      }
    }
  } finally {
    reconnecting = false;
  }
}

function teardown() {
  if (state.pc) hangUp(state.pc, state.session, state.token);
  else if (state.session) endSession(state.session, state.token);
  state.pc = null;
  state.session = null;
}

function stop() {
  state.wantLive = false;
  state.liveSince = null;
  teardown();
  stopStats();
  setLive(false);
  show("You are offline.");
}

function startStats() {
  stopStats();
  state.statsTimer = setInterval(async () => {
    if (!state.pc) return;
    const report = await state.pc.getStats();
    let bytes = 0, fps = null, rtt = null, lost = 0, sent = 0;
    report.forEach((s) => {
      if (s.type === "outbound-rtp") { bytes += s.bytesSent || 0; sent += s.packetsSent || 0;
        if (s.kind === "video") fps = s.framesPerSecond; }
      if (s.type === "remote-inbound-rtp") { if (s.roundTripTime != null) rtt = s.roundTripTime; lost += s.packetsLost || 0; }
      if (s.type === "candidate-pair" && s.nominated && rtt == null && s.currentRoundTripTime != null) rtt = s.currentRoundTripTime;
    });
    const now = performance.now();
    if (state.last) {
      const bps = (bytes - state.last.bytes) * 8 / ((now - state.last.time) / 1000);
      $("#fig-bitrate").textContent = formatBitrate(bps);
    }
    state.last = { bytes, time: now };
    $("#fig-fps").textContent = fps != null ? Math.round(fps) : "–";
    $("#fig-rtt").textContent = rtt != null ? `${Math.round(rtt * 1000)} ms` : "–";
    $("#fig-loss").textContent = sent ? `${(100 * lost / (sent + lost)).toFixed(1)} %` : "–";
  }, 1000);
}

function stopStats() {
  clearInterval(state.statsTimer);
  state.last = null;
}

// -- planned drain (docs/protocol.md, `draining`): tell the host, move just before the deadline --------------

// A draining gateway keeps a live show streaming until its deadline (which operators may set as long as a
// show), and the room closes there once its host leaves; so the studio stays put and tells the host,
// then reconnects its WHIP session (to another instance, through the load balancer) MOVE_LEAD_MS before
// the deadline: one short pause for the audience instead of a cut when the gateway stops.
const MOVE_LEAD_MS = 10000;
function planMoveOffDrainingGateway(message) {
  const deadline = Number(message.deadline) || Date.now() + 30000;
  const lead = Math.max(MOVE_LEAD_MS, 2000 * (Number(message.retry_after) || 0));
  const moveAt = Math.max(Date.now(), deadline - lead);
  clearTimeout(state.drain?.timer);
  state.drain = { deadline, moveAt, moved: false };
  const when = new Date(deadline).toLocaleTimeString();
  if (state.wantLive) {
    show(`This server is shutting down for maintenance at ${when}. You are still live. Shortly before then the ` +
      "studio moves your stream to another server by itself; viewers see a brief pause. Keep this page open.", "error");
  } else {
    show(`This server is shutting down for maintenance at ${when}. Going live now connects you to another server.`);
  }
  state.drain.timer = setTimeout(() => {
    if (!state.wantLive) return;
    state.drain.moved = true;
    reconnect("Moving your stream to another server (maintenance).");
  }, moveAt - Date.now());
}

// -- room events: chat, gifts, moderation ------------------------------------------------------------

const chat = { events: null, me: null, gifts: {}, battle: null, partner: null, invitation: null, layout: [],
  monitor: null, monitorFailures: 0, bans: new Map(), card: null };
window.cherryStudioChat = chat;

// -- the user card: moderation behind one click on a name, and a ban only after its confirmation -----------

function moderatable(message) {
  return message.from && message.from.identity !== chat.me && !["host", "admin"].includes(message.from.role);
}

function line(message) {
  return feedLine(message, [], moderatable(message) ? openUserCard : null);
}

function openUserCard(message, anchor) {
  chat.card.open(message.from, anchor, ["invite", "mute", "kick", "ban"]);
}

// Who is in the room, a page at a time from the gateway while the list is open (joins are never broadcast).
const PEOPLE_PAGE = 20;

async function showPeople() {
  if (!$("#people-box").open || !state.token) return;
  const offset = chat.peopleOffset;
  let body;
  try {
    const response = await fetch(`/api/rooms/${encodeURIComponent(room)}/participants?offset=${offset}&limit=${PEOPLE_PAGE}`,
      { headers: { Authorization: `Bearer ${state.token}` } });
    if (!response.ok) return;
    body = await response.json();
  } catch {
    return; // the next refresh may work
  }
  if (offset !== chat.peopleOffset) return; // paged on meanwhile
  if (body.count && offset >= body.count) { chat.peopleOffset = Math.max(0, body.count - PEOPLE_PAGE); showPeople(); return; }
  $("#people-count").textContent = String(body.count);
  $("#people-page").textContent = body.count ? `${offset + 1}–${offset + body.participants.length} of ${body.count}` : "";
  $("#people-prev").disabled = offset === 0;
  $("#people-next").disabled = offset + body.participants.length >= body.count;
  $("#people").replaceChildren(...body.participants.map((person) => {
    const li = document.createElement("li");
    li.dataset.identity = person.identity;
    const name = document.createElement("button");
    name.className = "name";
    name.textContent = person.display_name || person.identity;
    const from = { identity: person.identity, name: person.display_name, role: person.role };
    if (moderatable({ from })) name.onclick = () => openUserCard({ from }, name);
    const what = person.role === "host" ? "host" : person.on_mic ? "on mic" : person.sessions ? "watching" : "in chat";
    li.append(name, " ", Object.assign(document.createElement("span"), { className: "meta", textContent: what }));
    return li;
  }));
}

function wirePeople() {
  chat.peopleOffset = 0;
  $("#people-box").addEventListener("toggle", showPeople);
  $("#people-prev").onclick = () => { chat.peopleOffset = Math.max(0, chat.peopleOffset - PEOPLE_PAGE); showPeople(); };
  $("#people-next").onclick = () => { chat.peopleOffset += PEOPLE_PAGE; showPeople(); };
  setInterval(showPeople, 5000);
}

// The bans in force (the host's welcome lists them; moderation events keep the list current), each liftable.
function showBans() {
  const items = [...chat.bans.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([identity, until]) => {
    const li = document.createElement("li");
    li.dataset.identity = identity;
    const when = until ? new Date(until).toLocaleString() : "";
    li.append(`${identity} `, Object.assign(document.createElement("span"), { className: "meta",
      textContent: when ? `until ${when} ` : "" }));
    const lift = document.createElement("button");
    lift.className = "mini";
    lift.textContent = "unban";
    lift.onclick = () => chat.events.send({ type: "unban", identity });
    li.append(lift);
    return li;
  });
  $("#bans").replaceChildren(...items);
  $("#bans-count").textContent = String(items.length);
}

function showGiftTotals() {
  const parts = Object.entries(chat.gifts).map(([kind, n]) => `${giftIcon(kind)} ${n}`);
  $("#gift-totals").textContent = parts.length ? parts.join("  ") : "none yet";
}

// -- co-streaming: PK battles and guests on mic -------------------------------------------------------

function pkStatus(text) {
  $("#pk-status").textContent = text || "";
}

function showBattle(battle) {
  chat.battle = battle;
  $("#pk-board").hidden = !battle;
  $("#pk-end").hidden = !battle;
  $("#pk-invite").hidden = Boolean(battle);
  $("#pk-room").hidden = Boolean(battle);
  document.body.dataset.pk = battle ? "on" : "off";
  if (!battle) return;
  const other = battle.rooms.find((r) => r !== room);
  $("#pk-mine").textContent = `You ${battle.scores[room]}`;
  $("#pk-theirs").textContent = `${battle.scores[other]} ${battle.hosts[other] || other}`;
}

setInterval(() => {
  if (!chat.battle) return;
  const left = Math.max(0, Math.round((chat.battle.ends_at - Date.now()) / 1000));
  $("#pk-clock").textContent = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
}, 500);

async function watchPartner(partnerRoom, token) {
  stopPartner();
  const pc = new RTCPeerConnection({ bundlePolicy: "max-bundle" });
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  const stream = new MediaStream();
  pc.addEventListener("track", (event) => {
    stream.addTrack(event.track);
    $("#partner").srcObject = stream;
    $("#partner").play().catch(() => {});
  });
  try {
    const session = await exchange(pc, `/whep/${encodeURIComponent(partnerRoom)}`, token);
    chat.partner = { pc, session, token };
    $("#partner").hidden = false;
  } catch (error) {
    pc.close();
    pkStatus(`Cannot show your partner: ${explain(error)}`);
  }
}

function stopPartner() {
  if (!chat.partner) return;
  hangUp(chat.partner.pc, chat.partner.session, chat.partner.token);
  chat.partner = null;
  $("#partner").hidden = true;
}

// Guests on mic: the studio sees and hears each one through a monitor of the room's co-stream slots
// (WHEP ?monitor=costream: slot 0, the host's own picture and voice, is never sent back, so no echo).
const MONITOR_SLOTS = 3; // co-stream slots after the host's own: one tile each

function guestTile(slot) {
  let tile = document.querySelector(`#guests .guest[data-slot="${slot}"]`);
  if (!tile) {
    tile = document.createElement("div");
    tile.className = "guest";
    tile.dataset.slot = slot;
    tile.hidden = true;
    const element = document.createElement("video");
    element.autoplay = true;
    element.playsInline = true;
    const bar = document.createElement("div");
    bar.className = "guest-bar";
    tile.append(element, bar);
    $("#guests").append(tile);
  }
  return tile;
}

function showGuests(slots) {
  chat.layout = slots;
  const guests = slots.filter((s) => s.role === "guest");
  for (let slot = 1; slot <= MONITOR_SLOTS; slot++) {
    const tile = guestTile(slot);
    const guest = guests.find((g) => g.slot === slot);
    tile.hidden = !guest;
    // A PK partner in a co-stream slot plays in its own player (#partner): silent here, never twice.
    tile.querySelector("video").muted = !guest || tile.dataset.muted === "yes";
    if (!guest) continue;
    tile.dataset.identity = guest.identity;
    const name = document.createElement("span");
    name.textContent = `${guest.identity} on mic${guest.live ? "" : " (connecting)"}`
      + (guest.muted?.length ? ` · ${guest.muted.map((k) => (k === "audio" ? "muted" : "video hidden")).join(", ")}` : "");
    const hear = document.createElement("button");
    hear.className = "mini";
    hear.textContent = tile.dataset.muted === "yes" ? "unmute for me" : "mute for me";
    hear.onclick = () => {
      tile.dataset.muted = tile.dataset.muted === "yes" ? "no" : "yes";
      showGuests(chat.layout);
    };
    // Muting for everyone is the gateway's: it stops carrying the track, whatever the guest's page does.
    const muted = guest.muted || [];
    const forAll = (kind, on, off) => {
      const button = document.createElement("button");
      button.className = "mini";
      button.dataset.kind = kind;
      button.textContent = muted.includes(kind) ? off : on;
      button.onclick = () => chat.events.send({ type: "guest_mute", identity: guest.identity, kind,
        muted: !muted.includes(kind) });
      return button;
    };
    const end = document.createElement("button");
    end.className = "mini";
    end.textContent = "end";
    end.title = "take this guest off mic";
    end.onclick = () => chat.events.send({ type: "guest_end", identity: guest.identity });
    tile.querySelector(".guest-bar").replaceChildren(name, hear, forAll("audio", "mute for all", "unmute for all"),
      forAll("video", "hide video", "show video"), end);
  }
  if (guests.length && state.token) openMonitor();
  else closeMonitor();
}

async function openMonitor() {
  if (chat.monitor) return;
  const pc = new RTCPeerConnection({ bundlePolicy: "max-bundle" });
  const monitor = { pc, session: null, streams: [] };
  chat.monitor = monitor;
  for (let i = 0; i < MONITOR_SLOTS; i++) pc.addTransceiver("video", { direction: "recvonly" });
  for (let i = 0; i < MONITOR_SLOTS; i++) pc.addTransceiver("audio", { direction: "recvonly" });
  pc.addEventListener("track", (event) => {
    const kind = event.track.kind;
    const slot = 1 + pc.getTransceivers().filter((t) => t.receiver.track.kind === kind).indexOf(event.transceiver);
    monitor.streams[slot] = monitor.streams[slot] || new MediaStream();
    monitor.streams[slot].addTrack(event.track);
    const element = guestTile(slot).querySelector("video");
    element.srcObject = monitor.streams[slot];
    element.play().catch(() => {});
  });
  try {
    monitor.session = await exchange(pc, `/whep/${encodeURIComponent(room)}?monitor=costream`, state.token);
  } catch (error) {
    pc.close();
    if (chat.monitor !== monitor) return; // the last guest left meanwhile
    chat.monitor = null;
    pkStatus(`Cannot show your guests: ${explain(error)}`);
    // A refusal that a retry may change (capacity, a network hiccup): tried again a few times, then left.
    if (!REFUSED_FOR_GOOD.includes(error.code) && chat.monitorFailures++ < 3) {
      setTimeout(() => { if (!chat.monitor) showGuests(chat.layout); }, backoff(chat.monitorFailures));
    }
    return;
  }
  chat.monitorFailures = 0;
  if ($("#pk-status").textContent.startsWith("Cannot show your guests")) pkStatus("");
  if (chat.monitor !== monitor) hangUp(pc, monitor.session, state.token); // the last guest left meanwhile
}

function closeMonitor() {
  const monitor = chat.monitor;
  if (!monitor) return;
  chat.monitor = null;
  hangUp(monitor.pc, monitor.session, state.token);
  document.querySelectorAll("#guests .guest video").forEach((v) => { v.srcObject = null; });
}

const costreamHandlers = {
  layout(message) { showGuests(message.slots); },
  pk_invite_sent(message) { pkStatus(`Invitation sent to ${message.to_room}…`); },
  pk_invitation(message) {
    chat.invitation = message.id;
    $("#pk-incoming-text").textContent = `${message.from} (${message.from_room}) challenges you to a PK.`;
    $("#pk-incoming").hidden = false;
  },
  pk_rejected(message) {
    $("#pk-incoming").hidden = true;
    pkStatus(`No PK: ${message.reason}.`);
  },
  pk_started(message) {
    $("#pk-incoming").hidden = true;
    pkStatus("");
    showBattle({ ...message });
    appendCapped($("#feed"), noticeLine(`PK started against ${message.rooms.find((r) => r !== room)}`));
  },
  pk_partner(message) { watchPartner(message.room, message.token); },
  pk_score(message) {
    if (!chat.battle) return;
    chat.battle.scores = message.scores;
    chat.battle.ends_at = Date.now() + message.remaining_s * 1000;
    showBattle(chat.battle);
  },
  pk_ended(message) {
    stopPartner();
    showBattle(null);
    const mine = message.result[room];
    pkStatus(`PK over (${message.reason}): ${mine === "win" ? "you won" : mine === "lose" ? "you lost" : "a draw"}.`);
  },
  guest_accepted(message) { appendCapped($("#feed"), noticeLine(`${message.identity} is joining on mic`)); },
  guest_rejected(message) { appendCapped($("#feed"), noticeLine(`${message.identity} did not join (${message.reason})`)); },
};

function startRoomEvents() {
  chat.events = new RoomEvents(room, state.token, {
    welcome(message) {
      chat.me = message.you.identity;
      chat.bans = new Map((message.snapshot.bans || []).map((b) => [b.identity, b.until]));
      showBans();
      chat.gifts = { ...message.snapshot.gifts };
      showGiftTotals();
      $("#likes").textContent = message.snapshot.likes;
      $("#audience").textContent = `${message.snapshot.viewers} watching · ${message.snapshot.online} in chat`;
      $("#feed").replaceChildren(...message.snapshot.chat.map(line));
      showGuests(message.snapshot.layout || []);
      showBattle(message.snapshot.pk);
    },
    chat(message) { appendCapped($("#feed"), line(message)); },
    gift(message) {
      chat.gifts[message.kind] = (chat.gifts[message.kind] || 0) + message.count;
      showGiftTotals();
      appendCapped($("#feed"), line(message));
    },
    likes(message) { $("#likes").textContent = message.total; },
    viewers(message) { $("#audience").textContent = `${message.count} watching · ${message.online} in chat`; },
    moderation(message) {
      appendCapped($("#feed"), feedLine(message));
      if (message.action === "ban") chat.bans.set(message.target, message.until);
      if (message.action === "unban") chat.bans.delete(message.target);
      showBans();
    },
    draining(message) { planMoveOffDrainingGateway(message); },
    ...costreamHandlers,
    error(message) {
      if (message.code.startsWith("pk_")) pkStatus(message.message);
      const box = $("#chat-error");
      box.textContent = message.message;
      box.hidden = false;
      setTimeout(() => { box.hidden = true; }, 4000);
    },
    // The room socket was refused for good (a bad token or room name, a ban): said, not retried.
    refused(code, message) {
      const box = $("#chat-error");
      box.textContent = `Chat is off: ${explain(new GatewayError(0, { code, message }))}`;
      box.hidden = false;
      if (code === "unauthorized" || code === "forbidden") $("#token-row").hidden = false;
    },
  });
  chat.events.connect();
  // Opponents to pick from: the rooms live now (not this one, not one already in a battle), fresh on each focus.
  $("#pk-room").onfocus = async () => {
    const response = await fetch("/rooms").catch(() => null);
    if (!response || !response.ok) return;
    const { rooms } = await response.json();
    $("#pk-opponents").replaceChildren(...rooms.filter((r) => r.room !== room && !r.pk).map((r) =>
      new Option(`${r.title || r.room} · ${r.host || "host"} · ${r.viewers} watching`, r.room)));
  };
  $("#pk-invite").onclick = () => {
    const target = $("#pk-room").value.trim();
    if (target) chat.events.send({ type: "pk_invite", room: target });
  };
  $("#pk-accept").onclick = () => chat.events.send({ type: "pk_accept", id: chat.invitation });
  $("#pk-reject").onclick = () => {
    chat.events.send({ type: "pk_reject", id: chat.invitation });
    $("#pk-incoming").hidden = true;
  };
  $("#pk-end").onclick = () => chat.events.send({ type: "pk_end" });
  $("#composer").onsubmit = (event) => {
    event.preventDefault();
    const text = $("#chat-input").value.trim();
    if (text && chat.events.send({ type: "chat", text })) $("#chat-input").value = "";
  };
}

async function init() {
  if (!room) { show("No room given: open /broadcast?room=NAME.", "error"); stage("No room selected"); return; }
  $("#room-name").textContent = room;
  const watch = `/watch?room=${encodeURIComponent(room)}`;
  $("#watch-link").href = watch;
  $("#watch-link").textContent = location.origin + watch;
  pageSettings().then(({ categories }) => {
    $("#category").append(...(categories || []).map((c) => new Option(c, c)));
  });
  pageSettings().then(({ token_url: tokenUrl, dev }) => {
    // The link carries no token: viewers get theirs from the app's token URL (or dev mode's /dev/token).
    if (!tokenUrl && !dev) $("#watch-note").textContent = " · viewers need a token from your app (set pages.token_url "
      + "so the player asks for one, or add #token=... to the links you hand out)";
  });
  try {
    state.token = await getToken(room, "host");
  } catch (error) {
    show(explain(error), "error");
  }
  if (!state.token) $("#token-row").hidden = false;
  else startRoomEvents();
  $("#token-save").onclick = () => {
    state.token = $("#token").value.trim();
    rememberToken(room, "host", state.token);
    $("#token-row").hidden = true;
    show("");
    chat.events?.close();
    startRoomEvents();
  };
  $("#go-live").onclick = goLive;
  $("#stop").onclick = stop;
  chat.card = new UserCard((frame) => chat.events?.send(frame));
  wirePeople();
  $("#mic-toggle").onclick = () => { state.micOff = !state.micOff; applyToggles(); };
  $("#camera-toggle").onclick = () => { state.cameraOff = !state.cameraOff; applyToggles(); };
  $("#screen-share").onclick = () => toggleScreen();
  $("#preset").onchange = async () => { await openDevices().catch((e) => show(explain(e), "error")); await applyBitrate(); };
  // On a phone held upright the stream is upright too, unless the host turns it.
  if (matchMedia("(max-width: 640px) and (orientation: portrait)").matches) $("#orientation").value = "portrait";
  $("#orientation").onchange = () => openDevices().catch((e) => show(explain(e), "error"));
  $("#camera").onchange = () => openDevices().catch((e) => show(explain(e), "error"));
  $("#microphone").onchange = () => openDevices().catch((e) => show(explain(e), "error"));
  window.addEventListener("pagehide", () => { if (state.session) endSession(state.session, state.token); });
  try {
    await openDevices();
    await listDevices();
  } catch (error) {
    stage(error.code === "insecure_context" ? "Camera needs HTTPS" : "No camera");
    $("#go-live").disabled = true;
    show(explain(error), "error");
  }
  setLive(false);
}

init();
