"""The gateway's :class:`~signaling.events.ports.Scheduler`: the running asyncio loop and the wall clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from signaling.events.ports import Timer


class LoopScheduler:
    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(max(delay, 0.0), callback)

    def now(self) -> float:
        return time.time()
