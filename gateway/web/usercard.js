// The user card: a click on a person's name (in the feed or the viewer list) opens it, with what this page may
// do to them: the studio everything, a guest on mic what the protocol lets guests do (mute, kick), a viewer
// nothing but the name. A ban happens only after its confirmation.
const BAN_FOR = [[3600, "1 hour"], [86400, "1 day"], [604800, "7 days"], [2592000, "30 days"]];

function element(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

export class UserCard {
  /** ``send(frame)`` sends a room-events frame; the card is built once, with the ids the tests know it by. */
  constructor(send) {
    this.send = send;
    this.identity = null;
    this.root = element("div", { className: "user-card", id: "user-card", hidden: true });
    this.root.setAttribute("role", "dialog");
    this.root.setAttribute("aria-label", "Viewer");
    this.name = element("b", { id: "card-name" });
    this.detail = element("span", { className: "meta", id: "card-identity" });
    const close = element("button", { className: "mini", id: "card-close", textContent: "×", onclick: () => this.close() });
    close.setAttribute("aria-label", "Close");
    this.buttons = {
      invite: element("button", { id: "card-mic", textContent: "Invite on mic", onclick: () => this.act("guest_invite") }),
      mute: element("button", { id: "card-mute", textContent: "Mute 10 min",
        onclick: () => this.act("mute", { duration_s: 600 }) }),
      kick: element("button", { id: "card-kick", textContent: "Kick", onclick: () => this.act("kick") }),
    };
    this.banFor = element("select", { id: "card-ban-for" },
      ...BAN_FOR.map(([seconds, text]) => new Option(text, String(seconds), seconds === 86400, seconds === 86400)));
    this.banBox = element("label", {}, "Ban for ", this.banFor);
    const ban = element("button", { id: "card-ban", className: "danger", textContent: "Ban…", onclick: () => this.confirmBan() });
    this.buttons.ban = ban;
    this.actions = element("div", { className: "card-actions", id: "card-actions" },
      this.buttons.invite, this.buttons.mute, this.buttons.kick, this.banBox, ban);
    this.confirmText = element("span", { id: "card-confirm-text" });
    this.confirm = element("div", { className: "card-actions", id: "card-confirm", hidden: true }, this.confirmText,
      element("button", { id: "card-ban-yes", className: "danger", textContent: "Ban",
        onclick: () => this.act("ban", { duration_s: Number(this.banFor.value) }) }), " ",
      element("button", { id: "card-ban-no", textContent: "Cancel", onclick: () => this.showActions() }));
    this.root.append(element("div", {}, this.name, " ", this.detail, " ", close), this.actions, this.confirm);
    document.body.append(this.root);
    document.addEventListener("keydown", (event) => { if (event.key === "Escape") this.close(); });
  }

  /** Open for ``person`` ({identity, name}) below ``anchor``, offering ``allowed`` (invite, mute, kick, ban). */
  open(person, anchor, allowed = []) {
    this.identity = person.identity;
    this.root.dataset.identity = person.identity;
    this.name.textContent = person.name || person.identity;
    this.detail.textContent = person.name && person.name !== person.identity ? `(${person.identity})` : "";
    for (const [what, button] of Object.entries(this.buttons)) button.hidden = !allowed.includes(what);
    this.banBox.hidden = !allowed.includes("ban");
    this.showActions();
    this.actions.hidden = allowed.length === 0;
    const box = anchor.getBoundingClientRect();
    this.root.style.top = `${window.scrollY + box.bottom + 4}px`;
    this.root.style.left = `${Math.max(0, Math.min(window.scrollX + box.left, window.innerWidth - 300))}px`;
    this.root.hidden = false;
  }

  close() {
    this.root.hidden = true;
  }

  showActions() {
    this.confirm.hidden = true;
    this.actions.hidden = false;
  }

  confirmBan() {
    this.confirmText.textContent = `Ban ${this.name.textContent} from this room for `
      + `${this.banFor.options[this.banFor.selectedIndex].text}? They are removed now and cannot come back until then.`;
    this.actions.hidden = true;
    this.confirm.hidden = false;
  }

  act(type, extra = {}) {
    this.send({ type, identity: this.identity, ...extra });
    this.close();
  }
}
