// Room events over /ws/{room} (docs/protocol.md): reconnects with backoff, dispatches by type.
import { backoff } from "/static/common.js";

const PAST = { mute: "muted", unmute: "unmuted", kick: "kicked", ban: "banned", unban: "unbanned" };

export class RoomEvents {
  constructor(room, token, handlers) {
    this.room = room;
    this.token = token;
    this.handlers = handlers; // { welcome, chat, gift, likes, viewers, host, moderation, error, closed }
    this.attempt = 0;
    this.stopped = false;
    this.ws = null;
    this.refs = 0;
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/ws/${encodeURIComponent(this.room)}?token=${encodeURIComponent(this.token)}`);
    this.ws = ws;
    let opened = false;
    ws.onopen = () => { opened = true; this.attempt = 0; };
    ws.onmessage = (event) => {
      let message;
      try { message = JSON.parse(event.data); } catch { return; }
      const handler = this.handlers[message.type];
      if (handler) handler(message);
    };
    ws.onclose = async (event) => {
      if (ws !== this.ws) return;
      this.handlers.closed?.(event.code, event.reason);
      // Kicked, banned or expired: reconnecting would only be refused again.
      if (this.stopped || [4001, 4003].includes(event.code)) return;
      if (!opened && await this.refused()) return;
      setTimeout(() => this.connect(), backoff(this.attempt++));
    };
  }

  // A refused handshake shows the page nothing but a close: the same URL without the upgrade answers the
  // refusal itself. A bad token, room name or a ban ends the reconnecting (handlers.refused), anything else
  // (capacity, draining, the network) is tried again.
  async refused() {
    try {
      const response = await fetch(`/ws/${encodeURIComponent(this.room)}?token=${encodeURIComponent(this.token)}`);
      if (![400, 401, 403].includes(response.status)) return false;
      const body = await response.json().catch(() => ({}));
      this.stopped = true;
      this.handlers.refused?.(body.error?.code || `http_${response.status}`, body.error?.message || "");
      return true;
    } catch {
      return false;
    }
  }

  /** Go on with another token (a guest's on mic, the viewer's again after): the socket reconnects with it. */
  useToken(token) {
    if (token === this.token) return;
    this.token = token;
    const old = this.ws;
    this.ws = null; // its close is not this socket's: no reconnect from it
    old?.close(1000);
    this.connect();
  }

  send(frame) {
    if (this.ws?.readyState !== WebSocket.OPEN) return null;
    const ref = `r${++this.refs}`;
    this.ws.send(JSON.stringify({ ...frame, ref }));
    return ref;
  }

  close() {
    this.stopped = true;
    this.ws?.close(1000);
  }
}

const GIFT_ICONS = { heart: "❤", rose: "🌹", rocket: "🚀", castle: "🏰" };
export function giftIcon(kind) {
  return GIFT_ICONS[kind] || "🎁";
}

/** One chat or gift line for a list, built with text nodes only (never innerHTML). */
// ``onName``: the sender's name becomes a button (the studio opens its user card there).
export function feedLine(message, actions = [], onName = null) {
  const li = document.createElement("li");
  li.dataset.identity = message.from?.identity || "";
  const who = document.createElement(onName ? "button" : "b");
  if (onName) {
    who.className = "name";
    who.onclick = () => onName(message, who);
  }
  who.textContent = message.from ? message.from.name || message.from.identity : "";
  if (message.from?.role === "host") who.className = "role-host";
  li.append(who, " ");
  if (message.type === "gift") {
    li.className = "gift-line";
    li.append(`sent ${message.count} × ${giftIcon(message.kind)} ${message.kind}`);
  } else if (message.type === "moderation") {
    li.className = "mod-line";
    li.textContent = `${message.target} was ${PAST[message.action] || message.action} by ${message.by}`;
  } else {
    li.append(message.text);
  }
  for (const [label, onClick] of actions) {
    const button = document.createElement("button");
    button.className = "mini";
    button.textContent = label;
    button.onclick = () => onClick(message);
    li.append(" ", button);
  }
  return li;
}

export function appendCapped(list, item, cap = 200) {
  const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(item);
  while (list.children.length > cap) list.firstChild.remove();
  if (nearBottom) list.scrollTop = list.scrollHeight;
}

/** A plain notice line for a feed (PK results, guests coming and going). */
export function noticeLine(text) {
  const li = document.createElement("li");
  li.className = "mod-line";
  li.textContent = text;
  return li;
}
