"""Power-law fits of distance against steps, distance ~ coefficient * steps ** exponent, over a range of step
counts chosen from the data: the pre-asymptotic start and the floor are left out (docs/measurement.md, "Rates").
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise
from statistics import median

import numpy as np

MIN_FIT_POINTS = 3
# Distances above these are pre-asymptotic: the image is still a large part of the way to an unrelated one
# (relative latent RMS ~1.4, 1 - SSIM ~1 for unrelated images), where no power law of the step count holds.
PRE_ASYMPTOTIC = {"latent": 0.5, "ssim": 0.35}
FLOOR_FACTOR = 3.0  # a point within this factor of the floor is on it: at least a third of its distance is floor
FLAT_SLOPE = -0.5  # a series whose last local slope is above this (flatter) has reached its floor,
BEND = 0.7  # as has one whose last local slope is less than this fraction of its earlier ones' median (given
# at least two earlier ones: with three step counts a steep pre-asymptotic first slope is no baseline)


@dataclass(frozen=True)
class FitRange:
    """The step counts a fit uses, and those it leaves out with why."""

    steps: tuple[int, ...]  # fitted, ascending
    dropped: tuple[tuple[int, str], ...]  # (steps, reason): "pre-asymptotic", "floor", "reference", "no distance"
    floor: float | None  # the floor's level (the smallest median distance of a flat tail), None if none was reached

    def describe(self, level: float) -> str:
        """One phrase: the range used and what was left out."""
        used = f"{self.steps[0]}-{self.steps[-1]} steps" if len(self.steps) > 1 else \
            (f"{self.steps[0]} steps" if self.steps else "no step counts")
        reasons = {
            "pre-asymptotic": f"pre-asymptotic, distance above {level:g}",
            "floor": f"on the floor, within {FLOOR_FACTOR:g}x of {self.floor:.3g}" if self.floor else "on the floor",
            "reference": "at or above the reference's steps",
            "no distance": "no distance above 0",
        }
        left = [f"{', '.join(str(n) for n, r in self.dropped if r == why)} {text}" for why, text in reasons.items()
                if any(r == why for _, r in self.dropped)]
        return used + (f" (left out: {'; '.join(left)})" if left else "")


@dataclass(frozen=True)
class Fit:
    """distance-to-reference ~ coefficient * steps ** exponent, by least squares in log-log over `steps`."""

    exponent: float
    coefficient: float
    residual: float  # RMS of the log-space residuals (natural log)
    spread: float | None  # std of per-seed exponents, or the slope's standard error with one seed
    spread_kind: str  # "seeds" or "stderr"
    points: int
    seeds: int
    steps: tuple[int, ...] = ()  # the fit range: the step counts fitted
    exponent_high: float | None = None  # the slope without the range's lowest step count (sensitivity to the range)
    exponent_low: float | None = None  # the slope without its highest step count

    @property
    def sensitivity(self) -> float | None:
        """How far the slope moves when the range loses its lowest or its highest step count."""
        moved = [abs(b - self.exponent) for b in (self.exponent_high, self.exponent_low) if b is not None]
        return max(moved) if moved else None


def fit_power_law(steps: Iterable[float], distances: Iterable[float]) -> tuple[float, float, float]:
    """Least squares of log(distance) = log(a) + b log(steps); returns (b, a, RMS log residual)."""
    x = np.log(np.asarray(list(steps), dtype=float))
    y = np.log(np.asarray(list(distances), dtype=float))
    b, log_a = np.polyfit(x, y, 1)
    residual = float(np.sqrt(np.mean((y - (b * x + log_a)) ** 2)))
    return float(b), float(math.exp(log_a)), residual


def choose_range(measured: Iterable[tuple[int, float | None, int]], level: float,
                 below: int | None = None) -> FitRange:
    """The step counts to fit, from (steps, distance, seed) points, judged on each step count's median over seeds.

    Left out, in this order: step counts at or above `below` (the reference's own), those without a distance
    above 0, every step count up to the last one whose distance is above `level` (pre-asymptotic), and, when
    the series has flattened (its last local slope is above FLAT_SLOPE, or, with at least two earlier ones,
    less than BEND times their median), the tail from the first step count within FLOOR_FACTOR of the floor on."""
    by_steps: dict[int, list[float]] = {}
    dropped: list[tuple[int, str]] = []
    for n, d, _ in measured:
        by_steps.setdefault(n, [])
        if d is not None and d > 0 and math.isfinite(d):
            by_steps[n].append(d)
    series: list[tuple[int, float]] = []
    for n in sorted(by_steps):
        if below is not None and n >= below:
            dropped.append((n, "reference"))
        elif not by_steps[n]:
            dropped.append((n, "no distance"))
        else:
            series.append((n, median(by_steps[n])))
    last_high = max((i for i, (_, d) in enumerate(series) if d > level), default=-1)
    dropped += [(n, "pre-asymptotic") for n, _ in series[:last_high + 1]]
    series = series[last_high + 1:]
    floor = None
    slopes = [math.log(d2 / d1) / math.log(n2 / n1) for (n1, d1), (n2, d2) in pairwise(series)]
    if slopes and (slopes[-1] > FLAT_SLOPE or (len(slopes) >= 3 and slopes[-1] > BEND * median(slopes[:-1]))):
        floor = min(d for _, d in series)
        first = next(i for i, (_, d) in enumerate(series) if d <= FLOOR_FACTOR * floor)
        dropped += [(n, "floor") for n, _ in series[first:]]
        series = series[:first]
    return FitRange(steps=tuple(n for n, _ in series), dropped=tuple(sorted(dropped)), floor=floor)


def fit_rate(measured: Iterable[tuple[int, float | None, int]], level: float = PRE_ASYMPTOTIC["latent"],
             below: int | None = None) -> tuple[Fit | None, FitRange, str]:
    """Fit distance against steps over the range `choose_range` picks, pooling all seeds; the spread from per-seed
    fits over the same range or, with one seed, the slope's standard error. A note says why there is no fit."""
    measured = list(measured)
    chosen = choose_range(measured, level, below)
    if len(chosen.steps) < MIN_FIT_POINTS:
        left = len(chosen.steps)
        return None, chosen, (f"too few points: {left} step count{'' if left == 1 else 's'} in the fit range, need "
                              f"{MIN_FIT_POINTS}; range {chosen.describe(level)}")
    kept = set(chosen.steps)
    points = [(n, d, seed) for n, d, seed in measured if n in kept and d is not None and d > 0 and math.isfinite(d)]
    steps, distances, seeds = zip(*points, strict=True)
    b, a, residual = fit_power_law(steps, distances)
    per_seed = []
    for seed in dict.fromkeys(seeds):
        mine = [(n, d) for n, d, s in points if s == seed]
        if len({n for n, _ in mine}) >= MIN_FIT_POINTS:
            per_seed.append(fit_power_law(*zip(*mine, strict=True))[0])
    spread: float | None
    if len(per_seed) >= 2:
        spread, kind = float(np.std(per_seed, ddof=1)), "seeds"
    else:
        x = np.log(np.asarray(steps, dtype=float))
        dof = len(x) - 2
        sxx = float(np.sum((x - x.mean()) ** 2))
        spread = float(math.sqrt(residual**2 * len(x) / dof / sxx)) if dof > 0 and sxx > 0 else None
        kind = "stderr"

    def without(n: int) -> float:
        rest = [(m, d) for m, d, _ in points if m != n]
        return fit_power_law(*zip(*rest, strict=True))[0]

    return Fit(exponent=b, coefficient=a, residual=residual, spread=spread, spread_kind=kind, points=len(points),
               seeds=len(set(seeds)), steps=chosen.steps, exponent_high=without(chosen.steps[0]),
               exponent_low=without(chosen.steps[-1])), chosen, ""
