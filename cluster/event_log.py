"""The bookkeeping that makes room events at-least-once across workers, without any I/O.

* :class:`Outbox`: the owner's side of one room's event stream. Sequence numbers are allocated here,
  at the owner (continuing from the stream's last one when ownership moves), never by a Redis counter
  that a restart without persistence would reset. It keeps what Redis has not confirmed (the backlog)
  and a tail of what it has (the log), so that a stream Redis lost can be filled again.
* A room's position is ``(epoch, n)``, its stream entry id ``{epoch}-{n}``: ``n`` counts the room's
  events; the epoch (a time in ms) changes only when there is nothing to continue from (a new room,
  or Redis lost the stream and the state together with the owner that held them), so that a
  numbering that had to start again still sorts after everything followers have seen.
* :class:`Cursor`: a follower's place in one room's stream: each position is delivered once and in
  order; a jump past the next number is a gap, counted.
* :class:`Channel` and :class:`Inlet`: reliable, ordered items from one worker to another (go-back-N):
  numbered, kept until acknowledged, resent from the first unacknowledged one; the receiver takes
  each number once and in order.

``cluster.events_bus`` moves the bytes; tests/unit/test_cluster_event_log.py drives these alone.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class Outbox:
    """One room's events at its owner: sequence numbers, the backlog not yet appended, a retained log."""

    def __init__(self, epoch: int, last_seq: int = 0, retain: int = 1000, backlog_limit: int = 10000) -> None:
        self.epoch = epoch
        self.seq = last_seq  # the last sequence number allocated
        self.appended = last_seq  # the stream has confirmed everything up to here (or it is lost for good)
        self.dropped = 0  # events the backlog had no room for (oldest first): a gap for followers
        self._next = last_seq + 1  # the first event the next append offers
        self._retain = retain
        self._backlog_limit = backlog_limit
        self._entries: deque[tuple[int, str]] = deque()  # (seq, payload), oldest first, contiguous

    def add(self, payload: str) -> int:
        self.seq += 1
        self._entries.append((self.seq, payload))
        if self.seq - self.appended > self._backlog_limit:
            # Redis has been away for long: the oldest unappended event goes, the newest are kept. A
            # refill cannot cross that hole, so what is older goes too.
            self.appended += 1
            self.dropped += 1
            self._next = max(self._next, self.appended + 1)
            while self._entries and self._entries[0][0] <= self.appended:
                self._entries.popleft()
        self._trim()
        return self.seq

    @property
    def backlog(self) -> int:
        """Events allocated but not confirmed in the stream."""
        return self.seq - self.appended

    @property
    def oldest(self) -> int:
        """The oldest sequence number still held (appended or not); seq + 1 when nothing is."""
        return self._entries[0][0] if self._entries else self.seq + 1

    def pending(self, limit: int) -> tuple[int, list[str]]:
        """Up to ``limit`` events to append next: (first sequence number, payloads)."""
        first = max(self._next, self.oldest)
        out = [payload for seq, payload in self._entries if seq >= first][:limit]
        return first, out

    def confirm(self, upto: int) -> None:
        """The stream holds everything up to ``upto``."""
        upto = min(upto, self.seq)
        self.appended = max(self.appended, upto)
        self._next = max(self._next, upto + 1)
        self._trim()

    def restart_from(self, top: int) -> None:
        """The stream's last entry is ``top`` (Redis lost what came after): append again from there,
        or from the oldest event still held when even that is gone."""
        self._next = min(self._next, max(top, self.oldest - 1) + 1)

    def rewind(self) -> None:
        """Redis was away: offer everything held again (the append skips what the stream still has)."""
        self._next = self.oldest

    def _trim(self) -> None:
        # Keep everything not yet confirmed, and `retain` events before it.
        while self._entries and self._entries[0][0] <= self.appended - self._retain:
            self._entries.popleft()


class Cursor:
    """A follower's position in one room's stream."""

    __slots__ = ("epoch", "last", "gaps", "restarts")

    def __init__(self, epoch: int = 0, last: int = 0) -> None:
        self.epoch = epoch
        self.last = last
        self.gaps = 0  # events the stream never showed us (lost beyond what the owner could fill)
        self.restarts = 0  # numberings that started again (a new epoch)

    @property
    def position(self) -> str:
        """Where to read on from (an exclusive stream id)."""
        return f"{self.epoch}-{self.last}"

    def accept(self, epoch: int, seq: int) -> bool:
        """True for the next event (deliver it), False for one already delivered (a duplicate)."""
        if (epoch, seq) <= (self.epoch, self.last):
            return False
        if epoch == self.epoch:
            if seq > self.last + 1:
                self.gaps += seq - self.last - 1
        elif self.epoch:
            self.restarts += 1
        self.epoch, self.last = epoch, seq
        return True


@dataclass(slots=True)
class _Sent:
    cseq: int
    item: dict[str, Any]
    sent_at: float | None = None  # None: to be written (again)


@dataclass
class Channel:
    """Items from this worker to one other, in order, each kept until the receiver acknowledges it."""

    limit: int = 10000
    resend_after: float = 2.0
    clock: Callable[[], float] = time.monotonic
    next_cseq: int = 1
    dropped: int = 0  # items the channel had no room for while the receiver did not acknowledge
    resent: int = 0
    _unacked: deque[_Sent] = field(default_factory=deque)
    _progress_at: float = 0.0  # last ack that moved the window, or the first send after an empty window

    def add(self, item: dict[str, Any]) -> int:
        if not self._unacked:
            self._progress_at = self.clock()
        cseq = self.next_cseq
        self.next_cseq += 1
        self._unacked.append(_Sent(cseq, item))
        if len(self._unacked) > self.limit:
            self._unacked.popleft()
            self.dropped += 1
        return cseq

    @property
    def base(self) -> int:
        """The oldest item not acknowledged (what a receiver meeting us for the first time starts at)."""
        return self._unacked[0].cseq if self._unacked else self.next_cseq

    def __len__(self) -> int:
        return len(self._unacked)

    def unsent(self) -> list[tuple[int, int, dict[str, Any]]]:
        """Items to write now, as (cseq, base, item); they count as sent from now."""
        now = self.clock()
        out = []
        for sent in self._unacked:
            if sent.sent_at is None:
                sent.sent_at = now
                out.append((sent.cseq, self.base, sent.item))
        return out

    def unwritten(self, cseqs: list[int]) -> None:
        """A write of these failed: they go again with the next write."""
        wanted = set(cseqs)
        for sent in self._unacked:
            if sent.cseq in wanted:
                sent.sent_at = None

    def ack(self, upto: int) -> None:
        moved = False
        while self._unacked and self._unacked[0].cseq <= upto:
            self._unacked.popleft()
            moved = True
        if moved:
            self._progress_at = self.clock()

    def rewind(self, start: int | None = None) -> None:
        """Go back: every unacknowledged item from ``start`` (default: the first) is written again."""
        for sent in self._unacked:
            if (start is None or sent.cseq >= start) and sent.sent_at is not None:
                sent.sent_at = None
                self.resent += 1
        self._progress_at = self.clock()

    def due(self) -> bool:
        """Written, but no acknowledgement moved the window for ``resend_after``: time to go back."""
        return bool(self._unacked) and self._unacked[0].sent_at is not None \
            and self.clock() - self._progress_at >= self.resend_after

    def items(self) -> list[dict[str, Any]]:
        return [sent.item for sent in self._unacked]


class Inlet:
    """Items from one sender (one incarnation of a worker): each number taken once, in order."""

    __slots__ = ("expected",)

    def __init__(self) -> None:
        self.expected: int | None = None

    def offer(self, cseq: int, base: int) -> str:
        """``"take"`` (process it), ``"duplicate"`` (already processed) or ``"gap"`` (an earlier one is missing)."""
        # The sender holds nothing before ``base`` any more: it was acknowledged (by us, or by an earlier
        # incarnation of this worker). On first contact, everything it still holds is new to us; and a base
        # written before an acknowledgement must not make us wait for an item nobody will send again.
        if self.expected is None or base > self.expected:
            self.expected = base
        if cseq < self.expected:
            return "duplicate"
        if cseq > self.expected:
            return "gap"
        self.expected += 1
        return "take"

    @property
    def done(self) -> int:
        """The last number taken (what an acknowledgement says)."""
        return (self.expected or 1) - 1
