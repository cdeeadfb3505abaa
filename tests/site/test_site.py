"""The static site: links, Markdown, offline assets, sanitizing, rebuilds, failures, new-topic, and a real browser."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from functools import partial
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from browser import launch, needs_chromium, watched_page
from conftest import write_study
from markdown_check import live_parts
from test_markdown_safety import FAMILIES
from typer.testing import CliRunner

from reportgen.cli import app, main
from reportgen.render.store import Store
from reportgen.samplers import get_sampler
from reportgen.site.files import MANIFEST
from reportgen.site.pages import number

runner = CliRunner()
HOSTILE_COMMENTARY = """Plain words, then trouble:

<script>alert("commentary")</script>
<img src="x" onerror="alert('img')">
<a href="javascript:alert('a')" onclick="alert('click')">a link</a>
[a markdown link](javascript:alert('md'))
![remote](https://example.com/tracker.png)

""" + "\n\n".join(FAMILIES.values())  # the five ways past the .md pages' old pattern fixes (issue 23)
HOSTILE_DESCRIPTION = "<img src=x onerror=alert('description')> [d](javascript:alert(1)) `` ` <script>x</script>"


def run(*args: object):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def build(study: Path, out: Path, *extra: object):
    return run("build", study, "--out", out, *extra)


def fails(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: object) -> tuple[int, str]:
    """Run `reportgen ARGS` through main(), as the console script does; return (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["reportgen", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return int(exit_info.value.code or 0), capsys.readouterr().err


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A rendered study (two plain topics and a hostile one) plus one topic not rendered yet, built once."""
    root = tmp_path_factory.mktemp("site")
    study = write_study(
        root / "study", samplers=["k_euler", "k_heun"], steps=[2, 4],
        topics={"anime": '"an anime girl" -W32 -H32 -C7.5 -S3031912972',
                "food": '"a hamburger with a bowl of french fries" -W32 -H32 -C7.5 -S4053222918'},
        extra=f"description = {json.dumps(HOSTILE_DESCRIPTION)}\n",
    )
    (study / "topics" / "hostile.md").write_text(
        "---\ntitle: '<script>alert(\"title\")</script> Hostile'\n"
        "prompt: '\"<script>alert(1)</script> <img src=x onerror=alert(2)> javascript:alert(3)\" -W32 -H32 -C7.5 -S7'\n"
        f"order: 5\n---\n\n{HOSTILE_COMMENTARY}")
    assert run("render", study).exit_code == 0
    (study / "topics" / "later.md").write_text(
        "---\ntitle: Later\nprompt: '\"grown tiger, full body\" -W32 -H32 -C7.5 -S3721629802'\n"
        "order: 9\n---\n\nSoon.\n")
    out = root / "out" / "site"
    result = build(study, out)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str((out / "index.html").absolute())
    return study, out


class Links(HTMLParser):
    """Collects every href/src, every element, and checks that tags nest and close properly."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[str] = []
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        self.urls += [v for k, v in attrs if k in ("href", "src") and v is not None]
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        self.urls += [v for k, v in attrs if k in ("href", "src") and v is not None]

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else 'nothing'}> at {self.getpos()}")
            return
        self.stack.pop()


def parse(path: Path) -> Links:
    parser = Links()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser


def html_pages(out: Path) -> list[Path]:
    return sorted(out.rglob("*.html"))


def md_pages(out: Path) -> list[Path]:
    return sorted(out.rglob("*.md"))


def resolves_inside(page: Path, url: str, out: Path) -> bool:
    parts = urlsplit(url)
    target = (page.parent / unquote(parts.path)).resolve()
    return target.is_file() and target.is_relative_to(out.resolve())


def tree_digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_pages_exist_and_parse_as_html(site: tuple[Path, Path]) -> None:
    _, out = site
    names = {p.relative_to(out).as_posix() for p in html_pages(out)}
    assert names == {"index.html", "samplers.html", "methodology.html", "topics/anime.html", "topics/food.html",
                     "topics/hostile.html", "topics/later.html"}
    for page in html_pages(out):
        parser = parse(page)
        assert parser.errors == [], page
        assert parser.stack == [], f"{page}: unclosed {parser.stack}"
        assert page.read_text().startswith("<!doctype html>")
    assert {p.relative_to(out).as_posix() for p in md_pages(out)} == {n[:-5] + ".md" for n in names} | {"guide.md"}


def test_every_href_and_src_resolves_inside_the_site(site: tuple[Path, Path]) -> None:
    _, out = site
    checked = 0
    for page in html_pages(out):
        for url in parse(page).urls:
            assert not urlsplit(url).scheme and not url.startswith("//"), f"{page}: remote or absolute URL {url}"
            assert not url.startswith("/"), f"{page}: absolute path {url}"
            if url.startswith("#"):
                continue
            assert resolves_inside(page, url, out), f"{page}: {url} does not resolve inside the site"
            checked += 1
    assert checked > 100


def test_markdown_links_resolve_and_nothing_is_remote(site: tuple[Path, Path]) -> None:
    _, out = site
    images = 0
    for page in md_pages(out):
        text = page.read_text()
        for url in re.findall(r"(?<!\\)!\[[^\]]*\]\(([^)\s]+)\)", text):  # an escaped \[ or \] is text, no link
            assert resolves_inside(page, url, out), f"{page}: image {url} does not resolve"
            images += 1
        for url in re.findall(r"(?<!\\)\]\(([^)\s]+)\)", text):
            if not url.startswith("#") and urlsplit(url).scheme not in ("http", "https"):  # links may leave the site
                assert resolves_inside(page, url, out), f"{page}: link {url} does not resolve"
    assert images >= 3 * 2 * 2  # every rendered cell's thumbnail, at least
    for asset in (out / "assets").iterdir():
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}|@import|url\(\s*['\"]?(https?:|//)",
                             asset.read_text(), re.I), asset


def test_guide_tables_come_from_this_run(site: tuple[Path, Path]) -> None:
    study, out = site
    guide = (out / "guide.md").read_text()
    for heading in ("Summary tables", "Sampler results", "Sampler convergence", "Batch generation speedup",
                    "Sampler times"):
        assert f"### **{heading}**" in guide
    # k_heun over the 3 rendered topics at 2 and 4 steps: 3 + 7 model calls each, as registry and as counted
    row = next(line for line in guide.splitlines() if line.startswith("| K\\_HEUN |"))
    assert "| 6 / 8 | 30 | 30 |" in row
    # its it/s: all steps over all seconds of its images (a mean of per-image ratios favours the short ones)
    records = [c.record for c in Store(study / "store").cells() if c.record["sampler"] == "k_heun"]
    assert len(records) == 6
    it_per_s = sum(r["steps"] for r in records) / sum(r["seconds"] for r in records)
    assert row.rstrip(" |").endswith(f"| {number(it_per_s)}")
    index = (out / "index.html").read_text()
    assert re.search(r"<span class=\"card-meta\">0 of 4 cells rendered</span>", index)
    later = (out / "topics" / "later.html").read_text()
    assert later.count('class="cell missing"') == 4 and "Render at least two cells" in later


def test_without_speed_json_the_site_says_what_to_run(site: tuple[Path, Path]) -> None:
    study, out = site
    assert not (study / "speed.json").exists() and not (study / "workflow.json").exists()
    index = (out / "index.html").read_text()
    assert 'id="speed-missing"' in index and 'id="workflow-missing"' in index and 'id="speed-table"' not in index
    assert "<code>reportgen speed STUDY</code>" in index
    # the batch speedup table falls back to the store's records, and says what those seconds are
    assert 'data-source="store"' in index and "share of shared UNet calls" in index
    for name in ("index.md", "guide.md"):
        text = (out / name).read_text()
        assert "Sampler speed has not been measured for this study yet. Run `reportgen speed STUDY`" in text
        assert "share of shared UNet calls" in text and "| Sampler | it/s |" not in text


def test_hostile_prompt_and_commentary_cannot_inject(site: tuple[Path, Path]) -> None:
    _, out = site
    for page in html_pages(out):
        for tag, attrs in parse(page).elements:
            assert not any(name.startswith("on") for name in attrs), f"{page}: handler on <{tag}>"
            for name in ("href", "src"):
                assert not (attrs.get(name) or "").strip().lower().startswith("javascript:"), f"{page}: <{tag}>"
            if tag == "script":
                assert attrs.get("src", "").endswith(("assets/site.js", "assets/compare.js")), f"{page}: inline script"
    hostile = (out / "topics" / "hostile.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in hostile  # the prompt is shown, escaped
    assert "Plain words, then trouble" in hostile and "a link" in hostile
    for page in md_pages(out):  # rendered as CommonMark with raw HTML allowed, and by Python-Markdown
        assert live_parts(page.read_text()) == [], page
    assert "alert(4)" in (out / "topics" / "hostile.md").read_text()  # the payloads are shown, as text


def test_a_model_folder_named_with_markup_is_shown_as_text(site: tuple[Path, Path], tmp_path: Path) -> None:
    from reportgen.models.sources import DEMO_DIR

    study, _ = site
    model = tmp_path / "m` <img src=x onerror=alert(6)> ``x"  # the intro page puts the model in a code span
    shutil.copytree(DEMO_DIR, model, ignore=shutil.ignore_patterns("*.safetensors"))  # a build loads no weights
    out = tmp_path / "site"
    result = build(study, out, "--model", model)
    assert result.exit_code == 0, result.output
    for page in md_pages(out):
        assert live_parts(page.read_text()) == [], page
    assert "onerror=alert(6)" in (out / "index.md").read_text()


def test_rebuild_reuses_files_and_keeps_content(site: tuple[Path, Path], tmp_path: Path) -> None:
    study, out = site
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    full = sorted((copy / "img" / "full").iterdir())[0]
    inode = full.stat().st_ino
    result = build(study, copy)
    assert result.exit_code == 0, result.output
    assert tree_digest(copy) == tree_digest(out)
    # 12 rendered cells (full PNG + thumbnail), 4 grids and 7 convergence plots (2 for each of the 3 measured
    # topics, 1 of rates) come from the previous site, not from the store
    assert "built 15 pages from 12 of 16 cells (4 not rendered yet), reusing 35 files" in result.stderr
    assert full.stat().st_ino == inode  # hard-linked from the previous site, not copied again


def links_and_inodes(folder: Path) -> tuple[list[str], list[str]]:
    """The site's symlinks, and its files that share their inode with another name (hard links)."""
    symlinks = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_symlink()]
    shared = [p.relative_to(folder).as_posix() for p in folder.rglob("*")
              if p.is_file() and not p.is_symlink() and p.stat().st_nlink > 1]
    return symlinks, shared


def test_a_rebuild_reuses_only_what_it_verified(site: tuple[Path, Path], tmp_path: Path) -> None:
    study, out = site
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, symlinks=True)
    full = sorted((copy / "img" / "full").iterdir())
    thumbs = sorted((copy / "img" / "thumb").iterdir())
    grids = sorted((copy / "img" / "grid").iterdir())
    damaged = bytearray(full[0].read_bytes())  # a flipped byte: the same size as the store's file
    damaged[len(damaged) // 2] ^= 0xFF
    full[0].write_bytes(bytes(damaged))
    for a, b in ((thumbs[0], thumbs[1]), (grids[0], grids[1])):  # swapped: each is another cell's, or topic's
        data = a.read_bytes()
        a.write_bytes(b.read_bytes())
        b.write_bytes(data)
    full[1].unlink()
    full[1].symlink_to("/etc/hostname")  # a link planted where the site names a file
    outside = tmp_path / "outside.webp"
    outside.write_bytes(thumbs[2].read_bytes())
    thumbs[2].unlink()
    os.link(outside, thumbs[2])  # a hard link to a file outside the site, with the right content
    (copy / "img" / "evil.png").symlink_to("/etc/passwd")
    (copy / "img" / "full" / "extra.png").write_bytes(b"no page names me")
    (copy / "evil.html").write_text("<script>alert(1)</script>")
    result = build(study, copy)
    assert result.exit_code == 0, result.output
    assert "note:" not in result.stderr  # the manifest was whole: files were checked one by one
    assert tree_digest(copy) == tree_digest(out)  # every page, image and export as a clean build made them
    assert links_and_inodes(copy) == ([], [])
    # 35 reusable (test_rebuild_reuses_files_and_keeps_content) less the damaged PNG, the link, the hard link and the
    # two pairs swapped
    assert "reusing 28 files" in result.stderr
    assert outside.read_bytes() == thumbs[2].read_bytes() and os.stat(outside).st_nlink == 1


OLD_PLAN = {"fingerprint": "x", "device": "cpu", "dtype": "float32", "environment": {}, "cells": []}


@pytest.mark.parametrize("manifest, why", [
    ("{not json", "it is not JSON"),
    ("[1, 2]", "it is not a JSON object"),
    ('{"format": 7}', "its format is 7, not 1"),
    # an older reportgen's plan cache, damaged as the issue found it: the plan is no longer read, so none of
    # it can crash the build or put one cell's image under another's label
    (json.dumps({"format": 1, "plan": {**OLD_PLAN, "environment": ["model", "tiny"],
                                       "cells": [{"steps": "999"}, {"steps": "x", "cfg": "x"}]}}), None),
])
def test_a_damaged_manifest_means_a_full_rebuild_and_one_line(site: tuple[Path, Path], tmp_path: Path, manifest: str,
                                                              why: str | None) -> None:
    study, out = site
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, symlinks=True)
    (copy / MANIFEST).write_text(manifest)
    result = build(study, copy)
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    if why is None:
        assert notes == [] and "reusing 35 files" in result.stderr
    else:
        assert len(notes) == 1 and notes[0] == f"note: the site's manifest ({MANIFEST}) is damaged: {why}; every " \
            "file was made again", notes
        assert "reusing 0 files" in result.stderr
    assert tree_digest(copy) == tree_digest(out)


def test_failed_build_leaves_the_previous_site(site: tuple[Path, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    study, out = site
    before = tree_digest(out)
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "topic.html").write_text(
        "{% extends 'base.html' %}{% block content %}{{ topic.no_such_field }}{% endblock %}")
    code, err = fails(capsys, monkeypatch, "build", study, "--out", out, "--templates", templates)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: template topic.html") and "no_such_field" in err
    assert tree_digest(out) == before
    assert [p.name for p in out.parent.iterdir()] == ["site"]  # no temporary folder left behind


def test_failure_while_writing_leaves_the_previous_site(site: tuple[Path, Path], capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    study, out = site
    before = tree_digest(out)
    import reportgen.site.files as sitefiles

    real, calls = sitefiles._write, []

    def failing(root: Path, file: sitefiles.SiteFile) -> None:
        calls.append(file.path)
        if len(calls) == 20:
            raise OSError(28, "No space left on device")
        real(root, file)

    monkeypatch.setattr(sitefiles, "_write", failing)
    code, err = fails(capsys, monkeypatch, "build", study, "--out", out)
    assert code == 2 and len(calls) == 20 and "No space left on device" in err and err.count("\n") == 1
    assert tree_digest(out) == before
    assert [p.name for p in out.parent.iterdir()] == ["site"]


def test_templates_override_one_file(site: tuple[Path, Path], tmp_path: Path) -> None:
    study, _ = site
    templates = tmp_path / "templates"
    (templates / "assets").mkdir(parents=True)
    (templates / "_intro.md").write_text("Our own introduction, about {{ site.total }} cells.\n")
    (templates / "assets" / "extra.css").write_text("body { margin: 0; }\n")
    out = tmp_path / "site"
    assert build(study, out, "--templates", templates).exit_code == 0
    assert "Our own introduction, about 16 cells." in (out / "index.html").read_text()
    assert (out / "assets" / "extra.css").is_file() and (out / "assets" / "site.js").is_file()


def test_building_a_gpu_renders_store_needs_no_gpu(site: tuple[Path, Path], tmp_path: Path) -> None:
    study, _ = site
    result = build(study, tmp_path / "gpu", "--device", "cuda", "--dtype", "float16")
    assert result.exit_code == 0, result.output
    assert "from 0 of 16 cells (16 not rendered yet)" in result.stderr  # the keys differ: cuda/float16 cells
    assert "cuda, float16" in (tmp_path / "gpu" / "methodology.html").read_text()


def test_out_that_is_not_a_site_is_refused(site: tuple[Path, Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    study, _ = site
    (tmp_path / "notes.txt").write_text("mine")
    code, err = fails(capsys, monkeypatch, "build", study, "--out", tmp_path)
    assert code == 2 and "not a site built by reportgen" in err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"] and (tmp_path / "notes.txt").read_text() == "mine"
    code, err = fails(capsys, monkeypatch, "build", study, "--out", tmp_path / "new", "--templates", tmp_path / "nope")
    assert code == 2 and "--templates folder not found" in err
    assert not (tmp_path / "new").exists()


def test_new_topic_round_trips_through_render_and_build(tiny_study: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    made = run("new-topic", tiny_study, "fox-1", "--title", "A fox: quick",
               "--prompt", '"a red fox" -W32 -H32 -C7.5 -S123')
    assert made.exit_code == 0, made.output
    page = tiny_study / "topics" / "fox-1.md"
    assert made.stdout.strip() == str(page)
    text = page.read_text()
    assert text.startswith("---\ntitle: 'A fox: quick'\nprompt: '\"a red fox\" -W32 -H32 -C7.5 -S123'\norder: 2\n---\n")

    code, err = fails(capsys, monkeypatch, "new-topic", tiny_study, "fox-1", "--title", "Other", "--prompt", '"x" -S1')
    assert code == 2 and "already exists" in err and page.read_text() == text
    for slug in ("../x", "Fox", "a/b", ""):
        code, err = fails(capsys, monkeypatch, "new-topic", tiny_study, slug, "--title", "T", "--prompt", '"x" -S1')
        assert code == 2 and err.count("\n") == 1 and err.startswith("error: bad topic slug"), slug
    assert not (tiny_study / "x.md").exists() and not (tiny_study.parent / "x.md").exists()
    code, err = fails(capsys, monkeypatch, "new-topic", tiny_study, "fox-2", "--title", "T",
                      "--prompt", '"x" -W32 -H32')
    assert code == 2 and "seed" in err and not (tiny_study / "topics" / "fox-2.md").exists()

    assert run("render", tiny_study, "--topic", "fox-1").exit_code == 0
    out = tmp_path / "site"
    assert build(tiny_study, out).exit_code == 0
    html = (out / "topics" / "fox-1.html").read_text()
    assert "A fox: quick" in html and "Write what this topic shows here" in html
    assert html.count('class="cell"') == 4 and 'class="cell missing"' not in html
    assert "<h1>Anime</h1>" not in html and "4 of 4 cells rendered" in html


@needs_chromium
def test_real_browser_over_file_urls(site: tuple[Path, Path]) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    _, out = site
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        problems: list[str] = []
        page = watched_page(browser, problems)
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
        for name in ("index.html", "topics/anime.html", "topics/hostile.html", "topics/later.html"):
            page.goto((out / name).as_uri())
            # lazy images load only when scrolled to: load them all, then every one must decode
            page.evaluate("document.querySelectorAll('img').forEach(i => i.loading = 'eager')")
            page.wait_for_function("Array.from(document.images).every(i => i.complete)")
            widths = page.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")
            assert all(w > 0 for _, w in widths), [s for s, w in widths if not w]
            # index: 3 covers (one topic not rendered); anime: 4 cells, 1 grid, 5 compare images
            assert len(widths) >= {"index.html": 3, "topics/anime.html": 4 + 1 + 5}.get(name, 0)

        page.goto((out / "topics" / "anime.html").as_uri())
        caption = "document.querySelector('.viewer-caption').textContent"
        page.click('a.cell[data-row="0"][data-col="0"]')
        assert page.is_visible(".viewer") and page.evaluate(caption).startswith("K_EULER · 2 steps")
        page.keyboard.press("ArrowRight")
        assert page.evaluate(caption).startswith("K_EULER · 4 steps")
        page.keyboard.press("ArrowDown")
        assert page.evaluate(caption).startswith("K_HEUN · 4 steps")
        page.keyboard.press("ArrowLeft")
        page.keyboard.press("ArrowUp")
        assert page.evaluate(caption).startswith("K_EULER · 2 steps")
        page.wait_for_function("document.querySelector('.viewer-image').naturalWidth > 0")
        page.keyboard.press("Escape")
        assert not page.is_visible(".viewer")

        chosen = page.evaluate("document.querySelector('#compare-b').options[0].value")
        page.select_option("#compare-b", chosen)
        assert page.get_attribute(".mode-side img.cmp-b", "src") == chosen
        page.click('.modes button[data-mode="slider"]')
        assert page.get_attribute("#compare-stage", "data-mode") == "slider" and page.is_visible(".slider-box")
        page.fill("#compare-slider", "20")
        assert "80%" in page.evaluate("document.querySelector('.slider-box img.over').style.clipPath")
        page.click('.modes button[data-mode="flicker"]')
        shown = {page.text_content(".flicker-which")}
        page.wait_for_function(f"document.querySelector('.flicker-which').textContent !== {list(shown)[0]!r}")
        assert page.get_attribute(".modes button[data-mode='flicker']", "aria-pressed") == "true"
        difference_is_drawn_from_file_urls(page, out)
        browser.close()
    assert problems == []


def difference_is_drawn_from_file_urls(page: Any, out: Path) -> None:
    """Compare across topics (A from anime, B from food), then the difference view: what Chromium draws from
    file:// must be |A - B| x the amplification of the two PNGs, as Pillow computes it."""
    import io

    import numpy as np
    from PIL import Image

    options = "sel => Array.from(document.querySelectorAll(sel)).map(o => o.value)"
    food = page.evaluate(options, '#compare-b optgroup[data-topic="food"] option')
    anime = page.evaluate(options, '#compare-a optgroup[data-topic="anime"] option')
    assert len(food) == 4 and len(anime) == 4  # every rendered cell of the other topic is offered
    page.select_option("#compare-a", anime[0])
    page.select_option("#compare-b", food[-1])
    assert page.text_content(".cap-b").startswith("Food · K_HEUN · 4 steps")
    page.click('.modes button[data-mode="diff"]')
    page.fill("#diff-amp", "3")
    assert page.text_content("#diff-amp-value") == "3×"
    page.wait_for_function("Array.from(document.querySelectorAll('#diff-box img'))"
                           ".every(i => i.complete && i.naturalWidth)")
    shot = np.asarray(Image.open(io.BytesIO(page.locator("#diff-box").screenshot())).convert("RGB")).astype(int)
    a, b = (np.asarray(Image.open((out / "topics" / url).resolve()).convert("RGB")).astype(int)
            for url in (anime[0], food[-1]))
    expected = np.clip(np.abs(a - b) * 3, 0, 255)
    size = a.shape[0]
    h, w = shot.shape[:2]
    centres = [(int((i + 0.5) * h / size), int((j + 0.5) * w / size)) for i in range(size) for j in range(size)]
    drawn = np.array([shot[y, x] for y, x in centres])
    want = np.array([expected[i, j] for i in range(size) for j in range(size)])
    assert want.std() > 10  # the two cells differ: a blank box could not pass
    assert np.abs(drawn - want).mean() < 4 and np.percentile(np.abs(drawn - want), 99) < 16


def test_manifest_marks_the_site(site: tuple[Path, Path]) -> None:
    _, out = site
    assert (out / MANIFEST).is_file()


# Every element whose right edge lies past its column's (main.content) right edge, other than those inside a box that
# scrolls horizontally (a .table-wrap); and every table's box, which must itself lie inside the column.
OVERFLOW = """() => {
  const column = document.querySelector('main.content').getBoundingClientRect();
  const scrolls = el => { for (let p = el.parentElement; p; p = p.parentElement) {
      if (['auto', 'scroll'].includes(getComputedStyle(p).overflowX)) return true; } return false; };
  const out = [];
  for (const el of document.querySelectorAll('main.content *')) {
    const r = el.getBoundingClientRect();
    if (r.width && r.right > column.right + 1 && !scrolls(el))
      out.push(el.tagName + '.' + el.className + ' ' + Math.round(r.right));
  }
  for (const t of document.querySelectorAll('main.content table')) {
    const box = t.closest('.table-wrap') || t;
    const r = box.getBoundingClientRect();
    if (r.left < column.left - 8 || r.right > column.right + 1)
      out.push('table box ' + (t.id || t.className) + ' ' + Math.round(r.right));
  }
  const root = document.documentElement;
  return {page: [root.scrollWidth, root.clientWidth], out: out, column: column.right};
}"""


def touch_swipe(cdp: Any, x0: int, y0: int, x1: int, y1: int) -> None:
    """A one-finger swipe through Chromium's touch input (CDP), as a phone's screen sends it."""
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x0, "y": y0}]})
    for i in range(1, 6):
        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [
            {"x": x0 + (x1 - x0) * i // 5, "y": y0 + (y1 - y0) * i // 5}]})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


@needs_chromium
def test_every_page_fits_1280_and_390_and_the_phone_full_view_takes_swipes(site: tuple[Path, Path]) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    _, out = site
    pages = ["index.html", "samplers.html", "methodology.html", "topics/anime.html", "topics/hostile.html"]
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        for width in (1280, 390):
            phone = width < 500
            context = browser.new_context(viewport={"width": width, "height": 844 if phone else 900},
                                          has_touch=phone, is_mobile=phone)
            page = context.new_page()
            for name in pages:
                page.goto((out / name).as_uri())
                fit = page.evaluate(OVERFLOW)
                assert fit["page"][0] <= fit["page"][1], (width, name, fit)  # nothing scrolls the page sideways
                assert fit["out"] == [], (width, name, fit)
            # the first screen opens with the answer
            page.goto((out / "index.html").as_uri())
            top = page.evaluate("document.querySelector('#verdict').getBoundingClientRect().top")
            assert 0 < top < 300, top
            page.goto((out / "topics" / "anime.html").as_uri())
            # a matrix row: its box scrolls sideways to its last cell, its sampler column staying in view
            row = page.evaluate("""() => {
              const wrap = document.querySelector('table.matrix').closest('.table-wrap');
              wrap.scrollLeft = wrap.scrollWidth;
              const box = wrap.getBoundingClientRect();
              const cells = document.querySelectorAll('table.matrix tbody tr:first-child td');
              const last = cells[cells.length - 1].getBoundingClientRect();
              const head = document.querySelector('table.matrix tbody tr:first-child th').getBoundingClientRect();
              return {overflow: getComputedStyle(wrap).overflowX,
                      inside: last.left >= box.left - 1 && last.right <= box.right + 1,
                      head: head.left >= box.left - 1 && head.right <= box.right + 1};
            }""")
            assert row == {"overflow": "auto", "inside": True, "head": True}, (width, row)
            page.click('a.cell[data-row="0"][data-col="0"]')
            assert page.is_visible(".viewer")
            caption = "document.querySelector('.viewer-caption').textContent"
            # every control of the full view lies on screen
            off = page.evaluate(f"""() => Array.from(document.querySelectorAll('.viewer button')).filter(b => {{
                const r = b.getBoundingClientRect();
                return r.left < 0 || r.top < 0 || r.right > {width} || r.bottom > window.innerHeight;
              }}).map(b => b.title)""")
            assert off == [], (width, off)
            assert "to its own final" in page.text_content(".viewer-distances")
            if phone:  # a real touch swipe (Chromium's touch input, as a phone's screen sends it)
                cdp = context.new_cdp_session(page)
                swipe = partial(touch_swipe, cdp)
                box = page.evaluate("(() => { const r = document.querySelector('.viewer-frame')"
                                    ".getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]"
                                    ".map(Math.round); })()")
                left, top, right, bottom = box
                mid_x, mid_y = (left + right) // 2, (top + bottom) // 2
                swipe(right - 40, mid_y, left + 40, mid_y + 10)  # to the left: more steps
                assert page.evaluate(caption).startswith("K_EULER · 4 steps")
                swipe(mid_x, bottom - 30, mid_x + 10, top + 30)  # up: the next sampler
                assert page.evaluate(caption).startswith("K_HEUN · 4 steps")
                swipe(left + 40, mid_y, right - 40, mid_y - 10)  # to the right: fewer steps
                assert page.evaluate(caption).startswith("K_HEUN · 2 steps")
            page.keyboard.press("Escape")
            context.close()
        browser.close()


def test_times_are_labelled_as_shares_or_measured_alone(site: tuple[Path, Path], tmp_path: Path) -> None:
    """Without speed.json a batched cell's seconds are called a share; with it, the matrix shows what the cell's
    calls cost alone at the measured rate (speed.json's seconds per call of that sampler, times its calls)."""
    from reportgen.site.speed import load_note

    study, out = site
    anime = (out / "topics" / "anime.html").read_text()
    assert anime.count(" s share</span></span>") == 4 and " s alone</span>" not in anime  # the matrix's four cell notes
    records = [c.record for c in Store(study / "store").cells()]
    assert all(isinstance(r["load"], float) and r["cpus"] >= 1 for r in records)  # the machine's load, recorded

    copy = tmp_path / "study"
    shutil.copytree(study, copy)
    assert run("speed", copy, "--steps", "2", "--samples", "1").exit_code == 0
    speed = json.loads((copy / "speed.json").read_text())
    assert build(copy, tmp_path / "site").exit_code == 0
    anime = (tmp_path / "site" / "topics" / "anime.html").read_text()
    for row in speed["samplers"]:  # the topic is the size speed was timed at: no scaling
        for steps in (2, 4):
            calls = get_sampler(row["sampler"]).nfe(steps)
            assert f"{calls} calls · <span title=\"estimated from `reportgen speed`" in anime
            assert f"≈{row['s_per_image'] / row['nfe'] * calls:.2f} s alone" in anime
    assert " s share" not in anime

    def cell(load: float, seconds: float, alone: float) -> Any:
        return SimpleNamespace(stored=True, load=load, cpus=2, seconds=seconds, alone=alone)

    assert load_note([cell(1.2, 0.1, 0.2)] * 3) == ""  # a quiet machine, and batched shares cheaper than alone
    busy = load_note([cell(5.0, 0.1, 0.2), cell(1.0, 0.1, 0.2)])
    assert busy.startswith("Rendered on a loaded machine: 1 of 2 cells were stored while the machine's load "
                           "average exceeded its CPU count (up to 5.0 on 2 CPUs).")
    slow = load_note([cell(1.0, 0.6, 0.2)] * 3)
    assert "their seconds are a median 3.0x what `reportgen speed` measured for the same model calls alone" in slow


def test_the_numbers_are_explained_where_they_stand(site: tuple[Path, Path]) -> None:
    """The methodology page explains every measured quantity with its scale and this build's thresholds; a distance
    in a table carries its scale; a fit far from its order says so."""
    from reportgen.measure.distances import scale
    from reportgen.site.numbers import far_from_order

    _, out = site
    for name in ("methodology.html", "methodology.md"):
        text = (out / name).read_text().replace("\\", "")
        assert "Reading the numbers" in text
        for quantity in ("Distance", "To its own final", "To the reference", "Indicates at", "Converged at",
                         "Different limit", "At a fixed budget", "Exponent b", "Seconds"):
            assert f"| {quantity} |" in text or f'<th scope="row">{quantity}</th>' in text, (name, quantity)
        # the latent metric's default thresholds, each with its scale
        for value in ("0.15 (11% of the way to an unrelated image)", "0.05 (4% of the way to an unrelated image)",
                      "0.1 (7% of the way to an unrelated image)"):
            assert value in text, (name, value)
    assert scale(2**0.5, "latent") == "as far as two unrelated images" and scale(0.0, "ssim").startswith("the same")
    assert far_from_order(-1.8, -4) == ("measured -1.8, far from the expected -4: the nominal order does not hold at "
                                        "these step counts (see the notes)")
    assert far_from_order(-1.7, -2) == "" and far_from_order(None, -1) == ""
    anime = (out / "topics" / "anime.html").read_text()
    assert re.search(r'data-field="final_to_reference" title="([0-9]+% of the way to an unrelated image|the same '
                     r'image, to the eye)">[0-9.]+<', anime)
    assert "Final to reference <span class=\"scale\">(unrelated images: 1.4)</span>" in anime
