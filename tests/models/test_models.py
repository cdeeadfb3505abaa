"""Every model source loads for real: the tiny model saved as a diffusers folder, as one LDM-layout
`.safetensors` and `.ckpt` file, and as a hub id in a standard (fake, offline) Hugging Face cache;
each renders the very same pixels as `--model tiny`."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_main as cli
from conftest import write_study
from ldm_checkpoint import save_checkpoint
from PIL import Image
from typer.testing import CliRunner

from reportgen.cli import app
from reportgen.errors import ModelError
from reportgen.models.loading import pick_device
from reportgen.models.sources import resolve_model
from reportgen.models.tiny import build_tiny_pipeline
from reportgen.render.store import Store

runner = CliRunner()
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the tiny model saved every way, a one-cell study and the `--model tiny` reference store."""
    root = tmp_path_factory.mktemp("models")
    pipe = build_tiny_pipeline()
    pipe.save_pretrained(root / "folder")
    save_checkpoint(pipe, root / "tiny.safetensors")
    save_checkpoint(pipe, root / "tiny.ckpt")
    snapshot = root / "hf" / "hub" / "models--org--name" / "snapshots" / COMMIT
    snapshot.parent.mkdir(parents=True)
    (root / "hf" / "hub" / "models--org--name" / "refs").mkdir()
    (root / "hf" / "hub" / "models--org--name" / "refs" / "main").write_text(COMMIT)
    pipe.save_pretrained(snapshot)
    write_study(root / "study", samplers=["k_euler"], steps=[2],
                topics={"anime": '"an anime girl" -W32 -H32 -C7.5 -S3031912972'})
    assert render(root, "tiny").exit_code == 0
    return root


def render(root: Path, model: str, *extra: str):
    store = root / f"store-{Path(model).name}"
    return runner.invoke(app, ["render", str(root / "study"), "--model", model, "--store", str(store), *extra],
                         catch_exceptions=False)


def only_cell(store: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    (cell,) = Store(store).cells()
    return np.asarray(Image.open(cell.image)), np.load(cell.latents), cell.record


def test_local_diffusers_folder_renders_the_same_pixels(models: Path):
    result = render(models, str(models / "folder"))
    assert result.exit_code == 0, result.output
    pixels, latents, record = only_cell(models / "store-folder")
    ref_pixels, ref_latents, ref_record = only_cell(models / "store-tiny")
    assert np.array_equal(pixels, ref_pixels) and np.array_equal(latents, ref_latents)
    assert record["environment"]["model"].startswith("sha256:")
    assert record["key"] != ref_record["key"]  # another model identity is another cache key


@pytest.mark.parametrize("name", ["tiny.safetensors", "tiny.ckpt"])
def test_single_file_checkpoint_renders_the_same_pixels(models: Path, name: str):
    result = render(models, str(models / name), "--model-config", str(models / "folder"))
    assert result.exit_code == 0, result.output
    pixels, latents, record = only_cell(models / f"store-{name}")
    ref_pixels, ref_latents, _ = only_cell(models / "store-tiny")
    # The checkpoint carries the very same weights, so no tolerance is needed: bit-identical.
    assert np.array_equal(pixels, ref_pixels) and np.array_equal(latents, ref_latents)
    assert record["environment"]["model"] == resolve_model(str(models / name)).identity


def test_single_file_without_config_offline_names_what_is_missing(models: Path, tmp_path: Path):
    store = tmp_path / "store"
    result = runner.invoke(app, ["render", str(models / "study"), "--model", str(models / "tiny.safetensors"),
                                 "--store", str(store)])
    assert result.exit_code == 1 and isinstance(result.exception, ModelError)
    message = str(result.exception)
    assert "--model-config" in message and "stable-diffusion-v1-5/stable-diffusion-v1-5" in message
    assert "\n" not in message
    assert not store.exists()  # the failed render leaves no store behind


def test_model_config_that_is_not_a_folder_is_refused(models: Path):
    with pytest.raises(ModelError, match="--model-config .* is not a diffusers model folder"):
        resolve_model(str(models / "tiny.ckpt"), models / "study")


def test_hub_id_through_the_standard_cache_offline(models: Path):
    env = {**os.environ, "HF_HOME": str(models / "hf"), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    ok = subprocess.run([sys.executable, "-m", "reportgen", "render", str(models / "study"), "--model", "org/name",
                         "--store", str(models / "store-hub"), "--json"], env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "Loading weights" not in ok.stderr  # transformers' progress bar is not ours to show
    assert json.loads(ok.stdout.splitlines()[-1])["rendered"] == 1
    pixels, latents, record = only_cell(models / "store-hub")
    ref_pixels, ref_latents, _ = only_cell(models / "store-tiny")
    assert np.array_equal(pixels, ref_pixels) and np.array_equal(latents, ref_latents)
    assert record["environment"]["model"] == f"hub:org/name@{COMMIT}"

    missing = subprocess.run([sys.executable, "-m", "reportgen", "render", str(models / "study"), "--model",
                              "org/absent", "--store", str(models / "store-absent")], env=env, capture_output=True,
                             text=True)
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: cannot find hub model 'org/absent' (offline: True)")
    assert len(missing.stderr.strip().splitlines()) == 1 and "Traceback" not in missing.stderr
    assert not (models / "store-absent").exists()


def test_device_and_dtype_are_picked_and_checked(models: Path, tmp_path: Path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this checks the CPU-only machine")
    dry = runner.invoke(app, ["render", str(models / "study"), "--model", "tiny", "--dry-run"])
    assert dry.exit_code == 0 and "with tiny on cpu/float32" in dry.stderr
    cuda = runner.invoke(app, ["render", str(models / "study"), "--device", "cuda", "--store", str(tmp_path / "s")])
    assert isinstance(cuda.exception, ModelError)
    assert str(cuda.exception) == "device 'cuda' asked for, but CUDA is not available"
    assert not (tmp_path / "s").exists()
    assert pick_device() == ("cpu", "float32")
    assert pick_device("cpu", "bfloat16") == ("cpu", "bfloat16")
    with pytest.raises(ModelError, match="CUDA is not available"):
        pick_device("cuda")
    with pytest.raises(ModelError, match="unknown dtype"):
        pick_device("cpu", "float8")
    with pytest.raises(ModelError, match="unknown device"):
        pick_device("tpu")


@pytest.mark.parametrize(("damage", "reason"), [
    ("tokenizer", "it has no usable tokenizer (is its tokenizer folder missing or empty?)"),
    ("unet/diffusion_pytorch_model.safetensors", "Error no file named diffusion_pytorch_model.bin found in "
                                                 "directory {folder}/unet."),
])
def test_damaged_model_folder_is_one_error_line(models: Path, tmp_path: Path, damage: str, reason: str, capfd,
                                                monkeypatch):
    folder = tmp_path / "damaged"
    shutil.copytree(models / "folder", folder)
    if (folder / damage).is_dir():
        shutil.rmtree(folder / damage)
    else:
        (folder / damage).unlink()
    store = tmp_path / "store"
    code, err = cli(capfd, monkeypatch, "render", models / "study", "--model", folder, "--store", store)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("note: ")]
    assert code == 2, err
    assert len(lines) == 2 and " cells: " in lines[0], err  # the plan, then the error: no diffusers log, no bar
    assert lines[1] == f"error: cannot load model '{folder}': " + reason.format(folder=folder)
    assert not store.exists()


def test_mps_without_mps_is_refused(models: Path, tmp_path: Path, capsys, monkeypatch):
    import torch

    if torch.backends.mps.is_available():
        pytest.skip("this checks a machine without MPS")
    for command in (["render"], ["render", "--dry-run"], ["analyze"]):
        code, err = cli(capsys, monkeypatch, *command, models / "study", "--device", "mps", "--store", tmp_path / "s")
        assert (code, err) == (2, "error: device 'mps' asked for, but MPS is not available\n"), command
    assert not (tmp_path / "s").exists()
    # a site only needs the keys an MPS render gave its cells, not MPS itself
    assert cli(capsys, monkeypatch, "build", models / "study", "--device", "mps", "--out", tmp_path / "site")[0] == 0


def reproduce(image: Path, env: dict[str, str] | None = None) -> list[str]:
    """The words of the command `info` prints for `image`, as a shell splits them (the comment dropped)."""
    result = subprocess.run([sys.executable, "-m", "reportgen", "info", str(image)], env=env, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("Reproduce: "))
    return shlex.split(line.removeprefix("Reproduce: "), comments=True)


def run_image(words: list[str], out: Path, env: dict[str, str] | None = None) -> Path:
    words = [str(out) if words[i - 1] == "--out" else w for i, w in enumerate(words)]
    result = subprocess.run([sys.executable, "-m", "reportgen", *words[1:]], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return out


def test_a_single_file_cells_command_carries_its_model_config(models: Path, tmp_path: Path):
    store = tmp_path / "store"
    result = runner.invoke(app, ["render", str(models / "study"), "--model", str(models / "tiny.safetensors"),
                                 "--model-config", str(models / "folder"), "--store", str(store)])
    assert result.exit_code == 0, result.output
    (cell,) = Store(store).cells()
    words = reproduce(cell.image)
    assert words[words.index("--model") + 1] == str((models / "tiny.safetensors").resolve())
    assert words[words.index("--model-config") + 1] == str((models / "folder").resolve())
    again = run_image(words, tmp_path / "again.png")
    assert np.array_equal(np.asarray(Image.open(again)), np.asarray(Image.open(cell.image)))
    assert json.loads(Image.open(again).info["reportgen"])["key"] == cell.record["key"]


def test_a_hub_cells_command_is_pinned_to_its_revision(models: Path, tmp_path: Path):
    env = {**os.environ, "HF_HOME": str(models / "hf"), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    store = tmp_path / "store"
    ok = subprocess.run([sys.executable, "-m", "reportgen", "render", str(models / "study"), "--model", "org/name",
                         "--store", str(store)], env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    (cell,) = Store(store).cells()
    words = reproduce(cell.image, env)
    assert words[words.index("--model") + 1] == f"org/name@{COMMIT}"
    again = run_image(words, tmp_path / "again.png", env)
    assert json.loads(Image.open(again).info["reportgen"])["key"] == cell.record["key"]
    assert np.array_equal(np.asarray(Image.open(again)), np.asarray(Image.open(cell.image)))
