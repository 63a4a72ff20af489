"""Lean, non-decoding WHEP viewers; many of them share one asyncio process.

Each viewer is an aiortc connection with recvonly audio + video whose
receivers are tapped (``aiortc_bridge.receiver.ReceiverTap``) before the jitter
buffer: no decoder runs, packets are only grouped into frames and timed.

Measured per viewer: time to first frame (offer POST to the first complete
keyframe, i.e. the first picture a decoder could show), frames, freezes by the
W3C rule, stutter ratio, audio packets, and capture-to-arrival latency of the
frames our synthetic hosts tag (:mod:`loadtests.webrtc.capture_tag`). Only
frames a decoder could show count (:class:`~loadtests.webrtc.metrics.Decodability`:
after a lost frame, nothing until the next keyframe, which the viewer asks for).

By default a viewer receives through :class:`aiortc_bridge.client.LeanRtpPath`
(SRTP unprotected in the datagram callback, no per-packet coroutines); an
optional :class:`loadtests.network.NetworkCondition` impairs its downlink.

As a library: ``configure_ice()`` once, then ``ViewerPool(ViewerOptions(url,
room)).join(n)``, ``mark()``, ``report()``, ``close()``.

As a process it either runs once (``--count N --watch S``) and prints a
summary, or (``--serve``) takes JSON-line commands on stdin and answers on
stdout, so a benchmark or a Locust worker can drive it::

    {"op": "join", "count": 10}   -> {"op": "join", "ok": 10, "failed": 0, "ttff_ms": [...]}
        (optional: "interval": s between offers, "concurrency": negotiating at once, "follow_s": each joiner's
         [ms since its offer, latency ms] of the frames shown in its first seconds, as "early_latency")
    {"op": "mark"}                -> {"op": "mark"}            (watch window starts)
    {"op": "report"}              -> {"op": "report", ...window stats...}
    {"op": "leave"}               -> {"op": "leave", "left": 10}
    {"op": "quit"}                -> exits
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
from aiortc import RTCSessionDescription

from aiortc_bridge.client import LeanRtpPath, RtpCallback, tap_receiver, wrap_ice_delivery
from aiortc_bridge.heap import freeze_start_up_heap, release_later
from aiortc_bridge.receiver import ReceiverTap
from loadtests.network import Impairment, NetworkCondition
from loadtests.webrtc import capture_tag
from loadtests.webrtc.metrics import (
    Decodability,
    FrameAssembler,
    FreezeMeter,
    Histogram,
    WindowStats,
    percentile,
)
from loadtests.webrtc.peer import DEFAULT_ICE_HOSTS, configure_ice, new_peer_connection
from loadtests.webrtc.signaling_client import (
    SessionResource,
    SignalingError,
    delete_resource,
    post_offer,
)
from loadtests.webrtc.token_options import TokenError, TokenSettings, add_token_arguments
from loadtests.webrtc.tokens import DevTokenSource, TokenSource
from loadtests.webrtc.vp8 import descriptor_length

KEYFRAME_REQUEST_INTERVAL = 0.3  # seconds between our PLIs while the picture is broken

# A burst of cached frames comes well under a frame interval apart (30 fps: 33 ms); past this spacing frames
# come at the stream's own pace. A join that never settles is measured from this long after its first frame.
CATCH_UP_SPACING = 0.02
CATCH_UP_LIMIT = 2.0


@dataclass(frozen=True, slots=True)
class ViewerOptions:
    base_url: str
    room: str
    token: str | None = None  # None: one token per viewer from ``tokens``
    first_frame_timeout: float = 15.0
    network: NetworkCondition | None = None  # downlink impairment; None: none
    lean: bool = True  # LeanRtpPath instead of aiortc's per-packet receive path
    wait_for_host: bool = False  # treat 404 room_not_live like 503 (Retry-After) until the timeout
    video_slots: int = 1  # video (and audio) m-lines offered: slot 0 the room's host, then co-stream slots
    tokens: TokenSource | None = None  # None: the gateway's /dev/token (dev servers only)


def video_ssrcs(sdp: str) -> list[list[int]]:
    """The ``a=ssrc`` values of each video m-line of an SDP, in m-line order (media and RTX)."""
    found: list[list[int]] = []
    current: list[int] | None = None
    for line in sdp.splitlines():
        if line.startswith("m="):
            current = [] if line.startswith("m=video") else None
            if current is not None:
                found.append(current)
        elif current is not None and line.startswith("a=ssrc:"):
            ssrc = int(line[7:].split(" ", 1)[0])
            if ssrc not in current:
                current.append(ssrc)
    return found


class Viewer:
    """One WHEP playback session that measures instead of decoding."""

    def __init__(self, options: ViewerOptions, http: aiohttp.ClientSession) -> None:
        self.options = options
        self._http = http
        self._token = options.token
        self.pc = new_peer_connection()
        self.resource: SessionResource | None = None
        self.freezes = FreezeMeter()
        self.assembler = FrameAssembler(self._on_frame)
        self.decodability = Decodability(self._show)
        self.latency = Histogram()  # ms, capture to arrival, for the current window
        self.impairment = Impairment(options.network) if options.network is not None else None
        self.lean: LeanRtpPath | None = None
        self._captures: dict[int, float] = {}  # RTP timestamp -> capture wall time
        self._wall_offset = time.time() - time.monotonic()
        self._last_pli = 0.0
        self.keyframe_requests = 0
        self.audio_packets = 0
        self._window_audio_start = 0
        self.posted_at: float | None = None
        self.ttff_ms: float | None = None  # first complete keyframe
        self.first_frame_ms: float | None = None  # first complete frame of any kind
        self.first_keyframe = asyncio.Event()
        self.follow_s = 0.0  # record (ms since the offer, latency ms) of shown frames this long after the offer
        self.early_latency: list[tuple[float, float]] = []
        self.lost = False
        self.retries = 0  # POSTs refused with Retry-After before one was accepted
        self.whep_ms: float | None = None  # the accepted POST's round trip
        # Joining ends when frames come at the stream's own pace: a gateway with a keyframe cache sends the GOP
        # so far in a burst first. Playback (freezes, latency) is measured from there, as it is from the first
        # keyframe when that keyframe comes live; the burst itself is the join's (TTFF, catch-up).
        self._catching_up = True
        self._first_shown: float | None = None
        self._last_shown = 0.0
        self.catch_up_ms: float | None = None  # first shown frame -> frames at the stream's pace
        video = self._video = self.pc.addTransceiver("video", direction="recvonly")
        audio = self._audio = self.pc.addTransceiver("audio", direction="recvonly")
        # Taps go in before negotiation: aiortc starts the receivers during setRemoteDescription.
        self._video_tap = tap_receiver(video.receiver, self._on_video)
        self._audio_tap = tap_receiver(audio.receiver, self._on_audio)
        # Co-stream slots (PK partner, guests): frames and capture-to-arrival latency only.
        self.partner_frames = 0
        self.partner_latency = Histogram()
        self._slots: list[tuple[Any, FrameAssembler]] = []
        self._slot_taps: list[ReceiverTap] = []
        for _ in range(1, options.video_slots):
            assembler = FrameAssembler(lambda at, key: self._on_partner_frame(at))
            transceiver = self.pc.addTransceiver("video", direction="recvonly")
            self._slot_taps.append(tap_receiver(transceiver.receiver, self._partner_rtp(assembler)))
            self._slots.append((transceiver, assembler))
        for _ in range(1, options.video_slots):
            extra_audio = self.pc.addTransceiver("audio", direction="recvonly")
            self._slot_taps.append(tap_receiver(extra_audio.receiver, self._on_audio))
        self._partner_captures: dict[int, float] = {}
        self._partner_assembler: FrameAssembler | None = None

        @self.pc.on("connectionstatechange")
        def on_state() -> None:
            if self.pc.connectionState in ("failed", "closed"):
                self.lost = True

    # -- per-packet callbacks (hot path: keep them small) ----------------

    def _on_video(self, seq: int, ts: int, marker: bool, payload: bytes, arrival: float) -> None:
        if marker and payload[-4:] == capture_tag.MAGIC:
            captured = capture_tag.read_tag(payload, descriptor_length(payload))
            if captured is not None:
                if len(self._captures) > 16:
                    self._captures.clear()  # frames that never completed
                self._captures[ts] = captured
        self.assembler.add(seq, ts, marker, payload, arrival)

    def _on_audio(self, seq: int, ts: int, marker: bool, payload: bytes, arrival: float) -> None:
        self.audio_packets += 1

    def _partner_rtp(self, assembler: FrameAssembler) -> RtpCallback:
        def on_rtp(seq: int, ts: int, marker: bool, payload: bytes, arrival: float) -> None:
            if marker and payload[-4:] == capture_tag.MAGIC:
                captured = capture_tag.read_tag(payload, descriptor_length(payload))
                if captured is not None:
                    if len(self._partner_captures) > 16:
                        self._partner_captures.clear()
                    self._partner_captures[ts] = captured
            self._partner_assembler = assembler
            assembler.add(seq, ts, marker, payload, arrival)

        return on_rtp

    def _on_partner_frame(self, arrival: float) -> None:
        self.partner_frames += 1
        assembler = self._partner_assembler
        captured = self._partner_captures.pop(assembler.last_ts, None) if assembler is not None else None
        if captured is not None:
            self.partner_latency.add((arrival + self._wall_offset - captured) * 1000)

    def _on_frame(self, arrival: float, keyframe: bool) -> None:
        if self.ttff_ms is None:
            if self.posted_at is None:
                return
            if self.first_frame_ms is None:
                self.first_frame_ms = (arrival - self.posted_at) * 1000
            if not keyframe:
                return  # undecodable until a keyframe: not yet a shown frame
            self.ttff_ms = (arrival - self.posted_at) * 1000
            self.first_keyframe.set()
        shown = self.decodability.frame(self.assembler.last_picture_id, keyframe, arrival, self.assembler.last_ts)
        if not shown and arrival - self._last_pli >= KEYFRAME_REQUEST_INTERVAL:
            self._last_pli = arrival
            self.keyframe_requests += 1
            if self.lean is not None:
                self.lean.request_keyframe(self._video_tap_ssrcs())
            else:
                self._video_tap.request_keyframe()

    def _video_tap_ssrcs(self) -> list[int] | None:
        if not self._slots or self.resource is None:
            return None  # one video stream: every NACKed stream is ours
        ssrcs = video_ssrcs(self.resource.answer_sdp)
        return ssrcs[0] if ssrcs else None

    def _show(self, at: float, keyframe: bool, ts: int) -> None:
        """A frame a decoder could show now: smoothness, and capture-to-decodable latency."""
        if self._catching_up and self._caught_up(at):
            self.freezes.start_window(at)
            self.latency = Histogram()
        self.freezes.frame(at)
        captured = self._captures.pop(ts, None)
        if captured is not None:
            latency = (at + self._wall_offset - captured) * 1000
            self.latency.add(latency)
            if self.posted_at is not None and at - self.posted_at <= self.follow_s:
                self.early_latency.append((round((at - self.posted_at) * 1000, 1), round(latency, 1)))

    def _caught_up(self, at: float) -> bool:
        """True at the first frame shown at the stream's own pace (or ``CATCH_UP_LIMIT`` after the first)."""
        first, last = self._first_shown, self._last_shown
        self._last_shown = at
        if first is None:
            self._first_shown = at
            return False
        if at - last < CATCH_UP_SPACING and at - first < CATCH_UP_LIMIT:
            return False
        self._catching_up = False
        self.catch_up_ms = (at - first) * 1000
        return True

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Negotiate and wait for the first keyframe; raises on refusal or timeout.

        A 429/503 with Retry-After is honoured while the deadline allows, as a
        well-behaved WHEP client would; TTFF then counts from the accepted POST.
        """
        deadline = time.monotonic() + self.options.first_frame_timeout
        if self._token is None:
            tokens = self.options.tokens or DevTokenSource(self.options.base_url, lambda: self._http)
            self._token = await tokens.token(self.options.room, "viewer")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        url = f"{self.options.base_url.rstrip('/')}/whep/{self.options.room}"
        while True:
            self.posted_at = time.monotonic()
            try:
                self.resource = await post_offer(self._http, url, self.pc.localDescription.sdp, self._token)
                self.whep_ms = (time.monotonic() - self.posted_at) * 1000
                break
            except SignalingError as exc:
                wait = exc.retry_after
                retryable = (429, 503, 404) if self.options.wait_for_host else (429, 503)
                if exc.status == 404 and wait is not None:
                    wait = min(wait, 1.0)  # a room going live is worth checking often
                if exc.status not in retryable or wait is None or self.posted_at + wait >= deadline:
                    raise
                self.retries += 1
                await asyncio.sleep(wait)  # the server asked for exactly this pause
        await self.pc.setRemoteDescription(RTCSessionDescription(self.resource.answer_sdp, "answer"))
        # Receive hooks go in after negotiation (payload types known), before ICE/DTLS start.
        if self.options.lean:
            self.lean = LeanRtpPath(self.pc)
            ssrcs = video_ssrcs(self.resource.answer_sdp) if self._slots else []
            self.lean.route(self._video, self._on_video, nack=True, ssrcs=ssrcs[0] if ssrcs else ())
            self.lean.route(self._audio, self._on_audio)
            for index, (transceiver, assembler) in enumerate(self._slots, start=1):
                slot_ssrcs = ssrcs[index] if index < len(ssrcs) else []
                self.lean.route(transceiver, self._partner_rtp(assembler), nack=True, ssrcs=slot_ssrcs)
            wrap_ice_delivery(self.pc, self.lean.wrap)
        if self.impairment is not None:
            wrap_ice_delivery(self.pc, self.impairment.wrap)
        await asyncio.wait_for(self.first_keyframe.wait(), max(0.0, deadline - time.monotonic()))

    async def stop(self) -> None:
        if self.resource is not None:
            await delete_resource(self._http, self.resource.url, self._token)
            self.resource = None
        await self.pc.close()
        release_later(self.pc)  # a churning generator's full GC passes would otherwise show up as stutter

    def start_window(self, at: float) -> None:
        self.freezes.start_window(at)
        self._window_audio_start = self.audio_packets
        self.latency = Histogram()

    def window(self, at: float) -> tuple[WindowStats, int]:
        return self.freezes.window(at), self.audio_packets - self._window_audio_start


def error_kind(exc: BaseException) -> str:
    # Constant strings, so that reports aggregate instead of listing each message.
    if isinstance(exc, SignalingError):
        return f"http_{exc.status}"
    if isinstance(exc, TokenError):
        return "token_error"
    if isinstance(exc, TimeoutError):
        return "first_frame_timeout"
    if isinstance(exc, aiohttp.ClientResponseError):  # e.g. a room socket's refused handshake
        return f"http_{exc.status}"
    if isinstance(exc, aiohttp.ClientError):
        return "http_client_error"
    return type(exc).__name__


class ViewerPool:
    """Many viewers of one room in this process."""

    def __init__(self, options: ViewerOptions, concurrency: int = 8) -> None:
        self.options = options
        self.viewers: list[Viewer] = []
        self._concurrency = concurrency
        self._http: aiohttp.ClientSession | None = None
        self._window_start: float | None = None
        self._cpu_start = 0.0

    def session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.options.first_frame_timeout))
        return self._http

    async def join(self, count: int, interval: float = 0.0, concurrency: int | None = None,
                   follow_s: float = 0.0) -> dict[str, Any]:
        """Add ``count`` viewers (a few negotiating at a time, offers ``interval`` s apart); report the joins.

        ``follow_s``: the report waits until each joiner has watched that long since its offer and gives its
        early frames' latency (catch-up after joining)."""
        gate = asyncio.Semaphore(concurrency or self._concurrency)
        errors: Counter[str] = Counter()
        joined: list[Viewer] = []

        async def one(index: int) -> None:
            if interval > 0:
                await asyncio.sleep(index * interval)  # the arrival schedule itself
            viewer = Viewer(self.options, self.session())
            viewer.follow_s = follow_s
            async with gate:
                try:
                    await viewer.start()
                except Exception as exc:
                    errors[error_kind(exc)] += 1
                    await viewer.stop()
                    return
            joined.append(viewer)

        started = time.monotonic()
        await asyncio.gather(*(one(index) for index in range(count)))
        if follow_s > 0:
            last = max((v.posted_at for v in joined if v.posted_at is not None), default=time.monotonic())
            await asyncio.sleep(max(0.0, last + follow_s - time.monotonic()))  # the observation period itself
        self.viewers.extend(joined)
        if self._window_start is not None:
            for viewer in joined:  # late joiners watch from now on
                viewer.start_window(time.monotonic())
        ttff = [v.ttff_ms for v in joined if v.ttff_ms is not None]
        return {
            "retries": sum(v.retries for v in joined),
            "ok": len(joined),
            "failed": count - len(joined),
            "errors": dict(errors),
            "join_s": round(time.monotonic() - started, 3),
            "ttff_ms": [round(t, 1) for t in ttff],
            "first_frame_ms": [round(v.first_frame_ms, 1) for v in joined if v.first_frame_ms is not None],
            "viewers": len(self.viewers),
            **({"early_latency": [v.early_latency for v in joined]} if follow_s > 0 else {}),
        }

    def mark(self) -> None:
        """Start the watch window for every viewer."""
        now = time.monotonic()
        self._window_start = now
        self._cpu_start = time.process_time()
        for viewer in self.viewers:
            viewer.start_window(now)

    def report(self) -> dict[str, Any]:
        """Window statistics across viewers (stutter ratio = freeze time / watch time, pooled)."""
        now = time.monotonic()
        windows = [viewer.window(now) for viewer in self.viewers]
        watch = sum(w.watch_s for w, _ in windows)
        freeze = sum(w.freeze_s for w, _ in windows)
        window_s = now - self._window_start if self._window_start is not None else 0.0
        stutter = [w.stutter_ratio for w, _ in windows]
        latency = Histogram()
        for viewer in self.viewers:
            latency.merge(viewer.latency)
        return {
            "viewers": len(windows),
            "lost": sum(1 for v in self.viewers if v.lost),
            "window_s": round(window_s, 3),
            "cpu_s": round(time.process_time() - self._cpu_start, 3),
            "frames": sum(w.frames for w, _ in windows),
            "fps_mean": round(sum(w.fps for w, _ in windows) / len(windows), 2) if windows else None,
            "freezes": sum(w.freezes for w, _ in windows),
            "freeze_s": round(freeze, 3),
            "stutter_ratio": round(freeze / watch, 5) if watch > 0 else None,
            "stutter_p95": _round(percentile(stutter, 95), 5),
            "max_gap_ms": round(max((w.max_gap_s for w, _ in windows), default=0.0) * 1000, 1),
            "audio_packets": sum(a for _, a in windows),
            "audio_pps_mean": round(sum(a for _, a in windows) / watch * 1, 2) if watch > 0 else None,
            "frames_abandoned": sum(v.assembler.abandoned for v in self.viewers),
            "latency_p50_ms": _round(latency.percentile(50), 1),
            "latency_p95_ms": _round(latency.percentile(95), 1),
            "latency_samples": latency.total,
            "freeze_gaps_ms": [round(g * 1000, 1) for v in self.viewers for g in v.freezes.freeze_gaps][:100],
        }

    async def leave(self) -> int:
        viewers, self.viewers = self.viewers, []
        await asyncio.gather(*(v.stop() for v in viewers), return_exceptions=True)
        self._window_start = None
        return len(viewers)

    async def close(self) -> None:
        await self.leave()
        if self._http is not None:
            await self._http.close()
            self._http = None


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _summary(join: dict[str, Any]) -> dict[str, Any]:
    ttff = join["ttff_ms"]
    return {
        "ttff_p50_ms": _round(percentile(ttff, 50), 1),
        "ttff_p95_ms": _round(percentile(ttff, 95), 1),
        **{k: v for k, v in join.items() if k not in ("ttff_ms", "first_frame_ms")},
    }


# -- process modes ------------------------------------------------------------


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def _stdin_lines() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def _serve(pool: ViewerPool) -> None:
    """JSON-line command loop; EOF on stdin (parent gone) ends it."""
    reader = await _stdin_lines()
    while line := await reader.readline():
        try:
            command = json.loads(line)
            op = command["op"]
        except (ValueError, KeyError, TypeError):
            _emit({"op": "error", "error": "bad command"})
            continue
        if op == "join":
            _emit({"op": "join", **await pool.join(int(command.get("count", 1)), float(command.get("interval", 0.0)),
                                                   command.get("concurrency"), float(command.get("follow_s", 0.0)))})
        elif op == "mark":
            pool.mark()
            _emit({"op": "mark"})
        elif op == "report":
            _emit({"op": "report", **pool.report()})
        elif op == "leave":
            _emit({"op": "leave", "left": await pool.leave()})
        elif op == "quit":
            return
        else:
            _emit({"op": "error", "error": "unknown op"})


async def _once(pool: ViewerPool, count: int, warmup: float, watch: float) -> None:
    join = await pool.join(count)
    _emit({"op": "join", **_summary(join)})
    await asyncio.sleep(warmup)  # a measurement interval, not synchronization
    pool.mark()
    await asyncio.sleep(watch)
    _emit({"op": "report", **pool.report()})


async def _run(args: argparse.Namespace) -> int:
    configure_ice(args.ice_host or DEFAULT_ICE_HOSTS)
    pool = ViewerPool(ViewerOptions(args.base_url, args.room, args.token, args.timeout), args.concurrency)
    freeze_start_up_heap()  # a full collection's pause would show up as stutter in what this measures
    settings = TokenSettings.from_args(args)
    if settings.given:  # otherwise each viewer asks the gateway's /dev/token
        try:
            pool.options = replace(pool.options, tokens=settings.source(args.base_url, pool.session))
        except TokenError as exc:
            print(f"viewer: {exc}", file=sys.stderr, flush=True)
            return 2
    main = asyncio.ensure_future(_serve(pool) if args.serve else _once(pool, args.count, args.warmup, args.watch))
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, main.cancel)
    try:
        await main
    except asyncio.CancelledError:
        pass
    finally:
        await pool.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Non-decoding WHEP viewers")
    parser.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8080")
    parser.add_argument("--room", required=True)
    parser.add_argument("--token", help="viewer JWT for all viewers; default: one per viewer from the token source")
    add_token_arguments(parser)
    parser.add_argument("--ice-host", action="append", help="ICE host address (repeatable); default 127.0.0.1")
    parser.add_argument("--serve", action="store_true", help="take JSON-line commands on stdin")
    parser.add_argument("--count", type=int, default=1, help="viewers (one-shot mode)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before the watch window")
    parser.add_argument("--watch", type=float, default=10.0, help="watch window seconds (one-shot mode)")
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds to first keyframe")
    parser.add_argument("--concurrency", type=int, default=8, help="viewers negotiating at once")
    args = parser.parse_args(argv)
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
