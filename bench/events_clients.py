"""Many room-event sockets in one asyncio process: a few send chat, all measure delivery delay.

Run by bench/events_fanout.py; prints one JSON line when the sockets are up ("ready") and one with
the results at the end. The chat text carries the sender's CLOCK_MONOTONIC time, which is one clock
for every process on this machine, so delay = arrival - send without clock sync.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import aiohttp

from loadtests.webrtc.tokens import DevTokenSource


async def main(args: argparse.Namespace) -> None:
    delays: list[float] = []
    received = 0
    closed_early = 0
    measuring = asyncio.Event()
    done = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        tokens = DevTokenSource(args.base, lambda: http)
        viewer_token = await tokens.token(args.room, "viewer", "fan")
        ws_url = f"{args.base.replace('http', 'ws', 1)}/ws/{args.room}"

        async def receive(ws: aiohttp.ClientWebSocketResponse) -> None:
            nonlocal received, closed_early
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT or '"chat"' not in message.data:
                    continue
                frame = json.loads(message.data)
                if frame.get("type") == "chat" and measuring.is_set() and not done.is_set():
                    delays.append(time.monotonic() - float(frame["text"]))
                    received += 1
            if not done.is_set():
                closed_early += 1

        sockets = []
        for start in range(0, args.sockets, 100):  # connect in waves: the gateway is one process
            batch = await asyncio.gather(*(http.ws_connect(f"{ws_url}?token={viewer_token}", heartbeat=None)
                                           for _ in range(start, min(args.sockets, start + 100))))
            sockets.extend(batch)
        readers = [asyncio.ensure_future(receive(ws)) for ws in sockets]
        senders = [await http.ws_connect(f"{ws_url}?token={await tokens.token(args.room, 'viewer', f's{i}')}")
                   for i in range(args.senders)]
        print(json.dumps({"ready": True, "sockets": len(sockets)}), flush=True)

        interval = args.senders / args.rate
        sent = 0

        async def send(ws: aiohttp.ClientWebSocketResponse, offset: float) -> None:
            nonlocal sent
            next_at = time.monotonic() + offset
            end = started + args.duration
            while next_at < end:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                await ws.send_str(json.dumps({"type": "chat", "text": f"{time.monotonic():.6f}"}))
                sent += 1
                next_at += interval

        measuring.set()
        started = time.monotonic()
        await asyncio.gather(*(send(ws, i * interval / args.senders) for i, ws in enumerate(senders)))
        await asyncio.sleep(args.drain)  # let the last messages arrive: the measurement tail itself
        done.set()
        elapsed = time.monotonic() - started
        delays.sort()

        def pct(q: float) -> float | None:
            return round(delays[min(len(delays) - 1, int(q * len(delays)))] * 1000, 2) if delays else None

        result: dict[str, Any] = {
            "sockets": len(sockets), "senders": args.senders, "sent": sent,
            "expected_deliveries": sent * len(sockets), "delivered": received,
            "delivered_per_s": round(received / args.duration, 1), "delay_ms_p50": pct(0.5), "delay_ms_p99": pct(0.99),
            "delay_ms_max": pct(1.0), "closed_early": closed_early, "duration_s": round(elapsed, 2),
        }
        for ws in sockets + senders:
            await ws.close()
        for reader in readers:
            reader.cancel()
        print(json.dumps({"result": result}), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--room", default="fanout")
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--senders", type=int, default=5)
    parser.add_argument("--rate", type=float, default=20.0, help="chat messages per second, all senders")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--drain", type=float, default=2.0)
    asyncio.run(main(parser.parse_args()))
