"""A study of several models (`models = [...]`): planned for all first, rendered one model at a time (one pipeline
alive at once), each cell keyed and measured with its own model."""

from __future__ import annotations

import gc
import json
import weakref
from pathlib import Path

from conftest import run_main, write_study

from reportgen.render.store import Store

TOPIC = {"cat": '"a cat" -W32 -H32 -C7.5 -S1'}


def models_study(root: Path, models: str) -> Path:
    study = write_study(root, samplers=["k_euler"], steps=[2, 3], topics=TOPIC)
    toml = (study / "study.toml").read_text().replace('model = "tiny"\n', f"models = {models}\n")
    (study / "study.toml").write_text(toml)
    return study


def test_models_render_one_at_a_time_and_are_measured_apart(tmp_path: Path, capsys, monkeypatch) -> None:
    from reportgen.render import jobs

    study = models_study(tmp_path / "s", '["tiny", "tiny-sd2-v"]')
    code, err = run_main(capsys, monkeypatch, "render", study, "--dry-run")
    assert code == 0, err
    assert [line.split(" with ")[1].split(" on ")[0] for line in err.splitlines() if " cells: " in line] == \
        ["tiny", "tiny-sd2-v"]

    loaded: list[weakref.ref] = []
    real = jobs.load_pipeline

    def one_at_a_time(*args, **kwargs):
        gc.collect()
        assert all(ref() is None for ref in loaded), "a model's pipeline is still alive when the next one loads"
        pipe = real(*args, **kwargs)
        loaded.append(weakref.ref(pipe))
        return pipe

    monkeypatch.setattr(jobs, "load_pipeline", one_at_a_time)
    code, err = run_main(capsys, monkeypatch, "render", study, "--device", "cpu")
    assert code == 0, err
    assert len(loaded) == 2
    cells = list(Store(study / "store").cells())
    assert sorted((c.record["model"], c.record["steps"]) for c in cells) == [
        ("tiny", 2), ("tiny", 3), ("tiny-sd2-v", 2), ("tiny-sd2-v", 3)]
    assert len({c.key for c in cells}) == 4
    assert sorted(p.name for p in (study / "grids").glob("*.png")) == ["cat-1-model-tiny-sd2-v.png",
                                                                       "cat-1-model-tiny.png"]

    code, err = run_main(capsys, monkeypatch, "render", study, "--device", "cpu")
    assert code == 0 and err.count("2 cells: 2 cached, 0 to render") == 2, err
    from typer.testing import CliRunner

    from reportgen.cli import app

    result = CliRunner().invoke(app, ["analyze", str(study), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    assert counts["cells"] == 4  # every model's cells, each lane with its own model's final
    assert sorted(f["model"] for f in counts["fits"]) == ["tiny", "tiny-sd2-v"]


def test_a_model_that_cannot_take_a_sampler_stops_the_plan_before_anything_renders(tmp_path: Path, capsys,
                                                                                   monkeypatch) -> None:
    study = models_study(tmp_path / "s", '["tiny", "tiny-flux"]')
    before = sorted(study.rglob("*"))
    code, err = run_main(capsys, monkeypatch, "render", study, "--device", "cpu")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "sampler k_euler cannot run on" in err and "flow_euler" in err
    assert sorted(study.rglob("*")) == before  # tiny's cells were not rendered first


def test_verify_counts_every_models_cells(tmp_path: Path, capsys, monkeypatch) -> None:
    """verify --prune of a study with `models` keeps every model's cells (none is an orphan); --repair, which renders
    with one model, asks for --model."""
    study = models_study(tmp_path / "s", '["tiny", "tiny-sd2-v"]')
    assert run_main(capsys, monkeypatch, "render", study, "--device", "cpu")[0] == 0
    before = sorted(p.name for p in (study / "store").rglob("*.png"))
    code, err = run_main(capsys, monkeypatch, "verify", study, "--prune")
    assert code == 0, err
    assert "4 cells: 4 " in err and " 0 orphaned" in err, err
    assert sorted(p.name for p in (study / "store").rglob("*.png")) == before
    code, err = run_main(capsys, monkeypatch, "verify", study, "--repair")
    assert code == 2 and "give --model" in err, err
