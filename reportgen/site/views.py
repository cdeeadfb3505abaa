"""What the site's templates receive: frozen dataclasses filled by site/build.py, read-only afterwards."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict

from markupsafe import Markup

from reportgen.site.convergence import Convergence
from reportgen.site.files import SiteFile
from reportgen.site.numbers import Quantity
from reportgen.site.speed import SpeedSection
from reportgen.site.verdict import Verdict

# The guide's worked example of preview-then-polish: 100 images, of which 3 are polished.
BATCH_IMAGES = 100



BATCH_KEPT = 3



@dataclass(frozen=True)
class CellView:
    """One cell as the site shows it: parameters, the command that reproduces it, its files if rendered."""

    topic: str
    seed: int
    seed_index: int
    sampler: str
    label: str
    steps: int
    width: int
    height: int
    cfg: float
    key: str
    nfe: int  # model calls from the sampler registry's formula
    command: str  # the cell in the guide's syntax, with -s and -A
    reproduce: str  # the shell command that renders exactly this image
    row: int
    column: int
    stored: bool = False
    nfe_counted: int | None = None  # model calls counted while rendering (from the store's record)
    seconds: float | None = None  # wall time of the render, from the record
    executor: str | None = None
    full: str | None = None  # site-relative path of the full PNG
    thumb: str | None = None  # site-relative path of the thumbnail
    thumb_width: int = 0
    thumb_height: int = 0
    schedule: str = "default"  # the axes beyond sampler, steps and seed (a name of samplers.SCHEDULES)
    model: str = ""  # the model's spec in a study with `models`
    alone: float | None = None  # what its model calls cost one image alone, from speed.json (site/speed.py)
    load: float | None = None  # the machine's 1-minute load average when the cell was stored, from the record
    cpus: int | None = None
    to_final: float | None = None  # measured distance to its sampler's own final image (the study's metric)
    to_reference: float | None = None  # and to the reference image
    metric: str = "latent"

    @property
    def time_note(self) -> str:
        """Its seconds as they may be read: measured alone, estimated alone from speed.json, or a batched share."""
        if self.alone is not None and self.executor != "pipeline":
            return f"≈{self.alone:.2f} s alone"
        if self.seconds is None:
            return ""
        return f"{self.seconds:.2f} s share" if self.executor == "batched" else f"{self.seconds:.2f} s"

    @property
    def time_title(self) -> str:
        """What `time_note` means, for a tooltip and the full view."""
        if self.alone is not None and self.executor != "pipeline":
            return ("estimated from `reportgen speed` (this sampler alone, batch 1): its model calls times the "
                    "measured seconds per call")
        if self.executor == "batched":
            return ("its share of the batched model calls it took part in, not what it costs alone; run "
                    "`reportgen speed` for that")
        return "the wall time of its own render" if self.seconds is not None else ""

    @property
    def distances(self) -> str:
        """Its measured distances, for the full view: '0.031 to its own final · 0.120 to the reference'."""
        parts = [f"{v:.3f} {what}" for v, what in ((self.to_final, "to its own final"),
                                                     (self.to_reference, "to the reference")) if v is not None]
        if not parts:
            return ""
        scale = "relative latent RMS; two unrelated images ≈ 1.4" if self.metric == "latent" else \
            "1 − SSIM; two unrelated images ≈ 1"
        return f"distance {' · '.join(parts)} ({scale})"

    @property
    def caption(self) -> str:
        """A one-line caption: sampler (and schedule), steps, seed, size, CFG, model calls and time."""
        calls = f"{self.nfe} model calls"
        if self.nfe_counted is not None and self.nfe_counted != self.nfe:
            calls += f" ({self.nfe_counted} counted)"
        took = f" · {self.time_note}" if self.time_note else ""
        state = "" if self.stored else " · not rendered yet"
        label = self.label if self.schedule == "default" else f"{self.label} ({self.schedule})"
        model = f" · {self.model}" if self.model else ""
        return (f"{label} · {self.steps} steps · seed {self.seed} · {self.width}×{self.height} · "
                f"CFG {self.cfg:g}{model} · {calls}{took}{state}")



@dataclass(frozen=True)
class GridRow:
    """One sampler's row of a grid: its cells in step order."""

    sampler: str
    label: str
    cells: tuple[CellView, ...]



@dataclass(frozen=True)
class GridView:
    """One topic and seed: samplers as rows, steps as columns, and the labelled grid image."""

    id: str
    seed: int
    seed_index: int
    steps: tuple[int, ...]
    rows: tuple[GridRow, ...]
    image: str  # site-relative path of the labelled grid PNG
    stored: int
    total: int
    parts: tuple[str, ...] = ()  # the grid's further PNGs where it is split (render/grid.py MAX_GRID_PIXELS)


@dataclass(frozen=True)
class GridLink:
    """The labelled grid PNG(s) of one seed at one value of the other axes (a view the page does not show first)."""

    label: str  # "seed 1 · schedule karras · CFG 3"
    images: tuple[str, ...]  # site-relative paths: the grid, then its further parts where it is split


@dataclass(frozen=True)
class AxesView:
    """What the topic page's axis viewer (templates/assets/axes.js) receives: each axis with its values, and every
    cell with its value index on each axis; rows and columns chosen on the page, the other axes as selectors."""

    axes: tuple[dict[str, Any], ...]  # {"name", "label", "values": [label, ...]} in the viewer's order
    cells: tuple[dict[str, Any], ...]  # {"at": [index per axis], "full", "thumb", "w", "h", "caption", "stored"}
    rows: str = "sampler"  # the default view: sampler x steps
    columns: str = "steps"

    @property
    def data(self) -> dict[str, Any]:
        """The viewer's data as one JSON-able dict (the template writes it with `tojson`)."""
        return {"axes": list(self.axes), "cells": list(self.cells), "rows": self.rows, "columns": self.columns}



@dataclass(frozen=True)
class TopicPage:
    """A topic's page: its prompt, commentary and grids."""

    slug: str
    title: str
    command: str  # the topic's prompt in the guide's syntax
    width: int
    height: int
    cfg: float
    seeds: tuple[int, ...]
    samplers: tuple[str, ...]
    steps: tuple[int, ...]
    commentary_html: Markup
    commentary_md: str
    grids: tuple[GridView, ...]
    cover: CellView | None
    compare: tuple[CellView, CellView] | None  # the compare tool's first pair: fewest and most steps of one row
    stored: int
    total: int
    seconds: float
    html: str  # site-relative path of the HTML page
    md: str  # and of the Markdown page
    axes: AxesView | None = None  # the axis viewer, for a study with axes beyond sampler, steps and seed
    default_view: str = ""  # what `grids` show in such a study: "schedule default · CFG 7.5"
    other_grids: tuple[GridLink, ...] = ()  # the labelled grids of the other values of those axes
    load_note: str = ""  # when its cells were rendered on a loaded machine (site/speed.py, `load_note`)

    @property
    def cells(self) -> tuple[CellView, ...]:
        """Every cell of the topic, grid by grid, row by row."""
        return tuple(c for g in self.grids for r in g.rows for c in r.cells)



@dataclass(frozen=True)
class SamplerView:
    """A registry entry as the samplers page shows it."""

    name: str
    label: str
    aliases: tuple[str, ...]
    scheduler: str
    calls: str
    ancestral: bool
    order: int
    paper: str
    overrides: str
    in_study: bool



@dataclass(frozen=True)
class SamplerSummary:
    """One sampler's totals over the study, from the plan and the store's records."""

    name: str
    label: str
    calls: str
    ancestral: bool
    stored: int
    total: int
    nfe_registry: int  # over the rendered cells, by the registry's formula
    nfe_counted: int | None  # over the rendered cells, as counted while rendering
    seconds_mean: float | None  # per image
    steps_per_second: float | None  # the guide's "it/s": all steps over all seconds of the timed images
    seconds_per_call: float | None
    seconds_by_steps: tuple[float | None, ...]  # mean seconds per image at each of SiteData.steps



@dataclass(frozen=True)
class Speedup:
    """The guide's worked example for one sampler, from measured seconds per image."""

    label: str
    ancestral: bool
    preview_steps: int
    final_steps: int
    preview_seconds: float
    final_seconds: float
    all_final: float  # BATCH_IMAGES images at final steps
    preview_then_polish: float  # BATCH_IMAGES previews, then BATCH_KEPT polished
    speedup: float



@dataclass(frozen=True)
class SiteData:
    """Everything the templates receive; built by `gather`, read-only afterwards."""

    title: str
    description: str
    model: str
    model_family: str  # as people name it: "FLUX.1 dev"
    model_identity: str
    device: str
    dtype: str
    environment: dict[str, str]
    reference_sampler: str
    topics: tuple[TopicPage, ...]
    samplers: tuple[SamplerView, ...]
    summary: tuple[SamplerSummary, ...]
    steps: tuple[int, ...]  # every step count in the study, the columns of the times table
    speedups: tuple[Speedup, ...]
    stored: int
    total: int
    nfe_counted: int
    seconds: float
    executors: tuple[str, ...]  # how the rendered cells were made (the records' executor names)
    batch_images: int = BATCH_IMAGES
    batch_kept: int = BATCH_KEPT
    files: tuple[SiteFile, ...] = field(default=(), repr=False)
    convergence: Convergence | None = None  # measured convergence (site/convergence.py); None before any render
    speed: SpeedSection | None = None  # STUDY/speed.json and workflow.json (site/speed.py); None before either exists
    speedup_source: str = "store"  # where `speedups` took seconds from: "speed" (speed.json) or "store" (records)
    notes: tuple[str, ...] = ()  # what the build found damaged and made again, for the command to say
    verdict: Verdict | None = None  # the answer the index and topic pages open with (site/verdict.py)
    quantities: tuple[Quantity, ...] = ()  # what each measured number means (site/numbers.py), for methodology
    load_note: str = ""  # when the study's cells were rendered on a loaded machine



class PageContext(TypedDict):
    """What every template is rendered with."""

    site: SiteData
    root: str  # prefix that turns a site-relative path into one relative to this page: "" or "../"
    path: str  # this page's site-relative path
    topic: NotRequired[TopicPage]
