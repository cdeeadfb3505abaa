"""Limits and damaged files: corrupt latents are rendered again, steps a scheduler refuses and oversized
previews are refused before anything runs, and a malformed workflow.json is never overwritten."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_main, write_study

from reportgen.render.store import Store
from reportgen.study.load import MAX_STEPS

PROMPT = '"an anime girl" -W32 -H32 -C7.5 -S3031912972'


def one_error(code: int, err: str) -> str:
    """The single `error: ...` line of a refused command."""
    assert code == 2, err
    assert err.startswith("error: ") and err.strip().count("\n") == 0, err
    return err


def test_corrupt_latents_are_rendered_again(tmp_path: Path, capsys, monkeypatch):
    study = write_study(tmp_path / "study", samplers=["k_euler", "k_heun"], steps=[2], seeds=2,
                        topics={"anime": PROMPT})
    assert run_main(capsys, monkeypatch, "render", study)[0] == 0
    files = sorted((study / "store" / "latents").glob("*/*.npy"))
    whole = files[0].read_bytes()
    damaged = {files[0]: whole[:-4], files[1]: b"", files[2]: b"garbagegarbage"}  # truncated, empty, garbage
    for path, data in damaged.items():
        path.write_bytes(data)

    code, err = run_main(capsys, monkeypatch, "render", study)
    assert code == 0 and "rendered 3, cached 1," in err, err
    for path in damaged:
        latents = np.load(path)
        assert latents.dtype == np.float32 and latents.shape == np.load(files[3]).shape
    assert len(list(Store(study / "store").cells())) == 4
    assert run_main(capsys, monkeypatch, "analyze", study)[0] == 0


def test_steps_a_scheduler_refuses_stop_the_plan(tmp_path: Path, capsys, monkeypatch):
    study = write_study(tmp_path / "study", samplers=["k_euler", "ddim"], steps=[2, 1001], topics={"anime": PROMPT})
    for args in (["--dry-run"], []):
        err = one_error(*run_main(capsys, monkeypatch, "render", study, *args))
        assert "ddim" in err and "1001 steps" in err and "cannot be larger than" in err
    assert not (study / "store").exists()


@pytest.mark.parametrize("sampler", ["ddim", "plms"])
def test_steps_whose_timesteps_leave_the_models_range_stop_the_plan(sampler: str, tmp_path: Path, capsys,
                                                                     monkeypatch):
    """DDIM and PLMS accept 1000 steps in set_timesteps, then index timestep 1000 of a 1000-step model."""
    study = write_study(tmp_path / "study", samplers=["k_euler", sampler], steps=[2, 1000], topics={"anime": PROMPT})
    err = one_error(*run_main(capsys, monkeypatch, "render", study, "--dry-run"))
    assert f"sampler {sampler} cannot run 1000 steps" in err and "past the model's last (999)" in err
    study = write_study(tmp_path / "fine", samplers=["k_euler", sampler], steps=[2, 999], topics={"anime": PROMPT})
    assert run_main(capsys, monkeypatch, "render", study, "--dry-run")[0] == 0


@pytest.mark.parametrize("command, steps, message", [
    ("preview", 1001, "cannot be larger than"),
    ("polish", 1001, "cannot be larger than"),
    ("speed", 1001, "cannot be larger than"),
    ("preview", 100_000_000, f"100000000 steps is over the limit of {MAX_STEPS}"),
    ("polish", 100_000_000, f"100000000 steps is over the limit of {MAX_STEPS}"),
    ("speed", 100_000_000, f"100000000 steps is over the limit of {MAX_STEPS}"),
])
def test_workflow_commands_refuse_steps_before_rendering(tiny_study: Path, capsys, monkeypatch, command, steps,
                                                         message):
    options = {"preview": ["--topic", "anime", "--count", "2"], "polish": ["--topic", "anime", "--seeds", "1"],
               "speed": ["--samples", "1"]}[command]
    err = one_error(*run_main(capsys, monkeypatch, command, tiny_study, *options, "--sampler", "ddim",
                              "--steps", steps))
    assert message in err and str(steps) in err
    assert not any((tiny_study / name).exists() for name in ("store", "speed.json", "workflow.json"))


def test_preview_count_is_limited(tiny_study: Path, capsys, monkeypatch):
    err = one_error(*run_main(capsys, monkeypatch, "preview", tiny_study, "--topic", "anime",
                              "--count", 1_000_000_000, "--steps", 2))
    assert "--count 1000000000 (100 unless given) is over the study's max_cells = 20000" in err
    assert not (tiny_study / "store").exists()


@pytest.mark.parametrize("seeds", ["1,²", "١٢"])
def test_polish_seeds_are_ascii_digits(tiny_study: Path, capsys, monkeypatch, seeds):
    err = one_error(*run_main(capsys, monkeypatch, "polish", tiny_study, "--topic", "anime", "--seeds", seeds,
                              "--steps", 2))
    assert "--seeds" in err and repr(seeds.split(",")[-1]) in err


def test_malformed_workflow_json_is_kept(tiny_study: Path, tmp_path: Path, capsys, monkeypatch):
    preview = ["preview", tiny_study, "--topic", "anime", "--steps", 2, "--sampler", "k_euler"]
    assert run_main(capsys, monkeypatch, *preview, "--count", 2)[0] == 0
    assert run_main(capsys, monkeypatch, "polish", tiny_study, "--topic", "anime", "--seeds", 3031912972,
                    "--steps", 3, "--sampler", "k_euler")[0] == 0
    path = tiny_study / "workflow.json"
    broken = path.read_text().replace('"runs": [', '"runs": [,', 1)  # a stray comma
    path.write_text(broken)

    err = one_error(*run_main(capsys, monkeypatch, *preview, "--count", 3))
    assert str(path) in err and "invalid JSON" in err and "repair" in err and "images are stored" in err
    assert path.read_text() == broken
    assert len(list(Store(tiny_study / "store").cells())) == 4  # the third preview was stored all the same

    err = one_error(*run_main(capsys, monkeypatch, "build", tiny_study, "--out", tmp_path / "site"))
    assert str(path) in err and "invalid JSON" in err


@pytest.mark.parametrize("runs, problem", [
    ([{"kind": "preview"}], "runs[0].topic: missing"),
    ([{"kind": "polish", "topic": "anime", "sampler": "k_euler", "executor": "batched", "store": "store",
       "steps": 3, "cells": [{"seed": 1}]}], "runs[0].cells[0].key: missing"),
    ([{"kind": "rerun"}], "runs[0].kind: must be 'preview' or 'polish' (got 'rerun')"),
])
def test_build_names_a_malformed_workflow_entry(tiny_study: Path, tmp_path: Path, capsys, monkeypatch, runs,
                                                problem):
    path = tiny_study / "workflow.json"
    path.write_text(json.dumps({"format": 1, "runs": runs}))
    err = one_error(*run_main(capsys, monkeypatch, "build", tiny_study, "--out", tmp_path / "site"))
    assert str(path) in err and problem in err
    assert json.loads(path.read_text())["runs"] == runs


def test_only_whole_float32_latents_count(tmp_path: Path):
    from reportgen.render.store import npy_problem

    arrays = {"whole": np.zeros((1, 4, 4, 4), np.float32), "float64": np.zeros((1, 4, 4, 4)),
              "fortran": np.asfortranarray(np.zeros((4, 3), np.float32)),
              "nan": np.full((1, 4, 4, 4), np.nan, np.float32)}
    for name, array in arrays.items():
        np.save(tmp_path / f"{name}.npy", array)
    (tmp_path / "longer.npy").write_bytes((tmp_path / "whole.npy").read_bytes() + b"\0")
    (tmp_path / "shorter.npy").write_bytes((tmp_path / "whole.npy").read_bytes()[:-1])
    names = ("whole", "float64", "fortran", "nan", "longer", "shorter")
    assert [npy_problem((tmp_path / f"{name}.npy").read_bytes()) is None for name in names] == [
        True, False, False, False, False, False]
    assert npy_problem(b"not an array") is not None