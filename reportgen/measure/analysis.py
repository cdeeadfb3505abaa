"""Measure convergence: per-cell distances, the steps at which a sampler indicates and reaches its final,
and power-law rates of approach to a common reference.

Each cell is measured against two targets: the same sampler's highest-step image of that topic and seed
("own final"), and the reference sampler's highest-step image of that topic and seed ("reference").
Distances are in measure/distances.py (cached per cell in `STORE/metrics/`), fits in measure/fits.py.
docs/measurement.md explains the thresholds and how to read the results.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from reportgen.errors import StoreError, StudyError
from reportgen.measure.distances import METRICS, DistanceCache
from reportgen.measure.fits import Fit, fit_rate
from reportgen.render.plan import Cell
from reportgen.render.store import Store, StoredCell
from reportgen.samplers import get_sampler
from reportgen.study.load import Study

# Defaults per metric: (indicator, converged, limit). Starting points, not calibrated on real models;
# docs/measurement.md says why each is where it is.
DEFAULT_THRESHOLDS: dict[str, tuple[float, float, float]] = {
    "latent": (0.15, 0.05, 0.10),
    "ssim": (0.20, 0.05, 0.10),
}


@dataclass(frozen=True)
class Thresholds:
    """What counts as indicating, converged, and a different limit, on one distance metric."""

    metric: str = "latent"
    indicator: float = DEFAULT_THRESHOLDS["latent"][0]
    converged: float = DEFAULT_THRESHOLDS["latent"][1]
    limit: float = DEFAULT_THRESHOLDS["latent"][2]


@dataclass(frozen=True)
class CellMetrics:
    """One cell's distances to its own final and to the reference (None where there is no such image)."""

    topic: str
    seed: int
    sampler: str
    steps: int
    nfe: int
    seconds: float | None
    key: str
    latent_to_final: float
    ssim_to_final: float
    latent_to_reference: float | None
    ssim_to_reference: float | None
    latent_to_previous: float | None  # to the same series' image at the next lower step count
    ssim_to_previous: float | None

    def distance(self, metric: str, target: str) -> float | None:
        """The distance on `metric` ("latent"/"ssim") to `target` ("final", "reference" or "previous")."""
        return getattr(self, f"{metric}_to_{target}")


@dataclass(frozen=True)
class SeedSummary:
    """One topic, seed and sampler: where its series indicates and reaches its own final."""

    topic: str
    seed: int
    sampler: str
    steps: tuple[int, ...]
    indicator_steps: int | None
    converged_steps: int | None
    indicator_nfe: int | None
    converged_nfe: int | None
    indicator_seconds: float | None
    converged_seconds: float | None
    variability: float | None  # mean distance between consecutive step counts
    final_to_reference: float | None
    limit_differs: bool


@dataclass(frozen=True)
class SamplerSummary:
    """One topic and sampler across its seeds: derived step counts, limit, variability and rate."""

    topic: str
    sampler: str
    label: str
    order: int
    ancestral: bool
    max_steps: int
    seeds: tuple[SeedSummary, ...]
    indicator_steps: int | None  # by which every seed indicates; None if some seed never does
    converged_steps: int | None
    indicator_nfe: int | None
    converged_nfe: int | None
    indicator_seconds: float | None  # mean over seeds of the cell's seconds at that step count
    converged_seconds: float | None
    variability: float | None
    final_to_reference: float | None  # mean over seeds
    limit_differs: bool
    fit: Fit | None
    fit_note: str  # why there is no fit, or what to keep in mind when reading it

    @property
    def converges(self) -> bool:
        """Deterministic and converged within the steps rendered, for every seed."""
        return not self.ancestral and self.converged_steps is not None

    @property
    def expected_exponent(self) -> int | None:
        """The slope numerical analysis predicts for distance to the reference: minus the order."""
        return None if self.ancestral else -self.order

    @property
    def status(self) -> str:
        """One phrase for tables: converged, not converged within N steps, ancestral, different limit."""
        if self.ancestral:
            return "ancestral: does not converge"
        if self.limit_differs:
            return "converges to a different limit" if self.converges else "different limit; not converged"
        return f"converged by {self.converged_steps}" if self.converges else f"not converged within {self.max_steps}"


@dataclass(frozen=True)
class Analysis:
    """Everything measured for a study: per-cell distances, per-sampler summaries, and how they were made."""

    reference_sampler: str
    thresholds: Thresholds
    cells: tuple[CellMetrics, ...]
    samplers: tuple[SamplerSummary, ...]
    missing: int  # cells asked for but not stored (not rendered yet)
    computed: int  # distances computed in this run
    cached: int  # distances read from the cache
    notes: tuple[str, ...]
    cache_problem: str | None = None  # why the computed distances could not be cached (a read-only store)
    redone: tuple[str, ...] = ()  # cached distances not used (damaged, or of other files), one line per kind

    @property
    def reference_label(self) -> str:
        """The reference sampler's label as the guide writes it (K_HEUN)."""
        return get_sampler(self.reference_sampler).label

    def topics(self) -> list[str]:
        """Topic slugs in study order."""
        return list(dict.fromkeys(c.topic for c in self.cells))

    def for_topic(self, topic: str) -> list[SamplerSummary]:
        """The topic's sampler summaries, in study order."""
        return [s for s in self.samplers if s.topic == topic]


def load_thresholds(study: Study) -> Thresholds:
    """The study's `[thresholds]` table over the defaults for its metric; StudyError on a bad value."""
    table = dict(study.tables.get("thresholds", {}))  # its keys were checked by load_study (THRESHOLD_KEYS)
    where = f"{study.root / 'study.toml'}: [thresholds]"
    metric = table.get("metric", "latent")
    if metric not in METRICS:
        raise StudyError(f"{where}: metric must be one of {', '.join(METRICS)}, got {metric!r}")
    values = dict(zip(("indicator", "converged", "limit"), DEFAULT_THRESHOLDS[metric], strict=True))
    for name in values:
        if name in table:
            value = table[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 10:
                raise StudyError(f"{where}: {name} must be a number between 0 and 10, got {value!r}")
            values[name] = float(value)
    if values["converged"] > values["indicator"]:
        raise StudyError(f"{where}: converged ({values['converged']}) must not exceed "
                         f"indicator ({values['indicator']})")
    return Thresholds(metric=metric, **values)


def analyze(study: Study, store: Store, cells: Iterable[Cell]) -> Analysis:
    """Measure every stored cell of `cells` against its own final and the reference; derive and fit."""
    thresholds = load_thresholds(study)
    reference = study.reference_sampler
    stored: dict[str, StoredCell] = {}
    series: dict[tuple[str, int, str], list[Cell]] = {}
    missing = 0
    for cell in cells:
        found = store.get(cell.key)
        if found is None:
            missing += 1
            continue
        stored[cell.key] = found
        series.setdefault((cell.topic, cell.seed, cell.sampler), []).append(cell)
    if not series:
        raise StoreError(f"no rendered cells of this study in {store.root}; run `reportgen render` first")
    for group in series.values():
        group.sort(key=lambda c: c.steps)

    unreferenced: list[str] = []  # topics without a reference image
    cache = DistanceCache(store)
    metrics: list[CellMetrics] = []
    try:
        for (topic, seed, sampler), group in series.items():
            final = group[-1]
            ref_group = series.get((topic, seed, reference))
            ref_cell = ref_group[-1] if ref_group else None
            if ref_cell is None and topic not in unreferenced:
                unreferenced.append(topic)
            previous: Cell | None = None
            for cell in group:
                to_final = cache.distances(stored[cell.key], stored[final.key])
                to_ref = cache.distances(stored[cell.key], stored[ref_cell.key]) if ref_cell else None
                to_previous = cache.distances(stored[cell.key], stored[previous.key]) if previous else None
                previous = cell
                seconds = stored[cell.key].record.get("seconds")
                metrics.append(CellMetrics(
                    topic=topic, seed=seed, sampler=sampler, steps=cell.steps, nfe=cell.nfe,
                    seconds=float(seconds) if isinstance(seconds, (int, float)) else None, key=cell.key,
                    latent_to_final=to_final["latent"], ssim_to_final=to_final["ssim"],
                    latent_to_reference=to_ref["latent"] if to_ref else None,
                    ssim_to_reference=to_ref["ssim"] if to_ref else None,
                    latent_to_previous=to_previous["latent"] if to_previous else None,
                    ssim_to_previous=to_previous["ssim"] if to_previous else None,
                ))
    except BaseException:  # Ctrl-C included: an interrupted analyze keeps what it computed
        cache.save()
        raise
    cache_problem = cache.save()
    notes = tuple(f"topic {topic}: the reference sampler {reference} is not rendered, so there are no distances "
                  "to a reference and no fits" for topic in unreferenced)

    summaries = []
    for topic, sampler in dict.fromkeys((m.topic, m.sampler) for m in metrics):
        rows = [m for m in metrics if m.topic == topic and m.sampler == sampler]
        summaries.append(summarize(topic, sampler, rows, thresholds, reference))
    return Analysis(reference_sampler=reference, thresholds=thresholds, cells=tuple(metrics),
                    samplers=tuple(summaries), missing=missing, computed=cache.computed, cached=cache.hits,
                    notes=notes, cache_problem=cache_problem, redone=cache.redone())


def first_staying_under(steps: list[int], distances: list[float], threshold: float) -> int | None:
    """The first step count from which the distance to the own final stays at or under `threshold`.

    The final itself (distance 0 by definition) does not count: a step qualifies only if it is below the
    highest step and it and every later step but the last are under the threshold. None if no step does.
    """
    found = None
    for n, d in reversed(list(zip(steps[:-1], distances[:-1], strict=True))):
        if d > threshold:
            break
        found = n
    return found


def summarize_seed(rows: list[CellMetrics], thresholds: Thresholds, ancestral: bool) -> SeedSummary:
    """Indicator and converged step counts, variability and the gap to the reference for one series."""
    rows = sorted(rows, key=lambda m: m.steps)
    steps = [m.steps for m in rows]
    own = [m.distance(thresholds.metric, "final") or 0.0 for m in rows]
    by_steps = {m.steps: m for m in rows}
    # Ancestral samplers inject fresh noise at every step: their "final" is one more sample, not a limit.
    indicator = None if ancestral else first_staying_under(steps, own, thresholds.indicator)
    converged = None if ancestral else first_staying_under(steps, own, thresholds.converged)
    consecutive = [d for m in rows if (d := m.distance(thresholds.metric, "previous")) is not None]
    variability = float(np.mean(consecutive)) if consecutive else None
    final_to_ref = rows[-1].distance(thresholds.metric, "reference")
    # The gap to the reference counts as a different limit only when it is above the threshold and larger
    # than the series' own last change, which (for first-order methods and doubled steps) estimates how
    # far the final still is from the sampler's own limit: a gap that the remaining error cannot close.
    last_change = own[-2] if len(own) >= 2 else math.inf
    limit_differs = (not ancestral and final_to_ref is not None and final_to_ref > thresholds.limit
                     and final_to_ref > last_change)
    return SeedSummary(
        topic=rows[0].topic, seed=rows[0].seed, sampler=rows[0].sampler, steps=tuple(steps),
        indicator_steps=indicator, converged_steps=converged,
        indicator_nfe=by_steps[indicator].nfe if indicator else None,
        converged_nfe=by_steps[converged].nfe if converged else None,
        indicator_seconds=by_steps[indicator].seconds if indicator else None,
        converged_seconds=by_steps[converged].seconds if converged else None,
        variability=variability, final_to_reference=final_to_ref, limit_differs=limit_differs,
    )


def summarize(topic: str, sampler: str, rows: list[CellMetrics], thresholds: Thresholds,
              reference: str) -> SamplerSummary:
    """Combine one topic's seeds for a sampler: worst-case step counts, mean gaps, and the rate fit."""
    info = get_sampler(sampler)
    per_seed = tuple(summarize_seed([m for m in rows if m.seed == seed], thresholds, info.ancestral)
                     for seed in dict.fromkeys(m.seed for m in rows))
    indicator = _worst([s.indicator_steps for s in per_seed])
    converged = _worst([s.converged_steps for s in per_seed])
    gaps = [s.final_to_reference for s in per_seed if s.final_to_reference is not None]
    variability = [s.variability for s in per_seed if s.variability is not None]
    fit, note = None, ""
    if info.ancestral:
        note = "ancestral: no limit to approach"
    elif not gaps:
        note = f"no reference image ({reference})"
    else:
        fit, note = fit_rate(reference_points(rows, thresholds.metric))
        if fit is not None and any(s.limit_differs for s in per_seed):
            note = "its limit differs from the reference: the slope flattens toward the gap"
    return SamplerSummary(
        topic=topic, sampler=sampler, label=info.label, order=info.order, ancestral=info.ancestral,
        max_steps=max(m.steps for m in rows), seeds=per_seed,
        indicator_steps=indicator, converged_steps=converged,
        indicator_nfe=info.nfe(indicator) if indicator else None,
        converged_nfe=info.nfe(converged) if converged else None,
        indicator_seconds=_mean_seconds(rows, indicator), converged_seconds=_mean_seconds(rows, converged),
        variability=float(np.mean(variability)) if variability else None,
        final_to_reference=float(np.mean(gaps)) if gaps else None,
        limit_differs=any(s.limit_differs for s in per_seed), fit=fit, fit_note=note,
    )


def reference_points(rows: Iterable[CellMetrics], metric: str) -> list[tuple[int, float | None, int]]:
    """(steps, distance to the reference, seed) of each cell, the points `fit_rate` fits."""
    return [(m.steps, m.distance(metric, "reference"), m.seed) for m in rows]


def _worst(values: list[int | None]) -> int | None:
    return None if not values or any(v is None for v in values) else max(v for v in values if v is not None)


def _mean_seconds(rows: list[CellMetrics], steps: int | None) -> float | None:
    seconds = [m.seconds for m in rows if m.steps == steps and m.seconds is not None]
    return float(np.mean(seconds)) if steps and seconds else None


