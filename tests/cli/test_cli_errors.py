"""Bad input through the real entry point: one line naming the problem, exit code 2, nothing written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import run_main as cli
from conftest import write_study
from PIL import Image

from reportgen.render.store import encode_png

TOPIC = "---\ntitle: Anime\nprompt: '{prompt}'\n{extra}---\n\nCommentary.\n"
GOOD = '"an anime girl" -W32 -H32 -C7.5 -S3031912972'


def set_toml(key: str, value: str) -> Callable[[Path], None]:
    def change(study: Path) -> None:
        lines = [line for line in (study / "study.toml").read_text().splitlines() if not line.startswith(f"{key} =")]
        (study / "study.toml").write_text("\n".join([*lines, f"{key} = {value}"]) + "\n")
    return change


def set_topic(prompt: str = GOOD, extra: str = "") -> Callable[[Path], None]:
    def change(study: Path) -> None:
        (study / "topics" / "anime.md").write_text(TOPIC.format(prompt=prompt, extra=extra))
    return change


def write(name: str, text: str) -> Callable[[Path], None]:
    def change(study: Path) -> None:
        (study / name).write_text(text)
    return change


def append_toml(text: str) -> Callable[[Path], None]:
    def change(study: Path) -> None:
        (study / "study.toml").write_text((study / "study.toml").read_text() + text)
    return change


def nothing(study: Path) -> None:
    pass


CASES = {
    "unknown sampler in study.toml": (set_toml("samplers", '["k_eulr"]'), [], "did you mean k_euler"),
    "unknown sampler option": (nothing, ["--sampler", "Eulr a"], "unknown sampler 'Eulr a'; did you mean"),
    "malformed prompt": (set_topic('"an anime girl -W32 -S1'), [], "cannot parse prompt"),
    "unknown prompt option": (set_topic(GOOD + " -Q3"), [], "unknown option '-Q'"),
    "width not a multiple of 8": (set_topic('"an anime girl" -W33 -H32 -S1'), [],
                                  "width must be a positive multiple of 8"),
    "height not a multiple of 8": (set_topic('"an anime girl" -W32 -H12 -S1'), [],
                                   "height must be a positive multiple of 8"),
    "steps 0 in study.toml": (set_toml("steps", "[2, 0]"), [], "steps must be integers > 0, got 0"),
    "steps 0 in front matter": (set_topic(extra="steps: [0]\n"), [], "steps must be integers > 0, got 0"),
    "steps 0 in the prompt": (set_topic(GOOD + " -s0"), [], "steps must be > 0, got 0"),
    "--steps 0": (nothing, ["--steps", "0"], "steps must be > 0, got 0"),
    "--steps -3": (nothing, ["--steps", "-3"], "steps must be > 0, got -3"),
    "missing model file": (nothing, ["--model", "nowhere/model.safetensors"], "model file not found"),
    "missing model folder": (nothing, ["--model", "./no-such-model"], "model not found: './no-such-model'"),
    "model folder without model_index.json": (nothing, ["--model", "topics"], "is not a diffusers model folder"),
    "missing model in study.toml": (set_toml("model", '"gone.ckpt"'), [], "model file not found"),
    "broken TOML": (write("study.toml", 'title = "x\nsamplers = ['), [], "invalid TOML"),
    "unknown study.toml key": (set_toml("stepz", "[1]"), [], "unknown setting 'stepz'"),
    "[speed] steps not a number": (append_toml('[speed]\nsteps = "many"\n'), [],
                                   "[speed] steps must be a positive integer, got 'many'"),
    "[speed] unknown key": (append_toml("[speed]\nstepz = 5\n"), [], "[speed]: unknown key 'stepz'"),
    "broken front matter": (write("topics/anime.md", "---\ntitle: [unclosed\nprompt: x\n---\n"), [],
                            "invalid front matter"),
    "unclosed front matter": (write("topics/anime.md", "---\ntitle: Anime\nprompt: 'x -S1'\n"), [],
                              "not closed by a '---' line"),
    "front matter missing": (write("topics/anime.md", "just text\n"), [], "missing front matter"),
    "unknown topic filter": (nothing, ["--topic", "tiger"], "no topic 'tiger'"),
    "unknown device": (nothing, ["--device", "tpu"], "unknown device 'tpu'"),
    "unknown dtype": (nothing, ["--dtype", "float8"], "unknown dtype 'float8'"),
    "--dry-run with an unknown executor": (nothing, ["--dry-run", "--executor", "nonsense"],
                                           "unknown executor 'nonsense'"),
    "--dry-run --compile without batches": (nothing, ["--dry-run", "--compile", "--executor", "pipeline"],
                                            "--compile needs the batched executor on a CUDA device"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2_nothing_written(case: str, tiny_study: Path, capsys, monkeypatch):
    change, args, expected = CASES[case]
    change(tiny_study)
    monkeypatch.chdir(tiny_study)  # relative model paths resolve here, and nothing may appear here either
    before = sorted(p.relative_to(tiny_study) for p in tiny_study.rglob("*"))
    code, err = cli(capsys, monkeypatch, "render", tiny_study, *args)
    assert code == 2, err
    assert err.startswith("error: ") and expected in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert sorted(p.relative_to(tiny_study) for p in tiny_study.rglob("*")) == before
    assert not (tiny_study / "store").exists() and not (tiny_study / "grids").exists()


def test_missing_study_folder(tmp_path: Path, capsys, monkeypatch):
    code, err = cli(capsys, monkeypatch, "render", tmp_path / "nowhere")
    assert (code, err.strip()) == (2, f"error: study folder not found: {tmp_path / 'nowhere'}")
    assert list(tmp_path.iterdir()) == []


def test_folder_without_study_toml(tmp_path: Path, capsys, monkeypatch):
    code, err = cli(capsys, monkeypatch, "render", tmp_path)
    assert (code, err.strip()) == (2, f"error: no study.toml in {tmp_path}")
    assert list(tmp_path.iterdir()) == []


def test_bad_image_prompt(tmp_path: Path, capsys, monkeypatch):
    code, err = cli(capsys, monkeypatch, "image", '"a cat" -W30', "--out", tmp_path / "cat.png")
    assert (code, err.strip()) == (2, "error: width must be a positive multiple of 8, got 30")
    assert list(tmp_path.iterdir()) == []


def test_real_subprocess_prints_one_line_and_no_traceback(tiny_study: Path):
    set_toml("samplers", '["k_eulr"]')(tiny_study)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "reportgen", "render", str(tiny_study)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: {tiny_study / 'study.toml'}: unknown sampler 'k_eulr'; did you mean k_euler, k_euler_a, k_heun?"]
    assert done.stdout == ""
    assert not (tiny_study / "store").exists() and not (tiny_study / "grids").exists()


def test_ctrl_c_says_what_is_kept_and_exits_130(tmp_path: Path):
    study = write_study(tmp_path / "study", samplers=["k_euler", "k_heun", "k_lms"], steps=[1000], seeds=2,
                        topics={"anime": GOOD})  # minutes of work: still rendering when Ctrl-C comes
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen([sys.executable, "-m", "reportgen", "render", str(study)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        for line in process.stderr:  # the plan's line comes just before the model loads and cells render
            if " cells: " in line:
                break
        process.send_signal(signal.SIGINT)
        err = process.communicate(timeout=120)[1]
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert err.strip().splitlines()[-1] == (
        "interrupted: stored images and computed distances are kept; run the same command again to go on")
    assert "Traceback" not in err and "Aborted" not in err


def test_a_ctrl_c_that_a_library_swallows_still_stops_the_render(tiny_study: Path, capsys, monkeypatch):
    from reportgen.render import jobs

    real = jobs.load_pipeline

    def swallowing(*args: object, **kwargs: object) -> object:
        try:  # as an optional-import check that catches BaseException does, while the model loads
            os.kill(os.getpid(), signal.SIGINT)
        except BaseException:  # noqa: BLE001
            pass
        return real(*args, **kwargs)

    monkeypatch.setattr(jobs, "load_pipeline", swallowing)
    code, err = cli(capsys, monkeypatch, "render", tiny_study, "--device", "cpu")
    assert code == 130, err
    assert err.strip().splitlines()[-1].startswith("interrupted: stored images and computed distances are kept")
    assert not list((tiny_study / "store").glob("images/*/*.png"))  # stopped before the first cell
    code, err = cli(capsys, monkeypatch, "render", tiny_study, "--device", "cpu", "--dry-run")
    assert code == 0, err  # the next command starts afresh: the remembered Ctrl-C is forgotten


def test_end_of_file_is_an_error_not_a_user_abort(tiny_study: Path, capsys, monkeypatch):
    def truncated(*args: object, **kwargs: object) -> None:
        raise EOFError("No data left in file")  # what np.load says of an empty .npy file

    monkeypatch.setattr("reportgen.measure.analysis.analyze", truncated)
    code, err = cli(capsys, monkeypatch, "analyze", tiny_study)
    assert (code, err.strip()) == (2, "error: unexpected end of file: No data left in file "
                                      "(an empty or truncated file?)")


def run_with_output(capsys, monkeypatch, *args: object) -> tuple[int, str, str]:
    """Like run_main, but return (exit code, stdout, stderr)."""
    from reportgen.cli import main

    monkeypatch.setattr(sys, "argv", ["reportgen", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


PARAMETERS = "a cat\nSteps: 2, Sampler: Euler, CFG scale: 7.5, Seed: 1, Size: 32x32"
RECORD = {"topic": "cats", "seed_index": 0, "seed": 1, "sampler": "k_euler", "steps": 2, "text": "a cat",
          "negative": "", "width": 32, "height": 32, "cfg": 7.5, "key": "0" * 64, "nfe": 2}


def test_info_on_an_incomplete_record_prints_the_parameters_and_says_so(tmp_path: Path, capsys, monkeypatch):
    image = tmp_path / "partial.png"
    image.write_bytes(encode_png(Image.new("RGB", (8, 8)), PARAMETERS, {"topic": "a"}))
    code, out, err = run_with_output(capsys, monkeypatch, "info", image)
    assert code == 2
    assert out == PARAMETERS + "\n"
    assert err.startswith(f"error: {image}: reportgen's record is incomplete (no seed_index, seed, ")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("bad", [{"text": 5}, {"width": "wide"}, {"cfg": None}, {"sampler": "nosuch"}])
def test_info_on_a_record_with_values_of_the_wrong_kind(bad: dict, tmp_path: Path, capsys, monkeypatch):
    image = tmp_path / "odd.png"
    image.write_bytes(encode_png(Image.new("RGB", (8, 8)), PARAMETERS, {**RECORD, **bad}))
    code, out, err = run_with_output(capsys, monkeypatch, "info", image)
    assert code == 2 and out == PARAMETERS + "\n"
    assert err == f"error: {image}: reportgen's record is malformed, so the command that reproduces it is unknown\n"


def test_info_without_model_spec_does_not_guess_the_model(tmp_path: Path, capsys, monkeypatch):
    image = tmp_path / "old.png"
    image.write_bytes(encode_png(Image.new("RGB", (8, 8)), PARAMETERS, RECORD))
    code, out, err = run_with_output(capsys, monkeypatch, "info", image)
    assert (code, err) == (0, "")
    assert out.splitlines()[-1] == ("Reproduce: reportgen image '\"a cat\" -W32 -H32 -C7.5 -S1 -s2 -Ak_euler' "
                                    "--model MODEL --out image.png (model unknown: the record does not name it)")


def test_template_that_fails_at_run_time_is_one_line_and_writes_nothing(tiny_study: Path, tmp_path: Path, capsys,
                                                                       monkeypatch):
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "topic.html").write_text("{% extends 'base.html' %}{% block content %}\n{{ 1/0 }}{% endblock %}")
    code, err = cli(capsys, monkeypatch, "build", tiny_study, "--out", tmp_path / "site", "--templates", templates)
    assert (code, err.strip()) == (2, "error: template topic.html, line 2 (for topics/anime.html): "
                                      "ZeroDivisionError: division by zero")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study", "templates"]  # no site, no temporary folder
