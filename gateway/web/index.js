// Live-room list: covers, badges, search and categories, refreshed every few seconds.
import { $, pageSettings } from "/static/common.js";

const filter = { q: "", category: "" };

function badge(text, kind = "") {
  return Object.assign(document.createElement("span"), { className: `badge ${kind}`.trim(), textContent: text });
}

function card(room) {
  const a = document.createElement("a");
  a.className = "card";
  a.href = `/watch?room=${encodeURIComponent(room.room)}`;
  a.dataset.room = room.room;
  // The cover: a recent still of the stream (one decode per room per interval at the gateway), or a plain
  // panel until the first one is made.
  const cover = document.createElement("div");
  cover.className = "cover";
  if (room.cover) {
    const img = document.createElement("img");
    img.src = room.cover;
    img.alt = "";
    img.loading = "lazy";
    cover.append(img);
  }
  const badges = document.createElement("div");
  badges.className = "badges";
  badges.append(badge("LIVE"));
  if (room.pk) badges.append(badge("PK", "pk"));
  if (room.guests) badges.append(badge(`${room.guests} on mic`, "mic"));
  const count = Object.assign(document.createElement("span"), { className: "count",
    textContent: `👁 ${room.viewers}` });
  cover.append(badges, count);
  const title = document.createElement("div");
  title.className = "title";
  title.textContent = room.title || room.room;
  const meta = document.createElement("div");
  meta.className = "meta";
  const minutes = Math.max(0, Math.round((Date.now() / 1000 - room.live_since) / 60));
  meta.textContent = `${room.host} · live ${minutes} min`;
  const tags = document.createElement("div");
  tags.className = "tags";
  if (room.category) tags.append(Object.assign(document.createElement("span"), { className: "category",
    textContent: room.category }));
  for (const tag of room.tags || []) tags.append(Object.assign(document.createElement("span"), { textContent: `#${tag}` }));
  a.append(cover, title, meta, tags);
  return a;
}

let asked = 0;
async function refresh() {
  const ask = ++asked;
  const query = new URLSearchParams(Object.entries(filter).filter(([, v]) => v));
  try {
    const response = await fetch(`/rooms${query.size ? `?${query}` : ""}`);
    const rooms = (await response.json()).rooms;
    if (ask !== asked) return; // a newer search answered first
    $("#rooms").replaceChildren(...rooms.map(card));
    const filtering = Boolean(filter.q || filter.category);
    $("#empty").hidden = rooms.length > 0 || filtering;
    $("#no-match").hidden = rooms.length > 0 || !filtering;
  } catch {
    /* keep the last list; the next refresh may work */
  }
}

function pick(category) {
  filter.category = category;
  document.querySelectorAll("#categories .chip").forEach((chip) => {
    chip.setAttribute("aria-pressed", String(chip.dataset.category === category));
  });
  refresh();
}

let typing = null;
$("#search").addEventListener("input", () => {
  clearTimeout(typing);
  typing = setTimeout(() => { filter.q = $("#search").value.trim(); refresh(); }, 250);
});
$("#categories").addEventListener("click", (event) => {
  const chip = event.target.closest(".chip");
  if (chip) pick(chip.dataset.category);
});
pageSettings().then(({ categories }) => {
  $("#categories").append(...(categories || []).map((c) => {
    const chip = Object.assign(document.createElement("button"), { className: "chip", textContent: c });
    chip.dataset.category = c;
    return chip;
  }));
  document.querySelectorAll("#categories .chip").forEach((chip) => chip.setAttribute("aria-pressed",
    String(chip.dataset.category === filter.category)));
});

refresh();
setInterval(refresh, 5000);
