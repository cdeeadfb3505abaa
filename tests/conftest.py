"""Shared fixtures: offline, tiny studies in temporary folders."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# One torch thread (set before torch is imported, and inherited by the CLI subprocesses): the tiny models' ops are
# too small to gain from a second thread, and on a shared 2-core machine two threads per process contend. Measured
# for tests/render/test_batched.py's SD 1.x renders under a load of 6: 8.7 s with one thread, 75 s with two.
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent


def write_study(root: Path, *, samplers: list[str], steps: list[int], topics: dict[str, str], seeds: int = 1,
                extra: str = "", model: str = "tiny", reference_steps: int | None = 0) -> Path:
    """Write a study folder with one topic file per `topics` entry (slug -> prompt command).

    `reference_steps = 0` by default: no separate reference images, so a study's cells are its matrix; None
    leaves the setting out (the study default: the reference rendered at 4x the highest step count)."""
    (root / "topics").mkdir(parents=True, exist_ok=True)
    names = ", ".join(f'"{s}"' for s in samplers)
    reference = "" if reference_steps is None else f"reference_steps = {reference_steps}\n"
    (root / "study.toml").write_text(
        f'title = "Test study"\nmodel = "{model}"\nsamplers = [{names}]\nsteps = {steps}\nseeds = {seeds}\n'
        f"{reference}{extra}"
    )
    for order, (slug, prompt) in enumerate(topics.items()):
        (root / "topics" / f"{slug}.md").write_text(
            f"---\ntitle: {slug.title()}\nprompt: '{prompt}'\norder: {order}\n---\n\nCommentary on *{slug}*.\n"
        )
    return root


def run_main(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: object) -> tuple[int, str]:
    """Run `reportgen ARGS` through main(), as the console script does; return (exit code, stderr)."""
    from reportgen.cli import main

    monkeypatch.setattr(sys, "argv", ["reportgen", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return int(exit_info.value.code or 0), capsys.readouterr().err


@pytest.fixture
def tiny_study(tmp_path: Path) -> Path:
    """Two topics x two samplers x two step counts at 32x32 on the tiny model."""
    return write_study(
        tmp_path / "study", samplers=["k_euler", "k_heun"], steps=[2, 4],
        topics={"anime": '"an anime girl" -W32 -H32 -C7.5 -S3031912972',
                "food": '"a hamburger with a bowl of french fries" -W32 -H32 -C7.5 -S4053222918'},
    )


@pytest.fixture
def demo_copy(tmp_path: Path) -> Path:
    """A copy of the shipped demo study."""
    target = tmp_path / "demo"
    shutil.copytree(ROOT / "examples" / "demo", target, ignore=shutil.ignore_patterns("store", "grids", "site"))
    return target
