"""Is each series flat after the warm-up? A least-squares slope test, not a single end value.

For each series the samples taken after the warm-up are fitted with a straight line ``y = a + b t``
(ordinary least squares, ``t`` in hours). The series is *flat* when either

- its growth over the judged window, ``b * window``, is below the series' noise floor (a short run
  cannot tell a few MB or a few fds from allocator and churn noise), or
- its slope ``b`` is within the bound plus ``k`` standard errors of the slope: only growth that is
  both above the bound and clearly above the scatter of the samples counts as a leak.

A falling series is flat. A real leak grows steadily, so its standard error is small against its
slope, and it fails as soon as it outgrows the floor; a flat but noisy series has a large standard
error and passes. Pure functions: the unit tests feed them synthetic series.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

MIN_SAMPLES = 5  # fewer after the warm-up: no slope worth the name (a set-up error, not a verdict)


@dataclass(frozen=True, slots=True)
class Bound:
    """How much one series may grow: ``per_hour`` (its unit per hour) beyond noise, ``floor`` in total."""

    per_hour: float
    floor: float


# Defaults, checked with a 10-minute soak on a 2-core VM (docs/soak.md): a gateway that leaks one viewer
# session's worth per churn (one fd, one task, ~100 kB) exceeds each of these within minutes.
DEFAULT_BOUNDS: dict[str, Bound] = {
    "rss_mb": Bound(per_hour=20.0, floor=4.0),
    "fds": Bound(per_hour=20.0, floor=6.0),
    "threads": Bound(per_hour=2.0, floor=2.0),
    "tasks": Bound(per_hour=40.0, floor=15.0),
    "loop_lag_ms": Bound(per_hour=25.0, floor=20.0),
}
UNITS = {"rss_mb": "MB", "fds": "fds", "threads": "threads", "tasks": "tasks", "loop_lag_ms": "ms"}
DEFAULT_NOISE_K = 2.0


@dataclass(frozen=True, slots=True)
class Fit:
    slope: float  # units per hour
    stderr: float  # standard error of the slope, units per hour (0 for a perfect line)
    intercept: float  # value at t = 0
    n: int


def fit_line(t_hours: Sequence[float], values: Sequence[float]) -> Fit:
    """Ordinary least squares ``values ~ intercept + slope * t``, with the slope's standard error."""
    n = len(values)
    if n != len(t_hours) or n < 3:
        raise ValueError("a slope needs at least 3 (time, value) pairs")
    t_mean = math.fsum(t_hours) / n
    y_mean = math.fsum(values) / n
    sxx = math.fsum((t - t_mean) ** 2 for t in t_hours)
    if sxx <= 0:
        raise ValueError("all samples at the same instant")
    sxy = math.fsum((t - t_mean) * (y - y_mean) for t, y in zip(t_hours, values, strict=True))
    slope = sxy / sxx
    intercept = y_mean - slope * t_mean
    residual = math.fsum((y - intercept - slope * t) ** 2 for t, y in zip(t_hours, values, strict=True))
    stderr = math.sqrt(residual / (n - 2) / sxx)
    return Fit(slope, stderr, intercept, n)


@dataclass(frozen=True, slots=True)
class SeriesVerdict:
    name: str
    unit: str
    measured: bool  # False: the series was never sampled (e.g. no /proc access): not judged
    flat: bool
    samples: int = 0
    slope_per_hour: float = 0.0
    stderr_per_hour: float = 0.0
    growth: float = 0.0  # slope times the judged window, in the series' unit
    bound_per_hour: float = 0.0
    floor: float = 0.0
    start: float | None = None  # fitted value at the start and end of the judged window
    end: float | None = None
    reason: str = ""


@dataclass(slots=True)
class Verdict:
    passed: bool
    warmup_s: float
    judged_s: float
    series: list[SeriesVerdict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # failures that are not a series (gateway gone, ...)

    @property
    def label(self) -> str:
        return "PASS" if self.passed else "FAIL"

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.label, "warmup_s": self.warmup_s, "judged_s": self.judged_s,
                "problems": list(self.problems), "series": [asdict(s) for s in self.series]}


class TooShort(ValueError):
    """Fewer than :data:`MIN_SAMPLES` samples after the warm-up: nothing to judge."""


def judge_series(name: str, t_s: Sequence[float], values: Sequence[float | None], warmup_s: float, bound: Bound,
                 noise_k: float = DEFAULT_NOISE_K) -> SeriesVerdict:
    """One series (times in seconds since the start, ``None`` where a sample missed it) after ``warmup_s``."""
    unit = UNITS.get(name, "")
    pairs = [(t / 3600, float(v)) for t, v in zip(t_s, values, strict=True) if t >= warmup_s and v is not None]
    if not pairs:
        return SeriesVerdict(name, unit, measured=False, flat=True, reason="not measured")
    if len(pairs) < MIN_SAMPLES:
        raise TooShort(f"{name}: {len(pairs)} samples after the warm-up, at least {MIN_SAMPLES} needed")
    hours = [p[0] for p in pairs]
    fit = fit_line(hours, [p[1] for p in pairs])
    window = hours[-1] - hours[0]
    growth = fit.slope * window
    allowed = bound.per_hour + noise_k * fit.stderr
    if growth <= 0:
        flat, reason = True, f"no growth ({fit.slope:+.3g} {unit}/h)"
    elif growth <= bound.floor:
        flat, reason = True, f"grew {growth:.3g} {unit} over the window, within the noise floor {bound.floor:g}"
    elif fit.slope <= allowed:
        flat, reason = True, (f"slope {fit.slope:.3g} {unit}/h within {bound.per_hour:g} + {noise_k:g} x "
                              f"{fit.stderr:.3g} (noise)")
    else:
        flat, reason = False, (f"grows {fit.slope:.3g} {unit}/h (+/- {fit.stderr:.3g}), over {bound.per_hour:g} "
                               f"{unit}/h beyond noise, and {growth:.3g} {unit} over the window (floor "
                               f"{bound.floor:g})")
    return SeriesVerdict(name, unit, True, flat, fit.n, fit.slope, fit.stderr, growth, bound.per_hour, bound.floor,
                         fit.intercept + fit.slope * hours[0], fit.intercept + fit.slope * hours[-1], reason)


def judge(t_s: Sequence[float], series: Mapping[str, Sequence[float | None]], warmup_s: float,
          bounds: Mapping[str, Bound] | None = None, noise_k: float = DEFAULT_NOISE_K,
          problems: Sequence[str] = ()) -> Verdict:
    """Every series in ``bounds`` (default :data:`DEFAULT_BOUNDS`); PASS when all measured ones are flat and
    there are no ``problems``. :class:`TooShort` when a measured series has too few samples to judge."""
    bounds = DEFAULT_BOUNDS if bounds is None else bounds
    judged = [t for t in t_s if t >= warmup_s]
    results = [judge_series(name, t_s, series.get(name, [None] * len(t_s)), warmup_s, bound, noise_k)
               for name, bound in bounds.items()]
    passed = not problems and all(r.flat for r in results) and any(r.measured for r in results)
    all_problems = list(problems)
    if not any(r.measured for r in results):
        all_problems.append("no series was measured")
    return Verdict(passed, warmup_s, (judged[-1] - judged[0]) if judged else 0.0, results, all_problems)
