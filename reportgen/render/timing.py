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
from pathlib import Path
from typing import Any

from reportgen.errors import ReportgenError, StudyError
from reportgen.models.families import adapter
from reportgen.models.loading import load_pipeline, pick_device
from reportgen.models.sources import ModelInfo, resolve_model
from reportgen.render.plan import Cell, cell_key, check_steps, runtime_environment, scheduler_config
from reportgen.render.store import atomic_write
from reportgen.samplers import get_sampler
from reportgen.study.load import Topic, load_study

SPEED_FILE = "speed.json"
WORKFLOW_FILE = "workflow.json"
SPEED_FORMAT = 1


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
    from reportgen.render.execute import EXECUTORS

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
    device, dtype = pick_device(device, dtype, adapter(info.family).half_dtype)
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


# Reading the files back, validated by their schemas (reportgen/schemas.py) -----------------------------


def load_speed(study_root: Path) -> dict[str, Any] | None:
    """STUDY/speed.json, or None when `reportgen speed` has not been run; StudyError naming the file and
    the bad value if it does not fit its schema."""
    from reportgen.schemas import SpeedRecord, load_raw

    try:
        return load_raw(Path(study_root) / SPEED_FILE, SpeedRecord, StudyError,
                        "repair it, run `reportgen speed` again, or move it away")
    except FileNotFoundError:
        return None


def workflow_runs(study_root: Path) -> list[dict[str, Any]]:
    """Every recorded preview and polish run, oldest first."""
    return _read_workflow(Path(study_root) / WORKFLOW_FILE)


def _read_workflow(path: Path) -> list[dict[str, Any]]:
    """The runs in workflow.json ([] when there is none); StudyError naming the file if it is malformed."""
    from reportgen.schemas import FileProblem, WorkflowRecord, read_json, validate

    try:
        data = read_json(path)
        validate(WorkflowRecord, data)
    except FileNotFoundError:
        return []
    except FileProblem as exc:
        # Never overwritten or skipped: the file holds the measured history of every preview and polish.
        raise StudyError(f"{path}: {exc}; repair the file or move it away (the next preview or polish "
                         "then starts a new one)") from None
    return list(data["runs"])  # as written: the runs keep the fields the schema does not name


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
