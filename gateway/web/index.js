// Live-room list, refreshed every few seconds.
import { $ } from "/static/common.js";

function card(room) {
  const a = document.createElement("a");
  a.className = "card";
  a.href = `/watch?room=${encodeURIComponent(room.room)}`;
  a.dataset.room = room.room;
  const title = document.createElement("div");
  title.className = "title";
  const live = document.createElement("span");
  live.className = "badge";
  live.textContent = "LIVE";
  title.append(live);
  if (room.pk) {
    const pk = document.createElement("span");
    pk.className = "badge pk";
    pk.textContent = "PK";
    title.append(pk);
  }
  title.append(room.title || room.room);
  const meta = document.createElement("div");
  meta.className = "meta";
  const minutes = Math.max(0, Math.round((Date.now() / 1000 - room.live_since) / 60));
  meta.textContent = `${room.host} · ${room.viewers} watching · live ${minutes} min`;
  a.append(title, meta);
  return a;
}

async function refresh() {
  try {
    const response = await fetch("/rooms");
    const rooms = (await response.json()).rooms;
    $("#rooms").replaceChildren(...rooms.map(card));
    $("#empty").hidden = rooms.length > 0;
  } catch {
    /* keep the last list; the next refresh may work */
  }
}

refresh();
setInterval(refresh, 5000);
