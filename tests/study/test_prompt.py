import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reportgen.errors import PromptError
from reportgen.study.prompt import Prompt, parse_prompt


def test_parses_the_guide_syntax():
    p = parse_prompt('"an anime girl" -W512 -H512 -C7.5 -S3031912972')
    assert p == Prompt(text="an anime girl", width=512, height=512, cfg=7.5, seed=3031912972)


def test_accepts_spaced_values_long_flags_and_negative_prompt():
    p = parse_prompt('"a cat [blurry, low quality]" -W 640 --height=384 -C 9 -S7 -s30 -A k_euler_a -n4')
    assert (p.text, p.negative, p.width, p.height, p.cfg, p.seed, p.steps, p.sampler, p.count) == (
        "a cat", "blurry, low quality", 640, 384, 9.0, 7, 30, "k_euler_a", 4)


@pytest.mark.parametrize("command", [
    '"an anime girl" -W512 -H512 -C7.5 -S3031912972',
    '"valley landscape, d&d art, \\"quoted\\" and back\\\\slash [ugly]" -W64 -H128 -C1 -S0 -s10 -A"Euler a" -n2',
])
def test_round_trip(command):
    p = parse_prompt(command)
    assert parse_prompt(p.to_command()) == p


@pytest.mark.parametrize("command, message", [
    ('"x" -W500', "width must be a positive multiple of 8"),
    ('"x" -H0', "height must be a positive multiple of 8"),
    ('"x" -s0', "steps must be > 0"),
    ('"x" -S-1', "seed must be between"),
    ('"x" -Wabc', "expects an integer"),
    ('"x" -Q3', "unknown option"),
    ('"x" -W', "needs a value"),
    ('"x', "cannot parse prompt"),
    ('"" -W64', "prompt text is empty"),
    ('"a [b] [c]"', "more than one"),
    ('"x" -W64 -W64', "given twice"),
    ('"x" -Cnan', "expects a number"),
])
def test_rejects_bad_prompts_with_one_line(command, message):
    with pytest.raises(PromptError, match=message) as info:
        parse_prompt(command)
    assert "\n" not in str(info.value)


texts = st.text(st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="[]"),
                min_size=1).filter(str.strip)


@settings(max_examples=300, deadline=None)
@given(text=texts, negative=st.one_of(st.just(""), texts), w=st.integers(1, 512), h=st.integers(1, 512),
       cfg=st.floats(0, 50, allow_nan=False), seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 1000))
def test_round_trip_generated(text, negative, w, h, cfg, seed, steps):
    p = Prompt(text=" ".join(text.split()), negative=" ".join(negative.split()), width=8 * w, height=8 * h, cfg=cfg,
               seed=seed, steps=steps, sampler="k_lms")
    assert parse_prompt(p.to_command()) == p
