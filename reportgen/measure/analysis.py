"""Measure convergence: per-cell distances, the steps at which a sampler indicates and reaches its final,
and power-law rates of approach to a common reference.

Each cell is measured against two targets: the same sampler's highest-step image of that topic and seed
("own final"), and the topic and seed's reference image ("reference"): the reference sampler at
`reference_steps`, rendered beside the matrix (or, with `reference_steps = 0`, the reference sampler's
highest step count in the matrix). Distances are in measure/distances.py (cached per cell in
`STORE/metrics/`), fits in measure/fits.py, the schedules that explain differences in render/schedule.py.
docs/measurement.md explains the thresholds and how to read the results.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np

from reportgen.errors import StoreError, StudyError
from reportgen.measure.distances import METRICS, DistanceCache
from reportgen.measure.fits import PRE_ASYMPTOTIC, Fit, FitRange, fit_rate
from reportgen.render.plan import Cell
from reportgen.render.schedule import Schedule, schedule
from reportgen.render.store import Store, StoredCell
from reportgen.samplers import DEFAULT_SCHEDULE, get_sampler
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
    # How its schedule starts and ends (render/schedule.py); None where the model's scheduler config is unknown.
    first_timestep: float | None = None
    last_sigma: float | None = None
    final_denoise: bool | None = None
    step_problem: str = ""
    # The axes besides sampler and steps (a lane is model, topic, seed, sampler, schedule, cfg).
    model: str = ""  # the model's spec in a study with `models`; "" for a study of one model
    schedule: str = "default"  # a name of samplers.SCHEDULES
    cfg: float | None = None  # the cell's CFG scale (the topic's -C unless the study has a cfg axis)

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
    reference_indicator_steps: int | None = None  # the same thresholds, on the distance to the reference
    reference_converged_steps: int | None = None
    budgets: tuple[tuple[int, float | None], ...] = ()  # (model calls, distance to the reference at that many)


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
    limit_differs: bool  # in a majority of seeds
    fit: Fit | None
    fit_note: str  # why there is no fit, or what to keep in mind when reading it
    reference_steps: int | None = None  # the reference image's step count for this topic
    reference_indicator_steps: int | None = None  # by which every seed indicates the reference
    reference_converged_steps: int | None = None
    reference_indicator_nfe: int | None = None
    reference_converged_nfe: int | None = None
    limit_seeds: int = 0  # seeds whose final stays away from the reference
    fit_range: FitRange | None = None
    expected_note: str = ""  # where practice differs from the order's expectation, and why
    differences: tuple[str, ...] = ()  # how its schedule differs from the reference's: causes of a different limit
    budgets: tuple[tuple[int, float | None], ...] = ()  # (model calls, mean over seeds of the distance there)
    final_schedule: Schedule | None = None  # its schedule at its highest step count
    model: str = ""  # the lane's other axes, as CellMetrics
    schedule: str = "default"
    cfg: float | None = None

    @property
    def variant(self) -> tuple[str, str, float | None]:
        """Its values of the axes beyond topic and sampler: (model, schedule, cfg)."""
        return (self.model, self.schedule, self.cfg)

    @property
    def converges(self) -> bool:
        """Deterministic and converged to its own final within the steps rendered, for every seed."""
        return not self.ancestral and self.converged_steps is not None

    @property
    def converges_to_reference(self) -> bool:
        """Deterministic and converged to the reference within the steps rendered, for every seed."""
        return not self.ancestral and self.reference_converged_steps is not None

    @property
    def expected_exponent(self) -> int | None:
        """The slope numerical analysis predicts for distance to the reference: minus the order."""
        return None if self.ancestral else -self.order

    @property
    def status(self) -> str:
        """One phrase for tables: converged, not converged within N steps, ancestral, different limit."""
        if self.ancestral:
            return "ancestral: does not converge"
        seeds = f" ({self.limit_seeds} of {len(self.seeds)} seeds)" if len(self.seeds) > 1 else ""
        if self.limit_differs:
            return (f"converges to a different limit{seeds}" if self.converges
                    else f"different limit{seeds}; not converged")
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
    reference_steps: tuple[tuple[str, int | None], ...] = ()  # per topic: the reference image's step count
    budgets: tuple[int, ...] = ()  # the model-call budgets the distances are compared at
    axes: tuple[str, ...] = ()  # the axes the study varies beyond sampler, steps and seed: model, schedule, cfg

    def values(self, axis: str) -> list[Any]:
        """The values of `axis` ("model", "schedule", "cfg") measured, in study order."""
        return list(dict.fromkeys(getattr(m, axis) for m in self.cells))

    def view(self, **chosen: Any) -> Analysis:
        """The analysis of one value of some axes (`schedule="karras"`, `cfg=3.0`, `model="tiny"`): its cells and
        summaries only, so that what reads one sampler x steps matrix (findings, plots, the site's sections)
        reads it unchanged. No arguments: all of it."""
        def keep(x: Any) -> bool:
            return all(getattr(x, axis) == value for axis, value in chosen.items())

        return dataclasses.replace(self, cells=tuple(m for m in self.cells if keep(m)),
                                   samplers=tuple(s for s in self.samplers if keep(s)))

    def default_view(self) -> Analysis:
        """The view a page shows first: each varied axis at its first value (a study without axes: all of it)."""
        return self.view(**{axis: self.values(axis)[0] for axis in self.axes if axis in ("model", "schedule", "cfg")})

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


def analyze(study: Study, store: Store, cells: Iterable[Cell],
            scheduler_config: dict[str, Any] | None = None) -> Analysis:
    """Measure every stored cell of `cells` against its own final and the reference; derive and fit.

    Each cell's schedule facts come from its record; `scheduler_config` (the model's scheduler config) lets them be
    computed from diffusers' scheduler for cells rendered before records held them (which imports diffusers: a
    store whose records hold them is analysed without it)."""
    thresholds = load_thresholds(study)
    reference = study.reference_sampler
    stored: dict[str, StoredCell] = {}
    series: dict[Lane, list[Cell]] = {}
    by_what: dict[tuple[str, int, str, int, str, str, float], Cell] = {}
    missing = 0
    for cell in cells:
        found = store.get(cell.key)
        if found is None:
            missing += 1
            continue
        stored[cell.key] = found
        by_what[(cell.topic, cell.seed, cell.sampler, cell.steps, cell.model, cell.schedule_type, cell.cfg)] = cell
        if not cell.reference:
            series.setdefault((cell.topic, cell.seed, cell.sampler, cell.model, cell.schedule_type, cell.cfg),
                              []).append(cell)
    if not series:
        raise StoreError(f"no rendered cells of this study in {store.root}; run `reportgen render` first")
    for group in series.values():
        group.sort(key=lambda c: c.steps)

    ref_steps = {t.slug: study.reference_steps_for(t) for t in study.topics}
    unreferenced: dict[str, str] = {}  # topic -> why it has no reference image
    ref_facts: dict[tuple[str, str, float], Schedule | None] = {}  # (topic, model, cfg) -> the reference's schedule
    cache = DistanceCache(store)
    metrics: list[CellMetrics] = []
    try:
        for (topic, seed, sampler, model, schedule_type, cfg), group in series.items():
            final = group[-1]
            # the reference of a lane: same model, topic, seed and cfg, the reference sampler's own schedule
            ref_cell = _reference_cell((topic, seed, reference, model, DEFAULT_SCHEDULE, cfg), ref_steps.get(topic),
                                       series, by_what)
            if ref_cell is not None and ref_facts.get((topic, model, cfg)) is None:
                ref_facts[(topic, model, cfg)] = _facts(ref_cell, stored[ref_cell.key].record, scheduler_config)
            if ref_cell is None and topic not in unreferenced:
                label = get_sampler(reference).label
                unreferenced[topic] = (f"topic {topic}: the reference ({label} at {ref_steps[topic]} steps) is not "
                                       "rendered yet, so there are no distances to a reference and no fits; run "
                                       "`reportgen render`" if ref_steps.get(topic) else
                                       f"topic {topic}: the reference sampler {reference} is not rendered, so there "
                                       "are no distances to a reference and no fits")
            previous: Cell | None = None
            for cell in group:
                to_final = cache.distances(stored[cell.key], stored[final.key])
                to_ref = cache.distances(stored[cell.key], stored[ref_cell.key]) if ref_cell else None
                to_previous = cache.distances(stored[cell.key], stored[previous.key]) if previous else None
                previous = cell
                record = stored[cell.key].record
                seconds = record.get("seconds")
                facts = _facts(cell, record, scheduler_config)
                metrics.append(CellMetrics(
                    topic=topic, seed=seed, sampler=sampler, steps=cell.steps, nfe=cell.nfe,
                    seconds=float(seconds) if isinstance(seconds, (int, float)) else None, key=cell.key,
                    latent_to_final=to_final["latent"], ssim_to_final=to_final["ssim"],
                    latent_to_reference=to_ref["latent"] if to_ref else None,
                    ssim_to_reference=to_ref["ssim"] if to_ref else None,
                    latent_to_previous=to_previous["latent"] if to_previous else None,
                    ssim_to_previous=to_previous["ssim"] if to_previous else None,
                    first_timestep=facts.first_timestep if facts else None,
                    last_sigma=facts.last_sigma if facts else None,
                    final_denoise=facts.final_denoise if facts else None,
                    step_problem=facts.step_problem if facts else "",
                    model=model, schedule=schedule_type, cfg=cfg,
                ))
    except BaseException:  # Ctrl-C included: an interrupted analyze keeps what it computed
        cache.save()
        raise
    cache_problem = cache.save()

    # What the reference is, per topic: its step count (the reference sampler's highest in the matrix when the
    # study renders no separate reference) and its schedule, which the other samplers' are compared with.
    used: dict[str, int | None] = {}
    for topic in dict.fromkeys(m.topic for m in metrics):
        mine = [m.steps for m in metrics if m.topic == topic and m.sampler == reference]
        used[topic] = ref_steps.get(topic) or (max(mine) if mine else None)
    budgets = tuple(sorted({n for t in study.topics for n in t.steps}))
    summaries = []
    for lane in dict.fromkeys((m.topic, m.sampler, m.model, m.schedule, m.cfg) for m in metrics):
        topic, sampler = lane[0], lane[1]
        rows = [m for m in metrics if (m.topic, m.sampler, m.model, m.schedule, m.cfg) == lane]
        summary = summarize(topic, sampler, rows, thresholds, reference, used[topic],
                            separate=ref_steps.get(topic) is not None,
                            reference_facts=ref_facts.get((topic, lane[2], rows[0].cfg or 0.0)), budgets=budgets)
        summaries.append(dataclasses.replace(summary, model=lane[2], schedule=lane[3], cfg=lane[4]))
    return Analysis(reference_sampler=reference, thresholds=thresholds, cells=tuple(metrics),
                    samplers=tuple(summaries), missing=missing, computed=cache.computed, cached=cache.hits,
                    notes=tuple(unreferenced.values()), cache_problem=cache_problem,
                    reference_steps=tuple(used.items()), budgets=budgets,
                    redone=cache.redone(), axes=tuple(study.axes()))


Lane = tuple[str, int, str, str, str, float]  # (topic, seed, sampler, model, schedule, cfg): a series of steps


def _reference_cell(lane: Lane, steps: int | None, series: dict[Lane, list[Cell]],
                    by_what: dict[tuple[str, int, str, int, str, str, float], Cell]) -> Cell | None:
    """The stored reference image of a lane's model, topic, seed and cfg (`lane` names the reference sampler at its
    own schedule): the reference sampler at `steps`, or with no separate reference (steps None) the reference
    sampler's highest step count in the matrix."""
    topic, seed, reference, model, schedule_type, cfg = lane
    if steps is not None:
        return by_what.get((topic, seed, reference, steps, model, schedule_type, cfg))
    group = series.get(lane)
    return group[-1] if group else None


def _facts(cell: Cell, record: dict[str, Any], scheduler_config: dict[str, Any] | None) -> Schedule | None:
    """The cell's schedule facts: from its record (written at render time, by the diffusers version in its key);
    for a cell rendered before records held them, computed from the registry for the model's scheduler config."""
    kept = record.get("schedule")
    if isinstance(kept, dict):
        try:
            return Schedule(**kept)
        except TypeError:  # a record of another version
            pass
    if scheduler_config is None or get_sampler(cell.sampler).flow:  # a flow pipeline's timesteps depend on its
        return None  # image size and sigmas, which the registry does not know: such a cell's facts stay unknown
    return schedule(cell.sampler, cell.steps, scheduler_config)


def first_staying_under(steps: list[int], distances: list[float], threshold: float) -> int | None:
    """The first step count from which the distance to the own final stays at or under `threshold`.

    The final itself (distance 0 by definition) does not count: a step qualifies only if it is below the
    highest step and it and every later step but the last are under the threshold. None if no step does.
    """
    return first_from(steps[:-1], distances[:-1], threshold)


def first_from(steps: list[int], distances: list[float], threshold: float) -> int | None:
    """The first step count from which every distance (this one and all later ones) is at or under `threshold`."""
    found = None
    for n, d in reversed(list(zip(steps, distances, strict=True))):
        if d > threshold:
            break
        found = n
    return found


def at_budget(calls: list[int], distances: list[float], budget: int) -> float | None:
    """The distance at `budget` model calls: a rendered cell's at exactly that many, else interpolated linearly in
    log(distance) against log(calls) between the two rendered cells around it; None outside the rendered calls."""
    pairs = sorted((c, d) for c, d in zip(calls, distances, strict=True) if d > 0)
    for (c1, d1), (c2, d2) in pairwise(pairs):
        if c1 <= budget <= c2:
            if budget in (c1, c2) or c1 == c2:
                return d1 if budget == c1 else d2
            w = math.log(budget / c1) / math.log(c2 / c1)
            return math.exp((1 - w) * math.log(d1) + w * math.log(d2))
    return pairs[0][1] if len(pairs) == 1 and pairs[0][0] == budget else None


def summarize_seed(rows: list[CellMetrics], thresholds: Thresholds, ancestral: bool,
                   reference_steps: int | None = None, budgets: tuple[int, ...] = ()) -> SeedSummary:
    """Indicator and converged step counts (to the own final and to the reference), variability, the distance at
    each budget of model calls and the gap to the reference for one series."""
    rows = sorted(rows, key=lambda m: m.steps)
    steps = [m.steps for m in rows]
    own = [m.distance(thresholds.metric, "final") or 0.0 for m in rows]
    by_steps = {m.steps: m for m in rows}
    # Ancestral samplers inject fresh noise at every step: their "final" is one more sample, not a limit.
    indicator = None if ancestral else first_staying_under(steps, own, thresholds.indicator)
    converged = None if ancestral else first_staying_under(steps, own, thresholds.converged)
    # To the reference: every step count below the reference's own counts, the highest one included.
    to_ref = [(m.steps, m.nfe, d) for m in rows if (d := m.distance(thresholds.metric, "reference")) is not None
              and (reference_steps is None or m.steps < reference_steps)]
    ref_n, ref_d = [n for n, _, _ in to_ref], [d for _, _, d in to_ref]
    ref_indicator = None if ancestral or not to_ref else first_from(ref_n, ref_d, thresholds.indicator)
    ref_converged = None if ancestral or not to_ref else first_from(ref_n, ref_d, thresholds.converged)
    at = tuple((b, at_budget([c for _, c, _ in to_ref], ref_d, b)) for b in budgets) if to_ref else ()
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
        reference_indicator_steps=ref_indicator, reference_converged_steps=ref_converged, budgets=at,
    )


def summarize(topic: str, sampler: str, rows: list[CellMetrics], thresholds: Thresholds, reference: str,
              reference_steps: int | None = None, *, separate: bool = True,
              reference_facts: Schedule | None = None, budgets: tuple[int, ...] = ()) -> SamplerSummary:
    """Combine one topic's seeds for a sampler: worst-case step counts, mean gaps, and the rate fit.

    `reference_steps` is the reference image's step count (points at or above it are not fitted); `separate`
    says whether that image is rendered beside the matrix (False: it is the reference sampler's own highest
    step, which the reference sampler is then never fitted against)."""
    info = get_sampler(sampler)
    per_seed = tuple(summarize_seed([m for m in rows if m.seed == seed], thresholds, info.ancestral,
                                    reference_steps, budgets)
                     for seed in dict.fromkeys(m.seed for m in rows))
    indicator = _worst([s.indicator_steps for s in per_seed])
    converged = _worst([s.converged_steps for s in per_seed])
    ref_indicator = _worst([s.reference_indicator_steps for s in per_seed])
    ref_converged = _worst([s.reference_converged_steps for s in per_seed])
    gaps = [s.final_to_reference for s in per_seed if s.final_to_reference is not None]
    variability = [s.variability for s in per_seed if s.variability is not None]
    flagged = sum(s.limit_differs for s in per_seed)
    limit_differs = 2 * flagged > len(per_seed)  # a majority of seeds: one seed's gap is not the sampler's
    fit, chosen, note = None, None, ""
    if info.ancestral:
        note = "ancestral: no limit to approach"
    elif not gaps:
        note = f"no reference image ({reference})"
    elif sampler == reference and not separate:
        note = ("no separate reference (reference_steps = 0): not fitted against its own highest step count; set "
                "reference_steps in study.toml")
    else:
        fit, chosen, note = fit_rate(reference_points(rows, thresholds.metric),
                                     PRE_ASYMPTOTIC[thresholds.metric], reference_steps)
        if fit is not None and limit_differs:
            note = "its limit differs from the reference: the slope flattens toward the gap"
    differences = () if info.ancestral else schedule_differences(rows, reference_facts)
    return SamplerSummary(
        topic=topic, sampler=sampler, label=info.label, order=info.order, ancestral=info.ancestral,
        max_steps=max(m.steps for m in rows), seeds=per_seed,
        indicator_steps=indicator, converged_steps=converged,
        indicator_nfe=info.nfe(indicator) if indicator else None,
        converged_nfe=info.nfe(converged) if converged else None,
        indicator_seconds=_mean_seconds(rows, indicator), converged_seconds=_mean_seconds(rows, converged),
        variability=float(np.mean(variability)) if variability else None,
        final_to_reference=float(np.mean(gaps)) if gaps else None,
        limit_differs=limit_differs, fit=fit, fit_note=note, reference_steps=reference_steps,
        reference_indicator_steps=ref_indicator, reference_converged_steps=ref_converged,
        reference_indicator_nfe=info.nfe(ref_indicator) if ref_indicator else None,
        reference_converged_nfe=info.nfe(ref_converged) if ref_converged else None,
        limit_seeds=flagged, fit_range=chosen, expected_note=expected_note(info.order, info.ancestral, rows),
        differences=differences, budgets=_mean_budgets(per_seed, budgets), final_schedule=_schedule_of(rows),
    )


def schedule_differences(rows: list[CellMetrics], reference: Schedule | None) -> tuple[str, ...]:
    """How the sampler's schedule differs from the reference's (render/schedule.py): the known causes of a limit
    that is not the reference's, or of a distance that does not fall steadily with the steps."""
    rows = sorted(rows, key=lambda m: m.steps)
    final = rows[-1]
    out = []
    if reference is not None and final.final_denoise is False and reference.final_denoise:
        out.append(f"it ends at sigma {final.last_sigma:.3g} without a final denoise (set_alpha_to_one = False), "
                   "where the reference ends at sigma 0")
    if reference is not None and final.final_denoise and final.last_sigma and reference.last_sigma \
            and final.last_sigma > 1.05 * reference.last_sigma:
        out.append(f"its last nonzero sigma is {final.last_sigma:.3g} at {final.steps} steps against the "
                   f"reference's {reference.last_sigma:.3g}: its final jump to sigma 0 is longer")
    starts = dict.fromkeys((m.steps, m.first_timestep) for m in rows if m.first_timestep is not None)
    if reference is not None and any(t < reference.first_timestep - 0.5 for _, t in starts):
        if len({t for _, t in starts}) > 1:
            listed = ", ".join(f"{t:g} at {n}" for n, t in starts)
            out.append(f"it starts at a timestep that depends on the steps ({listed}; the reference at "
                       f"{reference.first_timestep:g}): leading spacing")
        else:
            out.append(f"it starts at timestep {next(iter(starts))[1]:g}, the reference at "
                       f"{reference.first_timestep:g}")
    problems = dict.fromkeys(m.steps for m in rows if m.step_problem)
    if problems:
        first = next(m for m in rows if m.step_problem)
        out.append(f"diffusers' DDIM/PNDM step-count problem at {', '.join(map(str, problems))} steps: "
                   f"{first.step_problem}")
    return tuple(out)


def expected_note(order: int, ancestral: bool, rows: list[CellMetrics]) -> str:
    """Why the measured slope may differ from minus the order for this sampler, or ""."""
    if ancestral:
        return ""
    rows = sorted(rows, key=lambda m: m.steps)
    notes = []
    if order >= 3:
        notes.append(f"nominal order {order} holds only once the multistep history is warm and the steps are small; "
                     "expect a shallower slope at these step counts")
    sigmas = [(m.steps, m.last_sigma) for m in rows if m.last_sigma is not None and m.final_denoise]
    if len({round(s, 4) for _, s in sigmas}) > 1:
        (n1, s1), (n2, s2) = sigmas[0], sigmas[-1]
        notes.append(f"its last nonzero sigma falls with the steps ({s1:.3g} at {n1}, {s2:.3g} at {n2}), so its final "
                     "first-order jump to sigma 0 shrinks only like 1/steps: expect a slope near -1")
    if len({m.first_timestep for m in rows if m.first_timestep is not None}) > 1:
        notes.append("its first timestep changes with the steps (leading spacing), so its distance need not fall "
                     "steadily")
    if any(m.final_denoise is False for m in rows):
        notes.append("it ends without a final denoise, so the slope flattens toward its gap to the reference")
    return "; ".join(notes)


def reference_points(rows: Iterable[CellMetrics], metric: str) -> list[tuple[int, float | None, int]]:
    """(steps, distance to the reference, seed) of each cell, the points `fit_rate` fits."""
    return [(m.steps, m.distance(metric, "reference"), m.seed) for m in rows]


def _schedule_of(rows: list[CellMetrics]) -> Schedule | None:
    final = max(rows, key=lambda m: m.steps)
    if final.first_timestep is None or final.final_denoise is None:
        return None
    return Schedule(final.first_timestep, final.last_sigma, final.final_denoise, final.step_problem)


def _worst(values: list[int | None]) -> int | None:
    return None if not values or any(v is None for v in values) else max(v for v in values if v is not None)


def _mean_seconds(rows: list[CellMetrics], steps: int | None) -> float | None:
    seconds = [m.seconds for m in rows if m.steps == steps and m.seconds is not None]
    return float(np.mean(seconds)) if steps and seconds else None


def _mean_budgets(per_seed: tuple[SeedSummary, ...], budgets: tuple[int, ...]) -> tuple[tuple[int, float | None], ...]:
    out = []
    for b in budgets:
        values = [d for s in per_seed for c, d in s.budgets if c == b and d is not None]
        out.append((b, float(np.mean(values)) if values else None))
    return tuple(out)
