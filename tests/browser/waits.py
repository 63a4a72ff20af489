"""Waiting on what only an asynchronous page function can tell (getStats, a fetch).

Playwright's ``wait_for_function`` does not wait for a promise: a predicate returning one is truthy at once,
so ``wait_for_function("stats().then(s => s.level > 0)")`` proves nothing. :func:`until` evaluates the predicate
(``page.evaluate`` awaits promises) until it holds, bounded, and fails saying what did not happen and what the
page said last.
"""

from __future__ import annotations

import time
from typing import Any

POLL_MS = 200


def until(page: Any, predicate: str, what: str, timeout_s: float = 10.0, arg: Any = None) -> Any:
    """Poll ``predicate`` (a JS function source, may be async, given ``arg``) until it returns a truthy value;
    that value, or an AssertionError naming ``what`` and the last value seen after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = page.evaluate(predicate, arg)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} (within {timeout_s:.0f} s; last: {value!r})")
        page.wait_for_timeout(POLL_MS)
