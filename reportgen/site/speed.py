"""The site's speed sections: the sampler speed table, the guide's worked example, and the measured
preview-then-polish workflow, from STUDY/speed.json and STUDY/workflow.json (written by render/timing.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reportgen.render.timing import load_speed, workflow_runs
from reportgen.samplers import get_sampler

# The guide's own table: it/s at 512x512 on an M1 Max, 3-sample average.
GUIDE_IT_PER_S = {"ddim": 1.89, "plms": 1.86, "k_euler": 1.86, "k_lms": 1.91, "k_heun": 0.95, "k_dpm_2": 0.95,
                  "k_dpm_2_a": 0.95, "k_euler_a": 1.86}



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



def preview_polish(study_root: Path) -> list[dict[str, Any]]:
    """Per polished image: its measured time, its preview's (same topic, seed, sampler) and how close the
    preview was (relative latent distance and 1 - SSIM, as measure/distances.py computes them)."""
    from reportgen.measure.distances import latent_distance, ssim_distance
    from reportgen.render.store import Store

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
                row["ssim_distance"] = ssim_distance(store.read_pixels(early), store.read_pixels(final))
                row.update(preview_steps=preview["steps"], preview_seconds=preview["seconds"],
                           latent_distance=latent_distance(store.read_latents(early), store.read_latents(final)))
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


def seconds_alone(speed: SpeedSection | None, sizes: dict[str, tuple[int, int]]) -> Callable[[str, int, str],
                                                                                              float | None]:
    """(sampler, model calls, topic) -> the seconds those calls take one image alone, from speed.json's seconds per
    call of that sampler (its mean over samplers where it was not timed), scaled by the topic's pixels against the
    size it was timed at (a denoiser call costs about in proportion to the latent's area); None without speed.json."""
    rows = speed.rows if speed is not None else ()
    per_call = {r["sampler"]: r["s_per_image"] / r["nfe"] for r in rows if r["nfe"]}
    mean = sum(per_call.values()) / len(per_call) if per_call else None
    timed_pixels = (speed.width * speed.height) if speed is not None else 0

    def cost(sampler: str, calls: int, topic: str) -> float | None:
        rate = per_call.get(sampler, mean)
        if rate is None or not timed_pixels or topic not in sizes:
            return None
        width, height = sizes[topic]
        return rate * calls * width * height / timed_pixels

    return cost


SLOWER = 1.5  # a render's seconds per image this many times what speed.json says an image costs alone: a busy machine


def load_note(cells: Iterable[Any]) -> str:
    """A sentence when stored cells (site CellViews: load, cpus, seconds, alone, executor) were rendered on a loaded
    machine: their record's load average above the CPU count (more runnable work than CPUs, the render shared them),
    or their seconds SLOWER times or more what speed.json's rate says they cost alone (a batched cell's share of
    shared calls is normally less); "" when neither."""
    cells = [c for c in cells if c.stored]
    busy = [c for c in cells if c.load is not None and c.cpus and c.load > c.cpus]
    ratios = sorted(c.seconds / c.alone for c in cells if c.seconds and c.alone)
    slow = ratios[len(ratios) // 2] if ratios else None
    parts = []
    if busy:
        peak = max(busy, key=lambda c: c.load / c.cpus)
        parts.append(f"{len(busy)} of {len(cells)} cells were stored while the machine's load average exceeded its "
                     f"CPU count (up to {peak.load:.1f} on {peak.cpus} CPUs)")
    if slow is not None and slow >= SLOWER:
        parts.append(f"their seconds are a median {slow:.1f}x what `reportgen speed` measured for the same model "
                     "calls alone")
    if not parts:
        return ""
    return ("Rendered on a loaded machine: " + "; ".join(parts) + ". The seconds recorded for these cells are slower "
            "than this machine alone; compare samplers with the speed table, and render on a quiet machine for "
            "times worth publishing.")
