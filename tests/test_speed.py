"""reportgen speed, preview and polish, and the plain data they give the site."""

import json
import math
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from reportgen.cli import app
from reportgen.errors import ReportgenError
from reportgen.samplers import get_sampler
from reportgen.speed import gather_speed, preview_polish, speed_table, worked_example, workflow_runs
from reportgen.store import Store, read_parameters

runner = CliRunner()


def section(study: Path) -> str:
    """The site's speed section as Markdown, through the site's own Jinja environment and filters."""
    from reportgen.sitepages import environment, template_dirs

    template = environment(template_dirs()).from_string('{% import "_speed.md" as sp %}{{ sp.speed_section(s) }}')
    return template.render(s=gather_speed(study))


def run(*args: str):
    return runner.invoke(app, [*map(str, args)])


def test_speed_records_each_sampler_alone(tiny_study: Path):
    result = run("speed", tiny_study, "--steps", "3", "--samples", "2")
    assert result.exit_code == 0, result.output
    record = json.loads((tiny_study / "speed.json").read_text())
    assert (record["steps"], record["samples"], record["batch"], record["width"]) == (3, 2, 1, 32)
    assert record["device_name"] and record["device"] == "cpu"
    assert [r["sampler"] for r in record["samplers"]] == ["k_euler", "k_heun"]
    for row in record["samplers"]:
        assert len(row["seconds"]) == 2 and all(s > 0 for s in row["seconds"])
        assert row["nfe"] == get_sampler(row["sampler"]).nfe(3)
        assert math.isclose(row["it_per_s"], 3 / row["s_per_image"], rel_tol=1e-3)
    assert not (tiny_study / "store").exists()  # speed runs are timed, not stored

    table = speed_table(tiny_study)
    assert [r["calls_per_step"] for r in table] == [1, 5 / 3]
    example = worked_example(tiny_study, "k_euler")
    it_per_s = table[0]["it_per_s"]
    assert math.isclose(example["all_final_s"], 100 * 100 / it_per_s)
    assert math.isclose(example["preview_then_polish_s"], (100 * 10 + 3 * 100) / it_per_s)
    assert worked_example(tiny_study, "ddim") is None  # not measured
    text = section(tiny_study)
    assert "| K\\_EULER |" in text and "| K\\_HEUN |" in text and "**7.7×**" in text  # 10000 / 1300 steps


def test_preview_then_polish(tiny_study: Path):
    first = run("preview", tiny_study, "--topic", "anime", "--count", "12", "--steps", "2", "--sampler", "k_euler")
    assert first.exit_code == 0, first.output
    sheet = Path(first.stdout.strip().splitlines()[-1])
    assert sheet.parent == tiny_study / "previews" and Image.open(sheet).width > 10 * 96
    assert len(list(Store(tiny_study / "store").cells())) == 12
    again = run("preview", tiny_study, "--topic", "anime", "--count", "12", "--steps", "2", "--sampler", "k_euler")
    assert again.exit_code == 0 and "0 rendered, 12 cached" in again.output

    seeds = [3031912972 + 3, 3031912972 + 7, 5]  # two from the sheet, one never previewed
    polished = run("polish", tiny_study, "--topic", "anime", "--seeds", ",".join(map(str, seeds)), "--steps", "4",
                   "--sampler", "k_euler")
    assert polished.exit_code == 0, polished.output
    finals = [Path(line) for line in polished.stdout.strip().splitlines()]
    assert [p.parent for p in finals] == [tiny_study / "polished"] * 3
    assert "Steps: 4, Sampler: Euler" in read_parameters(finals[0])[0]

    assert [(r["kind"], r["rendered"]) for r in workflow_runs(tiny_study)] == [("preview", 12), ("preview", 0),
                                                                               ("polish", 3)]
    rows = preview_polish(tiny_study)
    assert [r["seed"] for r in rows] == seeds
    for row in rows[:2]:
        assert row["preview_steps"] == 2 and row["seconds"] > 0 and row["preview_seconds"] > 0
        assert 0 < row["latent_distance"] < 2 and 0 <= row["ssim_distance"] <= 2
    assert rows[2]["latent_distance"] is None
    text = section(tiny_study)
    assert "| anime | K\\_EULER | 12 at 2 steps," in text and "| 5 | k\\_euler | not previewed |" in text


def test_bad_seeds_write_nothing(tiny_study: Path):
    result = run("polish", tiny_study, "--topic", "anime", "--seeds", "17,x")
    assert isinstance(result.exception, ReportgenError) and "'x'" in str(result.exception)
    result = run("preview", tiny_study, "--topic", "nope", "--count", "2")
    assert isinstance(result.exception, ReportgenError)
    assert not (tiny_study / "store").exists() and not (tiny_study / "workflow.json").exists()
