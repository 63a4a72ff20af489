"""Non-decoding viewers with co-stream slots, for the PK benchmark (one asyncio process).

Each viewer offers two video and two audio m-lines (its host + one co-stream slot) and counts, per
slot, video frames (RTP timestamp changes) and their arrival gaps, from the raw RTP stream.
JSON-line commands on stdin: {"op": "join", "room": R, "count": N}, {"op": "mark"}, {"op": "report"}.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import aiohttp
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from aiortc_bridge.client import tap_receiver
from aiortc_bridge.receiver import ReceiverTap
from loadtests.webrtc.metrics import FreezeMeter
from loadtests.webrtc.peer import configure_ice, wait_connected
from loadtests.webrtc.signaling_client import SignalingError, post_offer
from loadtests.webrtc.tokens import DevTokenSource

SLOTS = 2


class SlotMeter:
    """Frames of one slot's video: a new RTP timestamp is a new frame; freezes by the load suite's meter."""

    __slots__ = ("last_ts", "freezes")

    def __init__(self) -> None:
        self.last_ts: int | None = None
        self.freezes = FreezeMeter()

    def packet(self, seq: int, ts: int, marker: bool, payload: bytes, arrival: float) -> None:
        if ts != self.last_ts:
            self.last_ts = ts
            self.freezes.frame(arrival)


class SlotViewer:
    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self.meters = [SlotMeter() for _ in range(SLOTS)]
        self.audio_packets = [0] * SLOTS
        self.taps: list[ReceiverTap] = []

    async def join(self, http: aiohttp.ClientSession, base: str, room: str, token: str) -> None:
        videos = [self.pc.addTransceiver("video", direction="recvonly") for _ in range(SLOTS)]
        audios = [self.pc.addTransceiver("audio", direction="recvonly") for _ in range(SLOTS)]
        for slot, transceiver in enumerate(videos):
            self.taps.append(tap_receiver(transceiver.receiver, self.meters[slot].packet))
        for slot, transceiver in enumerate(audios):
            self.taps.append(tap_receiver(transceiver.receiver, self._audio(slot)))
        await self.pc.setLocalDescription(await self.pc.createOffer())
        deadline = time.monotonic() + 60
        while True:
            try:
                resource = await post_offer(http, f"{base}/whep/{room}", self.pc.localDescription.sdp, token)
                break
            except SignalingError as exc:  # 429/503 with Retry-After: wait as asked, as a WHEP client does
                if exc.status not in (429, 503) or exc.retry_after is None or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(exc.retry_after)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=resource.answer_sdp, type="answer"))
        await wait_connected(self.pc, 20)

    def _audio(self, slot: int):  # type: ignore[no-untyped-def]
        def count(seq: int, ts: int, marker: bool, payload: bytes, arrival: float) -> None:
            self.audio_packets[slot] += 1

        return count


async def main() -> None:
    configure_ice(["127.0.0.1"])
    base = sys.argv[1]
    viewers: list[SlotViewer] = []
    mark = time.monotonic()
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async with aiohttp.ClientSession() as http:
        tokens = DevTokenSource(base, lambda: http)
        while line := await reader.readline():
            command: dict[str, Any] = json.loads(line)
            op = command["op"]
            reply: dict[str, Any] = {"op": op}
            if op == "join":
                token = await tokens.token(command["room"], "viewer")
                batch = [SlotViewer() for _ in range(command["count"])]
                await asyncio.gather(*(v.join(http, base, command["room"], token) for v in batch))
                viewers += batch
                reply["viewers"] = len(viewers)
            elif op == "mark":
                mark = time.monotonic()
                for v in viewers:
                    v.audio_packets = [0] * SLOTS
                    for meter in v.meters:
                        meter.freezes.start_window(mark)
            elif op == "report":
                end = time.monotonic()
                for slot in range(SLOTS):
                    stats = [v.meters[slot].freezes.window(end) for v in viewers]
                    reply[f"slot{slot}"] = {
                        "fps": sum(s.frames for s in stats) / len(stats) / (end - mark) if stats else 0.0,
                        "stutter_max": max((s.stutter_ratio for s in stats), default=0.0),
                        "audio_pps": sum(v.audio_packets[slot] for v in viewers) / max(1, len(viewers)) / (end - mark),
                    }
            print(json.dumps(reply), flush=True)
        for v in viewers:
            await v.pc.close()


if __name__ == "__main__":
    asyncio.run(main())
