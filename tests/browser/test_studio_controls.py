"""The studio's own controls in Chromium: mic and camera off and on, screen share, uptime."""

from __future__ import annotations

from tests.browser.test_pages import PIXELS, go_live, open_player
from tests.browser.waits import until

# The player's inbound audio level, as Chromium measures it.
LEVEL_JS = """async () => {
  const pc = window.cherryPlayer.pc;
  if (!pc) return null;
  let level = 0;
  (await pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "audio") level = Math.max(level, s.audioLevel || 0);
  });
  return level;
}"""


def test_mic_camera_screen_share_and_uptime(context, gateway):  # type: ignore[no-untyped-def]
    host = go_live(context, gateway.base, "ctl2", identity="anchor5")
    viewer = open_player(context, gateway.base, "ctl2")
    viewer.wait_for_selector("body[data-state=playing]", timeout=20000)
    viewer.click("#unmute")
    until(viewer, f"async () => (await ({LEVEL_JS})()) > 0", "the viewer hears no host")

    host.click("#mic-toggle")
    assert host.inner_text("#mic-toggle") == "Mic on"
    until(viewer, f"async () => {{ const l = await ({LEVEL_JS})(); return l !== null && l < 0.001; }}",
          "the host's mic is off, yet the viewer still hears it")
    host.click("#mic-toggle")
    until(viewer, f"async () => (await ({LEVEL_JS})()) > 0", "the host's mic is on again, yet the viewer hears nothing")

    host.click("#camera-toggle")  # black frames, same session
    viewer.wait_for_function(f"({PIXELS})(document.querySelector('#player')).mean < 3", timeout=10000)
    host.click("#camera-toggle")
    viewer.wait_for_function(f"({PIXELS})(document.querySelector('#player')).mean > 10", timeout=10000)

    host.click("#screen-share")  # Chromium's fake capture stands in for the screen
    host.wait_for_function("document.querySelector('#screen-share').textContent === 'Stop sharing'", timeout=10000)
    label = host.evaluate("window.cherryStudio.pc.getSenders().find(s => s.track && s.track.kind === 'video')"
                          ".track.label")
    camera = host.evaluate("window.cherryStudio.stream.getVideoTracks()[0].label")
    assert label != camera, f"the screen did not replace the camera: {label}"
    viewer.wait_for_function(f"({PIXELS})(document.querySelector('#player')).mean > 3", timeout=10000)
    host.click("#screen-share")
    host.wait_for_function("window.cherryStudio.pc.getSenders().find(s => s.track && s.track.kind === 'video')"
                           ".track.label === window.cherryStudio.stream.getVideoTracks()[0].label", timeout=10000)
    assert viewer.evaluate("window.cherryPlayer.pc.connectionState") == "connected"

    host.wait_for_function("/^0:0[1-9]|^0:[1-5][0-9]/.test(document.querySelector('#fig-uptime').textContent)",
                           timeout=10000)
    host.click("#stop")
    host.wait_for_function("document.querySelector('#fig-uptime').textContent === '–'", timeout=5000)
