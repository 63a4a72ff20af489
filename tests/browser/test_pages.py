"""The three pages in real headless Chromium: go live, watch, host away and back, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.waits import until


def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tests' screenshots go, for debugging: a fresh pytest temp directory (the README's are made by
    ``make screenshots``, tools/screenshots.py), so a test run never modifies tracked files."""
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return screenshot_dir(tmp_path_factory)


# Samples the playing video: mean luma and a coarse fingerprint of a 32x18 thumbnail.
PIXELS = """(video) => {
  const c = document.createElement('canvas'); c.width = 32; c.height = 18;
  const g = c.getContext('2d'); g.drawImage(video, 0, 0, 32, 18);
  const d = g.getImageData(0, 0, 32, 18).data; let sum = 0; const fp = [];
  for (let i = 0; i < d.length; i += 4) { const y = (d[i] + d[i+1] + d[i+2]) / 3; sum += y; fp.push(y >> 4); }
  return {mean: sum / (d.length / 4), fingerprint: fp.join(',')};
}"""


def go_live(context, base: str, room: str, identity: str = "host1", title: str = "",  # type: ignore[no-untyped-def]
            portrait: bool = False):
    page = context.new_page()
    page.goto(f"{base}/broadcast?room={room}&identity={identity}")
    page.wait_for_function("document.querySelector('#preview').videoWidth > 0", timeout=15000)
    if portrait:
        page.select_option("#orientation", "portrait")
        page.wait_for_function("(v => v.videoHeight > v.videoWidth)(document.querySelector('#preview'))", timeout=15000)
    if title:
        page.fill("#title", title)
    page.click("#go-live")
    page.wait_for_selector("body[data-state=live]", timeout=15000)
    return page


CARD_BUTTONS = {"on mic": "#card-mic", "mute": "#card-mute", "kick": "#card-kick", "ban": "#card-ban"}


def moderate(host, identity: str, action: str) -> None:  # type: ignore[no-untyped-def]
    """The host acts on a viewer through the user card: its name in the feed, then the action (a ban confirmed)."""
    host.click(f"#feed li[data-identity={identity}] button.name", timeout=10000)
    host.wait_for_selector("#user-card:not([hidden])", timeout=5000)
    host.click(CARD_BUTTONS[action])
    if action == "ban":
        host.click("#card-ban-yes")
    host.wait_for_selector("#user-card", state="hidden", timeout=5000)


def open_player(context, base: str, room: str):  # type: ignore[no-untyped-def]
    page = context.new_page()
    page.goto(f"{base}/watch?room={room}")
    return page


def frames(page) -> int:  # type: ignore[no-untyped-def]
    return int(page.evaluate("window.cherryPlayer.quality ? window.cherryPlayer.quality.framesDecoded : 0"))


def test_host_goes_live_and_viewer_sees_a_moving_picture(context, gateway, shots):
    host = go_live(context, gateway.base, "b1", title="Summer festival warm-up")
    viewer = open_player(context, gateway.base, "b1")
    viewer.wait_for_function("window.cherryPlayer.firstFrameMs != null", timeout=20000)
    ttff = viewer.evaluate("window.cherryPlayer.firstFrameMs")
    print(f"\nwatch page opened -> first decoded frame: {ttff:.0f} ms")
    viewer.wait_for_selector("body[data-state=playing]", timeout=10000)
    viewer.wait_for_function("window.cherryPlayer.quality && window.cherryPlayer.quality.framesDecoded > 0")
    start = viewer.evaluate("window.cherryPlayer.quality")
    first = viewer.eval_on_selector("#player", PIXELS)
    viewer.wait_for_timeout(5000)  # the 5 s observation window itself
    end = viewer.evaluate("window.cherryPlayer.quality")
    second = viewer.eval_on_selector("#player", PIXELS)
    assert end["framesDecoded"] - start["framesDecoded"] >= 50, (start, end)
    assert end["freezes"] == start["freezes"] == 0, end
    assert first["mean"] > 10 and second["mean"] > 10, "picture is black"
    assert first["fingerprint"] != second["fingerprint"], "picture is still"
    viewer.click("#toggle-quality")
    viewer.screenshot(path=str(shots / "watch.png"))
    host.wait_for_function("document.querySelector('#fig-fps').textContent !== '–'", timeout=10000)
    host.screenshot(path=str(shots / "broadcast.png"))
    rooms = context.new_page()
    rooms.goto(f"{gateway.base}/")
    rooms.wait_for_selector("a.card[data-room=b1]", timeout=10000)
    assert "Summer festival warm-up" in rooms.inner_text("a.card[data-room=b1]")
    rooms.screenshot(path=str(shots / "rooms.png"))
    host.click("#stop")


def test_watch_page_waits_for_host_and_resumes(context, gateway):
    viewer = open_player(context, gateway.base, "b2")
    viewer.wait_for_selector("body[data-state=waiting]", timeout=10000)
    assert "Waiting for host" in viewer.inner_text("#stage-status")
    host = go_live(context, gateway.base, "b2")
    viewer.wait_for_selector("body[data-state=playing]", timeout=20000)
    host.click("#stop")
    viewer.wait_for_selector("body[data-state=waiting]", timeout=15000)
    assert "Waiting for host" in viewer.inner_text("#stage-status")
    before = frames(viewer)
    host.click("#go-live")
    host.wait_for_selector("body[data-state=live]", timeout=15000)
    viewer.wait_for_selector("body[data-state=playing]", timeout=20000)
    viewer.wait_for_function(f"window.cherryPlayer.quality.framesDecoded > {before + 20}", timeout=10000)
    host.click("#stop")


def test_bad_token_is_explained(context, gateway):
    page = context.new_page()
    page.goto(f"{gateway.base}/broadcast?room=b3#token=not-a-token")
    page.wait_for_function("document.querySelector('#preview').videoWidth > 0", timeout=15000)
    page.click("#go-live")
    page.wait_for_selector("#message.error", timeout=10000)
    assert "token was rejected" in page.inner_text("#message")
    assert page.is_visible("#token-row")


def test_second_host_is_told_the_room_is_live(context, gateway):
    first = go_live(context, gateway.base, "b4", identity="first")
    second = context.new_page()
    second.goto(f"{gateway.base}/broadcast?room=b4&identity=second")
    second.wait_for_function("document.querySelector('#preview').videoWidth > 0", timeout=15000)
    second.click("#go-live")
    second.wait_for_selector("#message.error", timeout=10000)
    assert "already live" in second.inner_text("#message")
    first.click("#stop")


def test_denied_camera_is_explained(context, gateway):
    page = context.new_page()
    page.add_init_script("""navigator.mediaDevices.getUserMedia = () =>
        Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));""")
    page.goto(f"{gateway.base}/broadcast?room=b5")
    page.wait_for_selector("#message.error", timeout=10000)
    assert "access was denied" in page.inner_text("#message")
    assert page.is_disabled("#go-live")


def test_host_studio_reconnects_after_its_session_is_dropped(context, gateway):
    host = go_live(context, gateway.base, "b6")
    viewer = open_player(context, gateway.base, "b6")
    viewer.wait_for_selector("body[data-state=playing]", timeout=20000)
    dropped = host.evaluate("window.cherryStudio.session")
    # the gateway ends the session (as an operator kick or a crash of the path would)
    host.evaluate("""async () => { const s = window.cherryStudio;
        await fetch(s.session, {method: 'DELETE', headers: {Authorization: 'Bearer ' + s.token}}); }""")
    host.wait_for_function(f"window.cherryStudio.session && window.cherryStudio.session !== '{dropped}'",
                           timeout=30000)
    host.wait_for_selector("body[data-state=live]", timeout=20000)
    before = frames(viewer)
    viewer.wait_for_function(f"window.cherryPlayer.quality.framesDecoded > {before + 20}", timeout=20000)
    host.click("#stop")


BOX_JS = "e => { const r = e.getBoundingClientRect(); return {left: r.left, top: r.top, right: r.right, " \
    "bottom: r.bottom, width: r.width, height: r.height}; }"


# The snapshot figures from the gateway's /metrics, read inside the page (the namespace holds the gateway).
SNAPSHOT_FIGURES_JS = """async () => {
  const text = await (await fetch('/metrics')).text();
  const read = (name) => Number((text.match(new RegExp('^' + name + ' ([0-9.e+-]+)$', 'm')) || [0, 0])[1]);
  return {decodes: read('cherry_snapshot_decodes_total'), rounds: read('cherry_snapshot_rounds_total')};
}"""


def _listed(page) -> list[str]:  # type: ignore[no-untyped-def]
    return [a.get_attribute("data-room") for a in page.query_selector_all("#rooms a.card")]


def test_room_list_searches_and_filters_by_category(context, gateway):  # type: ignore[no-untyped-def]
    host = context.new_page()
    host.goto(f"{gateway.base}/broadcast?room=list1&identity=lena")
    host.wait_for_function("document.querySelector('#preview').videoWidth > 0", timeout=15000)
    host.fill("#title", "Acoustic night")
    host.wait_for_selector("#category option[value=Music]", state="attached", timeout=5000)
    host.select_option("#category", "Music")
    host.fill("#tags", "guitar, chill")
    host.click("#go-live")
    host.wait_for_selector("body[data-state=live]", timeout=15000)
    other = go_live(context, gateway.base, "list2", identity="max", title="Retro speedruns")
    rooms = context.new_page()
    rooms.goto(f"{gateway.base}/")
    rooms.wait_for_selector("a.card[data-room=list1]", timeout=10000)
    card = rooms.inner_text("a.card[data-room=list1]")
    assert "Acoustic night" in card and "Music" in card and "#guitar" in card and "#chill" in card, card
    assert "LIVE" in card and "👁" in card, card
    rooms.fill("#search", "guitar")
    rooms.wait_for_function("!document.querySelector('a.card[data-room=list2]')", timeout=5000)
    assert "list1" in _listed(rooms)
    rooms.fill("#search", "")
    rooms.wait_for_selector("a.card[data-room=list2]", timeout=5000)
    rooms.click("#categories .chip[data-category=Music]")
    rooms.wait_for_function("!document.querySelector('a.card[data-room=list2]')", timeout=5000)
    assert rooms.get_attribute("#categories .chip[data-category=Music]", "aria-pressed") == "true"
    rooms.fill("#search", "speedruns")  # Music and speedruns: nothing
    rooms.wait_for_selector("#no-match:not([hidden])", timeout=5000)

    # Covers: a still of each stream, renewed while it streams (a browser host sends keyframes only when asked:
    # the snapshot rounds ask), decoded once per room per round however many watch.
    rooms.fill("#search", "")
    rooms.click("#categories .chip[data-category='']")
    cover = "a.card[data-room=list1] .cover img"
    rooms.wait_for_function(f"(i => i && i.complete && i.naturalWidth === 320)(document.querySelector('{cover}'))",
                            timeout=15000)
    first = rooms.get_attribute(cover, "src")
    rooms.wait_for_function(f"document.querySelector('{cover}').getAttribute('src') !== '{first}'", timeout=20000)
    other.click("#stop")  # one room with video left: the round's decodes are its own
    before = rooms.evaluate(SNAPSHOT_FIGURES_JS)
    viewers = [open_player(context, gateway.base, "list1") for _ in range(3)]
    for viewer in viewers:
        viewer.wait_for_selector("body[data-state=playing]", timeout=20000)
    until(rooms, f"async () => (await ({SNAPSHOT_FIGURES_JS})()).rounds >= {before['rounds'] + 3}",
          "three snapshot rounds did not run", 20)
    after = rooms.evaluate(SNAPSHOT_FIGURES_JS)
    decodes, rounds = after["decodes"] - before["decodes"], after["rounds"] - before["rounds"]
    assert 1 <= decodes <= rounds, f"{decodes} cover decodes in {rounds} rounds with 3 viewers watching"
    host.click("#stop")


def test_pages_fit_a_phone_screen(browser, gateway, shots):
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True, bypass_csp=True)
    try:
        for path in ("/", "/broadcast?room=b7", "/watch?room=b7"):
            page = phone.new_page()
            page.goto(gateway.base + path)
            page.wait_for_load_state("networkidle")
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{path} scrolls sideways by {overflow}px on a phone"
            if path.startswith("/watch"):
                page.screenshot(path=str(shots / "watch-phone.png"))
        # Held upright, as live apps are used. The studio streams upright, the preview is upright and going
        # live is at hand without scrolling.
        studio = phone.new_page()
        studio.goto(f"{gateway.base}/broadcast?room=b7&identity=phonehost")
        studio.wait_for_function("(v => v.videoHeight > v.videoWidth)(document.querySelector('#preview'))",
                                 timeout=15000)
        assert studio.input_value("#orientation") == "portrait"
        preview = studio.eval_on_selector(".stage", BOX_JS)
        assert preview["height"] > preview["width"], preview
        assert studio.eval_on_selector("#go-live", BOX_JS)["bottom"] <= 844, "go live is below the fold"
        studio.click("#go-live")
        studio.wait_for_selector("body[data-state=live]", timeout=15000)
        # The player: the picture fills the screen, chat over its lower part, likes and gifts on its right edge.
        player = phone.new_page()
        player.goto(f"{gateway.base}/watch?room=b7")
        # (Everything on it is fixed to the screen, so the body itself has no size: attached, not visible.)
        player.wait_for_selector("body[data-state=playing]", state="attached", timeout=20000)
        player.wait_for_selector("#gift-buttons button", timeout=15000)
        stage = player.eval_on_selector(".stage", BOX_JS)
        assert (stage["left"], stage["top"], stage["width"], stage["height"]) == (0, 0, 390, 844), stage
        chat = player.eval_on_selector("#composer", BOX_JS)
        assert chat["bottom"] <= 844 and chat["top"] > 844 / 2, chat
        for selector in ("#like", "#gift-buttons button:last-child", "#toggle-danmaku"):
            box = player.eval_on_selector(selector, BOX_JS)
            assert box["right"] <= 390 and box["bottom"] <= 844 and box["top"] >= 0, (selector, box)
        assert player.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0
        player.screenshot(path=str(shots / "watch-phone.png"))
        studio.click("#stop")
    finally:
        phone.close()


def test_danmaku_chat_gifts_likes_and_moderation_between_pages(context, gateway, shots):
    host = go_live(context, gateway.base, "b8", identity="anchor")
    viewer = context.new_page()
    viewer.goto(f"{gateway.base}/watch?room=b8&identity=fan1")
    viewer.wait_for_selector("#gift-buttons button", timeout=15000)
    viewer.fill("#chat-input", "first! 🎉")
    viewer.click("#composer button")
    # the message flies over the video and lands in both feeds
    viewer.wait_for_selector("#danmaku span:has-text('first! 🎉')", timeout=5000)
    # Danmaku stays clear of the controls and of where the PK scoreboard sits (shown here for the measurement).
    boxes = viewer.evaluate("""() => {
      const box = (s) => document.querySelector(s).getBoundingClientRect();
      const board = document.querySelector('#scoreboard'); board.hidden = false;
      const out = {layer: box('#danmaku'), controls: box('.stage .controls'), board: box('#scoreboard'),
                   line: box('#danmaku span')};
      board.hidden = true;
      return out;
    }""")
    assert boxes["layer"]["bottom"] <= boxes["controls"]["top"], boxes
    assert boxes["layer"]["top"] >= boxes["board"]["bottom"], boxes
    assert boxes["line"]["bottom"] <= boxes["controls"]["top"], boxes
    host.wait_for_selector("#feed li:has-text('first! 🎉')", timeout=5000)
    viewer.click("#gift-buttons button[data-gift=rose]")
    host.wait_for_function("document.querySelector('#gift-totals').textContent.includes('1')", timeout=5000)
    viewer.click("#like")
    host.wait_for_function("document.querySelector('#likes').textContent === '1'", timeout=5000)
    viewer.click("#toggle-danmaku")
    assert viewer.inner_text("#toggle-danmaku") == "Danmaku off"
    viewer.screenshot(path=str(shots / "watch-chat.png"))
    # No chips on the lines (gifts included): one name button each, the user card behind it.
    assert host.locator("#feed li button.mini").count() == 0
    assert host.locator("#feed li[data-identity=fan1] button.name").count() == host.locator(
        "#feed li[data-identity=fan1]").count()
    # the host mutes the fan from the chat line
    moderate(host, "fan1", "mute")
    viewer.wait_for_selector("#feed li.mod-line:has-text('fan1 was muted')", timeout=5000)
    viewer.fill("#chat-input", "am I muted?")
    viewer.click("#composer button")
    viewer.wait_for_selector("#chat-error:has-text('muted')", timeout=5000)
    host.screenshot(path=str(shots / "broadcast-chat.png"))
    host.click("#stop")


PK_BOXES_JS = """() => {
  const box = (e) => { const r = e.getBoundingClientRect();
    return {left: r.left, right: r.right, top: r.top, bottom: r.bottom, width: r.width, height: r.height}; };
  const tiles = [...document.querySelectorAll('.tile')].filter((t) => !t.hidden);
  return {stage: box(document.querySelector('.stage')), tiles: tiles.map(box),
          fit: tiles.map((t) => getComputedStyle(t.querySelector('video')).objectFit)};
}"""


def test_pk_between_two_host_studios_shows_both_pictures_to_viewers(context, gateway, shots):
    host_a = go_live(context, gateway.base, "pk1", identity="alpha")
    host_b = go_live(context, gateway.base, "pk2", identity="beta", portrait=True)  # a phone-first host
    viewer = open_player(context, gateway.base, "pk1")
    viewer.wait_for_selector("body[data-state=playing]", timeout=20000)
    host_a.wait_for_function("window.cherryStudioChat.events.ws.readyState === 1", timeout=10000)
    host_b.wait_for_function("window.cherryStudioChat.events.ws.readyState === 1", timeout=10000)
    # The opponent is picked from the rooms live now (this one and rooms in a battle left out).
    host_a.focus("#pk-room")
    host_a.wait_for_function("[...document.querySelectorAll('#pk-opponents option')].some(o => o.value === 'pk2')",
                             timeout=5000)
    assert "pk1" not in host_a.eval_on_selector_all("#pk-opponents option", "os => os.map(o => o.value)")
    host_a.fill("#pk-room", "pk2")
    host_a.click("#pk-invite")
    host_b.wait_for_selector("#pk-incoming:not([hidden])", timeout=10000)
    host_b.click("#pk-accept")
    for page in (host_a, host_b):
        page.wait_for_selector("body[data-pk=on]", timeout=10000)
    # the viewer's page shows its host and the partner side by side, both moving
    viewer.wait_for_selector('.tile[data-slot="1"]:not([hidden])', timeout=10000)
    partner = '.tile[data-slot="1"] video'
    viewer.wait_for_function(f"document.querySelector('{partner}').videoWidth > 0", timeout=15000)
    first = [viewer.eval_on_selector(sel, PIXELS) for sel in ("#player", partner)]
    viewer.wait_for_timeout(1500)  # let both pictures move on
    second = [viewer.eval_on_selector(sel, PIXELS) for sel in ("#player", partner)]
    for before, after in zip(first, second, strict=True):
        assert after["mean"] > 10 and before["fingerprint"] != after["fingerprint"], "a PK picture is black or still"
    assert viewer.is_visible("#scoreboard")
    # The two tiles fill the stage side by side, the portrait partner in a portrait tile, each picture covering it.
    viewer.wait_for_function(f"(v => v.videoHeight > v.videoWidth)(document.querySelector('{partner}'))", timeout=10000)
    viewer.wait_for_function("document.querySelector('.stage').classList.contains('pk')", timeout=5000)
    boxes = viewer.evaluate(PK_BOXES_JS)
    stage, mine, theirs = boxes["stage"], boxes["tiles"][0], boxes["tiles"][1]
    for tile in (mine, theirs):
        assert abs(tile["top"] - stage["top"]) <= 1 and abs(tile["bottom"] - stage["bottom"]) <= 1, boxes
    assert abs(mine["left"] - stage["left"]) <= 1 and abs(theirs["right"] - stage["right"]) <= 1, boxes
    assert theirs["left"] - mine["right"] <= 3, f"a gap between the tiles: {boxes}"
    assert theirs["width"] < theirs["height"] and mine["width"] > theirs["width"], f"portrait not portrait: {boxes}"
    assert boxes["fit"] == ["cover", "cover"], boxes
    # A gift for the partner's side moves the red/blue bar off even.
    viewer.wait_for_selector("#gift-buttons button", timeout=10000)
    assert viewer.eval_on_selector("#pk-bar", "b => b.style.getPropertyValue('--red')") == "50%"
    viewer.select_option("#gift-side", "pk2")
    viewer.click("#gift-buttons button[data-gift=rocket]")
    viewer.wait_for_function("document.querySelector('#pk-bar').style.getPropertyValue('--red') === '0%'",
                             timeout=10000)
    # each host sees its partner
    host_a.wait_for_function("document.querySelector('#partner').videoWidth > 0", timeout=15000)
    viewer.screenshot(path=str(shots / "watch-pk.png"))
    host_a.screenshot(path=str(shots / "broadcast-pk.png"), full_page=True)
    host_a.click("#pk-end")
    viewer.wait_for_selector("#pk-result:not([hidden])", timeout=10000)
    assert "beta wins" in viewer.inner_text("#pk-result"), viewer.inner_text("#pk-result")
    viewer.wait_for_selector('.tile[data-slot="1"]', state="hidden", timeout=10000)
    host_b.wait_for_selector("body[data-pk=off]", timeout=10000)
    assert "PK over" in host_b.inner_text("#pk-status")
    before = frames(viewer)
    viewer.wait_for_function(f"window.cherryPlayer.quality.framesDecoded > {before + 20}", timeout=10000)
    host_a.click("#stop")
    host_b.click("#stop")


def test_pages_work_under_their_content_security_policy(browser, gateway):
    """The other tests bypass the policy (Playwright's predicates are eval'd strings): here nothing does."""
    strict = browser.new_context(viewport={"width": 1100, "height": 900})
    refused: list[str] = []
    try:
        strict.on("console", lambda msg: refused.append(msg.text) if "Content Security Policy" in msg.text else None)
        host = strict.new_page()
        host.goto(f"{gateway.base}/broadcast?room=csp1&identity=csphost")
        host.click("#go-live", timeout=15000)
        host.wait_for_selector("body[data-state=live]", timeout=15000)
        viewer = strict.new_page()
        viewer.goto(f"{gateway.base}/watch?room=csp1")
        viewer.wait_for_selector("body[data-state=playing]", timeout=20000)
        for path in ("/", "/dashboard"):
            strict.new_page().goto(gateway.base + path, wait_until="networkidle")
        assert viewer.evaluate("window.cherryPlayer.quality ? window.cherryPlayer.quality.framesDecoded : 0") >= 0
        host.click("#stop")
        assert not refused, refused
    finally:
        strict.close()
