"""Many processes, one store (issue 16): shard renders started together, under accelerate launch or torchrun,
or killed and rerun alone, leave exactly the store one process makes; bad shards are one line."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import run_main, write_study
from PIL import Image

from reportgen.render.store import Store

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
CELLS = 2 * 2 * 3 * 2  # topics x seeds x samplers x steps
HEAVIEST_LANE = 3 + 5  # K_HEUN at 2 and 3 steps: 2n-1 calls each


def make_study(root: Path) -> Path:
    return write_study(root, samplers=["k_euler", "k_heun", "ddim"], steps=[2, 3], seeds=2,
                       topics={"fox": '"a red fox" -W32 -H32 -C7.5 -S5', "owl": '"an owl" -W32 -H32 -C7.5 -S9'})


def contents(store: Path) -> dict[str, tuple[bytes, bytes]]:
    """key -> (decoded pixels, latents bytes) of every whole cell."""
    out = {}
    for cell in Store(store).cells():
        with Image.open(cell.image) as image:
            out[cell.key] = (image.convert("RGB").tobytes(), np.load(cell.latents).tobytes())
    return out


def reportgen(*args: object, launcher: tuple[str, ...] = ("-m", "reportgen")) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, *launcher, *map(str, args)], env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(process: subprocess.Popen[str]) -> tuple[str, str]:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    return out, err


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[bytes, bytes]]:
    """The store one process makes."""
    study = make_study(tmp_path_factory.mktemp("one") / "study")
    finish(reportgen("render", study, "--device", "cpu"))
    got = contents(study / "store")
    assert len(got) == CELLS
    return got


def test_two_shards_started_together_make_the_one_process_store(tmp_path: Path, reference) -> None:
    study = make_study(tmp_path / "study")
    first, second = (reportgen("render", study, "--device", "cpu", "--shard", f"{k}/2", "--json") for k in (1, 2))
    counts = [json.loads(finish(p)[0].strip().splitlines()[-1]) for p in (first, second)]
    assert sum(c["rendered"] for c in counts) == CELLS  # each cell rendered once, by one shard
    loads = counts[0]["shard_loads"]
    assert counts[1]["shard_loads"] == loads and abs(loads[0] - loads[1]) <= HEAVIEST_LANE
    assert contents(study / "store") == reference
    assert len(list((study / "grids").glob("*.png"))) == 4  # drawn by whichever shard found its topic complete


@pytest.mark.parametrize("launcher", [
    ("-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
     "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "reportgen"),
    ("-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "reportgen"),
], ids=["accelerate", "torchrun"])
def test_a_launcher_gives_each_process_a_shard_and_one_summary(tmp_path: Path, reference, launcher) -> None:
    study = make_study(tmp_path / "study")
    out, err = finish(reportgen("render", study, "--device", "cpu", "--json", launcher=launcher))
    summary = json.loads(out.strip().splitlines()[-1])  # one JSON line, from rank 0 only
    assert [s["shard"] for s in summary["shards"]] == ["1/2", "2/2"]
    assert sum(s["rendered"] for s in summary["shards"]) == CELLS
    assert err.count(" cells: ") == 1 and "2 shards: rendered 24" in err  # progress and summary from rank 0
    assert contents(study / "store") == reference
    assert len(list((study / "grids").glob("*.png"))) == 4


def test_a_killed_shard_rerun_alone_completes_the_store(tmp_path: Path, reference) -> None:
    study = make_study(tmp_path / "study")
    images = study / "store" / "images"
    killed = reportgen("render", study, "--device", "cpu", "--shard", "2/2", "--batch-size", "1")
    other = reportgen("render", study, "--device", "cpu", "--shard", "1/2")
    deadline = time.monotonic() + 240
    while not (images.is_dir() and any(images.glob("*/*.png"))) and killed.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    finish(other)
    assert 0 < len(contents(study / "store")) < CELLS  # shard 2's cells are not all there
    _, err = finish(reportgen("render", study, "--device", "cpu", "--shard", "2/2"))  # the same partition
    assert contents(study / "store") == reference


def test_another_shard_count_on_an_unfinished_partition_is_refused(tmp_path: Path, capsys, monkeypatch) -> None:
    study = make_study(tmp_path / "study")
    code, err = run_main(capsys, monkeypatch, "render", study, "--device", "cpu", "--shard", "1/2")
    assert code == 0, err
    code, err = run_main(capsys, monkeypatch, "render", study, "--device", "cpu", "--shard", "1/3")
    assert code == 2
    assert err.strip().splitlines()[-1].startswith(f"error: the store {study / 'store'} is being rendered in 2 "
                                                   "shards")
    code, err = run_main(capsys, monkeypatch, "render", study, "--device", "cpu", "--shard", "1/3", "--reshard",
                         "--dry-run", "--json")
    assert code == 0, err  # --reshard deals what is left anew, and the 2-shard partition is gone
    assert sorted(p.name.rsplit("-of-", 1)[1] for p in (study / "store" / "shards").glob("*.json")) == ["3.json"]


def test_dry_run_shards_cover_every_cell_to_render_once(tmp_path: Path) -> None:
    study = make_study(tmp_path / "study")
    seen: list[str] = []
    for k in (1, 2, 3):
        out, _ = finish(reportgen("render", study, "--device", "cpu", "--shard", f"{k}/3", "--dry-run", "--json"))
        counts = json.loads(out.strip().splitlines()[-1])
        seen += counts["shard_cells"]
        assert counts["shard_nfe"] == counts["shard_loads"][k - 1]
    assert len(seen) == len(set(seen)) == CELLS
    assert not (study / "store").exists()  # a dry run writes nothing


@pytest.mark.parametrize("shard, why", [("3/2", "K must be between 1 and N (2)"), ("x", "expected K/N, e.g. 1/4")])
def test_bad_shards_are_one_line_and_write_nothing(tmp_path: Path, capsys, monkeypatch, shard, why) -> None:
    study = make_study(tmp_path / "study")
    code, err = run_main(capsys, monkeypatch, "render", study, "--shard", shard)
    assert code == 2 and err.strip().splitlines() == [f"error: --shard {shard!r}: {why}"]
    assert not (study / "store").exists()


def test_a_store_without_atomic_links_is_refused(tmp_path: Path, capsys, monkeypatch) -> None:
    def no_links(*_args: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    study = make_study(tmp_path / "study")
    monkeypatch.setattr(os, "link", no_links)
    code, err = run_main(capsys, monkeypatch, "render", study, "--device", "cpu", "--shard", "1/2")
    assert code == 2
    assert err.strip().splitlines()[-1] == (
        f"error: store {study / 'store'} is on a file system that cannot rename or hard-link files atomically "
        "(Operation not permitted); many renders cannot share it: use another folder")
    assert not any((study / "store").rglob("*.png"))
    shutil.rmtree(study / "store", ignore_errors=True)
