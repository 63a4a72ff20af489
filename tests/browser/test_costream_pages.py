"""Co-streaming in the pages: the host sees and hears a guest it put on mic, and nobody hears themselves."""

from __future__ import annotations

from tests.browser.test_pages import PIXELS, go_live, moderate
from tests.browser.waits import until

# The studio's monitor of its co-stream slots: the guest's inbound audio, as Chromium measures it.
AUDIO_JS = """async () => {
  const monitor = window.cherryStudioChat.monitor;
  if (!monitor) return null;
  const report = await monitor.pc.getStats();
  let energy = 0, level = 0, bytes = 0;
  report.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "audio") {
      energy += s.totalAudioEnergy || 0; level = Math.max(level, s.audioLevel || 0); bytes += s.bytesReceived || 0;
    }
  });
  return {energy, level, bytes};
}"""
GUEST_VIDEO = '#guests .guest[data-slot="1"] video'
# What the studio's monitor got, for a failure's message.
MONITOR_STATE_JS = """async () => {
  const m = window.cherryStudioChat.monitor;
  const v = document.querySelector('#guests .guest[data-slot="1"] video');
  const out = {monitor: Boolean(m), state: m && m.pc.connectionState, layout: window.cherryStudioChat.layout,
               tracks: v.srcObject ? v.srcObject.getTracks().map((t) => `${t.kind}:${t.readyState}`) : null};
  if (m) (await m.pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp") out[`${s.kind}-${s.mid}`] = [s.packetsReceived, s.framesDecoded];
  });
  return out;
}"""


def _audio(page):  # type: ignore[no-untyped-def]
    return page.evaluate(AUDIO_JS)


def test_host_sees_and_hears_its_guest_and_the_guest_hears_no_echo(context, gateway):  # type: ignore[no-untyped-def]
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    host = go_live(context, gateway.base, "mic1", identity="anchor")
    guest = context.new_page()
    guest.goto(f"{gateway.base}/watch?room=mic1&identity=singer")
    guest.wait_for_selector("#gift-buttons button", timeout=15000)
    guest.fill("#chat-input", "can I sing?")
    guest.click("#composer button")
    moderate(host, "singer", "on mic")
    guest.wait_for_selector("#guest-prompt:not([hidden])", timeout=10000)
    guest.click("#guest-accept")
    guest.wait_for_selector("#on-mic:not([hidden])", timeout=15000)

    # The studio shows the guest's picture, moving, and plays its voice (Chromium's fake microphone beeps).
    host.wait_for_selector('#guests .guest[data-slot="1"]:not([hidden])', timeout=15000)
    try:
        host.wait_for_function(f"document.querySelector('{GUEST_VIDEO}').videoWidth > 0", timeout=15000)
    except PlaywrightTimeout:
        raise AssertionError(f"the studio shows no guest picture: {host.evaluate(MONITOR_STATE_JS)}") from None
    first = host.eval_on_selector(GUEST_VIDEO, PIXELS)
    host.wait_for_timeout(1000)  # let the picture move on
    second = host.eval_on_selector(GUEST_VIDEO, PIXELS)
    assert second["mean"] > 10 and first["fingerprint"] != second["fingerprint"], "guest picture black or still"
    assert host.eval_on_selector(GUEST_VIDEO, "v => v.muted") is False, "the studio does not play the guest's voice"
    until(host, f"async () => {{ const a = await ({AUDIO_JS})(); return a && a.level > 0; }}",
          "the studio measures no voice from its guest")
    # (That the monitor never carries the host's own slot is checked on the wire: tests/integration/test_costream.py.)
    assert "singer on mic" in host.inner_text("#guests")

    # The guest's own slot comes back to its page too: shown, never heard.
    guest.wait_for_selector('.tile[data-slot="1"]:not([hidden])', timeout=15000)
    assert guest.eval_on_selector('.tile[data-slot="1"] video', "v => v.muted") is True
    assert "you · on mic" in guest.inner_text('.tile[data-slot="1"]')

    # Mic off: the track stays, silent, so the host's monitor measures no more voice; on again: it comes back.
    guest.click("#mic-toggle")
    assert guest.inner_text("#mic-toggle") == "Turn mic on"
    until(host, f"async () => {{ const a = await ({AUDIO_JS})(); return a && a.level < 0.001; }}",
          "the guest's mic is off, yet the studio still measures its voice")
    guest.click("#mic-toggle")
    until(host, f"async () => {{ const a = await ({AUDIO_JS})(); return a && a.level > 0; }}",
          "the guest's mic is on again, yet the studio measures no voice")
    guest.click("#camera-toggle")
    assert guest.inner_text("#camera-toggle") == "Turn camera on"

    # Leaving the mic takes the guest's tile off the studio, and its monitor with it.
    guest.click("#leave-mic")
    host.wait_for_selector('#guests .guest[data-slot="1"]', state="hidden", timeout=10000)
    host.wait_for_function("window.cherryStudioChat.monitor === null", timeout=10000)
    host.click("#stop")


BYTES_JS = f"async () => {{ const a = await ({AUDIO_JS})(); return a ? a.bytes : 0; }}"


def _on_mic(context, base: str, room: str, host, identity: str):  # type: ignore[no-untyped-def]
    """A viewer page that chats, is invited on mic through the studio's user card, and accepts."""
    guest = context.new_page()
    guest.goto(f"{base}/watch?room={room}&identity={identity}")
    guest.wait_for_selector("#gift-buttons button", timeout=15000)
    guest.fill("#chat-input", "can I sing?")
    guest.click("#composer button")
    moderate(host, identity, "on mic")
    guest.wait_for_selector("#guest-prompt:not([hidden])", timeout=10000)
    guest.click("#guest-accept")
    guest.wait_for_selector("#on-mic:not([hidden])", timeout=15000)
    try:
        until(host, f"async () => {{ const a = await ({AUDIO_JS})(); return a && a.level > 0; }}",
              "the studio measures no voice from its guest", 15)
    except AssertionError as failed:
        raise AssertionError(f"{failed}: {host.evaluate(MONITOR_STATE_JS)} {host.inner_text('#costream')}") from None
    return guest


def test_the_host_mutes_its_guest_for_everyone_and_the_guest_moderates(context, gateway):  # type: ignore[no-untyped-def]
    host = go_live(context, gateway.base, "mic2", identity="anchor2")
    guest = _on_mic(context, gateway.base, "mic2", host, "singer2")
    bar = '#guests .guest[data-slot="1"] .guest-bar'

    # Muted for all: the gateway stops carrying the guest's voice (its page still sends), the guest is told.
    host.click(f'{bar} button[data-kind="audio"]')
    guest.wait_for_function("document.querySelector('#host-muted').textContent.includes('muted your mic')",
                            timeout=10000)
    host.wait_for_function("document.querySelector('#guests').innerText.includes('muted')", timeout=10000)
    before = host.evaluate(BYTES_JS)
    host.wait_for_timeout(1500)  # an observation window: no audio bytes may arrive in it
    settled = host.evaluate(BYTES_JS)
    host.wait_for_timeout(1500)
    assert host.evaluate(BYTES_JS) == settled, f"muted guest's audio still arriving ({before} -> {settled} -> more)"
    host.click(f'{bar} button[data-kind="audio"]')  # unmute for all
    until(host, f"async () => (await ({BYTES_JS})()) > {settled}", "unmuted for all, the guest's voice is not back")
    guest.wait_for_function("document.querySelector('#host-muted').textContent === ''", timeout=10000)

    # On mic, the guest moderates: a viewer's name opens a card with mute and kick (no ban, no invite).
    fan = context.new_page()
    fan.goto(f"{gateway.base}/watch?room=mic2&identity=loudfan")
    fan.wait_for_selector("#gift-buttons button", timeout=15000)
    fan.fill("#chat-input", "first!!!")
    fan.click("#composer button")
    guest.click("#feed li[data-identity=loudfan] button.name", timeout=10000)
    guest.wait_for_selector("#user-card:not([hidden])", timeout=5000)
    assert guest.is_visible("#card-mute") and guest.is_visible("#card-kick")
    assert not guest.is_visible("#card-ban") and not guest.is_visible("#card-mic")
    guest.click("#card-mute")
    fan.wait_for_selector("#feed li.mod-line", timeout=10000)
    assert "loudfan was muted by singer2" in fan.inner_text("#feed")
    # A plain viewer's card shows the name and offers nothing.
    fan.click("#feed li[data-identity=singer2] button.name")
    fan.wait_for_selector("#user-card:not([hidden])", timeout=5000)
    assert not fan.is_visible("#card-actions")

    # The host ends the guest: its page says so and leaves the mic by itself.
    host.click(f"{bar} button:text-is('end')")
    guest.wait_for_selector("#on-mic", state="hidden", timeout=10000)
    assert "You are off mic" in guest.inner_text("#mic-notice")
    host.click("#stop")
