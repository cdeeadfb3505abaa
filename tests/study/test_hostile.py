"""Hostile study files (issue 18): each is refused in one line with exit code 2 and nothing written, where
today's Python would raise (RecursionError, ValueError) or accept it without a word (an alias bomb that
expands for minutes, a tab, a lone carriage return, a duplicated key)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_main

from reportgen.study.load import MAX_FRONT_MATTER, load_study


def refused(capsys, monkeypatch, study: Path) -> str:
    before = sorted(p.relative_to(study) for p in study.rglob("*"))
    code, err = run_main(capsys, monkeypatch, "render", study, "--dry-run")
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert sorted(p.relative_to(study) for p in study.rglob("*")) == before
    return err.strip()


@pytest.mark.parametrize("extra, problem", [
    ("x = " + "[" * 1000 + "]" * 1000 + "\n", "tables or arrays nested too deeply"),
    ("[thresholds]\n" + "a = { " * 1000 + "b = 1" + " }" * 1000 + "\n", "tables or arrays nested too deeply"),
    ("max_cells = " + "9" * 5000 + "\n", "a number too long to read"),
])
def test_study_toml_that_python_cannot_read(extra: str, problem: str, tiny_study: Path, capsys, monkeypatch):
    toml = tiny_study / "study.toml"
    toml.write_text(toml.read_text() + extra)
    assert refused(capsys, monkeypatch, tiny_study).startswith(f"error: {toml}: invalid TOML: {problem}")


def write_page(study: Path, front: str, body: str = "Text.\n") -> Path:
    page = study / "topics" / "anime.md"
    page.write_bytes(f"---\n{front}---\n\n{body}".encode())
    return page


BOMB = "".join(f"{a}: &{a} [{', '.join(['*' + b] * 9) if b else ', '.join(['1'] * 9)}]\n"
               for a, b in (("a", ""), ("b", "a"), ("c", "b"), ("d", "c"), ("e", "d"), ("f", "e"), ("g", "f")))


@pytest.mark.parametrize("field", ["order", "steps"])
def test_a_yaml_alias_bomb_is_refused_before_it_expands(field: str, tiny_study: Path, capsys, monkeypatch):
    """9**8 = 43 million list items if expanded; aliases are refused where the parser meets the first one."""
    page = write_page(tiny_study, "title: Anime\nprompt: '\"an anime girl\" -W32 -H32 -S1'\n" + BOMB
                      + f"{field}: [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n")
    line = refused(capsys, monkeypatch, tiny_study)
    assert line == f"error: {page}: invalid front matter (line 5): YAML alias *a (aliases are not allowed)"


def test_front_matter_over_its_size_limit(tiny_study: Path, capsys, monkeypatch):
    page = write_page(tiny_study, "title: Anime\nprompt: '\"an anime girl\" -W32 -H32 -S1'\n#"
                      + "x" * MAX_FRONT_MATTER + "\n")
    assert refused(capsys, monkeypatch, tiny_study).startswith(f"error: {page}: front matter of ")


def test_deeply_nested_front_matter(tiny_study: Path, capsys, monkeypatch):
    page = write_page(tiny_study, "title: Anime\nprompt: '\"an anime girl\" -W32 -H32 -S1'\norder: "
                      + "[" * 20_000 + "\n")
    assert refused(capsys, monkeypatch, tiny_study) == f"error: {page}: invalid front matter: nested too deeply"


def test_a_duplicated_front_matter_key_is_refused(tiny_study: Path, capsys, monkeypatch):
    page = write_page(tiny_study, "title: Anime\nprompt: '\"an anime girl\" -W32 -H32 -S1'\ntitle: Other\n")
    assert refused(capsys, monkeypatch, tiny_study) == (
        f"error: {page}: invalid front matter (line 4): duplicated key 'title'")


@pytest.mark.parametrize("prompt, problem", [
    ('"an anime\\tgirl" -W32 -H32 -S1', "prompt contains a tab; use a space"),
    ('"an anime girl [bad\\thands]" -W32 -H32 -S1', "prompt contains a tab; use a space"),
    ('"an anime\\rgirl" -W32 -H32 -S1', "prompt contains a carriage return; use a space"),
])
def test_a_tab_or_carriage_return_in_a_prompt_is_refused(prompt: str, problem: str, tiny_study: Path, capsys,
                                                         monkeypatch):
    escaped = prompt.replace('"', '\\"')
    page = write_page(tiny_study, f'title: Anime\nprompt: "{escaped}"\n')
    assert refused(capsys, monkeypatch, tiny_study) == f"error: {page}: {problem}"


def test_a_raw_tab_in_a_negative_prompt_is_refused(tiny_study: Path, capsys, monkeypatch):
    page = write_page(tiny_study, "title: Anime\nprompt: '\"an anime girl [bad\thands]\" -W32 -H32 -S1'\n")
    assert refused(capsys, monkeypatch, tiny_study) == f"error: {page}: prompt contains a tab; use a space"


def test_a_lone_carriage_return_in_a_topic_file_is_refused(tiny_study: Path, capsys, monkeypatch):
    page = tiny_study / "topics" / "anime.md"
    page.write_bytes(b"---\ntitle: Anime\nprompt: '\"an anime\rgirl\" -W32 -H32 -S1'\n---\n")
    assert refused(capsys, monkeypatch, tiny_study) == (
        f"error: {page}: line 3: a carriage return (CR) that ends no line; save the file with LF or CRLF line "
        "endings")


def test_crlf_line_endings_still_read(tiny_study: Path):
    page = tiny_study / "topics" / "anime.md"
    page.write_bytes(b"---\r\ntitle: Anime\r\nprompt: '\"an anime girl\" -W32 -H32 -S1'\r\n---\r\n\r\nBody.\r\n")
    topic = load_study(tiny_study).topic("anime")
    assert (topic.title, topic.prompt.text, topic.commentary) == ("Anime", "an anime girl", "Body.")


def test_a_study_negative_prompt_with_a_tab_names_study_toml(tiny_study: Path, capsys, monkeypatch):
    toml = tiny_study / "study.toml"
    toml.write_text(toml.read_text() + 'negative_prompt = "bad\\thands"\n')
    assert refused(capsys, monkeypatch, tiny_study) == (
        f"error: {toml}: negative_prompt: prompt contains a tab; use a space")
