"""The site's speed sections: the sampler speed table, the guide's worked example, and the measured
preview-then-polish workflow, from STUDY/speed.json and STUDY/workflow.json (written by render/timing.py)."""

from __future__ import annotations

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
