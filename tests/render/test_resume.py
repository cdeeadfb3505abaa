"""A render killed with SIGKILL at many points resumes to exactly the store an uninterrupted run makes;
a second render on a store in use refuses with one line and corrupts nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import write_study
from PIL import Image
from typer.testing import CliRunner

from reportgen.cli import app, main
from reportgen.render.store import Store

# The per-cell pipeline executor makes every cell alone, so a resumed run is bit-identical to a whole one.
# (The batched executor's batches depend on which cells are left, so it matches only within a tolerance.)
ARGS = ["--executor", "pipeline"]
CELLS = 12


def make_study(root: Path) -> Path:
    return write_study(root, samplers=["k_euler", "ddim"], steps=[1, 2, 3], seeds=2,
                       topics={"anime": '"an anime girl" -W32 -H32 -C7.5 -S3031912972'})


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The store of an uninterrupted run, as key -> (decoded pixels, latents)."""
    study = make_study(tmp_path_factory.mktemp("reference") / "study")
    result = CliRunner().invoke(app, ["render", str(study), *ARGS], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return contents(study / "store")


def contents(store: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {c.key: (np.asarray(Image.open(c.image).convert("RGB")), np.load(c.latents)) for c in Store(store).cells()}


def images_on_disk(store: Path) -> int:
    """Finished PNGs (renamed into place); temporary files end in .tmp."""
    return len(list((store / "images").glob("*/*.png"))) if (store / "images").is_dir() else 0


def start_render(study: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "reportgen", "render", str(study), *ARGS], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for(process: subprocess.Popen[bytes], condition, timeout: float = 240) -> bool:
    """Poll until `condition()` holds (True) or the process ends by itself (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.005)
    process.kill()
    raise AssertionError("render made no progress")


def assert_same_store(study: Path, reference: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    store = study / "store"
    got = contents(store)
    assert sorted(got) == sorted(reference)
    for key, (pixels, latents) in reference.items():
        assert np.array_equal(got[key][0], pixels), key
        assert np.array_equal(got[key][1], latents), key
    assert images_on_disk(store) == len(reference)  # no stray or corrupt PNGs beside the whole cells
    assert len(list((store / "latents").glob("*/*.npy"))) == len(reference)
    assert list(study.rglob("*.tmp")) == []


def test_killed_render_resumes_to_the_uninterrupted_store(tmp_path: Path, reference, capsys, monkeypatch):
    study = make_study(tmp_path / "study")
    store = study / "store"
    # Kill points: once the store is locked (model loading, before any image), then after 2, 5, 8, 10 images.
    points = [lambda: (store / "lock").exists()] + [lambda k=k: images_on_disk(store) >= k for k in (2, 5, 8, 10)]
    seen = []
    for reached in points:
        process = start_render(study)
        assert wait_for(process, reached), process.stderr.read().decode() if process.stderr else ""
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert process.returncode == -signal.SIGKILL
        seen.append(images_on_disk(store))
    assert seen == sorted(seen) and seen[-1] < CELLS, seen  # each resume kept what the killed runs had stored

    # The last resume runs to the end; while it holds the store, a second render must refuse.
    final = start_render(study)
    try:
        assert wait_for(final, lambda: images_on_disk(store) > seen[-1]), "the resumed render ended too soon"
        monkeypatch.setattr(sys, "argv", ["reportgen", "render", str(study), *ARGS])
        with pytest.raises(SystemExit) as second:
            main()
        err = capsys.readouterr().err
        assert second.value.code == 2
        expected = f"error: store {store} is in use by another render; wait for it to finish"
        assert err.strip().splitlines()[-1] == expected
        assert "Traceback" not in err
    finally:
        _, final_err = final.communicate(timeout=240)
    assert final.returncode == 0, final_err.decode()
    assert_same_store(study, reference)
