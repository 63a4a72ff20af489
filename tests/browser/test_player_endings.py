"""How watching ends, in Chromium: removed, banned, a bad token or room name; each said plainly, none retried.

"Not retried" is the player's own state (``stopped``, no connection), which nothing restarts: proving an
absence by waiting would only prove it for as long as the wait.
"""

from __future__ import annotations

from tests.browser.test_pages import go_live, moderate

ENDED = "window.cherryPlayer.stopped === true && window.cherryPlayer.pc === null"


def _viewer(context, base: str, room: str, identity: str):  # type: ignore[no-untyped-def]
    page = context.new_page()
    page.goto(f"{base}/watch?room={room}&identity={identity}")
    page.wait_for_selector("body[data-state=playing]", timeout=20000)
    page.wait_for_selector("#gift-buttons button", timeout=15000)  # the room socket is open
    page.fill("#chat-input", "hello")
    page.click("#composer button")
    return page


def test_a_kicked_viewer_sees_it_was_removed_and_is_not_rejoined(context, gateway):  # type: ignore[no-untyped-def]
    host = go_live(context, gateway.base, "end1", identity="anchor1")
    viewer = _viewer(context, gateway.base, "end1", "fan9")
    moderate(host, "fan9", "kick")
    viewer.wait_for_selector("body[data-state=removed]", timeout=10000)
    assert "You were removed from this room." in viewer.inner_text("#stage-status")
    viewer.wait_for_function(ENDED, timeout=5000)
    assert viewer.is_visible("#stage-status a[href='/']")
    host.wait_for_selector("#feed li.mod-line:has-text('fan9 was kicked')", timeout=5000)
    host.click("#stop")


def test_a_banned_viewer_sees_a_clear_screen_now_and_on_its_next_visit(context, gateway):  # type: ignore[no-untyped-def]
    host = go_live(context, gateway.base, "end2", identity="anchor2")
    viewer = _viewer(context, gateway.base, "end2", "fan8")
    # A ban asks first: cancelled, nothing happens; confirmed, the viewer is out.
    host.click("#feed li[data-identity=fan8] button.name", timeout=10000)
    host.click("#card-ban")
    assert "Ban fan8 from this room for 1 day?" in host.inner_text("#card-confirm-text")
    host.click("#card-ban-no")
    assert host.is_visible("#card-actions") and not host.is_visible("#card-confirm")
    host.click("#card-close")
    assert viewer.evaluate("window.cherryPlayer.pc.connectionState") == "connected"
    moderate(host, "fan8", "ban")
    viewer.wait_for_selector("body[data-state=banned]", timeout=10000)
    assert "You are banned from this room." in viewer.inner_text("#stage-status")
    viewer.wait_for_function(ENDED, timeout=5000)
    again = context.new_page()
    again.goto(f"{gateway.base}/watch?room=end2&identity=fan8")
    again.wait_for_selector("body[data-state=banned]", timeout=10000)
    again.wait_for_function(ENDED, timeout=5000)
    # The studio lists the ban, and lifting it lets the viewer back in.
    host.wait_for_selector("#bans li[data-identity=fan8]", state="attached", timeout=5000)
    assert host.inner_text("#bans-count") == "1"
    host.click("#bans-box summary")
    host.click("#bans li[data-identity=fan8] button:has-text('unban')")
    host.wait_for_selector("#bans li[data-identity=fan8]", state="detached", timeout=5000)
    back = context.new_page()
    back.goto(f"{gateway.base}/watch?room=end2&identity=fan8")
    back.wait_for_selector("body[data-state=playing]", timeout=20000)
    host.click("#stop")


def test_a_bad_token_is_explained_once_and_a_pasted_one_starts_video_and_chat(context, gateway):  # type: ignore[no-untyped-def]
    host = go_live(context, gateway.base, "end3", identity="anchor3")
    page = context.new_page()
    page.goto(f"{gateway.base}/watch?room=end3#token=not-a-token")
    page.wait_for_selector("body[data-state=refused]", timeout=10000)
    assert "This token cannot watch this room" in page.inner_text("#stage-status")
    assert page.is_visible("#token-row")
    page.wait_for_function(ENDED, timeout=5000)
    good = page.evaluate("async () => (await (await fetch('/dev/token?room=end3&role=viewer')).json()).token")
    page.fill("#token", good)
    page.click("#token-save")
    page.wait_for_selector("body[data-state=playing]", timeout=20000)
    page.wait_for_selector("#gift-buttons button", timeout=15000)  # the room events started with the token too
    page.fill("#chat-input", "pasted")
    page.click("#composer button")
    host.wait_for_selector("#feed li:has-text('pasted')", timeout=5000)
    host.click("#stop")


def test_a_bad_room_name_is_explained_without_retrying(context, gateway):  # type: ignore[no-untyped-def]
    page = context.new_page()
    page.goto(f"{gateway.base}/watch?room=no%20such%20room")
    page.wait_for_function("document.querySelector('#stage-status').textContent.includes('There is no such room')",
                           timeout=10000)
    assert page.evaluate("window.cherryPlayer.pc") is None


def test_fullscreen_and_volume_controls_work(context, gateway):  # type: ignore[no-untyped-def]
    host = go_live(context, gateway.base, "ctl1", identity="anchor4")
    page = context.new_page()
    page.goto(f"{gateway.base}/watch?room=ctl1")
    page.wait_for_selector("body[data-state=playing]", timeout=20000)
    page.click("#fullscreen")
    page.wait_for_function("document.fullscreenElement === document.querySelector('.stage')", timeout=5000)
    page.wait_for_function("document.querySelector('#fullscreen').textContent === 'Exit fullscreen'", timeout=5000)
    fills = "(() => { const e = document.querySelector('.stage'); " \
            "return e.clientWidth === innerWidth && e.clientHeight === innerHeight; })()"
    page.wait_for_function(fills, timeout=5000)  # the stage fills the screen (once the resize has happened)
    page.click("#fullscreen")
    page.wait_for_function("document.fullscreenElement === null", timeout=5000)
    page.wait_for_function("document.querySelector('#fullscreen').textContent === 'Fullscreen'", timeout=5000)
    # Volume: raising it from muted unmutes; zero mutes again; every slot's element follows.
    assert page.evaluate("document.querySelector('#player').muted") is True
    set_volume = "(e, v) => { e.value = v; e.dispatchEvent(new Event('input')); }"
    page.eval_on_selector("#volume", set_volume, "0.3")
    state = page.evaluate("[...document.querySelectorAll('#tiles video')].map(v => [v.volume, v.muted])")
    assert all(abs(volume - 0.3) < 1e-6 and not muted for volume, muted in state), state
    assert page.inner_text("#unmute") == "Mute"
    page.eval_on_selector("#volume", set_volume, "0")
    assert page.evaluate("document.querySelector('#player').muted") is True
    host.click("#stop")


def test_the_host_finds_a_viewer_in_the_people_list_and_removes_it(context, gateway):  # type: ignore[no-untyped-def]
    host = go_live(context, gateway.base, "end4", identity="anchor4")
    quiet = context.new_page()  # watches and never chats: only the list finds it
    quiet.goto(f"{gateway.base}/watch?room=end4&identity=lurker")
    quiet.wait_for_selector("body[data-state=playing]", timeout=20000)
    _viewer(context, gateway.base, "end4", "talker")
    host.click("#people-box summary")
    host.wait_for_selector("#people li[data-identity=lurker]", timeout=10000)
    assert host.inner_text("#people-count") == "3"  # the host, the lurker and the talker
    people = [li.get_attribute("data-identity") for li in host.query_selector_all("#people li")]
    assert people == ["anchor4", "lurker", "talker"], people
    assert "watching" in host.inner_text("#people li[data-identity=lurker]")
    host.click("#people li[data-identity=lurker] button.name")
    host.wait_for_selector("#user-card:not([hidden])", timeout=5000)
    host.click("#card-kick")
    quiet.wait_for_selector("body[data-state=removed]", timeout=10000)
    host.wait_for_function("!document.querySelector('#people li[data-identity=lurker]')", timeout=10000)
    host.click("#stop")
