"""reportgen speed, preview and polish, and the plain data they give the site."""

import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import write_study
from PIL import Image
from typer.testing import CliRunner

from reportgen.cli import app
from reportgen.errors import ReportgenError
from reportgen.render.metadata import read_image_metadata
from reportgen.render.store import Store
from reportgen.render.timing import workflow_runs
from reportgen.samplers import get_sampler
from reportgen.site.speed import gather_speed, preview_polish, speed_table, worked_example

runner = CliRunner()


def section(study: Path) -> str:
    """The site's speed section as Markdown, through the site's own Jinja environment and filters."""
    from reportgen.site.pages import environment, template_dirs

    template = environment(template_dirs()).from_string('{% import "_speed.md" as sp %}{{ sp.speed_section(s) }}')
    return template.render(s=gather_speed(study, titles={"anime": "Anime girl"}))


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
    assert "Steps: 4, Sampler: Euler" in (read_image_metadata(finals[0]).parameters or "")

    assert [(r["kind"], r["rendered"]) for r in workflow_runs(tiny_study)] == [("preview", 12), ("preview", 0),
                                                                               ("polish", 3)]
    rows = preview_polish(tiny_study)
    assert [r["seed"] for r in rows] == seeds
    for row in rows[:2]:
        assert row["preview_steps"] == 2 and row["seconds"] > 0 and row["preview_seconds"] > 0
        assert 0 < row["latent_distance"] < 2 and 0 <= row["ssim_distance"] <= 2
    assert rows[2]["latent_distance"] is None
    text = section(tiny_study)
    # topics by title and samplers by label, as every other table names them
    assert "| Anime girl | K\\_EULER | 12 at 2 steps," in text
    assert "| Anime girl | 5 | K\\_EULER | not previewed |" in text


def test_bad_seeds_write_nothing(tiny_study: Path):
    result = run("polish", tiny_study, "--topic", "anime", "--seeds", "17,x")
    assert isinstance(result.exception, ReportgenError) and "'x'" in str(result.exception)
    result = run("preview", tiny_study, "--topic", "nope", "--count", "2")
    assert isinstance(result.exception, ReportgenError)
    assert not (tiny_study / "store").exists() and not (tiny_study / "workflow.json").exists()


class Fields(HTMLParser):
    """Every element carrying data-field: (table or list id, row's data-sampler, field, data-value, shown text)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[list[str | None]] = []
        self.open: list[tuple[str, list[str | None] | None]] = []
        self.where: list[str] = []
        self.sampler: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in ("table", "dl", "p"):
            self.where.append(a.get("id") or "")
        if tag == "tr":
            self.sampler = a.get("data-sampler")
        entry = [self.where[-1] if self.where else "", self.sampler, a["data-field"], a.get("data-value"), ""] \
            if "data-field" in a else None
        if entry:
            self.found.append(entry)
        self.open.append((tag, entry))

    def handle_endtag(self, tag: str) -> None:
        while self.open and self.open.pop()[0] != tag:
            pass
        if tag in ("table", "dl", "p") and self.where:
            self.where.pop()

    def handle_data(self, data: str) -> None:
        for _, entry in self.open:
            if entry is not None:
                entry[4] = (entry[4] or "") + data

    def get(self, where: str, field: str, sampler: str | None = None) -> tuple[float | str, str]:
        """(data-value, shown text) of the one element in `where` with this field (and row sampler)."""
        hits = [f for f in self.found if f[0] == where and f[2] == field and (sampler is None or f[1] == sampler)]
        assert len(hits) == 1, (where, field, sampler, hits)
        value = hits[0][3]
        try:
            return float(value or ""), " ".join((hits[0][4] or "").split())
        except ValueError:
            return value or "", " ".join((hits[0][4] or "").split())


def test_site_shows_measured_speed_and_workflow(tmp_path: Path):
    from reportgen.site.pages import number, seconds

    study = write_study(tmp_path / "study", samplers=["k_euler", "k_heun"], steps=[2, 4],
                        topics={"anime": '"an anime girl" -W32 -H32 -C7.5 -S3031912972'})
    assert run("speed", study, "--steps", "2", "--samples", "2").exit_code == 0
    previewed = run("preview", study, "--topic", "anime", "--count", "3", "--steps", "2", "--sampler", "k_euler")
    assert previewed.exit_code == 0, previewed.output
    seeds = [3031912972, 3031912974]
    assert run("polish", study, "--topic", "anime", "--seeds", ",".join(map(str, seeds)), "--steps", "4",
               "--sampler", "k_euler").exit_code == 0
    result = run("build", study, "--out", tmp_path / "site")
    assert result.exit_code == 0, result.output
    speed = json.loads((study / "speed.json").read_text())
    runs = json.loads((study / "workflow.json").read_text())["runs"]
    html = (tmp_path / "site" / "index.html").read_text()
    page = Fields()
    page.feed(html)

    # the table: every figure is speed.json's, shown through the site's own filters
    assert page.get("speed-facts", "device_name")[1] == speed["device_name"]
    assert page.get("speed-facts", "dtype")[1] == speed["dtype"] and page.get("speed-facts", "model")[1] == "tiny"
    assert speed["measured_at"][:10] in page.get("speed-facts", "measured_at")[1]
    for row in speed["samplers"]:
        for field, shown in (("it_per_s", number), ("s_per_image", lambda v: seconds(v, 3)),
                             ("calls_per_s", number)):
            assert page.get("speed-table", field, row["sampler"]) == (row[field], shown(row[field]))
        fastest, slowest = min(row["seconds"]), max(row["seconds"])  # the two timed images' range
        assert page.get("speed-table", "s_slowest", row["sampler"]) == (
            slowest, f"{seconds(fastest, 3)} – {seconds(slowest, 3)}")
    assert "speed-missing" not in html and "workflow-missing" not in html

    # the worked example: the guide's formula applied to the first measured sampler's it/s (no K_LMS here)
    it = speed["samplers"][0]["it_per_s"]
    all_final, both = 100 * 100 / it, (100 * 10 + 3 * 100) / it
    assert page.get("worked-example", "all_final_s") == (pytest.approx(all_final, rel=1e-9), seconds(all_final, 1))
    assert page.get("worked-example", "preview_then_polish_s") == (pytest.approx(both, rel=1e-9), seconds(both, 1))
    assert f"100 × 100 ÷ {number(it)} = {seconds(all_final, 1)}" in " ".join(re.sub("<[^>]+>", "", html).split())
    assert 'data-source="speed"' in html  # the batch speedup table takes batch-1 seconds from speed.json

    # the workflow: each run's cells' recorded seconds, summed; the speedup from them
    preview = sum(c["seconds"] for c in runs[0]["cells"])
    polish = sum(c["seconds"] for c in runs[1]["cells"])
    estimate = polish / len(seeds) * 3
    assert page.get("workflow-table", "preview_s", "k_euler")[0] == pytest.approx(preview)
    assert page.get("workflow-table", "workflow_s", "k_euler")[0] == pytest.approx(preview + polish)
    assert page.get("workflow-table", "all_final_s", "k_euler")[0] == pytest.approx(estimate)
    assert page.get("workflow-table", "speedup", "k_euler")[0] == pytest.approx(estimate / (preview + polish))
    close = [f for f in page.found if f[0] == "closeness-table" and f[2] == "latent_distance"]
    assert len(close) == 2 and all(0 < float(f[3] or "nan") < 2 for f in close)

    # the Markdown pages show the same rows and formula
    for name in ("index.md", "guide.md"):
        text = (tmp_path / "site" / name).read_text()
        for row in speed["samplers"]:
            label = get_sampler(row["sampler"]).label.replace("_", "\\_")
            assert (f"| {label} | {number(row['it_per_s'])} | {seconds(row['s_per_image'], 3)} | "
                    f"{number(row['calls_per_s'])} | {number(row['nfe'] / row['steps'])} | "
                    f"{seconds(min(row['seconds']), 3)} – {seconds(max(row['seconds']), 3)} |") in text, name
        assert f"100 × 100 ÷ {number(it)} = **{seconds(all_final, 1)}**" in text
        assert f"| 3 at 2 steps, {seconds(preview, 1)} | 2 at 4 steps, {seconds(polish, 1)} |" in text
        assert "has not been measured" not in text
