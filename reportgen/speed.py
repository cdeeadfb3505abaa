"""Sampler speed as the guide measured it, and the preview-then-polish workflow's measured cost.

`reportgen speed` renders with each sampler alone (batch 1, the per-cell pipeline, a fixed step count,
a 3-sample average) and writes `STUDY/speed.json`; `reportgen preview` and `polish` append their runs to
`STUDY/workflow.json`. The plain functions at the end turn both files into the site's tables.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reportgen.errors import ReportgenError, SamplerError, StudyError
from reportgen.models import ModelInfo, load_pipeline, pick_device, resolve_model
from reportgen.plan import Cell, cell_key, check_steps, runtime_environment, scheduler_config
from reportgen.samplers import get_sampler
from reportgen.store import atomic_write
from reportgen.study import Topic, load_study

SPEED_FILE = "speed.json"
WORKFLOW_FILE = "workflow.json"
SPEED_FORMAT = 1
# The guide's own table: it/s at 512x512 on an M1 Max, 3-sample average.
GUIDE_IT_PER_S = {"ddim": 1.89, "plms": 1.86, "k_euler": 1.86, "k_lms": 1.91, "k_heun": 0.95, "k_dpm_2": 0.95,
                  "k_dpm_2_a": 0.95, "k_euler_a": 1.86}


def device_name(device: str) -> str:
    """A human name for the device: the GPU's model, or the CPU's model name."""
    import torch

    if device.startswith("cuda"):
        return str(torch.cuda.get_device_name(torch.device(device)))
    if device == "mps":
        return f"Apple {platform.machine()} (MPS)"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def make_cell(topic: Topic, seed: int, sampler: str, steps: int, model: ModelInfo,
              environment: dict[str, str]) -> Cell:
    """A cell of `topic` at any seed, sampler and steps, keyed exactly as the planner keys it."""
    prompt = topic.prompt.with_(seed=seed, steps=None, sampler=None, count=None)
    name = get_sampler(sampler).name
    key = cell_key(environment, scheduler_config(name, model.scheduler_config), prompt, name, steps)
    index = topic.seeds.index(seed) if seed in topic.seeds else -1
    return Cell(topic=topic.slug, seed_index=index, seed=seed, sampler=name, steps=steps, text=prompt.text,
                negative=prompt.negative, width=prompt.width, height=prompt.height, cfg=prompt.cfg, key=key,
                nfe=get_sampler(name).nfe(steps))


def measure_speed(study_path: Path, *, samplers: Iterable[str] = (), steps: int | None = None,
                  samples: int | None = None, topic: str | None = None, model: str | None = None,
                  model_config: Path | None = None,
                  device: str | None = None, dtype: str | None = None) -> dict[str, Any]:
    """Time each sampler alone (batch 1, `samples` images averaged; defaults from study.toml's [speed] table,
    else 50 steps and 3 samples) and write STUDY/speed.json."""
    from reportgen.render import EXECUTORS

    study = load_study(study_path)
    settings = study.tables.get("speed", {})  # validated by load_study
    steps = steps or settings.get("steps", 50)
    samples = samples or settings.get("samples", 3)
    if steps <= 0 or samples <= 0:
        raise ReportgenError(f"speed needs steps > 0 and samples > 0, got {steps} and {samples}")
    names = [get_sampler(s).name for s in samplers] or list(study.samplers)
    the_topic = study.topic(topic) if topic else study.topics[0]
    info = resolve_model(model or study.model, model_config)
    for name in names:
        check_steps(name, steps, info)
    device, dtype = pick_device(device, dtype)
    environment = runtime_environment(info, device, dtype)
    pipe = load_pipeline(info, device, dtype)
    run = EXECUTORS["pipeline"]
    seed = the_topic.seeds[0]
    list(run(pipe, info, [make_cell(the_topic, seed, names[0], 2, info, environment)]))  # warm-up, not timed
    rows = []
    for name in names:
        cells = [make_cell(the_topic, (seed + i) % 2**32, name, steps, info, environment) for i in range(samples)]
        seconds = [output.seconds for output in run(pipe, info, cells)]
        mean = statistics.fmean(seconds)
        sampler = get_sampler(name)
        rows.append({"sampler": name, "label": sampler.label, "steps": steps, "nfe": sampler.nfe(steps),
                     "seconds": [round(s, 6) for s in seconds], "s_per_image": round(mean, 6),
                     "it_per_s": round(steps / mean, 4), "calls_per_s": round(sampler.nfe(steps) / mean, 4)})
    record = {"format": SPEED_FORMAT, "measured_at": _now(), "device": device, "device_name": device_name(device),
              "dtype": dtype, "model": info.spec, "model_identity": info.identity, "topic": the_topic.slug,
              "width": the_topic.prompt.width, "height": the_topic.prompt.height, "cfg": the_topic.prompt.cfg,
              "steps": steps, "samples": samples, "batch": 1, "executor": "pipeline",
              "environment": environment, "samplers": rows}
    atomic_write(study.root / SPEED_FILE, (json.dumps(record, indent=2) + "\n").encode())
    return record


def record_workflow_run(study_root: Path, run: dict[str, Any], keep: int = 200) -> None:
    """Append one preview or polish run to STUDY/workflow.json (the newest `keep` are kept)."""
    path = study_root / WORKFLOW_FILE
    runs = [*_read_workflow(path), {**run, "at": _now()}][-keep:]
    atomic_write(path, (json.dumps({"format": SPEED_FORMAT, "runs": runs}, indent=2) + "\n").encode())


# Plain data for the site -------------------------------------------------------------------------


def load_speed(study_root: Path) -> dict[str, Any] | None:
    """STUDY/speed.json, or None when `reportgen speed` has not been run (or the file is unreadable)."""
    data = _read_json(Path(study_root) / SPEED_FILE)
    return data if data and data.get("format") == SPEED_FORMAT and data.get("samplers") else None


def speed_table(study_root: Path) -> list[dict[str, Any]]:
    """One row per measured sampler: label, it/s, s/image, model calls per step, the guide's it/s, and the
    fastest and slowest timed image (None with one sample): a wide range says the machine was busy."""
    speed = load_speed(study_root)
    if speed is None:
        return []
    return [{**row, "device_name": speed["device_name"], "calls_per_step": row["nfe"] / row["steps"],
             "guide_it_per_s": GUIDE_IT_PER_S.get(row["sampler"]),
             "s_fastest": min(row["seconds"]) if len(row["seconds"]) > 1 else None,
             "s_slowest": max(row["seconds"]) if len(row["seconds"]) > 1 else None} for row in speed["samplers"]]


def worked_example(study_root: Path, sampler: str = "k_lms", *, images: int = 100, final_steps: int = 100,
                   preview_steps: int = 10, kept: int = 3) -> dict[str, Any] | None:
    """The guide's example (100 images at 100 steps, versus 100 previews at 10 plus 3 polished at 100)
    from the measured it/s of `sampler`; None if it was not measured."""
    name = get_sampler(sampler).name
    row = next((r for r in speed_table(study_root) if r["sampler"] == name), None)
    if row is None:
        return None
    per_step = 1.0 / row["it_per_s"]
    all_final = images * final_steps * per_step
    workflow = (images * preview_steps + kept * final_steps) * per_step
    return {"sampler": name, "label": row["label"], "device_name": row["device_name"], "it_per_s": row["it_per_s"],
            "images": images, "final_steps": final_steps, "preview_steps": preview_steps, "kept": kept,
            "all_final_s": all_final, "preview_then_polish_s": workflow, "speedup": all_final / workflow,
            "guide": {"all_final_s": 6000.0, "preview_then_polish_s": 780.0}}


def workflow_runs(study_root: Path) -> list[dict[str, Any]]:
    """Every recorded preview and polish run, oldest first."""
    return _read_workflow(Path(study_root) / WORKFLOW_FILE)


def preview_polish(study_root: Path) -> list[dict[str, Any]]:
    """Per polished image: its measured time, its preview's (same topic, seed, sampler) and how close the
    preview was (relative latent distance and 1 - SSIM, as measure.py computes them)."""
    from reportgen.measure import latent_distance, ssim_distance
    from reportgen.store import Store

    runs = workflow_runs(study_root)
    previews: dict[tuple[str, str, int], dict[str, Any]] = {}
    for run in (r for r in runs if r["kind"] == "preview"):
        for cell in run["cells"]:
            previews[(run["topic"], run["sampler"], cell["seed"])] = {**cell, "steps": run["steps"]}
    out = []
    for run in (r for r in runs if r["kind"] == "polish"):
        store = Store(run["store"])
        for cell in run["cells"]:
            preview = previews.get((run["topic"], run["sampler"], cell["seed"]))
            row = {"topic": run["topic"], "sampler": run["sampler"], "label": get_sampler(run["sampler"]).label,
                   "seed": cell["seed"], "steps": run["steps"],
                   "seconds": cell["seconds"], "preview_steps": None, "preview_seconds": None,
                   "latent_distance": None, "ssim_distance": None}
            final = store.get(cell["key"])
            early = store.get(preview["key"]) if preview else None
            if preview and final and early:
                import numpy as np
                from PIL import Image

                with Image.open(final.image) as a, Image.open(early.image) as b:
                    row["ssim_distance"] = ssim_distance(np.asarray(b.convert("RGB")), np.asarray(a.convert("RGB")))
                row.update(preview_steps=preview["steps"], preview_seconds=preview["seconds"],
                           latent_distance=latent_distance(np.load(early.latents), np.load(final.latents)))
            out.append(row)
    return out


def workflow_summary(study_root: Path) -> list[dict[str, Any]]:
    """Per topic and sampler, the latest preview and polish runs' measured time (each cell's own seconds),
    what rendering every preview at the final steps would have cost at the polish's measured rate, and
    the speedup of previewing first."""
    latest: dict[tuple[str, str, str], dict[str, Any]] = {}
    for run in workflow_runs(study_root):
        latest[(run["topic"], run["sampler"], run["kind"])] = run
    out = []
    for (topic, sampler, kind), polish in latest.items():
        preview = latest.get((topic, sampler, "preview"))
        if kind != "polish" or preview is None:
            continue
        preview_s = sum(c["seconds"] or 0.0 for c in preview["cells"])
        polish_s = sum(c["seconds"] or 0.0 for c in polish["cells"])
        per_final = polish_s / len(polish["cells"])
        all_final = per_final * len(preview["cells"])
        out.append({"topic": topic, "sampler": sampler, "label": get_sampler(sampler).label,
                    "previews": len(preview["cells"]), "preview_steps": preview["steps"], "preview_s": preview_s,
                    "polished": len(polish["cells"]), "polish_steps": polish["steps"], "polish_s": polish_s,
                    "all_final_s": all_final,
                    "speedup": all_final / (preview_s + polish_s) if preview_s + polish_s else None,
                    "executor": polish["executor"]})
    return out


@dataclass(frozen=True)
class SpeedSection:
    """What the site shows about speed: the sampler table, the guide's example, the measured workflow."""

    device_name: str
    dtype: str
    model: str  # the model spec speed.json was measured with
    measured_at: str  # when `reportgen speed` ran (UTC, ISO 8601)
    steps: int
    samples: int
    width: int
    height: int
    rows: tuple[dict[str, Any], ...]
    example: dict[str, Any] | None
    workflow: tuple[dict[str, Any], ...]
    closeness: tuple[dict[str, Any], ...]


def gather_speed(study_root: Path, example_sampler: str = "k_lms",
                 titles: dict[str, str] | None = None) -> SpeedSection | None:
    """Everything above for the site from STUDY/speed.json and STUDY/workflow.json; None if neither exists.
    Workflow rows get their topic's title from `titles` (by slug), else the slug."""
    speed = load_speed(study_root)
    titles = titles or {}
    workflow = tuple({**w, "title": titles.get(w["topic"], w["topic"])} for w in workflow_summary(study_root))
    if speed is None and not workflow:
        return None
    rows = tuple(speed_table(study_root))
    name = example_sampler if any(r["sampler"] == get_sampler(example_sampler).name for r in rows) else (
        rows[0]["sampler"] if rows else example_sampler)
    return SpeedSection(
        device_name=speed["device_name"] if speed else "", dtype=speed["dtype"] if speed else "",
        model=speed.get("model", "") if speed else "", measured_at=speed.get("measured_at", "") if speed else "",
        steps=speed["steps"] if speed else 0, samples=speed["samples"] if speed else 0,
        width=speed["width"] if speed else 0, height=speed["height"] if speed else 0, rows=rows,
        example=worked_example(study_root, name) if rows else None, workflow=workflow,
        closeness=tuple({**c, "title": titles.get(c["topic"], c["topic"])} for c in preview_polish(study_root)))


def _read_workflow(path: Path) -> list[dict[str, Any]]:
    """The runs in workflow.json ([] when there is none); StudyError naming the file if it is malformed."""
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        problem = _workflow_problem(data)
    except OSError as exc:
        problem = f"cannot read it: {exc.strerror or exc}"
    except ValueError as exc:
        problem = f"invalid JSON: {exc}"
    if problem:
        # Never overwritten or skipped: the file holds the measured history of every preview and polish.
        raise StudyError(f"{path}: {problem}; repair the file or move it away (the next preview or polish "
                         "then starts a new one)")
    return list(data["runs"])


def _workflow_problem(data: Any) -> str:
    """What keeps `data` from being a workflow record the site can read; '' if nothing does."""
    if not isinstance(data, dict) or data.get("format") != SPEED_FORMAT or not isinstance(data.get("runs"), list):
        return f'not a workflow record ({{"format": {SPEED_FORMAT}, "runs": [...]}})'
    for number, run in enumerate(data["runs"], 1):
        if not isinstance(run, dict) or run.get("kind") not in ("preview", "polish"):
            return f"run {number}: kind must be 'preview' or 'polish'"
        for name in ("topic", "sampler", "executor", "store"):
            if not isinstance(run.get(name), str):
                return f"run {number}: {name} must be a string"
        if not isinstance(run.get("steps"), int) or isinstance(run["steps"], bool) or run["steps"] <= 0:
            return f"run {number}: steps must be a positive integer"
        try:
            get_sampler(run["sampler"])
        except SamplerError as exc:
            return f"run {number}: {exc}"
        cells = run.get("cells")
        if not isinstance(cells, list) or not cells:
            return f"run {number}: cells must be a non-empty list"
        for cell in cells:
            if not (isinstance(cell, dict) and isinstance(cell.get("seed"), int) and isinstance(cell.get("key"), str)
                    and isinstance(cell.get("seconds", ""), (int, float, type(None)))):
                return f"run {number}: each cell needs an integer seed, a string key and seconds (a number or null)"
    return ""


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
