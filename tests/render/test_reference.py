"""The separate reference image (reference_steps) in the study and the plan, and each cell's schedule facts
checked against values computed by hand from diffusers' own formulas (0.42.1)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from conftest import run_main, write_study

from reportgen.errors import StudyError
from reportgen.models.sources import SD1_SCHEDULER, resolve_model
from reportgen.render.plan import plan
from reportgen.render.schedule import schedule
from reportgen.render.store import Store
from reportgen.study.load import DEFAULT_SEEDS, load_study

TOPICS = {"anime": '"an anime girl" -W32 -H32 -S1', "food": '"a hamburger" -W32 -H32 -S2'}


def study(tmp_path: Path, reference_steps: int | None, **options) -> Path:
    options = {"samplers": ["k_euler", "ddim"], "steps": [2, 4], "topics": TOPICS, "seeds": 2} | options
    return write_study(tmp_path / "study", reference_steps=reference_steps, **options)


def planned(root: Path, **filters):
    return plan(load_study(root), resolve_model("tiny"), "cpu", "float32", Store(root / "store"), **filters)


def test_reference_steps_default_setting_and_zero(tmp_path: Path):
    loaded = load_study(study(tmp_path, None))
    assert loaded.reference_steps is None and loaded.reference_sampler == "k_heun"
    assert [loaded.reference_steps_for(t) for t in loaded.topics] == [16, 16]  # 4 x the highest step count
    assert load_study(study(tmp_path / "set", 50)).reference_steps_for(loaded.topics[0]) == 50
    assert load_study(study(tmp_path / "off", 0)).reference_steps_for(loaded.topics[0]) is None


def test_seeds_default_to_three(tmp_path: Path):
    root = study(tmp_path, 0)
    (root / "study.toml").write_text((root / "study.toml").read_text().replace("seeds = 2\n", ""))
    assert DEFAULT_SEEDS == 3 and [len(t.seeds) for t in load_study(root).topics] == [3, 3]


@pytest.mark.parametrize(("value", "shown"), [("-1", "-1"), ("10001", "10001"), ("2.5", "2.5"), ("true", "True"),
                                             ('"64"', "'64'")])
def test_bad_reference_steps_is_one_line(tmp_path: Path, value: str, shown: str, capsys, monkeypatch):
    root = study(tmp_path, None, extra=f"reference_steps = {value}\n")
    code, err = run_main(capsys, monkeypatch, "render", root, "--dry-run")
    assert code == 2 and err.strip().splitlines() == [
        f"error: {root / 'study.toml'}: reference_steps must be an integer from 0 (no separate reference) to 10000, "
        f"got {shown}"]


def test_the_reference_is_planned_beside_the_matrix(tmp_path: Path):
    """One k_heun cell at 16 steps per topic and seed, flagged as the reference; the matrix as without it."""
    with_reference = planned(study(tmp_path / "a", None))
    without = planned(study(tmp_path / "b", 0))
    references = [c for c in with_reference.cells if c.reference]
    assert [(c.topic, c.seed, c.sampler, c.steps, c.nfe) for c in references] == [
        ("anime", 1, "k_heun", 16, 31), ("anime", 2, "k_heun", 16, 31),
        ("food", 2, "k_heun", 16, 31), ("food", 3, "k_heun", 16, 31)]
    assert with_reference.matrix == without.cells  # the same cells, with the same keys
    assert len(with_reference.to_render) == 16 + 4
    # A matrix cell at the reference's sampler and steps is the reference: no second cell.
    held = planned(study(tmp_path / "c", 4, samplers=["k_euler", "k_heun"]))
    assert not any(c.reference for c in held.cells) and len(held.cells) == 16
    # Filters apply to the reference like any cell.
    assert not any(c.reference for c in planned(study(tmp_path / "a", None), samplers=["ddim"]).cells)
    assert not any(c.reference for c in planned(study(tmp_path / "a", None), steps=[2, 4]).cells)
    assert [c.steps for c in planned(study(tmp_path / "a", None), samplers=["k_heun"]).cells] == [16] * 4


def test_max_cells_counts_the_reference(tmp_path: Path):
    with pytest.raises(StudyError, match="the study has 20 cells, over max_cells = 19"):  # 16 + 4 references
        load_study(study(tmp_path, None, extra="max_cells = 19\n"))
    assert len(load_study(study(tmp_path / "ok", None, extra="max_cells = 20\n")).topics) == 2


def test_a_reference_its_sampler_cannot_take_is_one_line_at_planning(tmp_path: Path, capsys, monkeypatch):
    """DDIM cannot run 1000 steps or more; K_HEUN can (the default reference far above 1000 steps is fine)."""
    heun = planned(study(tmp_path / "heun", 4000))
    assert {c.steps for c in heun.cells if c.reference} == {4000}
    root = study(tmp_path / "ddim", 1200, extra='reference_sampler = "ddim"\n')
    code, err = run_main(capsys, monkeypatch, "render", root, "--dry-run")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: {root / 'study.toml'}: reference_steps: sampler ddim cannot run 1200 steps with "
                          "model tiny: ") and err.rstrip().endswith("or choose another reference_sampler")
    root = study(tmp_path / "default", None, steps=[2, 300], extra='reference_sampler = "ddim"\n')
    code, err = run_main(capsys, monkeypatch, "render", root, "--dry-run")
    assert code == 2 and "the default reference_steps (4 x topic anime's 300 steps): sampler ddim cannot run " \
                         "1200 steps" in err, err


def _sigma(alpha: float) -> float:
    return math.sqrt((1 - alpha) / alpha)


def test_schedule_facts_match_diffusers_formulas():
    """First timestep, last sigma, final denoise and the step-count problem, from diffusers 0.42.1's own formulas:
    leading spacing t_i = i * (1000 // N) + 1; scaled-linear betas; DPM-Solver's linspace drops timestep 0."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    alphas = np.cumprod(1 - betas)
    for n in (5, 40, 80, 160, 640):
        ddim = schedule("ddim", n, SD1_SCHEDULER)
        assert ddim.first_timestep == (n - 1) * (1000 // n) + 1  # 801, 976, 949, 955, 640
        assert ddim.last_sigma == pytest.approx(_sigma(alphas[0]), rel=1e-4) and not ddim.final_denoise
        assert bool(ddim.step_problem) == (1000 % n != 0)
        euler = schedule("k_euler", n, SD1_SCHEDULER)
        assert euler.first_timestep == 999 and euler.final_denoise and not euler.step_problem
        assert euler.last_sigma == pytest.approx(_sigma(alphas[0]), rel=1e-4)
        dpm = schedule("dpmpp_2m", n, SD1_SCHEDULER)
        last = round(999 / n)  # linspace(0, 999, N + 1).round()[::-1][:-1] ends at round(999 / N)
        assert dpm.final_denoise and dpm.last_sigma == pytest.approx(_sigma(alphas[last]), rel=1e-3)
    assert schedule("dpmpp_2m", 160, SD1_SCHEDULER).last_sigma == pytest.approx(0.078, abs=0.001)
    assert schedule("ddim", 640, SD1_SCHEDULER).step_problem == (
        "its 640 steps are 1000 // 640 = 1 timesteps apart and cover 640 of 1000: the noisiest 360 are skipped (it "
        "starts at timestep 640)")
    trailing = schedule("ddim_trailing", 80, SD1_SCHEDULER)
    assert trailing.first_timestep == 999 and trailing.step_problem.startswith("step() moves 1000 // 80 = 12 timesteps")
    assert not schedule("ddim_trailing", 50, SD1_SCHEDULER).step_problem


def test_a_flux_cell_records_the_schedule_its_lane_ran(tmp_path: Path):
    """FLUX.1's pipeline passes its own sigmas and a shift from the image's size: the record holds the lane's facts
    (last sigma 0.345 at 4 steps on tiny FLUX.1 at 32x32), and the registry, which knows neither, is not asked."""
    from reportgen.measure.analysis import analyze
    from reportgen.models.loading import load_pipeline
    from reportgen.render import jobs
    from reportgen.render.batched import lane_scheduler
    from reportgen.render.schedule import read_schedule

    root = write_study(tmp_path / "flux", samplers=["flow_euler"], steps=[4], topics={"a": '"a red fox" -W32 -H32 -S1'},
                       model="tiny-flux")
    job = jobs.prepare_render(root)
    result, _ = jobs.run_render(job)
    assert result.rendered == 1 and not result.failed
    (cell,) = job.plan.cells
    stored = job.store.get(cell.key)
    assert stored is not None
    lane = read_schedule(lane_scheduler(load_pipeline(job.model), cell, job.model), 4)
    assert stored.record["schedule"] == {"first_timestep": lane.first_timestep, "last_sigma": lane.last_sigma,
                                         "final_denoise": True, "step_problem": ""}
    assert lane.last_sigma == pytest.approx(0.345, abs=0.001)
    (row,) = analyze(job.study, job.store, job.plan.cells, job.model.scheduler_config).cells
    assert row.last_sigma == lane.last_sigma
