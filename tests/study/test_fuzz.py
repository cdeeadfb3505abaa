"""Fuzzing (hypothesis) of the three parsers contributors feed: the prompt syntax, study.toml and topic front
matter. Every input either parses or raises ReportgenError with a one-line message; nothing else escapes."""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reportgen.errors import ReportgenError
from reportgen.study.load import Study, load_study
from reportgen.study.prompt import Prompt, parse_prompt

CASES = 2000  # generated cases per target (issue 7 asks for at least 2,000)
FUZZ = settings(max_examples=CASES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
GOOD_TOML = 'title = "T"\nmodel = "tiny"\nsamplers = ["k_euler"]\nsteps = [2]\n'
GOOD_TOPIC = "---\ntitle: Anime\nprompt: '\"an anime girl\" -W32 -H32 -S1'\n---\n\nText.\n"
FLAGS = ["-W", "-H", "-C", "-S", "-s", "-A", "-n", "--width", "--height", "--cfg_scale", "--seed", "--steps",
         "--sampler", "--iterations", "--width=", "-Q", "--", "-"]
STUDY_KEYS = ["title", "description", "model", "samplers", "steps", "seeds", "negative_prompt", "reference_sampler",
              "thresholds", "max_cells", "max_pixels", "speed", "other"]
TOPIC_KEYS = ["title", "prompt", "order", "steps", "seeds", "samplers", "other"]


def outcome(parse, *args: Any) -> Any:
    """Parse; a ReportgenError must carry one non-empty line. Any other exception fails the test."""
    try:
        return parse(*args)
    except ReportgenError as exc:
        message = str(exc)
        assert message.strip() and "\n" not in message and "\r" not in message, repr(message)
        return exc


# --- the prompt syntax -------------------------------------------------------------------------------------

numbers = st.one_of(st.integers(-10, 10**6).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                    st.sampled_from(["0x10", "1_024", "١٢٨", "", "8e2", "1e400", "9" * 5000, "-0", "nan"]))
words = st.one_of(st.text(max_size=12), st.sampled_from(['"', "'", "[", "]", "\\", "k_lms", "Euler a", "\x00", "\x1b",
                                                        "😀", "<script>", "../x", "\u2028", "\xa0", "\x85"]))
valid = st.one_of(st.integers(1, 300).map(lambda n: f"-W{8 * n}"), st.integers(1, 300).map(lambda n: f"-H {8 * n}"),
                  st.floats(0, 50).map(lambda c: f"-C{c!r}"), st.integers(0, 2**32 - 1).map(lambda s: f"-S{s}"),
                  st.integers(1, 10**4).map(lambda n: f"--steps={n}"), st.sampled_from(["-Ak_lms", "-A 'Euler a'"]),
                  st.integers(1, 9).map(lambda n: f"-n{n}"))
token = st.one_of(valid, words, st.tuples(st.sampled_from(FLAGS), numbers).map("".join),
                  st.tuples(st.sampled_from(FLAGS), words).map(" ".join))


@st.composite
def commands(draw: st.DrawFn) -> str:
    """Mostly prompt-shaped commands (a quoted text, maybe a [negative], then flags), some raw text."""
    if draw(st.booleans()):
        return draw(st.text(max_size=60))
    text = draw(st.text(max_size=20)) + draw(st.sampled_from(["", " [", " [neg]", "]", " [a] [b]"]))
    quote = draw(st.sampled_from(['"', "'", ""]))
    options = valid if draw(st.booleans()) else token  # half well-formed options, half anything
    return " ".join([quote + text + quote, *draw(st.lists(options, max_size=6))])


@FUZZ
@given(commands())
def test_fuzz_parse_prompt(command: str) -> None:
    result = outcome(parse_prompt, command)
    if isinstance(result, Prompt):  # whatever parses, writes back and parses to the same prompt
        assert parse_prompt(result.to_command()) == result


# --- study.toml ----------------------------------------------------------------------------------------------

def toml_value(value: Any) -> str:
    """A TOML literal for a value hypothesis generated (tomllib reads TOML but cannot write it)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"


scalars = st.one_of(st.booleans(), st.integers(-2**63, 2**63 - 1), st.sampled_from([0, 1, 8, 10**9, 2**62]),
                    st.floats(), st.text(max_size=12),
                    st.sampled_from(["tiny", "k_euler", "Euler a", "DPM++ 2M Karras", "nope", "", "../../etc"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=8)


# Values worth trying everywhere: limits, huge counts (a seed list of 2**62 must not be built), empties.
edge = st.sampled_from([0, -1, 7, 2**31, 10**9, 2**62, 2**63 - 1, "", [], {}, [0], [10**6], ["k_euler", "k_eulr"]])
any_value = st.one_of(values, edge)


@st.composite
def study_tomls(draw: st.DrawFn) -> str:
    """A study.toml: usually the good one with some keys replaced by any values, sometimes raw text."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=80))
    table = {"title": "T", "model": "tiny", "samplers": ["k_euler"], "steps": [2]}
    for key in draw(st.lists(st.sampled_from(STUDY_KEYS), max_size=4)):
        if draw(st.integers(0, 4)) == 0:
            table.pop(key, None)
        else:
            table[key] = draw(any_value)
    return "\n".join(f"{key} = {toml_value(value)}" for key, value in table.items()) + "\n"


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    """One study folder the fuzz cases overwrite in place (a fresh folder per case would dominate the time)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "topics").mkdir()
        (root / "study.toml").write_text(GOOD_TOML)
        (root / "topics" / "anime.md").write_text(GOOD_TOPIC)
        yield root


@FUZZ
@given(text=study_tomls())
def test_fuzz_study_toml(folder: Path, text: str) -> None:
    (folder / "topics" / "anime.md").write_text(GOOD_TOPIC)
    (folder / "study.toml").write_text(text, encoding="utf-8")
    assert isinstance(outcome(load_study, folder), (Study, ReportgenError))


# --- topic front matter ------------------------------------------------------------------------------------

yaml_scalars = st.one_of(scalars.filter(lambda v: not isinstance(v, float) or math.isfinite(v)),
                         commands(), st.none(), st.dates(), edge.filter(lambda v: not isinstance(v, (list, dict))))


@st.composite
def topic_files(draw: st.DrawFn) -> str:
    """A topic page: front matter from random keys and values (YAML-dumped) or raw text, then commentary."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.text(max_size=80))
    if kind == 1:
        return "---\n" + draw(st.text(max_size=60)) + "\n---\n" + draw(st.text(max_size=20))
    meta: dict[Any, Any] = {"title": "Anime", "prompt": '"an anime girl" -W32 -H32 -S1'}
    for key in draw(st.lists(st.one_of(st.sampled_from(TOPIC_KEYS), st.integers(), st.none()), max_size=4)):
        if draw(st.integers(0, 4)) == 0:
            meta.pop(key, None)
        else:
            meta[key] = draw(st.one_of(yaml_scalars, st.lists(yaml_scalars, max_size=4)))
    dumped = yaml.safe_dump(meta, allow_unicode=True)
    closing = draw(st.sampled_from(["---\n", "---", "--- \n", "", "...\n"]))
    return "---\n" + dumped + closing + draw(st.text(max_size=30))


@FUZZ
@given(text=topic_files())
def test_fuzz_topic_front_matter(folder: Path, text: str) -> None:
    (folder / "study.toml").write_text(GOOD_TOML)
    (folder / "topics" / "anime.md").write_text(text, encoding="utf-8")
    assert isinstance(outcome(load_study, folder), (Study, ReportgenError))
