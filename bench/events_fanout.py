"""Room events fan-out benchmark: N sockets in one room, chat at a fixed rate, delivery and delay.

`python -m bench.events_fanout` (also run by `make bench`). The gateway and the socket process are
separate processes on 127.0.0.1; gateway CPU is read from /proc over the sending window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench import procstat
from bench.children import Child
from bench.run import ROOT, start_gateway

CONFIG = Path(__file__).with_name("gateway-events.toml")


async def fanout(sockets: int, rate: float, duration: float, log_dir: Path) -> dict[str, Any]:
    gateway, base = await start_gateway("events-gateway", CONFIG, log_dir)
    clients = Child("events-clients", [sys.executable, "-m", "bench.events_clients", "--base", base,
                                       "--sockets", str(sockets), "--rate", str(rate),
                                       "--duration", str(duration)], log_dir, ROOT)
    try:
        await clients.start()
        await clients.next_message(lambda m: bool(m.get("ready")), timeout=120)
        cpu0, t0 = procstat.cpu_seconds(gateway.pid), time.monotonic()
        message = await clients.next_message(lambda m: "result" in m, timeout=duration + 60)
        cpu1, t1 = procstat.cpu_seconds(gateway.pid), time.monotonic()
        result: dict[str, Any] = message["result"]
        result["gateway_core_pct"] = round((cpu1 - cpu0) / (t1 - t0) * 100, 1)
        result["gateway_cpu_us_per_delivery"] = (round((cpu1 - cpu0) / result["delivered"] * 1e6, 2)
                                                 if result["delivered"] else None)
        result["rate_msgs_per_s"] = rate
        return result
    finally:
        await clients.stop()
        await gateway.stop()


def describe(result: dict[str, Any]) -> str:
    return (f"room events fan-out: {result['sockets']} sockets, {result['rate_msgs_per_s']:.0f} chat msg/s -> "
            f"{result['delivered_per_s']:.0f} deliveries/s ({result['delivered']}/{result['expected_deliveries']}), "
            f"delay p50 {result['delay_ms_p50']} ms p99 {result['delay_ms_p99']} ms, gateway "
            f"{result['gateway_core_pct']}% of a core = {result['gateway_cpu_us_per_delivery']} us CPU per delivery, "
            f"sockets cut off {result['closed_early']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "events.json")
    args = parser.parse_args()
    log_dir = args.output.parent / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(fanout(args.sockets, args.rate, args.duration, log_dir))
    args.output.write_text(json.dumps(result, indent=2))
    print(describe(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
