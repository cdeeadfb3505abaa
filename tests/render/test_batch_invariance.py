"""A batched cell's bits do not depend on which lanes share its batch (issue 23): a render resumed with
some cells left, or one cell rendered alone, gives exactly the files of an uninterrupted render."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_main, write_study
from PIL import Image

from reportgen.render.store import Store

FAMILIES = {
    "tiny": (["k_euler", "k_heun", "ddim", "k_euler_a"], [2, 3, 5]),
    "tiny-flux": (["flow_euler", "flow_unipc"], [2, 3, 5]),
}


def study_for(root: Path, model: str) -> Path:
    samplers, steps = FAMILIES[model]
    study = write_study(root, samplers=samplers, steps=steps, seeds=2,
                        topics={"fox": '"a red fox [blurry]" -W32 -H32 -C7.5 -S11',
                                "owl": '"an owl" -W32 -H32 -C3 -S12'})
    text = (study / "study.toml").read_text().replace('model = "tiny"', f'model = "{model}"')
    (study / "study.toml").write_text(text)
    return study


def files(store: Path) -> dict[str, tuple[bytes, bytes]]:
    """key -> (decoded RGB pixels, latents bytes) of every stored cell."""
    out = {}
    for cell in Store(store).cells():
        with Image.open(cell.image) as image:
            pixels = image.convert("RGB").tobytes()
        out[cell.key] = (pixels, np.load(cell.latents).tobytes())
    return out


@pytest.mark.parametrize("model", list(FAMILIES))
def test_a_resumed_or_repaired_batched_render_is_bit_identical(model: str, tmp_path: Path, capsys, monkeypatch):
    study = study_for(tmp_path / "study", model)
    code, err = run_main(capsys, monkeypatch, "render", study, "--device", "cpu")
    assert code == 0, err
    whole = files(study / "store")
    assert len(whole) >= 2 * 2 * len(FAMILIES[model][0]) * 3  # topics x seeds x samplers x steps

    # As after a kill: every third cell's files gone, the rest kept; the rerun batches the leftovers differently.
    partial = tmp_path / "partial"
    shutil.copytree(study, partial)
    keys = sorted(whole)
    for key in keys[::3]:
        Store(partial / "store").image_path(key).unlink()
    code, err = run_main(capsys, monkeypatch, "render", partial, "--device", "cpu")
    assert code == 0 and f"{len(keys[::3])} to render" in err, err
    assert files(partial / "store") == whole

    # One cell alone, as a repair renders it: a batch of one lane.
    alone = tmp_path / "alone"
    shutil.copytree(study, alone)
    Store(alone / "store").image_path(keys[4]).unlink()
    code, err = run_main(capsys, monkeypatch, "render", alone, "--device", "cpu")
    assert code == 0 and "1 to render" in err, err
    assert files(alone / "store")[keys[4]] == whole[keys[4]]


def test_without_fixed_rows_a_cells_bits_depend_on_its_batch(tmp_path: Path, capsys, monkeypatch):
    """The check above can fail: with every call as wide as its tick, a cell alone differs from itself in a batch."""
    from reportgen.render import batched

    monkeypatch.setattr(batched, "CPU_ROWS_PER_CALL", None)
    study = study_for(tmp_path / "study", "tiny")
    code, err = run_main(capsys, monkeypatch, "render", study, "--device", "cpu")
    assert code == 0, err
    whole = files(study / "store")
    differ = 0
    for key in sorted(whole)[::16]:
        Store(study / "store").image_path(key).unlink()
        code, err = run_main(capsys, monkeypatch, "render", study, "--device", "cpu")
        assert code == 0, err
        differ += files(study / "store")[key][1] != whole[key][1]
    assert differ > 0


def test_cells_of_the_schedules_and_cfg_axes_are_batch_invariant(tmp_path: Path, capsys, monkeypatch):
    """Lanes of other schedules and CFG values (each guided by its own CFG in the shared call) keep the bits of a
    cell alone: a rerun of every other cell, and one cell alone, give the uninterrupted render's files."""
    study = write_study(tmp_path / "study", samplers=["k_euler", "dpmpp_2m"], steps=[2, 3],
                        topics={"fox": '"a red fox [blurry]" -W32 -H32 -C7.5 -S11'},
                        extra='schedules = ["default", "karras", "exponential"]\ncfg = [3, 9]\n')
    code, err = run_main(capsys, monkeypatch, "render", study, "--device", "cpu")
    assert code == 0, err
    whole = files(study / "store")
    assert len(whole) == 2 * 3 * 2 * 2
    keys = sorted(whole)
    for key in keys[::2]:
        Store(study / "store").image_path(key).unlink()
    code, err = run_main(capsys, monkeypatch, "render", study, "--device", "cpu")
    assert code == 0 and f"{len(keys[::2])} to render" in err, err
    assert files(study / "store") == whole
    Store(study / "store").image_path(keys[5]).unlink()
    code, err = run_main(capsys, monkeypatch, "render", study, "--device", "cpu")
    assert code == 0 and "1 to render" in err, err
    assert files(study / "store")[keys[5]] == whole[keys[5]]
