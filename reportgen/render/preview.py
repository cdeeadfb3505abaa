"""The guide's preview-then-polish workflow: many seeds at few steps on a contact sheet, then the chosen
few at many steps. Both render through the store (cached cells cost nothing) and record their measured
time in STUDY/workflow.json for the site.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reportgen.errors import ReportgenError, StudyError
from reportgen.models.families import adapter
from reportgen.models.loading import load_pipeline, pick_device
from reportgen.models.sources import resolve_model
from reportgen.render.execute import RenderResult, render
from reportgen.render.plan import Cell, Plan, check_steps, runtime_environment
from reportgen.render.store import Store, atomic_write
from reportgen.render.timing import make_cell, record_workflow_run
from reportgen.samplers import get_sampler
from reportgen.study.load import load_study, topic_seeds

SHEET_COLUMNS = 10


@dataclass(frozen=True)
class WorkflowResult:
    """A preview or polish run: what was rendered, the files written, and the measured wall time."""

    kind: str
    cells: tuple[Cell, ...]
    result: RenderResult
    seconds: float
    paths: tuple[Path, ...]


def parse_seeds(text: str) -> list[int]:
    """'17,42' -> [17, 42]; ReportgenError naming the bad item otherwise."""
    seeds = []
    for item in (part.strip() for part in text.split(",")):
        if not (item.isascii() and item.isdigit()) or int(item) >= 2**32:  # isdigit alone accepts '²'
            raise ReportgenError(f"--seeds: {item!r} is not a seed (an integer from 0 to 4294967295)")
        seeds.append(int(item))
    return list(dict.fromkeys(seeds))


def run_preview(study_path: Path, topic: str, *, count: int = 100, steps: int = 10, sampler: str | None = None,
                **options: Any) -> WorkflowResult:
    """Render `count` seeds of `topic` (its seed, then the next ones) at `steps` and draw a contact sheet."""
    if count <= 0 or steps <= 0:
        raise ReportgenError(f"--count and --steps must be > 0, got {count} and {steps}")
    study = load_study(study_path)
    if count > study.max_cells:  # before the seeds are built: they are held in memory
        raise ReportgenError(f"--count {count} (100 unless given) is over the study's max_cells = "
                             f"{study.max_cells}; pass a smaller --count or raise max_cells in study.toml")
    the_topic = study.topic(topic)
    seeds = list(topic_seeds(the_topic.prompt, count))
    return _run("preview", study_path, topic, seeds, steps, sampler, **options)


def run_polish(study_path: Path, topic: str, seeds: list[int], *, steps: int = 100, sampler: str | None = None,
               **options: Any) -> WorkflowResult:
    """Render the chosen seeds of `topic` at `steps` and copy each final PNG to STUDY/polished/."""
    if not seeds or steps <= 0:
        raise ReportgenError("--seeds needs at least one seed and --steps must be > 0")
    return _run("polish", study_path, topic, seeds, steps, sampler, **options)


def _run(kind: str, study_path: Path, topic: str, seeds: list[int], steps: int, sampler: str | None, *,
         model: str | None = None, model_config: Path | None = None, device: str | None = None,
         dtype: str | None = None, store: Path | None = None, batch_size: int | None = None) -> WorkflowResult:
    study = load_study(study_path)
    the_topic = study.topic(topic)
    info = resolve_model(model or study.model, model_config)
    # the family's deterministic default (K_LMS for SD: its previews predict its finals, the guide's advice)
    name = get_sampler(sampler or adapter(info.family).default_sampler).name
    check_steps(name, steps, info)
    device, dtype = pick_device(device, dtype, adapter(info.family).half_dtype)
    environment = runtime_environment(info, device, dtype)
    the_store = Store(store if store is not None else study.root / "store")
    cells = tuple(make_cell(the_topic, seed, name, steps, info, environment) for seed in seeds)
    cached = tuple(c for c in cells if the_store.has(c.key))
    plan = Plan(cells, cached, tuple(c for c in cells if c not in cached), environment)
    start = time.perf_counter()
    with the_store.lock():
        the_store.clean_temporary()
        result = RenderResult(cells=len(cells), cached=len(cached))
        if plan.to_render:
            pipe = load_pipeline(info, device, dtype)
            result = render(plan, pipe, info, the_store, executor="batched", batch_size=batch_size)
        seconds = time.perf_counter() - start
        if kind == "preview":
            paths: tuple[Path, ...] = (_contact_sheet(study.root, the_topic.title, cells, the_store),)
        else:
            paths = tuple(_copy_final(study.root, c, the_store) for c in cells if the_store.has(c.key))
    records = {c.key: stored.record if (stored := the_store.get(c.key)) else {} for c in cells}
    run = {
        "kind": kind, "topic": topic, "sampler": name, "steps": steps, "executor": "batched", "device": device,
        "model": info.spec, "rendered": result.rendered, "cached": result.cached, "nfe": result.nfe,
        "seconds": round(seconds, 4), "store": str(the_store.root.resolve()),
        # Each cell's own measured time, from its stored record, so cached cells keep the time they cost.
        "cells": [{"seed": c.seed, "key": c.key, "seconds": records[c.key].get("seconds")} for c in cells],
    }
    try:
        record_workflow_run(study.root, run)
    except StudyError as exc:
        raise StudyError(f"the images are stored, but the run is not recorded: {exc}") from None
    return WorkflowResult(kind, cells, result, seconds, paths)


def _contact_sheet(root: Path, title: str, cells: tuple[Cell, ...], store: Store) -> Path:
    """A grid of the previews, SHEET_COLUMNS wide, each image captioned with its seed."""
    from PIL import Image, ImageDraw, ImageFont

    from reportgen.render.grid import make_grid

    tile = min(256, max(96, cells[0].width))
    font_size = max(10, tile // 10)
    font = ImageFont.load_default(size=font_size)
    band = round(font_size * 1.6)
    images = {}
    columns = [str(j + 1) for j in range(min(SHEET_COLUMNS, len(cells)))]
    rows = [str(i + 1) for i in range(0, len(cells), SHEET_COLUMNS)]
    for index, cell in enumerate(cells):
        captioned = Image.new("RGB", (tile, tile + band), (255, 255, 255))
        stored = store.get(cell.key)
        if stored is not None:
            with Image.open(stored.image) as image:
                captioned.paste(image.convert("RGB").resize((tile, tile)), (0, 0))
        ImageDraw.Draw(captioned).text((tile // 2, tile + band // 2), f"seed {cell.seed}", fill=(20, 20, 20),
                                       font=font, anchor="mm")
        images[(rows[index // SHEET_COLUMNS], columns[index % SHEET_COLUMNS])] = captioned
    first = cells[0]
    sheet = make_grid(rows, columns, images, tile=tile,
                      title=f"{title}: {len(cells)} previews at {first.steps} steps with "
                            f"{get_sampler(first.sampler).label}; polish: reportgen polish --seeds ...")
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    name = f"{first.topic}-{first.sampler}-{first.steps}-{first.seed}-{len(cells)}.png"
    return atomic_write(root / "previews" / name, buffer.getvalue())


def _copy_final(root: Path, cell: Cell, store: Store) -> Path:
    """The stored PNG (with its parameters) copied to STUDY/polished/."""
    stored = store.get(cell.key)
    assert stored is not None
    return atomic_write(root / "polished" / f"{cell.topic}-{cell.seed}-{cell.sampler}-{cell.steps}.png",
                        stored.image.read_bytes())
