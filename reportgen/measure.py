"""Measure convergence: per-cell distances, the steps at which a sampler indicates and reaches its final,
and power-law rates of approach to a common reference.

Distances (cached per cell in `STORE/metrics/`, keyed by the cell's and the target's cache keys):

- latent: RMS of the difference of final latents, divided by the target's RMS (0 = identical);
- ssim: 1 - SSIM of the decoded RGB images (scikit-image's structural_similarity).

Each cell is measured against two targets: the same sampler's highest-step image of that topic and seed
("own final"), and the reference sampler's highest-step image of that topic and seed ("reference").
docs/measurement.md explains the thresholds and how to read the results.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reportgen.errors import StoreError, StudyError
from reportgen.plan import Cell
from reportgen.samplers import get_sampler
from reportgen.store import Store, StoredCell, atomic_write
from reportgen.study import Study

METRICS_VERSION = 1  # bump when a distance's definition changes: old cached values are then ignored
METRICS = ("latent", "ssim")
# Defaults per metric: (indicator, converged, limit). Starting points, not calibrated on real models;
# docs/measurement.md says why each is where it is.
DEFAULT_THRESHOLDS: dict[str, tuple[float, float, float]] = {
    "latent": (0.15, 0.05, 0.10),
    "ssim": (0.20, 0.05, 0.10),
}
MIN_FIT_POINTS = 3


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
class Fit:
    """distance-to-reference ~ coefficient * steps ** exponent, by least squares in log-log."""

    exponent: float
    coefficient: float
    residual: float  # RMS of the log-space residuals (natural log)
    spread: float | None  # std of per-seed exponents, or the slope's standard error with one seed
    spread_kind: str  # "seeds" or "stderr"
    points: int
    seeds: int


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
    cache = _DistanceCache(store)
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
                    notes=notes, cache_problem=cache_problem)


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
        fit, note = fit_rate(rows, thresholds.metric)
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


def fit_power_law(steps: Iterable[float], distances: Iterable[float]) -> tuple[float, float, float]:
    """Least squares of log(distance) = log(a) + b log(steps); returns (b, a, RMS log residual)."""
    x = np.log(np.asarray(list(steps), dtype=float))
    y = np.log(np.asarray(list(distances), dtype=float))
    b, log_a = np.polyfit(x, y, 1)
    residual = float(np.sqrt(np.mean((y - (b * x + log_a)) ** 2)))
    return float(b), float(math.exp(log_a)), residual


def fit_rate(rows: list[CellMetrics], metric: str) -> tuple[Fit | None, str]:
    """Fit distance-to-reference against steps over all seeds; the spread from per-seed fits or stderr."""
    # Zero distances (the reference cell itself, or an image identical to it) have no logarithm.
    points = [(m.steps, d, m.seed) for m in rows
              if (d := m.distance(metric, "reference")) is not None and d > 0 and math.isfinite(d)]
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


def latent_distance(latents: np.ndarray, target: np.ndarray) -> float:
    """RMS of the difference, relative to the target's RMS: 0 for identical latents, ~1.4 for independent ones."""
    if latents.shape != target.shape:
        raise StoreError(f"latents of shape {latents.shape} cannot be compared with {target.shape}")
    scale = float(np.sqrt(np.mean(np.square(target, dtype=np.float64))))
    diff = float(np.sqrt(np.mean(np.square(latents.astype(np.float64) - target))))
    return diff / scale if scale > 0 else (0.0 if diff == 0 else math.inf)


def ssim_distance(image: np.ndarray, target: np.ndarray) -> float:
    """1 - SSIM of two RGB uint8 images (scikit-image, Gaussian-free 7x7 windows, or smaller if tiny)."""
    from skimage.metrics import structural_similarity

    if image.shape != target.shape:
        raise StoreError(f"images of shape {image.shape} cannot be compared with {target.shape}")
    side = min(image.shape[:2])
    window = min(7, side if side % 2 else side - 1)
    return float(1.0 - structural_similarity(image, target, channel_axis=2, data_range=255, win_size=window))


def export_files(analysis: Analysis) -> dict[str, bytes]:
    """The exports as site-relative paths and bytes: data/metrics.csv and data/fits.json."""
    return {"data/metrics.csv": metrics_csv(analysis).encode(),
            "data/fits.json": (json.dumps(fits_records(analysis), indent=1) + "\n").encode()}


def metrics_csv(analysis: Analysis) -> str:
    """The per-cell distances as CSV text."""
    buffer = io.StringIO()
    fields = list(CellMetrics.__dataclass_fields__)
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for m in analysis.cells:
        writer.writerow({k: "" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)
                         for k, v in asdict(m).items()})
    return buffer.getvalue()


def fits_records(analysis: Analysis) -> list[dict[str, Any]]:
    """One plain dict per topic and sampler: derived steps, convergence, and the rate fit."""
    records = []
    for s in analysis.samplers:
        fit = s.fit
        records.append({
            "topic": s.topic, "sampler": s.sampler, "label": s.label, "ancestral": s.ancestral,
            "order": s.order, "expected_exponent": s.expected_exponent,
            "exponent": _round(fit.exponent) if fit else None, "coefficient": _round(fit.coefficient) if fit else None,
            "exponent_spread": _round(fit.spread) if fit else None, "spread_kind": fit.spread_kind if fit else None,
            "residual": _round(fit.residual) if fit else None, "fit_points": fit.points if fit else 0,
            "fit_note": s.fit_note, "metric": analysis.thresholds.metric,
            "indicator_steps": s.indicator_steps, "indicator_nfe": s.indicator_nfe,
            "indicator_seconds": _round(s.indicator_seconds), "converged_steps": s.converged_steps,
            "converged_nfe": s.converged_nfe, "converged_seconds": _round(s.converged_seconds),
            "converges": s.converges, "limit_differs": s.limit_differs, "status": s.status,
            "final_to_reference": _round(s.final_to_reference), "variability": _round(s.variability),
            "max_steps": s.max_steps, "reference_sampler": analysis.reference_sampler,
            "per_seed": [{k: _round(v) if isinstance(v, float) else v for k, v in asdict(seed).items()
                          if k not in ("topic", "sampler", "steps")} for seed in s.seeds],
        })
    return records


class _DistanceCache:
    """Distances per (cell key, target key), one JSON file per cell under STORE/metrics/."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.files: dict[str, dict[str, dict[str, float]]] = {}
        self.dirty: set[str] = set()
        self.arrays: dict[tuple[str, str], np.ndarray] = {}
        self.computed = 0
        self.hits = 0

    def path(self, key: str) -> Path:
        return self.store.root / "metrics" / key[:2] / f"{key}.json"

    def distances(self, cell: StoredCell, target: StoredCell) -> dict[str, float]:
        """Both distances from `cell` to `target`, from the cache or computed (and remembered)."""
        if cell.key == target.key:
            return {"latent": 0.0, "ssim": 0.0}
        pairs = self.files.get(cell.key)
        if pairs is None:
            pairs = self.files[cell.key] = self._read(cell.key)
        found = pairs.get(target.key)
        if found is not None and set(found) >= set(METRICS):
            self.hits += 1
            return found
        value = {"latent": latent_distance(self._array(cell, "latent"), self._array(target, "latent")),
                 "ssim": ssim_distance(self._array(cell, "ssim"), self._array(target, "ssim"))}
        pairs[target.key] = value
        self.dirty.add(cell.key)
        self.computed += 1
        return value

    def save(self) -> str | None:
        """Write back every cell file that gained distances; if that fails, say why (a cache is optional: a
        read-only store can still be analysed and published)."""
        try:
            for key in sorted(self.dirty):
                body = {"version": METRICS_VERSION, "targets": self.files[key]}
                atomic_write(self.path(key), json.dumps(body, sort_keys=True).encode())
        except StoreError as exc:
            return str(exc)
        finally:
            self.dirty.clear()
        return None

    def _read(self, key: str) -> dict[str, dict[str, float]]:
        try:
            body = json.loads(self.path(key).read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(body, dict) or body.get("version") != METRICS_VERSION:
            return {}
        targets = body.get("targets")
        return targets if isinstance(targets, dict) else {}

    def _array(self, cell: StoredCell, kind: str) -> np.ndarray:
        if (cell.key, kind) not in self.arrays:
            if kind == "latent":
                self.arrays[(cell.key, kind)] = np.load(cell.latents, allow_pickle=False)
            else:
                from PIL import Image

                with Image.open(cell.image) as image:
                    self.arrays[(cell.key, kind)] = np.asarray(image.convert("RGB"))
        return self.arrays[(cell.key, kind)]


def _worst(values: list[int | None]) -> int | None:
    return None if not values or any(v is None for v in values) else max(v for v in values if v is not None)


def _mean_seconds(rows: list[CellMetrics], steps: int | None) -> float | None:
    seconds = [m.seconds for m in rows if m.steps == steps and m.seconds is not None]
    return float(np.mean(seconds)) if steps and seconds else None


def _round(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.6g}")
