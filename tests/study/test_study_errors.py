"""Study files that `render` and `new-topic` must refuse (or accept) with one clear line, writing nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_main

from reportgen.study.load import load_study

KNOWN = "known: ddim, plms, k_lms"  # the start of get_sampler's list when nothing is close


def listing(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*"))


def refused(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, study: Path, *args: object) -> str:
    """Run `reportgen ARGS`; check exit code 2, one line, nothing written in `study`; return the line."""
    before = listing(study)
    code, err = run_main(capsys, monkeypatch, *args)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert listing(study) == before
    return err.strip()


def append_toml(study: Path, text: str) -> None:
    (study / "study.toml").write_text((study / "study.toml").read_text() + text)


def set_prompt(study: Path, prompt: str) -> Path:
    page = study / "topics" / "anime.md"
    page.write_text(f"---\ntitle: Anime\nprompt: '{prompt}'\n---\n\nCommentary.\n")
    return page


@pytest.mark.parametrize(("make", "reason"), [
    (lambda path: path.symlink_to("/nonexistent/page.md"), "No such file or directory"),
    (lambda path: path.mkdir(), "Is a directory"),
])
def test_topic_path_that_cannot_be_read(make, reason: str, tiny_study: Path, capsys, monkeypatch):
    page = tiny_study / "topics" / "c.md"
    make(page)
    line = refused(capsys, monkeypatch, tiny_study, "render", tiny_study)
    assert line == f"error: {page}: cannot read: {reason}"


def test_topic_with_byte_order_mark_is_read(tiny_study: Path):
    page = tiny_study / "topics" / "anime.md"
    page.write_bytes(b"\xef\xbb\xbf" + page.read_bytes())
    topic = load_study(tiny_study).topic("anime")
    assert (topic.title, topic.prompt.text, topic.commentary) == ("Anime", "an anime girl", "Commentary on *anime*.")


def test_unknown_reference_sampler_names_study_toml_and_key(tiny_study: Path, capsys, monkeypatch):
    append_toml(tiny_study, 'reference_sampler = "zzz"\n')
    line = refused(capsys, monkeypatch, tiny_study, "render", tiny_study)
    assert line.startswith(f"error: {tiny_study / 'study.toml'}: reference_sampler: unknown sampler 'zzz'; {KNOWN}")


@pytest.mark.parametrize(("table", "expected"), [
    ("[thresholds]\nstepz = 1\n", "[thresholds]: unknown key 'stepz' (known: metric, indicator, converged, limit)"),
    ("thresholds = 3\n", "thresholds must be a table"),
])
def test_bad_thresholds_table_is_refused_by_render(table: str, expected: str, tiny_study: Path, capsys, monkeypatch):
    append_toml(tiny_study, table)
    for command in ("render", "analyze"):
        line = refused(capsys, monkeypatch, tiny_study, command, tiny_study)
        assert line == f"error: {tiny_study / 'study.toml'}: {expected}"


def test_unknown_sampler_in_topic_prompt(tiny_study: Path, capsys, monkeypatch):
    page = set_prompt(tiny_study, '"an anime girl" -W32 -H32 -S1 -A bogus')
    line = refused(capsys, monkeypatch, tiny_study, "render", tiny_study)
    assert line.startswith(f"error: {page}: -A: unknown sampler 'bogus'; {KNOWN}")
    set_prompt(tiny_study, '"an anime girl" -W32 -H32 -S1 -A eulr')
    line = refused(capsys, monkeypatch, tiny_study, "render", tiny_study)
    assert line.startswith(f"error: {page}: -A: unknown sampler 'eulr'; did you mean ")
    set_prompt(tiny_study, "\"an anime girl\" -W32 -H32 -S1 -A \"Euler a\"")  # a UI name is a real sampler
    assert load_study(tiny_study).topic("anime").prompt.sampler == "Euler a"


@pytest.mark.parametrize(("prompt", "expected"), [
    ('"x" -S1 -A nope', f"-A: unknown sampler 'nope'; {KNOWN}"),
    ('"x" -W4096 -H4096 -S1', "4096x4096 is over max_pixels = 4194304; raise max_pixels in study.toml to go on"),
    ('"x" -S1 -s20000', "20000 steps is over the limit of 10000"),
    ('"x" -S1 -n30000', "30000 seeds is over max_cells = 20000; raise max_cells in study.toml to go on"),
    ('"x" -W32 -H32', "a topic's prompt needs a seed (-S)"),
])
def test_new_topic_refuses_what_render_would_refuse(prompt: str, expected: str, tiny_study: Path, capsys,
                                                     monkeypatch):
    page = tiny_study / "topics" / "fox.md"
    line = refused(capsys, monkeypatch, tiny_study, "new-topic", tiny_study, "fox", "--title", "Fox",
                   "--prompt", prompt)
    assert line.startswith(f"error: {page}: {expected}"), line


def test_new_topic_checks_against_this_studys_settings(tiny_study: Path, capsys, monkeypatch):
    append_toml(tiny_study, "max_pixels = 16777216\n")  # this study allows 4096 x 4096
    code, _ = run_main(capsys, monkeypatch, "new-topic", tiny_study, "fox", "--title", "Fox",
                       "--prompt", '"x" -W4096 -H4096 -S1')
    assert code == 0 and load_study(tiny_study).topic("fox").prompt.width == 4096
    append_toml(tiny_study, 'reference_sampler = "zzz"\n')  # a broken study.toml: no page is added to it
    line = refused(capsys, monkeypatch, tiny_study, "new-topic", tiny_study, "owl", "--title", "Owl",
                   "--prompt", '"x" -W32 -H32 -S1')
    assert line.startswith(f"error: {tiny_study / 'study.toml'}: reference_sampler: unknown sampler 'zzz'")


def test_study_toml_with_byte_order_mark_is_read(tiny_study: Path):
    toml = tiny_study / "study.toml"
    toml.write_bytes(b"\xef\xbb\xbf" + toml.read_bytes())  # as some Windows editors save it
    assert load_study(tiny_study).samplers == ("k_euler", "k_heun")


def test_new_topic_refuses_a_page_that_takes_the_study_over_max_cells(tiny_study: Path, capsys, monkeypatch):
    append_toml(tiny_study, "max_cells = 10\n")  # the study has 2 topics x 2 samplers x 2 steps = 8 cells
    line = refused(capsys, monkeypatch, tiny_study, "new-topic", tiny_study, "fox", "--title", "Fox",
                   "--prompt", '"x" -W32 -H32 -S1')
    assert line == ("error: with this topic the study would have 12 cells, over max_cells = 10 (study.toml); "
                    "raise it to go on")
    toml = tiny_study / "study.toml"
    toml.write_text(toml.read_text().replace("max_cells = 10", "max_cells = 12"))
    code, _ = run_main(capsys, monkeypatch, "new-topic", tiny_study, "fox", "--title", "Fox",
                       "--prompt", '"x" -W32 -H32 -S1')
    assert code == 0 and len(load_study(tiny_study).topics) == 3


def test_hidden_and_editor_files_in_topics_are_ignored(tiny_study: Path):
    topics = tiny_study / "topics"
    before = [t.slug for t in load_study(tiny_study).topics]
    (topics / ".#anime.md").symlink_to("root@host.12345:1700000000")  # emacs's lock file: a dangling link
    (topics / ".hidden.md").write_text("not a topic page")
    (topics / "anime.md~").write_text("a backup")
    (topics / "#anime.md#").write_text("an autosave")
    (topics / "~$anime.md").write_text("an office lock file")
    assert [t.slug for t in load_study(tiny_study).topics] == before
