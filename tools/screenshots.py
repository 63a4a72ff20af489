"""The README's screenshots: real pages in real Chromium, staged, written to docs/screenshots.

``make screenshots`` runs ``python -m tools.screenshots [--out DIR]``. It starts a dev gateway and a
headless Chromium per camera (each with a generated clip, so every room, cover, PK partner and guest
shows its own picture) together in a loopback-only network namespace of its own, as the browser tests
do, then plays a small evening of live rooms: four hosts go live, viewers chat, send gifts and likes,
one goes on mic, two hosts battle in a PK, and the SRE dashboard watches. Each scene waits on the
pages' own state and is bounded in time; the gateway, the browsers and the namespace are gone when it
exits, whatever happened.

Needs root, iproute2, Debian's /usr/bin/chromium, Python Playwright and an emoji font (gifts are emoji:
Debian's fonts-noto-color-emoji). Exit: 0 written, 1 a scene failed, 2 cannot run here.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from loadtests.webrtc.process import GatewayProcess
from tests import chromium
from tools.camera_clip import Colour, write_clip

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, ViewportSize

ROOT = Path(__file__).resolve().parent.parent
EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
INSTALL_FONT = "apt-get install fonts-noto-color-emoji"
DESKTOP: ViewportSize = {"width": 1100, "height": 900}  # the size the README's tables were laid out for
PHONE: ViewportSize = {"width": 390, "height": 844}
# Chromium names a file camera by the clip's path (a temp directory) and the studio lists it by that name.
CAMERA_NAME_JS = """(() => {
  const label = Object.getOwnPropertyDescriptor(MediaDeviceInfo.prototype, 'label').get;
  Object.defineProperty(MediaDeviceInfo.prototype, 'label', {
    get() { const name = label.call(this); return name.endsWith('.y4m') ? 'Studio camera' : name; } });
})();"""
SETTLE_MS = 600  # lets a last layout change, a fading overlay or a danmaku line come to rest before the shot


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.screenshots", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"),
                        help="where the PNGs go (default: docs/screenshots, the README's)")
    # Inside its own namespace the gateway has every port to itself; 8080 is what the pages then show
    # in their links, as `make run` would.
    parser.add_argument("--port", type=int, default=8080, help="the gateway's port inside the namespace (8080)")
    parser.add_argument("--scene-timeout", type=float, default=30.0, metavar="SECONDS",
                        help="how long one scene may take to come up before the run fails (30)")
    parser.add_argument("--plain-camera", action="store_true",
                        help="Chromium's own fake camera (a green timer) instead of the generated gradient clips")
    return parser.parse_args(argv)


def emoji_font_present(font: Path = EMOJI_FONT, fc_list: Callable[[], str] | None = None) -> bool:
    """Noto Color Emoji's file, or any font fontconfig lists as an emoji font."""
    if font.exists():
        return True
    listing = (fc_list or _fc_list)()
    return "emoji" in listing.lower()


def _fc_list() -> str:
    if shutil.which("fc-list") is None:
        return ""
    return subprocess.run(["fc-list"], capture_output=True, text=True, check=False).stdout


def unavailable(font_present: Callable[[], bool] = emoji_font_present) -> str | None:
    """Why the screenshots cannot be made here (one line), or None."""
    reason = chromium.unavailable()
    if reason:
        return reason
    if not font_present():
        return f"no emoji font, so gifts would render as boxes: {INSTALL_FONT}"
    return None


class SceneFailed(RuntimeError):
    """A scene did not come up in time; the message says which and what it waited for."""


@dataclass
class Scene:
    """One staged moment, bounded as a whole: every wait gets only what is left of the scene's time."""

    name: str
    seconds: float
    deadline: float = field(init=False)
    waiting_for: str = field(init=False, default="")  # for the failure's message

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.seconds

    def left_ms(self, waiting_for: str = "") -> float:
        self.waiting_for = waiting_for
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise SceneFailed(self.failure())
        return left * 1000

    def failure(self, detail: str = "") -> str:
        waiting = f", waiting for: {self.waiting_for}" if self.waiting_for else ""
        return f"scene {self.name!r} did not come up within {self.seconds:.0f} s{waiting}" + (
            f" ({detail})" if detail else "")

    def selector(self, page: Page, selector: str,
                 state: Literal["attached", "detached", "hidden", "visible"] = "visible") -> None:
        page.wait_for_selector(selector, state=state, timeout=self.left_ms(selector))

    def until(self, page: Page, predicate: str) -> None:
        page.wait_for_function(predicate, timeout=self.left_ms(" ".join(predicate.split())))

    def click(self, page: Page, selector: str) -> None:
        page.click(selector, timeout=self.left_ms(f"click {selector}"))


class Stage:
    """The gateway's address, the browsers' contexts, where the shots go, and the scenes run so far."""

    def __init__(self, base: str, out: Path, scene_seconds: float) -> None:
        self.base = base
        self.out = out
        self.scene_seconds = scene_seconds
        self.written: list[Path] = []
        self.errors: list[str] = []

    @contextmanager
    def scene(self, name: str) -> Iterator[Scene]:
        from playwright.sync_api import Error as PlaywrightError

        started = time.monotonic()
        scene = Scene(name, self.scene_seconds)
        try:
            yield scene
        except PlaywrightError as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise SceneFailed(scene.failure(first)) from None
        print(f"  {name}: {time.monotonic() - started:.1f} s", flush=True)

    def shoot(self, page: Page, name: str, *, full_page: bool = False) -> None:
        page.wait_for_timeout(SETTLE_MS)
        path = self.out / name
        page.screenshot(path=str(path), full_page=full_page)
        self.written.append(path)

    def watch(self, context: BrowserContext, name: str) -> Page:
        """A page whose script errors are reported at the end (a shot of a broken page is no shot)."""
        page = context.new_page()
        page.on("pageerror", lambda error: self.errors.append(f"{name}: {error}"))
        return page


# -- the pages, driven as the browser tests drive them (tests/browser/test_pages.py) --------------------

def go_live(stage: Stage, scene: Scene, context: BrowserContext, room: str, preset: str | None = None) -> Page:
    listing = ROOMS[room]
    page = stage.watch(context, f"studio {room}")
    page.goto(f"{stage.base}/broadcast?room={room}&identity={listing.host}", timeout=scene.left_ms())
    scene.until(page, "document.querySelector('#preview').videoWidth > 0")
    if listing.upright:
        page.select_option("#orientation", "portrait")
        scene.until(page, "(v => v.videoHeight > v.videoWidth)(document.querySelector('#preview'))")
    page.fill("#title", listing.title)
    scene.selector(page, f"#category option[value='{listing.category}']", state="attached")  # from /pages/config
    page.select_option("#category", listing.category)
    page.fill("#tags", listing.tags)
    if preset:
        page.select_option("#preset", preset)
    scene.click(page, "#go-live")
    scene.selector(page, "body[data-state=live]")
    return page


def open_player(stage: Stage, scene: Scene, context: BrowserContext, room: str, identity: str | None = None,
                *, wait: bool = True) -> Page:
    """A player on ``room``; ``wait=False`` leaves :func:`playing` to the caller (players joining together)."""
    page = stage.watch(context, f"player {room} {identity or ''}".strip())
    query = f"room={room}" + (f"&identity={identity}" if identity else "")
    page.goto(f"{stage.base}/watch?{query}", timeout=scene.left_ms())
    if wait:
        playing(scene, page)
    return page


def playing(scene: Scene, page: Page) -> None:
    # Attached, not visible: on a phone everything is fixed to the screen and the body itself has no size.
    scene.selector(page, "body[data-state=playing]", state="attached")
    scene.until(page, "window.cherryPlayer.quality && window.cherryPlayer.quality.framesDecoded > 10")
    scene.selector(page, "#gift-buttons button")  # the room socket's welcome is in


def say(scene: Scene, page: Page, text: str) -> None:
    page.fill("#chat-input", text)
    scene.click(page, "#composer button")


def gift(scene: Scene, page: Page, kind: str, times: int = 1, side: str | None = None) -> None:
    if side:
        page.select_option("#gift-side", side)
    for _ in range(times):
        scene.click(page, f"#gift-buttons button[data-gift={kind}]")


def like(scene: Scene, page: Page, times: int) -> None:
    for _ in range(times):
        scene.click(page, "#like")


def feed_has(text: str) -> str:
    """A predicate: the page's chat feed shows a line containing ``text``."""
    return f"[...document.querySelectorAll('#feed li')].some((li) => li.textContent.includes({text!r}))"


# -- the evening ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Room:
    host: str
    title: str
    category: str  # one of the gateway's default rooms.categories
    tags: str
    upright: bool = False  # a phone-first host: portrait orientation, from an upright clip




ROOMS = {
    "festival": Room("mika", "Summer festival warm-up 🎆", "Outdoors", "fireworks, summer"),
    "lofi": Room("jun", "Late-night lo-fi coding ☕", "Music", "lofi, python", upright=True),
    "kitchen": Room("ana", "Dumplings from scratch 🥟", "Food", "cooking"),
    "chess": Room("leo", "Sunday blitz chess ♟️", "Gaming", "chess, blitz"),
}
# One browser per camera (Chromium's fake camera is one clip per browser process), so every room's picture,
# cover, PK partner and guest looks like somebody else: whose camera -> (the clip's words, its two colours).
CAMERAS: dict[str, tuple[str, tuple[Colour, Colour]]] = {
    "mika": ("mika · summer festival", ((226, 54, 96), (255, 176, 64))),
    "jun": ("jun · lo-fi coding", ((40, 70, 200), (40, 200, 170))),
    "ana": ("ana · dumplings", ((230, 120, 40), (250, 220, 120))),
    "leo": ("leo · blitz chess", ((70, 60, 90), (150, 150, 170))),
    "tomo": ("tomo · on mic", ((120, 40, 200), (230, 90, 200))),
}
COVERS_SHOWN = """[...document.querySelectorAll('a.card')].every((card) => {
  const img = card.querySelector('.cover img'); return img && img.complete && img.naturalWidth > 0; })"""


def stage_evening(stage: Stage, browsers: dict[str, Browser]) -> None:
    """All the scenes, in an order where each leaves the next what it needs (and as few streams as it can)."""
    contexts: dict[str, BrowserContext] = {}
    for who, browser in browsers.items():
        context = contexts[who] = browser.new_context(viewport=DESKTOP, bypass_csp=True)  # for wait_for_function
        context.add_init_script(CAMERA_NAME_JS)
        # A backstop for the calls not given a scene's remaining time (fill, select, screenshot).
        context.set_default_timeout(stage.scene_seconds * 1000)
    # Viewers use no camera: they sit in the browser of the host they watch (tomo has its own, to go on mic).
    festival, lofi = contexts["mika"], contexts["jun"]

    with stage.scene("four rooms go live") as scene:
        hosts = {room: go_live(stage, scene, contexts[listing.host], room, preset=None if room == "festival" else "360")
                 for room, listing in ROOMS.items()}
        # Open from the start, so its charts have the whole evening behind them when its turn comes.
        dashboard = stage.watch(festival, "dashboard")
        dashboard.goto(f"{stage.base}/dashboard", timeout=scene.left_ms())

    # Players join together (each connects while the others do): one after the other took most of a scene's time.
    with stage.scene("viewers join") as scene:
        sakura = open_player(stage, scene, festival, "festival", "sakura", wait=False)
        tomo = open_player(stage, scene, contexts["tomo"], "festival", "tomo", wait=False)
        rin = open_player(stage, scene, lofi, "lofi", "rin", wait=False)
        for page in (sakura, tomo, rin):
            playing(scene, page)

    with stage.scene("an audience for the rooms list") as scene:
        extras = [open_player(stage, scene, contexts[ROOMS[room].host], room, wait=False)
                  for room in ("festival", "kitchen", "chess")]
        for page in extras:
            playing(scene, page)

    with stage.scene("rooms.png") as scene:
        rooms = stage.watch(festival, "rooms")
        rooms.goto(f"{stage.base}/", timeout=scene.left_ms())
        # The list refreshes every 5 s and a cover is made at most every 10 s: wait for all four rooms, their
        # covers and the festival's audience in one refresh.
        scene.until(rooms, f"""document.querySelectorAll('a.card').length >= 4 && {COVERS_SHOWN} &&
            /[3-9]/.test(document.querySelector('a.card[data-room=festival] .count').textContent)""")
        stage.shoot(rooms, "rooms.png")
        rooms.close()

    with stage.scene("two rooms end") as scene:
        # Their decoders and encoders would slow every later scene (and stutter its video) on two cores.
        for page in extras:
            page.close()
        for room in ("kitchen", "chess"):
            scene.click(hosts.pop(room), "#stop")
    for who in ("ana", "leo"):
        contexts.pop(who).close()
        browsers.pop(who).close()

    with stage.scene("watch.png, broadcast.png") as scene:
        # A fresh player, so its stats overlay counts only this calmer part of the evening.
        viewer = open_player(stage, scene, festival, "festival")
        scene.until(viewer, "window.cherryPlayer.quality.framesDecoded > 60")
        scene.click(viewer, "#toggle-quality")
        scene.until(viewer, "/fps/.test(document.querySelector('#quality').textContent)")
        stage.shoot(viewer, "watch.png")
        scene.until(hosts["festival"], "document.querySelector('#fig-fps').textContent !== '–'")
        stage.shoot(hosts["festival"], "broadcast.png")
    viewer.close()

    with stage.scene("broadcast-chat.png") as scene:
        host = hosts["festival"]
        say(scene, sakura, "first! 🎉")
        say(scene, tomo, "the lanterns look amazing 😍")
        gift(scene, sakura, "rose", 2)
        gift(scene, tomo, "rocket")
        like(scene, sakura, 12)
        like(scene, tomo, 5)
        scene.until(host, feed_has("rocket"))
        say(scene, host, "thank you tomo for the rocket! 🚀")
        say(scene, sakura, "can you show the fireworks later?")
        gift(scene, sakura, "heart", 3)
        scene.until(host, feed_has("fireworks"))
        scene.until(host, "document.querySelector('#likes').textContent === '17'")
        stage.shoot(host, "broadcast-chat.png")

    with stage.scene("watch-chat.png") as scene:
        # Danmaku lines live for 7-9 s: send a few now so they are flying when the shot is taken.
        say(scene, tomo, "hello from Osaka 👋")
        gift(scene, tomo, "castle")
        say(scene, sakura, "🎆🎆🎆")
        scene.until(sakura, "document.querySelectorAll('#danmaku span').length >= 3")
        scene.until(sakura, feed_has("Osaka"))
        sakura.wait_for_timeout(1200)  # the newest lines enter from the right edge: let them fly in
        stage.shoot(sakura, "watch-chat.png")

    phone_context = browsers["mika"].new_context(viewport=PHONE, is_mobile=True, has_touch=True, bypass_csp=True)
    phone_context.set_default_timeout(stage.scene_seconds * 1000)
    try:
        with stage.scene("watch-phone.png") as scene:
            # An upright host fills an upright phone.
            phone = open_player(stage, scene, phone_context, "lofi", "kai")
            say(scene, phone, "watching on the train 🚃")
            scene.until(phone, feed_has("train"))
            stage.shoot(phone, "watch-phone.png")
    finally:
        phone_context.close()

    with stage.scene("a guest asks to sing") as scene:
        say(scene, tomo, "can I sing one? 🎤")
        scene.until(hosts["festival"], feed_has("sing one"))
    guest_on_mic(stage, hosts["festival"], tomo, "tomo")

    with stage.scene("watch-pk.png, broadcast-pk.png") as scene:
        host, partner = hosts["festival"], hosts["lofi"]
        for page in (host, partner):
            scene.until(page, "window.cherryStudioChat.events.ws.readyState === 1")
        host.fill("#pk-room", "lofi")
        scene.click(host, "#pk-invite")
        scene.selector(partner, "#pk-incoming:not([hidden])")
        scene.click(partner, "#pk-accept")
        for page in (host, partner):
            scene.selector(page, "body[data-pk=on]")
        scene.selector(sakura, "#gift-side-box:not([hidden])")
        scene.selector(rin, "#gift-side-box:not([hidden])")
        gift(scene, sakura, "castle", side="festival")
        gift(scene, sakura, "rose", 4, side="festival")
        gift(scene, rin, "rocket", 3, side="lofi")
        gift(scene, tomo, "rocket", 2, side="lofi")
        say(scene, sakura, "go mika go! 🔥")
        say(scene, rin, "jun's got this 💪")
        scene.until(host, "document.querySelector('#pk-mine').textContent === 'You 520'")
        scene.until(host, "document.querySelector('#pk-theirs').textContent.startsWith('500 ')")
        scene.selector(sakura, '.tile[data-slot="1"]:not([hidden])')
        scene.until(sakura, "document.querySelector('.tile[data-slot=\"1\"] video').videoWidth > 0")
        scene.until(sakura, "/520/.test(document.querySelector('#score-a').textContent)")
        scene.until(host, "document.querySelector('#partner').videoWidth > 0")
        stage.shoot(sakura, "watch-pk.png")
        stage.shoot(host, "broadcast-pk.png", full_page=True)

    with stage.scene("dashboard.png") as scene:
        scene.selector(dashboard, "body[data-state=ok]")
        scene.selector(dashboard, "#rooms-table tr[data-room=festival]")
        scene.selector(dashboard, "#rooms-table tr[data-room=lofi]")
        # Playback reports arrive every 5 s from each player: the stutter column and figure fill in.
        scene.until(dashboard, """window.cherryDashboard.latest && window.cherryDashboard.latest.watch_reports > 0
            && window.cherryDashboard.points.length >= 5""")
        stage.shoot(dashboard, "dashboard.png", full_page=True)


GUEST_VIDEO = '#guests .guest[data-slot="1"] video'
GUEST_SHOWN = f"document.querySelector('{GUEST_VIDEO}').videoWidth > 0"

def guest_on_mic(stage: Stage, host: Page, guest: Page, identity: str) -> None:
    """The host invites from the user card behind the guest's name on a chat line; the guest accepts."""
    with stage.scene("broadcast-guest.png") as scene:
        scene.click(host, f"#feed li[data-identity={identity}] button.name")
        scene.selector(host, "#user-card:not([hidden])")
        scene.click(host, "#card-mic")
        scene.selector(guest, "#guest-prompt:not([hidden])")
        scene.click(guest, "#guest-accept")
        scene.selector(guest, "#on-mic:not([hidden])")
        scene.selector(host, '#guests .guest[data-slot="1"]:not([hidden])')
        scene.until(host, GUEST_SHOWN)
        stage.shoot(host, "broadcast-guest.png", full_page=True)
        scene.click(guest, "#leave-mic")
        scene.selector(host, '#guests .guest[data-slot="1"]', state="hidden")


def make_clips(folder: Path) -> dict[str, Path]:
    """A clip per camera, two at a time (numpy lets go of the GIL for most of a frame)."""
    def one(who: str) -> Path:
        words, colours = CAMERAS[who]
        # 24 fps rather than 30: a fifth less encoding and decoding in every page, on a box already saturated.
        width, height = (360, 640) if any(r.upright for r in ROOMS.values() if r.host == who) else (640, 360)
        return write_clip(folder / f"{who}.y4m", title="Cherry Live", subtitle=words, colours=colours, fps=24,
                          width=width, height=height)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(CAMERAS, pool.map(one, CAMERAS), strict=True))


def run(args: argparse.Namespace) -> int:
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cherry-shots-")))
        netns = stack.enter_context(chromium.namespace(f"cherry-shots-{os.getpid()}"))
        gateway = GatewayProcess(work / "gateway.log", module="gateway", port=args.port, netns=netns, cwd=ROOT)
        stack.callback(gateway.stop)
        # The browsers' encoders and decoders saturate two cores; a gateway whose event loop runs late refuses
        # viewers as overloaded and delays packets (stutter in the shots). Its pid is the Python's
        # (`ip netns exec` execs), and root may raise a priority.
        os.setpriority(os.PRIO_PROCESS, gateway.process.pid, -5)
        clips: dict[str, Path | None] = dict.fromkeys(CAMERAS) if args.plain_camera else {**make_clips(work)}
        gateway.wait_healthy(timeout=20)
        stage = Stage(gateway.base_url, args.out, args.scene_timeout)
        wrapper = str(chromium.chromium_in(netns, work))
        playwright = stack.enter_context(sync_playwright())
        browsers: dict[str, Browser] = {}
        for who, clip in clips.items():
            flags = [*chromium.FLAGS, *([f"--use-file-for-fake-video-capture={clip}"] if clip else [])]
            browser = browsers[who] = playwright.chromium.launch(executable_path=wrapper, headless=True, args=flags)
            stack.callback(browser.close)  # closing twice is harmless
        print(f"gateway {gateway.base_url} in namespace {netns}; staging:", flush=True)
        try:
            stage_evening(stage, browsers)
        except SceneFailed as failure:
            print(f"screenshots: {failure}", file=sys.stderr)
            for error in stage.errors:
                print(f"  page error: {error}", file=sys.stderr)
            print(f"gateway log (tail):\n{gateway.log_tail(2000)}", file=sys.stderr)
            return 1
    for error in stage.errors:
        print(f"  page error: {error}", file=sys.stderr)
    names = ", ".join(path.name for path in stage.written)
    print(f"wrote {len(stage.written)} screenshots to {args.out} in {time.monotonic() - started:.0f} s: {names}")
    return 1 if stage.errors else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    reason = unavailable()
    if reason:
        print(f"screenshots: cannot run here: {reason}", file=sys.stderr)
        return 2
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
