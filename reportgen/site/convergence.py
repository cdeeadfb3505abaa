"""The site's convergence section: the measured Analysis, its findings, plots and exports as site files.

`gather_convergence` is called by site/build.py's `gather`; templates reach the result as
`site.convergence` (the macros of templates/_convergence.html and _convergence.md, used by the topic
pages, the index and guide.md). Plots are named by a digest of what they show, so an unchanged plot is reused from the
previous build rather than drawn again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from reportgen.measure.analysis import Analysis, CellMetrics, SamplerSummary, analyze
from reportgen.measure.exports import export_files, fits_records
from reportgen.measure.findings import Findings, findings
from reportgen.measure.fits import FLOOR_FACTOR, PRE_ASYMPTOTIC
from reportgen.render.plan import Cell
from reportgen.render.store import Store
from reportgen.site.files import Digests, Previous, SiteFile
from reportgen.study.load import Study

PLOTS_VERSION = 2  # bump when the plots' look changes, so previous builds' SVGs are not reused
METRICS_CSV = "data/metrics.csv"
FITS_JSON = "data/fits.json"


@dataclass(frozen=True)
class ScheduleRow:
    """One sampler's schedule in a topic (render/schedule.py): where it starts at each step count, where it ends."""

    sampler: str
    label: str
    starts: tuple[tuple[int, float | None], ...]  # (steps, first timestep)
    start: float | None  # the first timestep when it is the same at every step count, else None
    last_sigma: float | None  # at its highest step count
    last_sigmas: tuple[tuple[int, float | None], ...]  # (steps, last nonzero sigma)
    final_denoise: bool | None
    problem_steps: tuple[int, ...]  # step counts hit by diffusers' DDIM/PNDM step-count problem
    problem: str  # the first such cell's explanation
    differences: tuple[str, ...]  # how it differs from the reference's schedule


@dataclass(frozen=True)
class TopicConvergence:
    """One topic's plots (site paths), its per-sampler rows, schedules, and the reference it is measured against."""

    steps_plot: str
    calls_plot: str
    rows: tuple[SamplerSummary, ...]
    schedules: tuple[ScheduleRow, ...] = ()
    reference_steps: int | None = None


@dataclass(frozen=True)
class Convergence:
    """Everything the convergence templates receive."""

    analysis: Analysis
    findings: Findings
    topics: dict[str, TopicConvergence]
    rates_plot: str
    fits: tuple[dict[str, Any], ...]  # exactly what data/fits.json holds
    metrics_csv: str = METRICS_CSV
    fits_json: str = FITS_JSON
    labels: dict[str, str] = field(default_factory=dict)  # topic slug -> title
    fit_level: float = 0.0  # distances above this are pre-asymptotic and not fitted (measure/fits.py)
    floor_factor: float = FLOOR_FACTOR


def gather_convergence(study: Study, store: Store, cells: Iterable[Cell], previous: Previous | None,
                       files: list[SiteFile], digests: Digests | None = None,
                       scheduler_config: dict[str, Any] | None = None) -> Convergence | None:
    """Measure the stored cells and add plots and exports to `files`; None when no cell is rendered yet."""
    from reportgen.measure.plots import rates_plot, topic_plots

    cells = list(cells)
    if not any(store.image_path(c.key).is_file() for c in cells):  # cheap: analyze verifies what it reads
        return None
    measured = analyze(study, store, cells, scheduler_config)  # every lane, for the exports and the findings
    analysis = measured.default_view()  # the page's sections show one value of each other axis
    topics = {}
    for slug in analysis.topics():
        rows = tuple(analysis.for_topic(slug))
        what = [m for m in analysis.cells if m.topic == slug]
        paths = {axis: _plot_path(f"{slug}-{axis}", analysis, what) for axis in ("steps", "calls")}
        reused = {axis: _reuse(previous, digests, path) for axis, path in paths.items()}
        if all(reused.values()):
            files.extend(f for f in reused.values() if f is not None)
        else:
            svgs = topic_plots(analysis, slug)
            files.extend(SiteFile(paths[axis], data=_made(digests, paths[axis], svgs[axis].encode())) for axis in paths)
        topics[slug] = TopicConvergence(steps_plot=paths["steps"], calls_plot=paths["calls"], rows=rows,
                                        schedules=tuple(_schedule_row(s, what) for s in rows),
                                        reference_steps=dict(analysis.reference_steps).get(slug))
    rates = _plot_path("rates", analysis, [s.fit for s in analysis.samplers])
    old = _reuse(previous, digests, rates)
    files.append(old or SiteFile(rates, data=_made(digests, rates, rates_plot(analysis).encode())))
    files.extend(SiteFile(path, data=data) for path, data in export_files(measured).items())
    return Convergence(analysis=analysis, findings=findings(measured), topics=topics, rates_plot=rates,
                       fits=tuple(fits_records(measured)), labels={t.slug: t.title for t in study.topics},
                       fit_level=PRE_ASYMPTOTIC[analysis.thresholds.metric])


def _schedule_row(summary: SamplerSummary, cells: list[CellMetrics]) -> ScheduleRow:
    mine = sorted({m.steps: m for m in cells if m.sampler == summary.sampler}.values(), key=lambda m: m.steps)
    problems = [m for m in mine if m.step_problem]
    return ScheduleRow(sampler=summary.sampler, label=summary.label,
                       starts=tuple((m.steps, m.first_timestep) for m in mine),
                       start=mine[0].first_timestep if len({m.first_timestep for m in mine}) == 1 else None,
                       last_sigma=mine[-1].last_sigma,
                       last_sigmas=tuple((m.steps, m.last_sigma) for m in mine), final_denoise=mine[-1].final_denoise,
                       problem_steps=tuple(m.steps for m in problems),
                       problem=problems[0].step_problem if problems else "", differences=summary.differences)


def _reuse(previous: Previous | None, digests: Digests | None, path: str) -> SiteFile | None:
    """The previous build's plot at `path`, if it holds what the store's site digests say it was made with."""
    if previous is None or digests is None:
        return None
    return previous.reuse(path, digests.get(f"plot:{path}"))


def _made(digests: Digests | None, path: str, data: bytes) -> bytes:
    return digests.add(f"plot:{path}", data) if digests is not None else data


def _plot_path(name: str, analysis: Analysis, shown: list[Any]) -> str:
    what = json.dumps([PLOTS_VERSION, analysis.reference_sampler, asdict(analysis.thresholds),
                       [asdict(x) if x is not None else None for x in shown],
                       [(s.topic, s.sampler) for s in analysis.samplers]], sort_keys=True)
    return f"img/plots/{name}-{hashlib.sha256(what.encode()).hexdigest()[:16]}.svg"
