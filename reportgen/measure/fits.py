"""Power-law fits of distance against steps: distance ~ coefficient * steps ** exponent."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

MIN_FIT_POINTS = 3


@dataclass(frozen=True)
class Fit:
    """distance-to-reference ~ coefficient * steps ** exponent, by least squares in log-log."""

    exponent: float
    coefficient: float
    residual: float  # RMS of the log-space residuals (natural log)
    spread: float | None  # std of per-seed exponents, or the slope's standard error with one seed
    spread_kind: str  # "seeds" or "stderr"
    points: int
    seeds: int


def fit_power_law(steps: Iterable[float], distances: Iterable[float]) -> tuple[float, float, float]:
    """Least squares of log(distance) = log(a) + b log(steps); returns (b, a, RMS log residual)."""
    x = np.log(np.asarray(list(steps), dtype=float))
    y = np.log(np.asarray(list(distances), dtype=float))
    b, log_a = np.polyfit(x, y, 1)
    residual = float(np.sqrt(np.mean((y - (b * x + log_a)) ** 2)))
    return float(b), float(math.exp(log_a)), residual


def fit_rate(measured: Iterable[tuple[int, float | None, int]]) -> tuple[Fit | None, str]:
    """Fit distance against steps over all seeds, from (steps, distance, seed) points; the spread from
    per-seed fits or, with one seed, the slope's standard error."""
    # Zero distances (the reference cell itself, or an image identical to it) have no logarithm.
    points = [(n, d, seed) for n, d, seed in measured if d is not None and d > 0 and math.isfinite(d)]
    if len({n for n, _, _ in points}) < MIN_FIT_POINTS:
        return None, f"too few points ({len({n for n, _, _ in points})} step counts with a distance > 0; need 3)"
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
    return Fit(exponent=b, coefficient=a, residual=residual, spread=spread, spread_kind=kind,
               points=len(points), seeds=len(set(seeds))), ""
