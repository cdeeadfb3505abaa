"""`reportgen info`: what an image says about how it was made, and the command that makes it again.

For reportgen's own PNGs: the parameters, the cell and its key, whether the pixels are still the ones
rendered (the record's `pixels_sha256`), and a `reportgen image` command carrying everything the key
holds (model with its path or pinned revision, --model-config, device, dtype). For a web UI's PNG, JPEG
or WebP: its fields as the web UIs read them and the closest reportgen command, or why there is none.
For a ComfyUI PNG: its KSampler nodes' settings. Every line is escaped for the terminal.
"""

from __future__ import annotations

import shlex
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any

from reportgen.errors import PromptError, ReportgenError, StoreError, printable
from reportgen.models.configs import TINY_MODELS
from reportgen.render.metadata import (
    ImageMetadata,
    closest_schedule,
    comfy_samplers,
    number,
    parse_parameters,
    read_image_metadata,
    ui_sampler,
)
from reportgen.render.outputs import CPU_ROWS_PER_CALL
from reportgen.render.plan import Cell
from reportgen.samplers import DEFAULT_SCHEDULE, SCHEDULES, get_sampler, resolve
from reportgen.study.prompt import Prompt, parse_prompt, validate

# The largest difference, in levels of 255, measured between a batched cell and the same cell rendered
# alone (tests/render/test_info.py holds it on the tiny model; docs/store.md has the numbers).
BATCHED_LEVELS = 2


@dataclass
class ImageReport:
    """What `info` prints (already escaped), and the problem that makes it exit 2 ('' if none)."""

    lines: list[str] = field(default_factory=list)
    problem: str = ""


def describe_image(path: Path) -> ImageReport:
    """Read `path` (never decoding a bomb) and describe it; StoreError if it is no image one can read."""
    if not path.is_file():
        raise ReportgenError(f"image not found: {path}")
    meta = read_image_metadata(path)
    report = ImageReport()
    if meta.parameters:
        report.lines.append(printable(meta.parameters, newlines=True))
    if meta.record is not None:
        _reportgen(meta, meta.record, report)
    elif meta.record_problem:
        report.problem = f"{path}: reportgen's record is malformed ({meta.record_problem}), so the command " \
                         "that reproduces it is unknown"
    elif meta.parameters:
        _web_ui(meta, meta.parameters, report)
    elif meta.comfy_prompt is not None or meta.comfy_workflow:
        _comfy(meta, report)
    elif meta.other:
        report.problem = (f"{path} carries no generation parameters reportgen reads (its text chunks: "
                          f"{', '.join(meta.other)})")
    else:
        report.problem = f"{path} carries no generation parameters"
    report.lines = [printable(line, newlines=True) for line in report.lines]
    report.problem = printable(report.problem)
    return report


# --- reportgen's own images ------------------------------------------------------------------------------

def _reportgen(meta: ImageMetadata, record: dict[str, Any], report: ImageReport) -> None:
    image = meta.path
    fields = Cell.__dataclass_fields__
    missing = [name for name, f in fields.items() if name not in record and f.default is MISSING]
    if missing:  # a field with a default (`reference`) came later: older records lack it
        report.problem = (f"{image}: reportgen's record is incomplete (no {', '.join(missing)}), so the command "
                          "that reproduces it is unknown")
        return
    try:
        cell = Cell(**{name: record[name] for name in fields if name in record})
        text = cell.prompt.to_command()
        parse_prompt(text)  # the command printed must be one `reportgen image` accepts
        get_sampler(cell.sampler)
    except (TypeError, ValueError, AttributeError, ReportgenError):  # the right fields, values of the wrong kind
        report.problem = f"{image}: reportgen's record is malformed, so the command that reproduces it is unknown"
        return
    environment: dict[str, Any] = record["environment"] if isinstance(record.get("environment"), dict) else {}
    report.lines.append(f"Topic: {cell.topic}, seed index {cell.seed_index}, key {cell.key}")
    report.lines.append(f"Model identity: {environment.get('model', '?')}, executor: {record.get('executor')}, "
                        f"model calls: {record.get('nfe_counted')}")
    if isinstance(record.get("family_label"), str):  # records from before the model families name none
        report.lines.append(f"Model family: {record['family_label']}")
    report.lines.append(_axes_line(cell, record))
    report.lines.append(_pixels_line(meta, record))
    report.lines.append("Reproduce: " + _command(text, record, environment, cell))


def _axes_line(cell: Cell, record: dict[str, Any]) -> str:
    """The cell's place on the study's axes: model, sampler, schedule, cfg, steps, seed (a record from before the
    schedules axis with a preset sampler, dpmpp_2m_karras, named as its solver and schedule)."""
    sampler, schedule = resolve(cell.sampler, cell.schedule_type)
    model = cell.model or record.get("model_spec") or "?"
    label = SCHEDULES[schedule].label or "the sampler's own"
    return (f"Axes: model {model}, sampler {sampler.name}, schedule {schedule} ({label}), cfg {number(cell.cfg)}, "
            f"steps {cell.steps}, seed {cell.seed}" + (", the reference image" if cell.reference else ""))


def _pixels_line(meta: ImageMetadata, record: dict[str, Any]) -> str:
    recorded = record.get("pixels_sha256")
    if not isinstance(recorded, str):
        return "Pixels: not checked (the record has no pixels_sha256)"
    try:
        actual = meta.pixels_sha256()
    except StoreError as exc:
        return f"Pixels: damaged: they cannot be decoded ({exc})"
    if actual != recorded:
        return ("Pixels: EDITED after rendering: their SHA-256 is not the record's, so this is not the image the "
                "parameters made")
    return "Pixels: as rendered (their SHA-256 is the record's)"


def _command(text: str, record: dict[str, Any], environment: dict[str, Any], cell: Cell) -> str:
    """`reportgen image` with every option that changes the key, as the record names them."""
    parts = ["reportgen", "image", shlex.quote(text)]
    if cell.schedule_type != DEFAULT_SCHEDULE:
        parts += ["--schedule", cell.schedule_type]
    spec, path = record.get("model_spec"), record.get("model_path")
    identity = environment.get("model")
    notes = []
    if isinstance(path, str):
        parts += ["--model", shlex.quote(path)]
    elif isinstance(spec, str) and isinstance(identity, str) and identity.startswith("hub:") and "@" in identity:
        parts += ["--model", shlex.quote(identity[4:])]  # org/name@<commit>: the revision it was rendered with
    elif isinstance(spec, str):
        parts += ["--model", shlex.quote(spec)]
        if spec not in TINY_MODELS and spec != "demo" and not Path(spec).is_absolute():
            notes.append("a relative model path: run it where render ran")
    else:  # older records: guessing a model would reproduce another image
        parts += ["--model", "MODEL"]
    if isinstance(record.get("model_config"), str):
        parts += ["--model-config", shlex.quote(record["model_config"])]
    device, dtype = environment.get("device"), environment.get("dtype")
    if isinstance(device, str) and isinstance(dtype, str):
        parts += ["--device", shlex.quote(device), "--dtype", shlex.quote(dtype)]
    parts += ["--out", "image.png"]
    if not isinstance(spec, str):
        return " ".join(parts) + " (model unknown: the record does not name it)"
    if record.get("executor") == "batched":
        parts.insert(-2, "--executor batched")  # a batch of one lane, before --out
        rows = record.get("call_rows")
        if device == "cpu" and rows != CPU_ROWS_PER_CALL:  # one lane gives the batch's bits at the same call rows
            notes.append(f"rendered with denoiser calls of {rows if isinstance(rows, int) else 'unrecorded'} rows; "
                         f"this reportgen makes calls of {CPU_ROWS_PER_CALL}, so it may come out a level or two "
                         "of 255 off (docs/store.md)")
        if device != "cpu":  # on a CPU every call has the same rows, so one lane gives the batch's bits
            notes.append(f"rendered in a batch on {device}, where a cell's pixels can depend on its batch: it may "
                         f"come out a level or two of 255 off (up to {BATCHED_LEVELS} on a CPU before every call "
                         f"had the same rows; not measured on {device}; docs/store.md)")
    return " ".join(parts) + (f"  # {'; '.join(notes)}" if notes else "")


# --- other tools' images ---------------------------------------------------------------------------------

def _web_ui(meta: ImageMetadata, parameters: str, report: ImageReport) -> None:
    where = "a PNG text chunk" if meta.format == "PNG" else f"the {meta.format}'s EXIF UserComment"
    info = parse_parameters(parameters)
    if info is None:
        report.lines.append(f"Made by: another tool (a `parameters` text in {where}, but with no fields line the "
                            "web UIs would read)")
        report.lines.append("Reproduce: none (no steps, sampler, CFG scale or seed to read)")
        return
    fields = info.fields
    sampler_name, schedule = ui_sampler(fields)
    report.lines.append(f"Made by: a web UI (AUTOMATIC1111-style parameters in {where})")
    summary = {"Steps": fields.get("Steps"), "Sampler": sampler_name, "Schedule type": schedule,
               "CFG scale": fields.get("CFG scale"), "Seed": fields.get("Seed"), "Size": fields.get("Size"),
               "Model hash": fields.get("Model hash"), "Model": fields.get("Model")}
    report.lines.append("Read as: " + ", ".join(f"{k}: {v}" for k, v in summary.items() if v))
    report.lines.append("Reproduce: " + _closest_command(info.prompt, info.negative, fields))


def _closest_command(prompt: str, negative: str, fields: dict[str, str]) -> str:
    """The reportgen command closest to a web UI's fields, with what differs; or none and why."""
    sampler, schedule, differs = closest_schedule(fields)
    if sampler is None:
        return f"none ({differs})"
    try:
        width, height = (int(v) for v in fields.get("Size", "512x512").split("x"))
        steps, seed = int(fields["Steps"]), int(fields.get("Seed", "0"))
        cfg = float(fields.get("CFG scale", "7"))
    except (KeyError, ValueError):
        return "none (its Steps, Seed, CFG scale or Size is not a number)"
    try:
        wanted = validate(Prompt(text=" ".join(prompt.split()), negative=negative, width=width, height=height,
                                 cfg=cfg, seed=seed, steps=steps, sampler=sampler.name))
        command = wanted.to_command()
        if parse_prompt(command) != wanted:  # e.g. an empty prompt
            raise PromptError("it does not read back as the same prompt")
    except PromptError as exc:
        return f"none (reportgen's prompt syntax cannot say it: {exc})"
    notes = ["closest, not the same image: the web UIs' samplers, prompt weighting and noise differ from "
             "diffusers'"]
    if differs:
        notes.append(differs)
    model = fields.get("Model") or fields.get("Model hash")
    if model:
        notes.append(f"MODEL: its checkpoint {model!r}")
    option = f" --schedule {schedule}" if schedule != DEFAULT_SCHEDULE else ""
    return f"reportgen image {shlex.quote(command)}{option} --model MODEL --out image.png  # {'; '.join(notes)}"


def _comfy(meta: ImageMetadata, report: ImageReport) -> None:
    graph = meta.comfy_prompt
    nodes = f"a `prompt` graph of {len(graph)} nodes" if isinstance(graph, dict) else "no readable `prompt` graph"
    report.lines.append(f"Made by: ComfyUI ({nodes}{', and a `workflow` chunk' if meta.comfy_workflow else ''})")
    samplers = comfy_samplers(graph)
    if not samplers:
        report.lines.append("Samplers: none found (no KSampler node with its own values)")
    for node in samplers:
        values = {"sampler": node.sampler, "scheduler": node.scheduler, "steps": node.steps,
                  "CFG": number(node.cfg) if isinstance(node.cfg, int | float) and not isinstance(node.cfg, bool)
                  else node.cfg, "seed": node.seed}
        shown = ", ".join(f"{k} {v}" for k, v in values.items() if v is not None and not isinstance(v, dict | list))
        report.lines.append(f"{node.kind} node {node.node}: {shown or 'its values come from other nodes'}")
        for label, text in (("positive", node.positive), ("negative", node.negative)):
            if text:
                report.lines.append(f"  {label}: {text}")
    report.lines.append("Reproduce: none (a ComfyUI graph is more than one reportgen command; its samplers' "
                        "settings are above)")
