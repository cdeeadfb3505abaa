"""Build the guide as a static site: gather everything into a `SiteData` in memory, then write it all at once.

`build_site` = `gather` (read the study, its plan and the store; make thumbnails and grids; compute the
tables) -> `render_site` (every page through Jinja) -> `write_site` (a temporary folder beside DIR, swapped
into place). Nothing is written before everything has been gathered and rendered, so a failed build leaves
the previous site intact; the build never renders a cell (cells not rendered yet are shown as missing).

How to add a section (e.g. convergence metrics, or speed and preview data):

1. Add a typed field to `SiteData` (study-wide) or `TopicPage` (per topic), with a default (`None` or
   `()`) so that a study without that data still builds. Give its type a small frozen dataclass here or in
   your own module; templates see exactly these fields and nothing else.
2. Fill it in `gather` by calling your stage's verb function (gather reads; it never renders a cell).
3. Write the section as partials `templates/_<section>.html` and `templates/_<section>.md` and include them
   where they belong, guarded by `{% if site.<field> %}`; `guide.md` has one heading per section of the
   guide (convergence, batch speedup, sampler times) to fill.
4. Files the section needs (SVG plots, CSV exports) go into `SiteData.files` as `SiteFile(path, data=...)`;
   they are written with the rest of the site, inside the same swap.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shlex
import statistics
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from reportgen.errors import SiteError
from reportgen.models.families import adapter
from reportgen.models.sources import ModelInfo, resolve_model
from reportgen.render.plan import Cell, for_model, plan
from reportgen.render.store import SITE_DIGESTS, Store, damage_lines
from reportgen.samplers import SAMPLERS, get_sampler
from reportgen.site.axes import axes_view, default_variant, variant, variant_label
from reportgen.site.convergence import gather_convergence
from reportgen.site.files import MANIFEST, THUMB_SIZE, Digests, Previous, SiteFile, read_previous, thumbnail, write_site
from reportgen.site.numbers import quantities
from reportgen.site.speed import SpeedSection, gather_speed, load_note, seconds_alone
from reportgen.site.verdict import verdict
from reportgen.site.views import (
    BATCH_IMAGES,
    BATCH_KEPT,
    CellView,
    GridLink,
    GridRow,
    GridView,
    PageContext,
    SamplerSummary,
    SamplerView,
    SiteData,
    Speedup,
    TopicPage,
)
from reportgen.study.load import Study, Topic, load_study


@dataclass(frozen=True)
class BuildResult:
    """What a build wrote: where to open it and what it holds."""

    out: Path
    index: Path
    pages: int
    stored: int
    total: int
    reused: int
    seconds: float
    notes: tuple[str, ...] = ()  # what the build found damaged and made again, one line each


def gather(study_path: Path, *, model: str | None = None, model_config: Path | None = None,
           device: str | None = None, dtype: str | None = None, store: Path | None = None,
           previous: Previous | None = None) -> SiteData:
    """Read the study, its plan and the store into a SiteData; make thumbnails and grids in memory."""
    study = load_study(study_path)
    infos = [resolve_model(spec, model_config) for spec in ((model,) if model else study.model_specs)]
    info = infos[0]
    study = for_model(study, info)  # the reference sampler of the model's family where study.toml names none
    the_store = Store(store if store is not None else study.root / "store")
    device, dtype = _resolve_device(device, dtype, adapter(info.family).half_dtype)
    # every model's plan (a study with `models`); each reads only the store: no model, no diffusers
    plans = [plan(for_model(study, i), i, device, dtype, the_store) for i in infos]
    the_plan = plans[0]
    cells = [c for p in plans for c in p.cells]
    model_of = {i.spec: i for i in infos}
    digests = Digests(the_store.root / SITE_DIGESTS)

    files: list[SiteFile] = []
    convergence = gather_convergence(study, the_store, cells, previous, files, digests,
                                     info.scheduler_config)
    speed = gather_speed(study.root, titles={t.slug: t.title for t in study.topics})
    cost = seconds_alone(speed, {t.slug: (t.prompt.width, t.prompt.height) for t in study.topics})
    measured = {m.key: m for m in convergence.analysis.cells} if convergence is not None else {}
    metric = convergence.analysis.thresholds.metric if convergence is not None else "latent"
    views: dict[str, CellView] = {}
    by_topic: dict[str, list[Cell]] = {}
    for cell in cells:
        if not cell.reference:  # the reference images are measured against, not shown in the matrices
            by_topic.setdefault(cell.topic, []).append(cell)
    for topic in study.topics:
        for cell in by_topic.get(topic.slug, []):
            view = _cell_view(cell, topic, model_of.get(cell.model, info), device, the_store, previous, digests,
                              files)
            m = measured.get(cell.key)
            views[cell.key] = dataclasses.replace(
                view, alone=cost(cell.sampler, cell.nfe, cell.topic) if view.stored else None, metric=metric,
                to_final=m.distance(metric, "final") if m else None,
                to_reference=m.distance(metric, "reference") if m else None)

    topics = tuple(_topic_page(study, topic, by_topic.get(topic.slug, []), views, the_store, previous, digests,
                               files) for topic in study.topics)
    topics = tuple(dataclasses.replace(t, load_note=load_note(t.cells)) for t in topics)
    all_views = [views[c.key] for t in study.topics for c in by_topic.get(t.slug, [])]  # every view's cells
    steps = tuple(sorted({v.steps for v in all_views}))
    summary = _summaries(study, all_views, steps)
    stored = [v for v in all_views if v.stored]
    notes = []
    if previous is not None and previous.problem is not None:
        notes.append(f"the site's manifest ({MANIFEST}) is damaged: {previous.problem}; every file was made again")
    notes += damage_lines({k: v for k, v in the_store.damaged.items() if v != "unverified"},
                          "shown as not rendered; `reportgen render` renders them again")
    notes += convergence.analysis.redone if convergence is not None else ()
    problem = digests.save()  # a cache in the store, like the distances: true of the files made, whatever happens next
    if problem is not None:
        notes.append(f"the store cannot keep the digests of the site's files ({problem}); the next build makes "
                     "its thumbnails, grids and plots again")
    speedups, speedup_source = _speedups(summary, steps, speed)
    return SiteData(
        title=study.title, description=study.description, model=info.spec, model_family=info.family_label,
        model_identity=info.identity,
        device=device, dtype=dtype, environment=dict(the_plan.environment),
        reference_sampler=get_sampler(study.reference_sampler).label, topics=topics,
        samplers=tuple(_sampler_view(s, _study_samplers(study)) for s in SAMPLERS), summary=summary, steps=steps,
        speedups=speedups, stored=len(stored), total=len(all_views),
        nfe_counted=sum(v.nfe_counted or 0 for v in stored), seconds=sum(v.seconds or 0.0 for v in stored),
        executors=tuple(sorted({v.executor for v in stored if v.executor})),
        files=tuple(files), convergence=convergence, speed=speed,
        speedup_source=speedup_source, notes=tuple(notes), load_note=load_note(all_views),
        verdict=verdict(convergence.analysis, convergence.findings, {t.slug: t.title for t in study.topics}, cost)
        if convergence is not None else None,
        quantities=quantities(convergence.analysis.thresholds if convergence is not None else None,
                              get_sampler(study.reference_sampler).label),
    )


def render_site(data: SiteData, templates: Path | None = None) -> tuple[dict[str, str], list[SiteFile]]:
    """Every page of the site as text, and the asset files, through the (possibly overridden) templates."""
    from reportgen.site.pages import asset_files, environment, render_pages, template_dirs

    dirs = template_dirs(templates)
    pages: list[tuple[str, str, dict[str, Any]]] = []
    for name in ("index", "samplers", "methodology"):
        for ext in ("html", "md"):
            page = f"{name}.{ext}"
            pages.append((page, page, dict(PageContext(site=data, root="", path=page))))
    pages.append(("guide.md", "guide.md", dict(PageContext(site=data, root="", path="guide.md"))))
    for topic in data.topics:
        for path in (topic.html, topic.md):
            pages.append((f"topic.{path.rsplit('.', 1)[1]}", path,
                          dict(PageContext(site=data, root="../", path=path, topic=topic))))
    rendered = render_pages(environment(dirs), pages)
    assets = [SiteFile(path, source=source) for path, source in asset_files(dirs).items()]
    return rendered, assets


def build_site(study_path: Path, out: Path, *, templates: Path | None = None, model: str | None = None,
               model_config: Path | None = None, device: str | None = None, dtype: str | None = None,
               store: Path | None = None) -> BuildResult:
    """Gather, render, then write the site into `out` in one swap; the previous site survives any failure."""
    start = time.perf_counter()
    out = Path(out)
    previous = read_previous(out)
    data = gather(study_path, model=model, model_config=model_config, device=device, dtype=dtype, store=store,
                  previous=previous)
    pages, assets = render_site(data, templates)
    files = [*data.files, *assets]
    write_site(out, pages, files, {})
    return BuildResult(out=out, index=out / "index.html", pages=len(pages), stored=data.stored, total=data.total,
                       reused=sum(1 for f in files if f.link), seconds=time.perf_counter() - start, notes=data.notes)


def _resolve_device(device: str | None, dtype: str | None, half: str) -> tuple[str, str]:
    """(device, dtype) as render picks them; a named CUDA or MPS device needs no GPU here, only its cells' keys."""
    from reportgen.models.loading import pick_device

    if device is not None and (device.startswith("cuda") or device == "mps"):
        dtype = dtype or half
        if dtype not in ("float32", "float16", "bfloat16"):
            raise SiteError(f"unknown dtype {dtype!r} (use float32, float16 or bfloat16)")
        return device, dtype
    return pick_device(device, dtype, half)


def _cell_view(cell: Cell, topic: Topic, info: ModelInfo, device: str, store: Store, previous: Previous | None,
               digests: Digests, files: list[SiteFile]) -> CellView:
    """The cell's view; adds its full PNG and thumbnail to `files` if it is stored."""
    sampler = get_sampler(cell.sampler)
    command = cell.prompt.with_(sampler=sampler.name).to_command()
    reproduce = ["reportgen", "image", shlex.quote(command), "--model", shlex.quote(info.spec)]
    if cell.schedule_type != "default":
        reproduce += ["--schedule", cell.schedule_type]
    if info.config is not None:
        reproduce += ["--model-config", shlex.quote(str(info.config))]
    if device != "cpu":
        reproduce += ["--device", device]
    axes = "".join(f"-{v}" for v in (cell.schedule_type if cell.schedule_type != "default" else "",
                                      f"cfg{cell.cfg:g}" if cell.cfg != topic.prompt.cfg else "") if v)
    reproduce += ["--out", f"{cell.topic}-{cell.sampler}{axes}-{cell.steps}-{cell.seed}.png"]
    view = CellView(
        topic=cell.topic, seed=cell.seed, seed_index=cell.seed_index, sampler=cell.sampler, label=sampler.label,
        steps=cell.steps, width=cell.width, height=cell.height, cfg=cell.cfg, key=cell.key, nfe=cell.nfe,
        command=command, reproduce=" ".join(reproduce), row=topic.samplers.index(cell.sampler),
        column=topic.steps.index(cell.steps), schedule=cell.schedule_type, model=cell.model,
    )
    stored = store.get(cell.key)
    if stored is None:
        return view
    record = stored.record
    full = f"img/full/{cell.key}.png"
    thumb = f"img/thumb/{cell.key}-{THUMB_SIZE}.webp"
    # The full PNG must be the store's file; the thumbnail what was made from these pixels (site-digests.json).
    old_full = previous.reuse(full, stored.image_sha256) if previous is not None else None
    files.append(old_full or SiteFile(full, source=stored.image))
    made_from = f"thumb-{THUMB_SIZE}:{stored.pixels_sha256}"
    old_thumb = previous.reuse(thumb, digests.get(made_from)) if previous is not None else None
    size = _thumb_size(cell.width, cell.height)
    if old_thumb is not None:
        files.append(old_thumb)
    else:
        data, size = thumbnail(stored.image)
        files.append(SiteFile(thumb, data=digests.add(made_from, data)))
    return CellView(**{**asdict(view), "stored": True, "nfe_counted": _int(record.get("nfe_counted")),
                       "seconds": _float(record.get("seconds")), "executor": record.get("executor"),
                       "load": _float(record.get("load")), "cpus": _int(record.get("cpus")),
                       "full": full, "thumb": thumb, "thumb_width": size[0], "thumb_height": size[1]})


def _topic_page(study: Study, topic: Topic, cells: list[Cell], views: dict[str, CellView], store: Store,
                previous: Previous | None, digests: Digests, files: list[SiteFile]) -> TopicPage:
    """The topic's page data, with one grid per seed (its labelled PNG made or reused)."""
    from reportgen.site.pages import markdown_html, markdown_safe

    default = default_variant(study, topic)
    shown = [c for c in cells if variant(c) == default]  # the default view: each other axis at its first value
    grids = []
    for seed_index, seed in enumerate(topic.seeds):
        group = [c for c in shown if c.seed == seed]
        if not group:
            continue
        rows = tuple(GridRow(name, get_sampler(name).label,
                             tuple(views[c.key] for c in sorted((c for c in group if c.sampler == name),
                                                                key=lambda c: c.steps)))
                     for name in topic.samplers if any(c.sampler == name for c in group))
        stored = [views[c.key].stored for c in group]
        images = _grid_files(study, topic, group, views, store, previous, digests, files)
        grids.append(GridView(id=f"s{seed_index}", seed=seed, seed_index=seed_index, steps=topic.steps, rows=rows,
                              image=images[0], stored=sum(stored), total=len(group), parts=tuple(images[1:])))
    others = []
    if study.axes():
        for value in dict.fromkeys(variant(c) for c in cells):
            if value == default:
                continue
            for seed in topic.seeds:
                group = [c for c in cells if variant(c) == value and c.seed == seed]
                if group:
                    others.append(GridLink(f"seed {seed} · {variant_label(study, value)}",
                                           tuple(_grid_files(study, topic, group, views, store, previous, digests,
                                                             files))))
    all_views = [views[c.key] for c in cells]
    return TopicPage(
        slug=topic.slug, title=topic.title, command=topic.prompt.to_command(), width=topic.prompt.width,
        height=topic.prompt.height, cfg=topic.prompt.cfg, seeds=topic.seeds,
        samplers=tuple(get_sampler(s).label for s in topic.samplers), steps=topic.steps,
        commentary_html=markdown_html(topic.commentary), commentary_md=markdown_safe(topic.commentary).strip(),
        grids=tuple(grids), cover=_cover(study, all_views), compare=_compare_pair(study, all_views),
        stored=sum(v.stored for v in all_views), total=len(all_views), seconds=sum(v.seconds or 0.0 for v in all_views),
        html=f"topics/{topic.slug}.html", md=f"topics/{topic.slug}.md",
        axes=axes_view(study, topic, cells, views) if study.axes() else None,
        default_view=variant_label(study, default) if study.axes() else "", other_grids=tuple(others),
    )


def _grid_files(study: Study, topic: Topic, group: list[Cell], views: dict[str, CellView], store: Store,
                previous: Previous | None, digests: Digests, files: list[SiteFile]) -> list[str]:
    """The labelled grid's site paths (one, or its parts where it is over render/grid.py's MAX_GRID_PIXELS), each
    named by what it shows, so an unchanged grid is reused, not redrawn; reused only if it is the file made from
    these cells' pixels (the store's site digests)."""
    from reportgen.render.grid import grid_digest, grid_parts, grid_png

    paths = []
    for part in grid_parts(group):
        stored = {c.key for c in part if views[c.key].stored}
        shown = grid_digest(study, part, stored)
        path = f"img/grid/{topic.slug}-{part[0].seed}-{shown[:16]}.png"
        pixels = [found.pixels_sha256 if (found := store.get(c.key)) and c.key in stored else None for c in part]
        made_from = "grid:" + hashlib.sha256(json.dumps([shown, pixels]).encode()).hexdigest()
        old = previous.reuse(path, digests.get(made_from)) if previous is not None else None
        files.append(old or SiteFile(path, data=digests.add(made_from, grid_png(study, part, store, stored))))
        paths.append(path)
    return paths


def _cover(study: Study, views: list[CellView]) -> CellView | None:
    """The topic's card image: the reference sampler at its most steps, else the last rendered cell."""
    stored = [v for v in views if v.stored and v.seed_index == 0]
    if not stored:
        return None
    reference = [v for v in stored if v.sampler == study.reference_sampler]
    return max(reference or stored, key=lambda v: (v.steps, -v.row))


def _compare_pair(study: Study, views: list[CellView]) -> tuple[CellView, CellView] | None:
    """The pair the compare tool opens with: the cover's row at its fewest and most steps (a preview and its final)."""
    stored = [v for v in views if v.stored]
    cover = _cover(study, views)
    if len(stored) < 2 or cover is None:
        return None
    row = [v for v in stored if v.sampler == cover.sampler and v.seed == cover.seed]
    if len(row) >= 2:
        return min(row, key=lambda v: v.steps), max(row, key=lambda v: v.steps)
    return next(v for v in stored if v.key != cover.key), cover


def _study_samplers(study: Study) -> tuple[str, ...]:
    return tuple(dict.fromkeys(s for t in study.topics for s in t.samplers))


def _sampler_view(sampler: Any, in_study: Iterable[str]) -> SamplerView:
    overrides = ", ".join(f"{k}={v!r}" for k, v in sampler.overrides.items())
    return SamplerView(sampler.name, sampler.label, sampler.aliases, sampler.scheduler, sampler.calls,
                       sampler.ancestral, sampler.order, sampler.paper, overrides, sampler.name in set(in_study))


def _summaries(study: Study, views: list[CellView], steps: tuple[int, ...]) -> tuple[SamplerSummary, ...]:
    """Per sampler: cells rendered, model calls by formula and as counted, and measured seconds."""
    out = []
    for name in _study_samplers(study):
        sampler = get_sampler(name)
        mine = [v for v in views if v.sampler == name]
        done = [v for v in mine if v.stored]
        timed = [v for v in done if v.seconds]
        counted = [v.nfe_counted for v in done if v.nfe_counted is not None]
        total_calls = sum(v.nfe_counted or 0 for v in timed)
        total_seconds = sum(v.seconds or 0.0 for v in timed)  # totals, not means of ratios: short cells weigh less
        by_steps = tuple(_mean([v.seconds for v in timed if v.steps == n]) for n in steps)
        out.append(SamplerSummary(
            name=name, label=sampler.label, calls=sampler.calls, ancestral=sampler.ancestral, stored=len(done),
            total=len(mine), nfe_registry=sum(v.nfe for v in done),
            nfe_counted=sum(counted) if counted and len(counted) == len(done) else None,
            seconds_mean=_mean([v.seconds for v in timed]),
            steps_per_second=sum(v.steps for v in timed) / total_seconds if total_seconds else None,
            seconds_per_call=total_seconds / total_calls if total_calls else None,
            seconds_by_steps=by_steps,
        ))
    return tuple(out)


def _speedups(summary: tuple[SamplerSummary, ...], steps: tuple[int, ...],
              speed: SpeedSection | None) -> tuple[tuple[Speedup, ...], str]:
    """The guide's preview-then-polish example per sampler, and where its seconds came from.

    From speed.json's batch-1 it/s when `reportgen speed` has run (seconds = steps / it/s, at the worked
    example's step counts), else from the store's records at the fewest and most steps rendered. A batched
    render's record holds each cell's share of shared UNet calls, not what the image costs alone."""
    if speed is not None and speed.rows and speed.example is not None:
        low, high = speed.example["preview_steps"], speed.example["final_steps"]
        timed = []
        for r in speed.rows:
            t_low, t_high = low / r["it_per_s"], high / r["it_per_s"]
            all_final, polish = BATCH_IMAGES * t_high, BATCH_IMAGES * t_low + BATCH_KEPT * t_high
            timed.append(Speedup(r["label"], get_sampler(r["sampler"]).ancestral, low, high, t_low, t_high,
                                 all_final, polish, all_final / polish))
        return tuple(timed), "speed"
    out = []
    for row in summary:
        measured = [(n, s) for n, s in zip(steps, row.seconds_by_steps, strict=True) if s is not None]
        if len(measured) < 2:
            continue
        (low, t_low), (high, t_high) = measured[0], measured[-1]
        all_final = BATCH_IMAGES * t_high
        polish = BATCH_IMAGES * t_low + BATCH_KEPT * t_high
        out.append(Speedup(row.label, row.ancestral, low, high, t_low, t_high, all_final, polish, all_final / polish))
    return tuple(out), "store"


def _thumb_size(width: int, height: int) -> tuple[int, int]:
    """The size Pillow's `thumbnail` gives an image of this size (aspect kept, longest side THUMB_SIZE at most)."""
    scale = min(1.0, THUMB_SIZE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _mean(values: list[float | None]) -> float | None:
    numbers = [v for v in values if v is not None]
    return statistics.fmean(numbers) if numbers else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


__all__ = ["MANIFEST", "BuildResult", "CellView", "GridView", "PageContext", "SamplerSummary", "SiteData",
           "SiteFile", "Speedup", "TopicPage", "build_site", "gather", "render_site"]
