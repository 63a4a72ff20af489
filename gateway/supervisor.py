"""``serve --workers N`` (N > 1): one supervisor process keeps N worker processes running.

Each worker is a whole gateway (``serve ... --worker-index I``) on the one public port (SO_REUSEPORT)
with its own UDP port slice. The supervisor holds no client state, so it stays simple:

* a worker that exits while the supervisor is not stopping is started again (crash-only: its clients
  reconnect), after a delay that doubles while the worker keeps dying young, so a worker that cannot
  start does not spin;
* SIGTERM: SIGTERM to every worker (each drains, ``gateway/drain.py``); exit 0 once all have exited.
  Workers still running ``stop_timeout`` later are killed;
* a second SIGTERM, or SIGINT: SIGKILL to every worker, exit 1 once they are gone;
* SIGHUP: forwarded to every worker, each of which reloads its certificate and secrets (``gateway/reload.py``).

Workers die with the supervisor (PR_SET_PDEATHSIG, set by each worker at start-up, see
:func:`die_with_supervisor`): a supervisor killed outright leaves no worker holding the ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

log = logging.getLogger("cherry.gateway.supervisor")

SUPERVISOR_PID_ENV = "CHERRY_SUPERVISOR_PID"
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """Delay before starting a worker again, from how long its last run lasted and how many runs in a row
    were short: none after a run of ``stable_s`` or more, else ``first_s`` doubling up to ``max_s``."""

    first_s: float = 0.5
    max_s: float = 30.0
    stable_s: float = 10.0

    def delay(self, short_runs: int) -> float:
        """``short_runs``: consecutive runs shorter than ``stable_s``, counting the one that just ended."""
        if short_runs <= 0:
            return 0.0
        return float(min(self.max_s, self.first_s * 2 ** (short_runs - 1)))


class Supervisor:
    """Runs ``count`` workers; ``command(i)`` is worker i's argv. :meth:`run` returns the exit code."""

    def __init__(self, count: int, command: Callable[[int], Sequence[str]], env: Mapping[str, str], *,
                 policy: RestartPolicy | None = None, stop_timeout: float = 45.0, reloads: bool = True) -> None:
        self.count = count
        # False (dev mode): SIGHUP is a hang-up, as for the workers, and stops everything like SIGINT.
        self.reloads = reloads
        self._command = command
        self._env = dict(env)
        self.policy = policy or RestartPolicy()
        self.stop_timeout = stop_timeout
        self.workers: dict[int, asyncio.subprocess.Process] = {}
        self.starts = [0] * count  # how many times each worker was started
        self.killed = False
        self._stopping = asyncio.Event()
        self._kill_timer: asyncio.TimerHandle | None = None

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.terminate)
        loop.add_signal_handler(signal.SIGINT, self.kill)
        loop.add_signal_handler(signal.SIGHUP, self.reload if self.reloads else self.kill)
        try:
            await asyncio.gather(*(self._keep(i) for i in range(self.count)))
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGHUP)
            if self._kill_timer is not None:
                self._kill_timer.cancel()
        log.info("supervisor: every worker has exited%s", " (killed)" if self.killed else "")
        return 1 if self.killed else 0

    def terminate(self) -> None:
        """First SIGTERM: every worker drains and exits; a second one kills them."""
        if self.stopping:
            log.warning("supervisor: second SIGTERM: killing every worker")
            self.kill()
            return
        log.info("supervisor: SIGTERM: stopping %d workers (each drains)", len(self.workers))
        self._stopping.set()
        self._signal_all(signal.SIGTERM)
        self._kill_timer = asyncio.get_running_loop().call_later(self.stop_timeout, self._stop_timed_out)

    def reload(self) -> None:
        """SIGHUP: each worker reloads for itself. A worker still starting may not handle it yet and exits; it is
        started again, and then loads the new files anyway."""
        log.info("supervisor: SIGHUP: forwarding to %d workers (each reloads)", len(self.workers))
        self._signal_all(signal.SIGHUP)

    def kill(self) -> None:
        self._stopping.set()
        self.killed = True
        self._signal_all(signal.SIGKILL)

    def _stop_timed_out(self) -> None:
        log.warning("supervisor: workers still running %.0f s after SIGTERM: killing them", self.stop_timeout)
        self.kill()

    def _signal_all(self, sig: signal.Signals) -> None:
        for proc in self.workers.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)

    async def _keep(self, index: int) -> None:
        """Worker ``index``: start it, wait for it, start it again unless stopping."""
        loop = asyncio.get_running_loop()
        short_runs = 0
        while not self.stopping:
            started = loop.time()
            try:
                proc = await asyncio.create_subprocess_exec(*self._command(index), env=self._env)
            except OSError as exc:
                log.error("supervisor: worker %d could not start: %s", index, exc)
                code: int | str = f"not started ({exc})"
            else:
                self.workers[index] = proc
                self.starts[index] += 1
                log.info("supervisor: worker %d started (pid %d)", index, proc.pid)
                if self.stopping:  # the stop came while it was being started
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(signal.SIGKILL if self.killed else signal.SIGTERM)
                code = await proc.wait()
            if self.stopping:
                log.info("supervisor: worker %d exited (%s)", index, code)
                return
            short_runs = short_runs + 1 if loop.time() - started < self.policy.stable_s else 0
            delay = self.policy.delay(short_runs)
            log.warning("supervisor: worker %d exited unexpectedly (%s); starting it again in %.1f s",
                        index, code, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)


def die_with_supervisor() -> None:
    """In a worker: exit when the supervisor that started it dies (SIGTERM, so it drains like on a stop).

    Set here, after exec, rather than between fork and exec in the supervisor (unsafe with threads); the
    parent check afterwards closes the window in which the supervisor may already have died.
    """
    expected = os.environ.get(SUPERVISOR_PID_ENV)
    if expected is None or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != int(expected):
        log.error("worker: the supervisor (pid %s) is gone; exiting", expected)
        raise SystemExit(1)
