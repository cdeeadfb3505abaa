"""Faults: broken images (NaN, all black) are reported and never cached; a full disk or read-only store
gives one clear line and leaves the store consistent; hostile values meet clear limits that can be raised."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import run_main as cli
from conftest import write_study
from typer.testing import CliRunner

from reportgen.cli import app
from reportgen.models.tiny import build_tiny_pipeline
from reportgen.render import jobs as workflow
from reportgen.render import store as store_module
from reportgen.render.outputs import BLACK, NONFINITE
from reportgen.render.store import Store

runner = CliRunner()
PROMPT = '"an anime girl" -W32 -H32 -C7.5 -S3031912972'


def study_with(root: Path, prompt: str = PROMPT, extra: str = "", samplers=("k_euler",), steps=(2,)) -> Path:
    seeds = 1
    if extra.startswith("seeds = "):  # write_study writes the seeds line itself
        seeds, extra = int(extra.split("=")[1]), ""
    return write_study(root, samplers=list(samplers), steps=list(steps), topics={"anime": prompt}, extra=extra,
                       seeds=seeds)


# --- broken images ----------------------------------------------------------------------------------------

def broken_pipeline(monkeypatch: pytest.MonkeyPatch, *, vae: str | None = None, unet: bool = False,
                    dtype: str = "float32") -> Any:
    """The tiny pipeline with its VAE decoding NaN (`vae="nan"`, or only while in half precision:
    `vae="nan-when-half"`) or its UNet returning NaN; handed to the render in place of the real load."""
    import torch

    pipe = build_tiny_pipeline().to(dtype=getattr(torch, dtype))
    if vae is not None:
        decode = pipe.vae.decode

        def nan_decode(latents, return_dict=True):  # noqa: ANN001 - diffusers' own signature
            image = decode(latents, return_dict=False)[0]
            if vae == "nan" or pipe.vae.dtype != torch.float32:
                image = image * float("nan")
            return (image,)
        monkeypatch.setattr(pipe.vae, "decode", nan_decode)
    if unet:
        pipe.unet.register_forward_hook(lambda _m, _i, out: (out[0] * float("nan"), *out[1:])
                                        if isinstance(out, tuple) else out.__class__(sample=out.sample * float("nan")))
    monkeypatch.setattr(workflow, "load_pipeline", lambda *_args, **_kw: pipe)
    return pipe


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")  # NaN to 8 bits
@pytest.mark.parametrize("fault, message, executor", [("vae", BLACK, "pipeline"), ("vae", BLACK, "batched"),
                                                      ("unet", NONFINITE, "batched")])
def test_nan_outputs_are_reported_and_never_cached(tmp_path: Path, monkeypatch, executor: str, fault: str,
                                                   message: str):
    study = study_with(tmp_path / "study", steps=(1, 2))
    broken_pipeline(monkeypatch, vae="nan" if fault == "vae" else None, unet=fault == "unet")
    result = runner.invoke(app, ["render", str(study), "--executor", executor, "--json"])
    assert result.exit_code == 1, result.output
    assert result.stderr.count("failed: anime seed 3031912972 k_euler") == 2
    assert message in result.stderr
    assert '"rendered": 0' in result.stdout and '"failed": 2' in result.stdout
    assert list(Store(study / "store").cells()) == []
    assert not list((study / "store").rglob("*.png")) and not list((study / "store").rglob("*.npy"))


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
def test_all_black_in_half_precision_is_decoded_again_in_float32(tmp_path: Path, monkeypatch):
    study = study_with(tmp_path / "study")
    broken_pipeline(monkeypatch, vae="nan-when-half", dtype="bfloat16")
    result = runner.invoke(app, ["render", str(study), "--dtype", "bfloat16", "--json"])
    assert result.exit_code == 0, result.output
    assert "warning: anime seed 3031912972 k_euler 2 steps: all black in half precision; decoded again in float32" \
        in result.stderr
    (cell,) = Store(study / "store").cells()
    assert cell.record["vae_upcast"] is True
    from PIL import Image

    assert np.asarray(Image.open(cell.image)).any()


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
def test_broken_in_half_precision_even_after_retry_says_what_to_do(tmp_path: Path, monkeypatch):
    study = study_with(tmp_path / "study")
    broken_pipeline(monkeypatch, vae="nan", dtype="bfloat16")
    result = runner.invoke(app, ["render", str(study), "--dtype", "bfloat16"])
    assert result.exit_code == 1
    assert f"{BLACK} in half precision; try --dtype float32" in result.stderr
    assert list(Store(study / "store").cells()) == []


# --- disk trouble -------------------------------------------------------------------------------------------

class FailingDisk:
    """Stands in for `open` in reportgen.render.store: the first `allowed` files are written whole; then a write
    fails half way with `error`, as a full disk does, or opening fails, as a read-only folder does."""

    def __init__(self, allowed: int, error: int, at_open: bool = False) -> None:
        self.allowed, self.error, self.at_open = allowed, error, at_open

    def __call__(self, path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = open(path, mode, *args, **kwargs)
        if "w" not in mode:
            return handle
        if self.allowed > 0:
            self.allowed -= 1
            return handle
        if self.at_open:
            handle.close()
            Path(path).unlink()
            raise OSError(self.error, "Read-only file system")
        error = self.error

        class Half:
            def __enter__(self) -> Half:
                return self

            def __exit__(self, *exc: Any) -> None:
                handle.close()

            def write(self, data: bytes) -> int:
                handle.write(data[: len(data) // 2])
                handle.flush()
                raise OSError(error, "No space left on device")

            def __getattr__(self, name: str) -> Any:
                return getattr(handle, name)
        return Half()


@pytest.mark.parametrize("disk, expected", [
    (FailingDisk(5, errno.ENOSPC), "disk full"),  # the latents of cell 3 written whole, its PNG half
    (FailingDisk(4, errno.EROFS, at_open=True), "Read-only file system"),
])
def test_disk_trouble_is_one_line_and_the_store_stays_consistent(tmp_path: Path, capsys, monkeypatch,
                                                                  disk: FailingDisk, expected: str):
    study = study_with(tmp_path / "study", samplers=("k_euler", "ddim"), steps=(1, 2))
    monkeypatch.setattr(store_module, "open", disk, raising=False)
    code, err = cli(capsys, monkeypatch, "render", study, "--executor", "pipeline")
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("error: cannot write ") and lines[0].endswith(expected)
    store = Store(study / "store")
    cells = list(store.cells())
    assert len(cells) == 2  # the cells written before the trouble are intact
    assert sorted(p.name for p in (study / "store").rglob("*") if p.is_file() and p.name != "lock") == \
        sorted([c.image.name for c in cells] + [c.latents.name for c in cells])  # no partial or orphan files

    monkeypatch.setattr(store_module, "open", open, raising=False)  # the disk has room again: resume
    code, err = cli(capsys, monkeypatch, "render", study, "--executor", "pipeline")
    assert code == 0, err
    assert len(list(store.cells())) == 4


def test_a_failed_first_write_removes_the_store_it_created(tmp_path: Path, capsys, monkeypatch):
    study = study_with(tmp_path / "study")
    monkeypatch.setattr(store_module, "open", FailingDisk(0, errno.ENOSPC), raising=False)
    code, err = cli(capsys, monkeypatch, "render", study, "--executor", "pipeline")
    assert code == 2 and err.strip().splitlines()[-1].endswith("disk full"), err
    assert not (study / "store").exists()  # neither its lock nor the empty folders the first write made


# --- hostile values -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("prompt, extra, expected", [
    ('"a" -W4096 -H4096 -S1', "", "4096x4096 is over max_pixels = 4194304; raise max_pixels in study.toml"),
    ('"a" -W64 -H64 -S1', "max_pixels = 1024\n", "64x64 is over max_pixels = 1024"),
    ('"a" -W32 -H32 -S1 -s999999999', "", "999999999 steps is over the limit of 10000"),
    ('"a" -W32 -H32 -S1 -n999999999', "", "999999999 seeds is over max_cells = 20000"),
    ('"a" -W32 -H32 -S1', "seeds = 4611686018427387904\n", "seeds = 4611686018427387904 is over max_cells"),
    # raising the limit as far as it goes must not let a huge seed list be built (a fuzz case ran out of memory)
    ('"a" -W32 -H32 -S1 -n999999999', "max_cells = 4611686018427387904\n",
     "max_cells = 4611686018427387904 is over the ceiling of 1000000"),
    ('"a" -W32 -H32 -S1 -n3 -s4', "max_cells = 5\n", "the study has 6 cells, over max_cells = 5; raise it"),
    ('"a\x07bell" -W32 -H32 -S1', "", "prompt contains control characters"),
    ('"a" -W99999999999999999999999 -S1', "", "width must be a positive multiple of 8"),
])
def test_hostile_values_meet_clear_limits(tmp_path: Path, capsys, monkeypatch, prompt: str, extra: str,
                                          expected: str):
    study = study_with(tmp_path / "study", prompt=prompt.replace("\x07", "\\a"), extra=extra)
    if "\x07" in prompt:  # YAML needs the escape in double quotes to carry a control character
        (study / "topics" / "anime.md").write_text('---\ntitle: A\nprompt: "\\"a\\abell\\" -W32 -H32 -S1"\n---\n')
    code, err = cli(capsys, monkeypatch, "render", study, "--dry-run")
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    assert not (study / "store").exists()


def test_limits_can_be_raised(tmp_path: Path, capsys, monkeypatch):
    study = study_with(tmp_path / "study", prompt='"a" -W4096 -H4096 -S1 -n9', extra="max_pixels = 16777216\n")
    code, err = cli(capsys, monkeypatch, "render", study, "--dry-run")
    assert code == 0 and "9 cells: 0 cached, 9 to render" in err, err
    with (study / "study.toml").open("a") as toml:
        toml.write("max_cells = 9\n")
    assert cli(capsys, monkeypatch, "render", study, "--dry-run")[0] == 0


def test_hostile_slugs_and_image_sizes(tmp_path: Path, capsys, monkeypatch):
    study = study_with(tmp_path / "study")
    (study / "topics" / "Evil.md").write_text("---\ntitle: E\nprompt: '\"e\" -W32 -H32 -S1'\n---\n")
    code, err = cli(capsys, monkeypatch, "render", study, "--dry-run")
    assert code == 2 and "bad topic slug 'Evil'" in err
    (study / "topics" / "Evil.md").unlink()
    code, err = cli(capsys, monkeypatch, "render", study, "--dry-run", "--topic", "../anime")
    assert code == 2 and "no topic '../anime'" in err
    code, err = cli(capsys, monkeypatch, "image", '"a" -W8192 -H8192', "--out", tmp_path / "a.png")
    assert (code, err.strip()) == (2, "error: 8192x8192 is over the limit of 4194304 pixels per image")
    code, err = cli(capsys, monkeypatch, "image", '"a" -W32 -H32 -s10001', "--out", tmp_path / "a.png")
    assert (code, err.strip()) == (2, "error: 10001 steps is over the limit of 10000")
    assert not (tmp_path / "a.png").exists()


def test_emoji_and_unicode_prompts_render(tmp_path: Path):
    study = study_with(tmp_path / "study", prompt='"a cat 😺 in Zürich, 東京" -W32 -H32 -S1')
    result = runner.invoke(app, ["render", str(study), "--executor", "pipeline"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (cell,) = Store(study / "store").cells()
    assert cell.record["text"] == "a cat 😺 in Zürich, 東京"
    info = runner.invoke(app, ["info", str(cell.image)], catch_exceptions=False)
    assert info.stdout.splitlines()[0] == "a cat 😺 in Zürich, 東京"
