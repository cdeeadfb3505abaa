"""A study with a schedules and a cfg axis, rendered, analysed and built: per-lane convergence with axis columns,
findings across the axes, grids per view, and the topic page's axis viewer in a real browser."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from browser import launch, needs_chromium, watched_page
from conftest import run_main, write_study
from PIL import Image


@pytest.fixture(scope="module")
def axes_site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """k_euler and ddim at 2, 3 and 4 steps, schedules default and karras (DDIM takes only the default), CFG 3 and
    7.5, one seed, the reference k_heun at 8 steps: 3 lanes x 2 cfg x 3 steps + 2 reference cells."""
    root = write_study(tmp_path_factory.mktemp("axes") / "study", samplers=["k_euler", "ddim"], steps=[2, 3, 4],
                       topics={"anime": '"an anime girl" -W32 -H32 -C7.5 -S3031912972'}, reference_steps=8,
                       extra='schedules = ["default", "karras"]\ncfg = [3, 7.5]\n')
    mp = pytest.MonkeyPatch()
    capsys = _Capture()
    try:
        for args in (("render", root, "--device", "cpu"), ("build", root, "--out", root / "site")):
            code, err = run_main(capsys, mp, *args)  # type: ignore[arg-type]
            assert code == 0, err
    finally:
        mp.undo()
    return root, root / "site"


class _Capture:
    """The one method of pytest's capsys that run_main uses, for a module-scoped fixture (capsys is per test)."""

    def readouterr(self) -> object:
        class Out:
            err = ""
        return Out()


def test_grids_are_drawn_per_view_and_split_when_too_big(axes_site: tuple[Path, Path], tmp_path: Path) -> None:
    from reportgen.render.grid import grid_groups, grid_parts, write_grids
    from reportgen.render.jobs import prepare_render

    root, _ = axes_site
    names = sorted(p.name for p in (root / "grids").glob("*.png"))
    assert names == sorted(f"anime-3031912972-{s}-cfg{c}.png" for s in ("default", "karras") for c in ("3", "7.5"))
    job = prepare_render(root, device="cpu")
    matrix = list(job.plan.matrix)
    groups = grid_groups(job.study, matrix)
    assert sorted(len(g) for g in groups.values()) == [3, 3, 6, 6]  # karras: K_EULER only; default: both samplers
    # a limit of 4 tiles (128 x 128 each): one sampler row of 3 steps per part
    limit = 4 * 128 * 128
    assert [len(p) for p in grid_parts(groups["anime-3031912972-default-cfg3"], limit)] == [3, 3]
    assert [len(p) for p in grid_parts(groups["anime-3031912972-default-cfg3"], 2 * 128 * 128)] == [2, 1, 2, 1]
    paths = write_grids(job.study, matrix, job.store, tmp_path, {c.key for c in matrix}, limit)
    assert sorted(p.name for p in paths) == sorted(
        [f"anime-3031912972-{s}-cfg{c}.png" for s in ("default", "karras") for c in ("3", "7.5")]
        + [f"anime-3031912972-default-cfg{c}-part2.png" for c in ("3", "7.5")])
    whole = Image.open(root / "grids" / "anime-3031912972-default-cfg3.png")
    part = Image.open(tmp_path / "anime-3031912972-default-cfg3.png")
    assert part.size[0] == whole.size[0] and part.size[1] < whole.size[1]  # one row of the two


def test_exports_have_the_axis_columns(axes_site: tuple[Path, Path]) -> None:
    _, out = axes_site
    rows = list(csv.DictReader(io.StringIO((out / "data" / "metrics.csv").read_text())))
    assert {(r["sampler"], r["schedule"], r["cfg"]) for r in rows} == {
        (s, k, c) for s, k in (("k_euler", "default"), ("k_euler", "karras"), ("ddim", "default"))
        for c in ("3", "7.5")}
    assert len(rows) == 18 and all(r["model"] == "" for r in rows)
    fits = json.loads((out / "data" / "fits.json").read_text())
    assert sorted((f["sampler"], f["schedule"], f["cfg"]) for f in fits) == sorted(
        (s, k, c) for s, k in (("k_euler", "default"), ("k_euler", "karras"), ("ddim", "default")) for c in (3.0, 7.5))
    # every lane measured against the reference of its own cfg: the distances differ between the cfg values
    euler = {r["cfg"]: r for r in rows if (r["sampler"], r["schedule"], r["steps"]) == ("k_euler", "default", "4")}
    assert euler["3"]["latent_to_reference"] != euler["7.5"]["latent_to_reference"]


def test_findings_compare_schedules_and_cfg_values_from_the_fits(axes_site: tuple[Path, Path]) -> None:
    """Each finding across an axis restates fits.json: the medians and counts of the sampler's summaries at the two
    values, lane for lane."""
    from reportgen.measure.axes import MEASURES, axis_phrase

    _, out = axes_site
    fits = json.loads((out / "data" / "fits.json").read_text())
    index = (out / "index.md").read_text()
    by = {(f["sampler"], f["schedule"], f["cfg"]): f for f in fits}
    stated = 0
    for axis, value, base in (("schedule", "karras", "default"), ("cfg", 7.5, 3.0)):
        for measure, phrase in MEASURES:
            pairs = []
            for (sampler, schedule, cfg), f in by.items():
                if sampler != "k_euler" or (schedule, cfg)[axis == "cfg"] != value:
                    continue
                other = by[(sampler, base, cfg) if axis == "schedule" else (sampler, schedule, base)]
                pairs.append((f[measure], other[measure]))
            both = [(a, b) for a, b in pairs if a is not None and b is not None]
            head = f"{axis_phrase(axis, value)} K\\_EULER {phrase}".lower()
            lines = [line for line in index.lower().splitlines() if head in line]
            if not any(a is not None or b is not None for a, b in pairs):
                assert lines == []
                continue
            assert len(lines) == 1, (head, lines)
            if both:
                middle = (len(both) - 1) // 2  # median_low
                a, b = sorted(x for x, _ in both)[middle], sorted(y for _, y in both)[middle]
                assert f"at {a} steps" in lines[0]
                assert (f"instead of {b}" in lines[0]) if a != b else (f"at {a} steps (median), as " in lines[0])
                same = sum(x == y for x, y in both)
                assert f"the same on {same} of the" in lines[0]
            stated += 1
    assert stated >= 2


def test_the_page_shows_the_default_view_and_links_the_others(axes_site: tuple[Path, Path]) -> None:
    _, out = axes_site
    html = (out / "topics" / "anime.html").read_text()
    assert "The matrices below show schedule default · CFG 3" in html
    grid = html[html.index('<section class="grid-section"'):html.index('<section class="axes-section"')]
    assert grid.count('class="cell"') == 6  # K_EULER and DDIM x 3 steps: the default view only
    data = json.loads(re.search(r'<script type="application/json" id="axes-data">(.*?)</script>', html, re.S)[1])
    assert [a["name"] for a in data["axes"]] == ["sampler", "steps", "seed", "schedule", "cfg"]
    assert len(data["cells"]) == 18 and all(c["stored"] for c in data["cells"])
    assert all((out / c["thumb"]).is_file() and (out / c["full"]).is_file() for c in data["cells"])
    md = (out / "topics" / "anime.md").read_text()
    others = re.findall(r"^- seed 3031912972 · (.*?): \[grid\]\(\.\./(img/grid/[^)]+)\)\.$", md, re.M)
    assert [label for label, _ in others] == ["schedule karras · CFG 3", "schedule default · CFG 7.5",
                                            "schedule karras · CFG 7.5"]
    assert all((out / path).is_file() for _, path in others)


@needs_chromium
def test_the_axis_viewer_in_a_browser_over_file_urls(axes_site: tuple[Path, Path]) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    _, out = axes_site
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        problems: list[str] = []
        page = watched_page(browser, problems)
        page.goto((out / "topics" / "anime.html").as_uri())

        def headers() -> tuple[list[str], list[str]]:
            rows = page.eval_on_selector_all(".axes-matrix tbody th", "hs => hs.map(h => h.textContent)")
            cols = page.eval_on_selector_all(".axes-matrix thead th:not(.corner)", "hs => hs.map(h => h.textContent)")
            return rows, cols

        def sources() -> list[str]:
            return page.eval_on_selector_all(".axes-matrix img", "is => is.map(i => i.getAttribute('src'))")

        assert headers() == (["K_EULER", "DDIM"], ["2", "3", "4"])  # sampler x steps first
        assert page.is_visible("#axes-fix-schedule") and page.is_visible("#axes-fix-cfg")
        default = sources()
        page.select_option("#axes-fix-cfg", "1")  # CFG 7.5: other images, the same axes
        assert headers() == (["K_EULER", "DDIM"], ["2", "3", "4"]) and sources() != default
        page.select_option("#axes-rows", "3")  # rows: schedule; the sampler becomes a selector
        assert headers() == (["default", "karras"], ["2", "3", "4"]) and page.is_visible("#axes-fix-sampler")
        page.select_option("#axes-fix-sampler", "1")  # DDIM takes no karras: that row says so
        assert page.eval_on_selector_all(".axes-matrix tbody tr:nth-child(2) .missing", "s => s.length") == 3
        page.select_option("#axes-columns", "4")  # columns: cfg; steps becomes a selector
        assert headers() == (["default", "karras"], ["3", "7.5"]) and page.is_visible("#axes-fix-steps")
        page.select_option("#axes-fix-sampler", "0")
        # the keyboard: arrow keys move along the matrix, as the full view's do
        page.focus(".axes-matrix tbody tr:nth-child(1) td:nth-child(2) a")
        page.keyboard.press("ArrowRight")
        focused = page.evaluate("document.activeElement.getAttribute('href')")
        second = page.get_attribute(".axes-matrix tbody tr:nth-child(1) td:nth-child(3) a", "href")
        assert focused == second
        page.keyboard.press("ArrowDown")
        assert page.evaluate("document.activeElement.getAttribute('href')") == page.get_attribute(
            ".axes-matrix tbody tr:nth-child(2) td:nth-child(3) a", "href")
        # a cell opens the site's full view, whose arrows move along this matrix
        first = ".axes-matrix tbody tr:nth-child(1) td:nth-child(2) a"
        page.click(first)
        assert page.is_visible(".viewer") and page.text_content(".viewer-caption") == page.get_attribute(first, "title")
        assert page.text_content(".viewer-reproduce").startswith("reportgen image")
        page.keyboard.press("ArrowRight")
        assert page.get_attribute(".viewer-image", "src").endswith(second.removeprefix("../"))
        page.keyboard.press("Escape")
        assert not page.is_visible(".viewer")
        page.evaluate("document.querySelectorAll('img').forEach(i => i.loading = 'eager')")
        page.wait_for_function("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        browser.close()
    assert problems == []
