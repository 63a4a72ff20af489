// Shared by the pages: tokens, WHIP/WHEP exchanges, error wording, small helpers.

export const params = new URLSearchParams(location.search);
export const fragment = new URLSearchParams(location.hash.slice(1));

export function roomFromUrl() {
  return params.get("room") || "";
}

let settings = null;
/** What the gateway tells its pages (GET /pages/config): the app's token URL (`pages.token_url`), dev mode. */
export async function pageSettings() {
  if (!settings) {
    const response = await fetch("/pages/config").catch(() => null);
    settings = response && response.ok ? await response.json() : { token_url: null, dev: false, categories: [] };
  }
  return settings;
}

/** A token for this room and role: from the URL fragment, the session store, the app's token URL
 * (`pages.token_url`: GET ?room=&role=, cookies included, answering {"token": ...}), or /dev/token in dev mode. */
export async function getToken(room, role) {
  const given = fragment.get("token") || sessionStorage.getItem(`token:${room}:${role}`);
  if (given) return given;
  const { token_url: tokenUrl } = await pageSettings();
  if (tokenUrl) {
    const url = new URL(tokenUrl, location.href);
    url.searchParams.set("room", room);
    url.searchParams.set("role", role);
    const response = await fetch(url, { credentials: "include" });
    if (!response.ok) throw new GatewayError(response.status, await errorOf(response));
    const token = (await response.json()).token;
    if (typeof token !== "string" || !token) throw new GatewayError(502, { code: "bad_token_url",
      message: "the app's token URL answered without a token" });
    return token;
  }
  const response = await fetch(`/dev/token?room=${encodeURIComponent(room)}&role=${role}` +
    (params.get("identity") ? `&identity=${encodeURIComponent(params.get("identity"))}` : ""));
  if (response.status === 404) return null; // not dev mode: the page must be handed a token
  if (!response.ok) throw new GatewayError(response.status, await errorOf(response));
  return (await response.json()).token;
}

export function rememberToken(room, role, token) {
  sessionStorage.setItem(`token:${room}:${role}`, token);
}

export class GatewayError extends Error {
  constructor(status, error, retryAfter = null) {
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || "http_" + status;
    this.retryAfter = retryAfter;
  }
}

/** Refusals no retry would change (a bad token or room name, a ban): a page says them once and stops. */
export const REFUSED_FOR_GOOD = ["unauthorized", "forbidden", "banned", "bad_room_name", "bad_query"];

/** A problem on this side (the browser, its network, the page's address), with a code and plain words. */
export class PageError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

/** navigator.mediaDevices, which browsers give only to secure pages: https://, or http://localhost. */
export function mediaDevices() {
  if (!navigator.mediaDevices) {
    throw new PageError("insecure_context", "The camera and microphone need a secure page: open this page over " +
      "https://, or as http://localhost (or 127.0.0.1) on the computer running the server. Browsers refuse them " +
      `to plain http:// pages of other addresses like ${location.host}. (Operators: enable HTTPS, see docs/deployment.md.)`);
  }
  return navigator.mediaDevices;
}

/** The media addresses a gateway's answer offers (its ICE host candidates), for an explanation. */
function offeredAddresses(pc) {
  const sdp = pc.remoteDescription ? pc.remoteDescription.sdp : "";
  const found = [...sdp.matchAll(/^a=candidate:\S+ \d+ udp \d+ (\S+) (\d+)/gim)].map((m) => `${m[1]}:${m[2]}`);
  return [...new Set(found)];
}

/** Why a connection that never came up failed: the network path, not the server's refusal. */
export function iceFailure(pc) {
  const offered = offeredAddresses(pc);
  return new PageError("ice_failed", "The video connection could not be set up: this browser could not reach the " +
    `server's media address${offered.length === 1 ? "" : "es"} (${offered.join(", ") || "none offered"}, UDP). ` +
    "A firewall may block UDP, or the server offers an address this network cannot reach (its --ice-host " +
    "setting); behind strict networks a TURN server (ice.servers) is needed.");
}

async function errorOf(response) {
  try {
    return (await response.json()).error || {};
  } catch {
    return { message: await response.text().catch(() => "") };
  }
}

/** Resolve once ICE gathering is complete (or after a short cap: loopback and LAN gather in milliseconds). */
export function gatheringComplete(pc, capMs = 2000) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === "complete") { pc.removeEventListener("icegatheringstatechange", done); resolve(); } };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, capMs);
  });
}

/** POST an offer to a WHIP or WHEP endpoint; returns the session URL. */
export async function exchange(pc, url, token) {
  await pc.setLocalDescription(await pc.createOffer());
  await gatheringComplete(pc);
  const hasCandidate = () => /^a=candidate:/m.test(pc.localDescription.sdp);
  if (!hasCandidate()) await gatheringComplete(pc, 3000); // a slow interface: a little longer, once
  // Closed while gathering (the page moved on: a guest left, the player stopped): nothing could use the
  // session, so the gateway is not asked for one.
  if (pc.signalingState === "closed") throw new PageError("closed", "This connection was closed before it was set up.");
  if (!hasCandidate()) {
    // Nothing to connect from (a browser with no usable interface stays "gathering" for ever), and these pages
    // do not trickle: no offer could ever connect, so say why instead of "Connecting…" forever.
    throw new PageError("no_local_candidates", "Your browser offered no network address for the video " +
      "connection, so it cannot connect. This happens on a computer with no network besides loopback " +
      "(offline), or when a browser setting or extension blocks WebRTC. Connect to a network and reload; for a " +
      "test on the server's own computer, start Chromium with --allow-loopback-in-peer-connection.");
  }
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/sdp", ...(token ? { Authorization: `Bearer ${token}` } : {}) },
    body: pc.localDescription.sdp,
  });
  if (response.status !== 201) {
    throw new GatewayError(response.status, await errorOf(response), response.headers.get("Retry-After"));
  }
  const answer = await response.text();
  await pc.setRemoteDescription({ type: "answer", sdp: answer });
  return new URL(response.headers.get("Location"), location.href).href;
}

export async function endSession(url, token) {
  if (!url) return;
  try {
    await fetch(url, { method: "DELETE", headers: token ? { Authorization: `Bearer ${token}` } : {} });
  } catch { /* the session times out on the gateway anyway */ }
}

/** End a session: its DELETE first, then the connection. Closed first, the connection's end would end the
 * session at the gateway before the DELETE arrived, which then finds nothing (a 404 in the error counts). */
export function hangUp(pc, url, token) {
  if (!url) { pc.close(); return; }
  endSession(url, token).finally(() => pc.close());
}

/** Words a host or viewer understands, for an error from the gateway. */
export function explain(error) {
  if (error instanceof PageError) return error.message;
  if (error instanceof GatewayError) {
    switch (error.code) {
      case "unauthorized": return "Your access token was rejected (missing, expired or invalid). Get a new link.";
      case "forbidden": return "Your access token does not allow this in this room.";
      case "banned": return "You are banned from this room.";
      case "bad_room_name": return "There is no such room: room names are 1-64 letters, digits, '_', '-' or '.'.";
      case "host_already_live": return "This room is already live with another host.";
      case "room_not_live": return "The host is not live yet.";
      case "capacity": return "The room is full right now. Retrying shortly…";
      case "rate_limited": return "Too many attempts. Waiting a moment…";
      case "no_common_codec": return "Your browser cannot play this stream's format: " + error.message;
      case "draining": return "The server is restarting. Reconnecting…";
      default: return `The server refused (${error.status}): ${error.message}`;
    }
  }
  if (error && error.name === "NotAllowedError") {
    return "Camera or microphone access was denied. Allow it in the browser's site settings, then try again.";
  }
  if (error && error.name === "NotFoundError") return "No camera or microphone was found.";
  if (error && error.name === "NotReadableError") return "The camera or microphone is in use by another program.";
  return `Something went wrong: ${error && error.message ? error.message : error}`;
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Exponential backoff with jitter, capped. */
export function backoff(attempt, baseMs = 1000, capMs = 15000) {
  const ms = Math.min(capMs, baseMs * 2 ** attempt);
  return ms / 2 + Math.random() * ms / 2;
}

export function formatBitrate(bps) {
  if (!isFinite(bps)) return "–";
  return bps >= 1e6 ? `${(bps / 1e6).toFixed(2)} Mbps` : `${Math.round(bps / 1e3)} kbps`;
}

export function $(selector) {
  return document.querySelector(selector);
}
