import json
from pathlib import Path

from typer.testing import CliRunner

from reportgen.cli import app
from reportgen.render.store import Store, read_record

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [*map(str, args)], catch_exceptions=False)


def last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def test_render_then_rerun_makes_no_model_calls(tiny_study: Path):
    first = run("render", tiny_study, "--json")
    assert first.exit_code == 0, first.output
    counts = last_json(first.stdout)
    # 2 topics x (k_euler: 2 + 4 calls, k_heun: 3 + 7 calls)
    assert counts == {**counts, "cells": 8, "rendered": 8, "cached": 0, "nfe": 2 * (2 + 4 + 3 + 7)}
    assert len(list(Store(tiny_study / "store").cells())) == 8
    assert {p.name for p in (tiny_study / "grids").iterdir()} == {"anime-3031912972.png", "food-4053222918.png"}

    again = run("render", tiny_study, "--json")
    assert again.exit_code == 0
    assert last_json(again.stdout) | {"seconds": 0} == {**last_json(again.stdout), "rendered": 0, "cached": 8,
                                                        "nfe": 0, "seconds": 0}


def test_adding_a_topic_renders_only_its_cells(tiny_study: Path):
    assert run("render", tiny_study).exit_code == 0
    (tiny_study / "topics" / "tiger.md").write_text(
        "---\ntitle: Tiger\nprompt: '\"grown tiger, full body\" -W32 -H32 -C7.5 -S3721629802'\n---\n")
    counts = last_json(run("render", tiny_study, "--json").stdout)
    assert (counts["rendered"], counts["cached"], counts["nfe"]) == (4, 8, 2 + 4 + 3 + 7)


def test_filters_and_dry_run(tiny_study: Path):
    dry = run("render", tiny_study, "--dry-run", "--json", "--topic", "anime", "--sampler", "Heun")
    assert dry.exit_code == 0
    assert last_json(dry.stdout) == {"cells": 2, "rendered": 0, "cached": 0, "to_render": 2, "nfe": 0,
                                     "planned_nfe": 3 + 7}
    assert not (tiny_study / "store").exists()


def test_png_carries_parameters_and_info_reproduces(tiny_study: Path):
    assert run("render", tiny_study, "--sampler", "k_euler", "--steps", "2", "--topic", "anime").exit_code == 0
    (cell,) = Store(tiny_study / "store").cells()
    result = run("info", cell.image)
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0] == "an anime girl"
    assert ("Steps: 2, Sampler: Euler, Schedule type: Uniform, CFG scale: 7.5, Seed: 3031912972, Size: 32x32, "
            "Model hash: ") in result.stdout
    command = next(line for line in result.stdout.splitlines() if line.startswith("Reproduce: "))
    assert "-s2 -Ak_euler" in command and "--executor batched" in command  # a batched cell: one lane reproduces it

    out = tiny_study / "again.png"
    again = run("image", '"an anime girl" -W32 -H32 -C7.5 -S3031912972 -s2 -Ak_euler', "--executor", "batched",
                "--out", out)
    assert again.exit_code == 0, again.output
    from PIL import Image

    assert Image.open(out).tobytes() == Image.open(cell.image).tobytes()


def test_truncated_cached_file_is_rendered_again(tiny_study: Path):
    assert run("render", tiny_study, "--topic", "anime").exit_code == 0
    store = Store(tiny_study / "store")
    victim = next(store.cells())
    data = victim.image.read_bytes()
    victim.image.write_bytes(data[: len(data) // 2])
    assert read_record(victim.image) is None
    counts = last_json(run("render", tiny_study, "--topic", "anime", "--json").stdout)
    assert (counts["rendered"], counts["cached"]) == (1, 3)
    assert read_record(victim.image) is not None


def test_a_cell_is_reported_only_once_it_is_stored(tiny_study: Path):
    """Writes run on a worker thread; progress (on_cell) must still never run ahead of the store."""
    from reportgen.render import jobs as workflow

    job = workflow.prepare_render(tiny_study)
    seen: list[bool] = []
    result, _ = workflow.run_render(job, "batched",
                                    lambda output: seen.append(job.store.get(output.cell.key) is not None))
    assert result.rendered == len(seen) == 8
    assert all(seen)
