"""Pure measurement logic for viewers: frame assembly from RTP, freezes, percentiles.

No aiortc here, so it is cheap per packet and unit-testable with plain numbers.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from loadtests.webrtc.vp8 import frame_start

FrameCallback = Callable[[float, bool], None]  # (arrival of the completing packet, keyframe)

_SEQ_MOD = 1 << 16
_TS_MOD = 1 << 32


def _ts_not_newer(ts: int, reference: int) -> bool:
    """RTP timestamp ``ts`` is at or before ``reference`` (serial number arithmetic)."""
    return (ts - reference) % _TS_MOD == 0 or (ts - reference) % _TS_MOD >= _TS_MOD // 2


class _PendingFrame:
    __slots__ = ("first_seq", "keyframe", "last_seq", "picture_id", "seqs")

    def __init__(self) -> None:
        self.first_seq: int | None = None
        self.last_seq: int | None = None
        self.seqs: set[int] = set()
        self.keyframe = False
        self.picture_id: int | None = None


class FrameAssembler:
    """Groups RTP packets into video frames.

    A frame is the packets sharing an RTP timestamp; it is complete once its
    first packet (VP8 start bit, or for other codecs the packet right after the
    previous marker), its marker packet and every sequence number between them
    have arrived. Reordered and retransmitted packets are handled; a frame still
    incomplete when a frame ``GIVE_UP_TICKS`` newer completes is abandoned.
    """

    MAX_PENDING = 32
    GIVE_UP_TICKS = 90_000  # 1 s at the video clock: far beyond any NACK round trip on loopback
    REMEMBERED = 128  # finished timestamps kept to recognise late duplicates

    def __init__(self, on_frame: FrameCallback, vp8: bool = True) -> None:
        self._on_frame = on_frame
        self._vp8 = vp8
        self._pending: dict[int, _PendingFrame] = {}
        self._finished: dict[int, None] = {}  # insertion-ordered set of done/abandoned timestamps
        self._last_marker_seq: int | None = None
        self.completed = 0
        self.abandoned = 0
        # The frame being reported, readable from inside ``on_frame``.
        self.last_ts = 0
        self.last_picture_id: int | None = None

    def _finish(self, ts: int) -> None:
        self._finished[ts] = None
        if len(self._finished) > self.REMEMBERED:
            del self._finished[next(iter(self._finished))]

    def _abandon(self, ts: int) -> None:
        del self._pending[ts]
        self._finish(ts)
        self.abandoned += 1

    def add(self, seq: int, ts: int, marker: bool, payload: bytes, arrival: float) -> None:
        if ts in self._finished:
            return  # late duplicate or retransmission of a frame already done or abandoned
        frame = self._pending.get(ts)
        if frame is None:
            if len(self._pending) >= self.MAX_PENDING:
                self._abandon(next(iter(self._pending)))
            frame = self._pending[ts] = _PendingFrame()
        if seq in frame.seqs:
            return
        frame.seqs.add(seq)
        if self._vp8:
            start, keyframe, picture_id = frame_start(payload)
            if start:
                frame.first_seq = seq
                frame.keyframe = keyframe
                frame.picture_id = picture_id
        elif self._last_marker_seq is not None and (seq - self._last_marker_seq) % _SEQ_MOD == 1:
            frame.first_seq = seq
            frame.keyframe = self.completed == 0  # unknown for other codecs; assume the first is
        if marker:
            frame.last_seq = seq
            self._last_marker_seq = seq
        first, last = frame.first_seq, frame.last_seq
        if first is None or last is None or len(frame.seqs) != (last - first) % _SEQ_MOD + 1:
            return
        del self._pending[ts]
        self._finish(ts)
        horizon = (ts - self.GIVE_UP_TICKS) % _TS_MOD
        for old in [t for t in self._pending if _ts_not_newer(t, horizon)]:
            self._abandon(old)
        self.completed += 1
        self.last_ts = ts
        self.last_picture_id = frame.picture_id
        self._on_frame(arrival, frame.keyframe)


@dataclass(frozen=True, slots=True)
class WindowStats:
    """Video smoothness over one watch window."""

    watch_s: float
    frames: int
    freezes: int
    freeze_s: float
    max_gap_s: float

    @property
    def fps(self) -> float:
        return self.frames / self.watch_s if self.watch_s > 0 else 0.0

    @property
    def stutter_ratio(self) -> float:
        return self.freeze_s / self.watch_s if self.watch_s > 0 else 0.0


ShowCallback = Callable[[float, bool, int], None]  # (show time, keyframe, RTP timestamp)


class Decodability:
    """Which complete frames a real decoder could show, and when, from VP8 picture IDs.

    Each inter frame references the one before it (our synthetic hosts, like browsers at one
    temporal layer), so frames are decoded in picture-ID order: a frame that completes while
    an earlier one is still missing waits (a jitter buffer waiting for a NACKed packet), and
    is shown when the gap fills. A gap still open ``max_wait`` seconds after a later frame
    completed is a loss: nothing is shown until the next keyframe, as libwebrtc does, and
    ``on_broken`` is called so the viewer can ask for one. A keyframe that arrives while frames
    wait for a missing one supersedes them: that is a loss too (``gaps``). Without picture IDs frames are shown
    as they complete.
    """

    MOD = 1 << 15

    def __init__(self, on_show: ShowCallback, max_wait: float = 0.5) -> None:
        self._on_show = on_show
        self._max_wait = max_wait
        self._expected: int | None = None
        self._held: dict[int, tuple[int, float]] = {}  # picture ID -> (RTP timestamp, completed at)
        self.broken = True  # until the first keyframe
        self.gaps = 0  # frames lost for good

    def _ahead(self, picture_id: int, of: int) -> int:
        return (picture_id - of) % self.MOD

    def _release(self, at: float) -> None:
        while self._expected is not None and self._expected in self._held:
            ts, _ = self._held.pop(self._expected)
            self._expected = (self._expected + 1) % self.MOD
            self._on_show(at, False, ts)

    def frame(self, picture_id: int | None, keyframe: bool, at: float, ts: int) -> bool:
        """A frame completed at ``at``; returns False when the picture is broken (ask for a keyframe)."""
        if picture_id is None:
            if keyframe or not self.broken:
                self.broken = False
                self._on_show(at, keyframe, ts)
            return not self.broken
        expected = self._expected
        if keyframe:
            if not self.broken and any(not 0 < self._ahead(p, picture_id) < self.MOD // 2 for p in self._held):
                # Frames were waiting for a missing one and this keyframe supersedes them: lost for good too,
                # even though the keyframe came before the wait ran out.
                self.gaps += 1
            self.broken = False
            self._held = {p: v for p, v in self._held.items() if 0 < self._ahead(p, picture_id) < self.MOD // 2}
            self._expected = (picture_id + 1) % self.MOD
            self._on_show(at, True, ts)
            self._release(at)
            return True
        if self.broken or expected is None:
            return False
        ahead = self._ahead(picture_id, expected)
        if ahead == 0:
            self._expected = (picture_id + 1) % self.MOD
            self._on_show(at, False, ts)
            self._release(at)
        elif ahead < self.MOD // 2:
            self._held[picture_id] = (ts, at)
            oldest = min(done for _, done in self._held.values())
            if at - oldest > self._max_wait:  # the missing frame is not coming: lost
                self.gaps += 1
                self.broken = True
                self._held.clear()
                return False
        return True


def freeze_threshold(mean_interval: float) -> float:
    """The W3C webrtc-stats freeze rule: an inter-frame gap longer than this is a freeze."""
    return max(3 * mean_interval, mean_interval + 0.150)


class FreezeMeter:
    """Counts freezes by the W3C webrtc-stats rule: the one home of that rule in our clients.

    A freeze is an inter-frame gap > max(3 x mean, mean + 150 ms), the mean
    being over the last 30 gaps (as libwebrtc computes freezeCount; the load suite's
    figures are cross-checked against Chromium's own, ``tests/load/test_chromium_crosscheck.py``).
    Until a few gaps are known, ``nominal_interval`` stands in for the mean, so a
    viewer that gets nothing at all still shows as frozen. Load viewers, bench viewers and
    the integration tests' decoding viewers all measure with it (:func:`freeze_gaps`).
    """

    HISTORY = 30
    MIN_SAMPLES = 5

    def __init__(self, nominal_interval: float = 1 / 30) -> None:
        self._nominal = nominal_interval
        self._gaps: deque[float] = deque(maxlen=self.HISTORY)
        self._gap_sum = 0.0
        self._last: float | None = None
        self._window_start = 0.0
        self._frames = 0
        self._freezes = 0
        self._freeze_s = 0.0
        self._max_gap = 0.0
        # Whole gaps of the freezes that ended inside the window (as libwebrtc counts them), capped.
        self.freeze_gaps: list[float] = []

    def _threshold(self) -> float:
        mean = self._gap_sum / len(self._gaps) if len(self._gaps) >= self.MIN_SAMPLES else self._nominal
        return freeze_threshold(mean)

    def _account(self, gap_start: float, gap_end: float) -> None:
        # Only the part of a gap inside the window counts, but the whole gap decides.
        gap = gap_end - gap_start
        inside = gap_end - max(gap_start, self._window_start)
        self._max_gap = max(self._max_gap, inside)
        if gap > self._threshold() and inside > 0:
            self._freezes += 1
            self._freeze_s += inside

    def frame(self, at: float) -> None:
        last = self._last
        if last is not None:
            if at - last > self._threshold() and len(self.freeze_gaps) < 1000:
                self.freeze_gaps.append(at - last)
            self._account(last, at)
            gap = at - last
            if len(self._gaps) == self.HISTORY:
                self._gap_sum -= self._gaps[0]
            self._gaps.append(gap)
            self._gap_sum += gap
        self._last = at
        self._frames += 1

    def start_window(self, at: float) -> None:
        self._window_start = at
        self.freeze_gaps = []
        self._frames = 0
        self._freezes = 0
        self._freeze_s = 0.0
        self._max_gap = 0.0

    def settled(self, at: float) -> tuple[float, int, int, float]:
        """(watch s, frames, freezes, freeze s) since the window start, a gap still open not counted."""
        return at - self._window_start, self._frames, self._freezes, self._freeze_s

    def window(self, at: float) -> WindowStats:
        """Stats from the window start to ``at``, counting a trailing gap as a freeze if long enough."""
        freezes, freeze_s, max_gap = self._freezes, self._freeze_s, self._max_gap
        self._account(self._last if self._last is not None else self._window_start, at)
        stats = WindowStats(at - self._window_start, self._frames, self._freezes, self._freeze_s, self._max_gap)
        self._freezes, self._freeze_s, self._max_gap = freezes, freeze_s, max_gap
        return stats


def freeze_gaps(times: Iterable[float], nominal_interval: float = 1 / 30) -> list[float]:
    """The inter-frame gaps of ``times`` (frame arrivals, ascending seconds) that :class:`FreezeMeter` calls freezes."""
    meter = FreezeMeter(nominal_interval)
    for at in times:
        meter.frame(at)
    return list(meter.freeze_gaps)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class Histogram:
    """Mergeable latency histogram: 1 ms buckets to 100 ms, then buckets 2 % wide.

    Percentiles are read at bucket midpoints: error at most 0.5 ms below 100 ms and 1 %
    above. Serialises to a dict of bucket -> count (JSON-safe), so load processes can ship
    and merge them.
    """

    __slots__ = ("counts", "total", "sum")

    LINEAR = 100
    GROWTH = 1.02

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.total = 0
        self.sum = 0.0

    @classmethod
    def bucket(cls, value: float) -> int:
        if value < cls.LINEAR:
            return int(value) if value > 0 else 0
        return cls.LINEAR + int(math.log(value / cls.LINEAR, cls.GROWTH))

    @classmethod
    def midpoint(cls, bucket: int) -> float:
        if bucket < cls.LINEAR:
            return bucket + 0.5
        low = cls.LINEAR * cls.GROWTH ** (bucket - cls.LINEAR)
        return low * (1 + cls.GROWTH) / 2

    def add(self, value: float) -> None:
        key = self.bucket(value)
        self.counts[key] = self.counts.get(key, 0) + 1
        self.total += 1
        self.sum += value

    def merge(self, other: Histogram) -> None:
        for key, count in other.counts.items():
            self.counts[key] = self.counts.get(key, 0) + count
        self.total += other.total
        self.sum += other.sum

    @property
    def mean(self) -> float | None:
        return self.sum / self.total if self.total else None

    def percentile(self, q: float) -> float | None:
        if not self.total:
            return None
        rank = q / 100 * self.total
        seen = 0
        for key in sorted(self.counts):
            seen += self.counts[key]
            if seen >= rank:
                return self.midpoint(key)
        return self.midpoint(max(self.counts))

    def to_json(self) -> dict[str, Any]:
        return {"counts": {str(k): v for k, v in self.counts.items()}, "sum": round(self.sum, 3)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Histogram:
        histogram = cls()
        for key, count in data.get("counts", {}).items():
            histogram.counts[int(key)] = int(count)
            histogram.total += int(count)
        histogram.sum = float(data.get("sum", 0.0))
        return histogram


def fields_to_json(stats: Any) -> dict[str, Any]:
    """A stats dataclass as JSON: its non-empty fields, histograms by their own form, floats rounded."""
    out: dict[str, Any] = {}
    for f in fields(stats):
        value = getattr(stats, f.name)
        if isinstance(value, Histogram):
            if value.total:
                out[f.name] = value.to_json()
        elif value:
            out[f.name] = round(value, 6) if isinstance(value, float) else value
    return out
