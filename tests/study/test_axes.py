"""The axes beyond sampler x steps (schedules, cfg, models): their cells, their keys, and the input they refuse."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from conftest import run_main, write_study

from reportgen.study.load import load_study

TOPIC = {"anime": '"an anime girl [blurry]" -W32 -H32 -C7.5 -S3031912972'}


def listing(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*"))


def refused(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, study: Path) -> str:
    """`render --dry-run` and `render` both exit 2 with one line, writing nothing; the line."""
    before = listing(study)
    for args in (("--dry-run",), ()):
        code, err = run_main(capsys, monkeypatch, "render", study, "--device", "cpu", *args)
        assert code == 2, err
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
        assert listing(study) == before
    return err.strip()


@pytest.mark.parametrize(("extra", "expected"), [
    ('schedules = ["default", "karas"]\n', "unknown schedule 'karas'; did you mean karras?"),
    ('schedules = ["expo"]\n', "did you mean exponential?"),
    ('cfg = [3, "high"]\n', "cfg must be a list of numbers, got 'high'"),
    ("cfg = [3, 0]\n", "cfg values must be > 0, got 0"),
    ("cfg = [-2.5]\n", "cfg values must be > 0, got -2.5"),
    ("cfg = [nan]\n", "cfg values must be > 0, got nan"),
    ("cfg = []\n", "cfg must be a non-empty list of numbers"),
])
def test_bad_axes_are_refused_in_one_line(tmp_path: Path, capsys, monkeypatch, extra: str, expected: str) -> None:
    study = write_study(tmp_path / "s", samplers=["k_euler"], steps=[2], topics=TOPIC, extra=extra)
    assert expected in refused(capsys, monkeypatch, study)


def test_a_duplicate_model_is_refused(tmp_path: Path, capsys, monkeypatch) -> None:
    study = write_study(tmp_path / "s", samplers=["k_euler"], steps=[2], topics=TOPIC)
    toml = (study / "study.toml").read_text().replace('model = "tiny"\n', 'models = ["tiny", "demo", "tiny"]\n')
    (study / "study.toml").write_text(toml)
    assert "models lists 'tiny' twice" in refused(capsys, monkeypatch, study)
    (study / "study.toml").write_text(toml.replace('models = ["tiny", "demo", "tiny"]', 'model = "tiny"\n'
                                                   'models = ["tiny", "demo"]'))
    assert "give model or models, not both" in refused(capsys, monkeypatch, study)


def test_an_axis_over_max_cells_is_refused(tmp_path: Path, capsys, monkeypatch) -> None:
    # 2 samplers x 2 steps = 4 cells fit max_cells = 10; x 3 cfg values = 12 do not
    study = write_study(tmp_path / "s", samplers=["k_euler", "k_heun"], steps=[2, 4], topics=TOPIC,
                        extra="max_cells = 10\n")
    assert load_study(study).axes() == {}
    (study / "study.toml").write_text((study / "study.toml").read_text() + "cfg = [3, 7.5, 12]\n")
    line = refused(capsys, monkeypatch, study)
    assert "the study has 12 cells (samplers x steps x seeds x 3 cfgs), over max_cells = 10" in line


def test_cells_of_the_axes_and_the_skip_line(tmp_path: Path, capsys, monkeypatch) -> None:
    study = write_study(tmp_path / "s", samplers=["k_euler", "ddim", "k_euler_a"], steps=[2, 3], topics=TOPIC,
                        extra='schedules = ["default", "Karras", "beta"]\ncfg = [3, 7.5]\n')
    loaded = load_study(study)
    assert loaded.schedules == ("default", "karras", "beta") and loaded.cfgs == (3.0, 7.5)
    code, err = run_main(capsys, monkeypatch, "render", study, "--device", "cpu", "--dry-run")
    assert code == 0, err
    # k_euler takes all three schedules; DDIM and Euler a (EulerAncestral) only the default: 5 lanes x 2 cfg x 2 steps
    assert "20 cells: 0 cached, 20 to render" in err, err
    skip = [line for line in err.splitlines() if line.startswith("skipped")]
    assert skip == ["skipped 16 cells of the schedules axis that their sampler cannot take: DDIMScheduler takes no "
                    "use_karras_sigmas (4); DDIMScheduler takes no use_beta_sigmas (4); "
                    "EulerAncestralDiscreteScheduler takes no use_karras_sigmas (4); "
                    "EulerAncestralDiscreteScheduler takes no use_beta_sigmas (4)"], err
    assert not (study / "store").exists()


def test_a_presets_name_picks_its_solver_and_schedule_on_the_axis(tmp_path: Path, capsys, monkeypatch) -> None:
    study = write_study(tmp_path / "s", samplers=["dpmpp_2m", "k_euler"], steps=[2, 3], topics=TOPIC,
                        extra='schedules = ["default", "karras"]\n')
    for sampler, cells in (("dpmpp_2m_karras", 2), ("dpmpp_2m", 4), ("k_euler", 4)):
        code, err = run_main(capsys, monkeypatch, "render", study, "--device", "cpu", "--dry-run", "--sampler", sampler)
        assert code == 0, err
        assert f"{cells} cells: 0 cached, {cells} to render" in err, (sampler, err)


def test_the_registry_knows_which_classes_take_a_sigma_schedule() -> None:
    """SIGMA_SCHEDULERS is what diffusers' own signatures say, for every diffusion sampler's class."""
    import diffusers

    from reportgen.samplers import SAMPLERS, SIGMA_SCHEDULERS

    flags = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")
    for sampler in SAMPLERS:
        if sampler.flow:
            continue
        params = inspect.signature(getattr(diffusers, sampler.scheduler).__init__).parameters
        assert (sampler.scheduler in SIGMA_SCHEDULERS) == all(f in params for f in flags), sampler.name
        assert "timestep_spacing" in params


def test_presets_and_ui_names_resolve_to_a_solver_and_schedule() -> None:
    from reportgen.samplers import get_schedule, resolve

    assert [(s.name, k) for s, k in (resolve("dpmpp_2m_karras"), resolve("DPM++ 2M Karras"))] == \
        [("dpmpp_2m", "karras")] * 2
    assert (resolve("Euler", "Exponential")[0].name, resolve("Euler", "Exponential")[1]) == ("k_euler", "exponential")
    assert get_schedule("Automatic") == "default" and get_schedule("SGM Uniform") == "trailing"


def test_a_schedule_reaches_the_scheduler(tmp_path: Path) -> None:
    """What each schedule sets is diffusers' own flag, and its sigmas differ from the default's."""
    from reportgen.models.configs import SD1_SCHEDULER
    from reportgen.samplers import get_sampler

    euler = get_sampler("k_euler")
    sigmas = {}
    for schedule in ("default", "karras", "exponential", "beta"):
        scheduler = euler.make_scheduler(SD1_SCHEDULER, schedule)
        scheduler.set_timesteps(10)
        sigmas[schedule] = [round(float(s), 4) for s in scheduler.sigmas]
    assert len({tuple(v) for v in sigmas.values()}) == 4
    ddim = get_sampler("ddim").make_scheduler(SD1_SCHEDULER, "trailing")
    assert ddim.config.timestep_spacing == "trailing" and ddim.config.steps_offset == 0


def test_a_preset_builds_the_scheduler_of_its_solver_with_its_schedule() -> None:
    """dpmpp_2m_karras, ddim_trailing and plms_trailing are their solver with a schedule, config for config: so a
    (solver, schedule) cell may share the preset's key (render/plan.py cell_key)."""
    from reportgen.models.configs import SD1_SCHEDULER
    from reportgen.samplers import SAMPLERS, get_sampler

    presets = [s for s in SAMPLERS if s.preset is not None]
    assert {s.name for s in presets} == {"dpmpp_2m_karras", "ddim_trailing", "plms_trailing"}
    for preset in presets:
        assert preset.preset is not None
        solver, schedule = preset.preset
        ours = dict(preset.make_scheduler(SD1_SCHEDULER).config)
        theirs = dict(get_sampler(solver).make_scheduler(SD1_SCHEDULER, schedule).config)
        assert ours == theirs and type(ours) is type(theirs), preset.name


@pytest.mark.parametrize(("guide", "cells"), [
    # 5 samplers x 4 schedules (each takes every one) x 33 step counts (people runs to 700) x 3 seeds + 15 references
    ("guide-schedules", 20 * 33 * 3 + 15),
    # 2 samplers x 3 cfg values x 33 x 3 seeds + a reference per topic, seed and cfg value
    ("guide-cfg", 6 * 33 * 3 + 5 * 3 * 3),
])
def test_the_guides_axis_studies_are_ready_to_render(tmp_path: Path, capsys, monkeypatch, guide: str,
                                                     cells: int) -> None:
    """docs/guide-schedules and docs/guide-cfg plan (on the tiny model in place of SD 1.5's weights), with no cell
    skipped, writing nothing."""
    from conftest import ROOT

    code, err = run_main(capsys, monkeypatch, "render", ROOT / "docs" / guide, "--model", "tiny", "--dry-run",
                         "--store", tmp_path / "store")
    assert code == 0, err
    assert f"{cells} cells: 0 cached, {cells} to render" in err and "skipped" not in err
    assert not (tmp_path / "store").exists()
