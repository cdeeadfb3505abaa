"""A topic page's axes beyond sampler, steps and seed (model, schedule, cfg): which view it shows first, how a view
is named, and the data of its axis viewer (templates/assets/axes.js), where rows and columns are any two axes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reportgen.render.plan import Cell
from reportgen.samplers import get_sampler
from reportgen.site.views import AxesView, CellView
from reportgen.study.load import Study, Topic

Variant = tuple[str, str, float]  # a cell's (model, schedule, cfg): its values of the axes beyond sampler and steps


def variant(cell: Cell) -> Variant:
    """The cell's values of the axes beyond sampler, steps and seed."""
    return (cell.model, cell.schedule_type, cell.cfg)


def default_variant(study: Study, topic: Topic) -> Variant:
    """The view a page shows first: the first model, the first schedule, the first CFG (or the topic's own)."""
    return (study.models[0] if study.models else "", study.schedules[0],
            study.cfgs[0] if study.cfgs else topic.prompt.cfg)


def variant_label(study: Study, value: Variant) -> str:
    """'model tiny · schedule karras · CFG 3': the varied axes' values only."""
    model, schedule, cfg = value
    parts = [f"model {model}"] if study.models else []
    if len(study.schedules) > 1:
        parts.append(f"schedule {schedule}")
    if study.cfgs:
        parts.append(f"CFG {cfg:g}")
    return " · ".join(parts)


def axes_view(study: Study, topic: Topic, cells: list[Cell], views: dict[str, CellView]) -> AxesView:
    """The axis viewer's data: sampler, steps, seed and each varied axis, with every cell's place on them."""
    values: dict[str, list[Any]] = {
        "sampler": [s for s in topic.samplers if any(c.sampler == s for c in cells)],
        "steps": list(topic.steps), "seed": list(topic.seeds),
    }
    if len(study.schedules) > 1:
        values["schedule"] = list(dict.fromkeys(c.schedule_type for c in cells))
    if study.cfgs:
        values["cfg"] = list(dict.fromkeys(c.cfg for c in cells))
    if study.models:
        values["model"] = list(dict.fromkeys(c.model for c in cells))
    labels: dict[str, Callable[[Any], str]] = {"sampler": lambda v: get_sampler(v).label, "steps": str, "seed": str,
                                               "schedule": str, "cfg": lambda v: f"{v:g}", "model": str}
    names = {"sampler": "Sampler", "steps": "Steps", "seed": "Seed", "schedule": "Schedule", "cfg": "CFG",
             "model": "Model"}
    axes = tuple({"name": a, "label": names[a], "values": [labels[a](v) for v in vs]} for a, vs in values.items())
    of = {"sampler": lambda c: c.sampler, "steps": lambda c: c.steps, "seed": lambda c: c.seed,
          "schedule": lambda c: c.schedule_type, "cfg": lambda c: c.cfg, "model": lambda c: c.model}
    rows = []
    for cell in cells:
        view = views[cell.key]
        at = [values[a].index(of[a](cell)) for a in values]
        rows.append({"at": at, "full": view.full or "", "thumb": view.thumb or "", "w": view.thumb_width,
                     "h": view.thumb_height, "caption": view.caption, "stored": view.stored,
                     "command": view.command, "reproduce": view.reproduce, "distances": view.distances})
    return AxesView(axes=axes, cells=tuple(rows))
