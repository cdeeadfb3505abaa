"""The `parameters` text reads back exactly, in reportgen's reader (written from the web UIs' infotext rules)
and in sd-parsers (MIT, a test dependency); sampler names and schedules mean what they mean in the web UIs."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from reportgen.models.sources import ModelInfo, resolve_model
from reportgen.render.metadata import (
    closest_sampler,
    fold,
    format_parameters,
    parameters_fields,
    parameters_text,
    parse_parameters,
    ui_sampler,
)
from reportgen.render.plan import Cell
from reportgen.render.store import encode_png
from reportgen.samplers import SAMPLERS, get_sampler
from reportgen.study.prompt import Prompt, parse_prompt

TINY = resolve_model("tiny")


def cell(sampler: str = "k_euler", *, text: str = "a cat", negative: str = "", cfg: float = 7.5) -> Cell:
    return Cell(topic="t", seed_index=0, seed=4294967295, sampler=sampler, steps=20, text=text, negative=negative,
                width=512, height=768, cfg=cfg, key="0" * 64, nfe=20)


def model(label: str) -> ModelInfo:
    return ModelInfo(f"/models/{label}", "single-file", "sha256:" + "ab" * 32, scheduler_config=TINY.scheduler_config)


@pytest.mark.parametrize("name, sampler, schedule", [
    ("k_dpm_2", "DPM2", "Uniform"), ("k_dpm_2_a", "DPM2 a", "Uniform"), ("dpmpp_2m", "DPM++ 2M", "Uniform"),
    ("dpmpp_2m_sde", "DPM++ 2M SDE", "Uniform"), ("dpmpp_2m_karras", "DPM++ 2M", "Karras"),
    ("k_euler", "Euler", "Uniform"), ("ddim", "DDIM", "Uniform"), ("ddim_trailing", "DDIM", "SGM Uniform"),
    ("plms_trailing", "PLMS", "SGM Uniform"),
])
def test_every_image_names_its_schedule_as_the_web_uis_read_it(name: str, sampler: str, schedule: str):
    """Since 1.9 a web UI reads DPM2, DPM2 a, DPM++ 2M without a schedule as Karras and DPM++ 2M SDE as
    Exponential; reportgen rendered them with the uniform schedule, so it must say so."""
    fields = parameters_fields(cell(name), TINY)
    assert (fields["Sampler"], fields["Schedule type"]) == (sampler, schedule)
    assert ui_sampler(fields) == (sampler, schedule)  # what a web UI selects when it reads the image
    assert closest_sampler(fields) == (get_sampler(name), "")  # and reportgen reads back its own sampler
    assert fields.get("Timestep spacing") == ("trailing" if name.endswith("_trailing") else None)


def test_every_registered_sampler_has_a_web_ui_name_no_web_ui_misreads():
    for sampler in SAMPLERS:
        fields = parameters_fields(cell(sampler.name), TINY)
        assert " trailing" not in fields["Sampler"]  # a name no other tool knows
        assert closest_sampler(fields)[0] == sampler


def test_the_web_uis_default_schedule_rule():
    assert ui_sampler({"Sampler": "DPM++ 2M"}) == ("DPM++ 2M", "Karras")
    assert ui_sampler({"Sampler": "DPM++ 2M SDE", "Schedule type": "Automatic"}) == ("DPM++ 2M SDE", "Exponential")
    assert ui_sampler({"Sampler": "DPM++ 2M Karras"}) == ("DPM++ 2M", "Karras")  # the pre-1.9 spelling
    assert ui_sampler({"Sampler": "Euler a"}) == ("Euler a", "Uniform")
    sampler, differs = closest_sampler({"Sampler": "DPM2"})
    assert sampler is not None and sampler.name == "k_dpm_2" and "Karras" in differs
    assert closest_sampler({"Sampler": "DPM++ SDE"}) == (None, "reportgen has no sampler 'DPM++ SDE'")


@pytest.mark.parametrize("cfg, written", [(7.123456789, "7.123456789"), (1234567.0, "1234567"), (7.5, "7.5"),
                                          (0.1 + 0.2, "0.30000000000000004")])
def test_cfg_is_written_exactly(cfg: float, written: str):
    fields = parse_parameters(parameters_text(cell(cfg=cfg), TINY)).fields  # type: ignore[union-attr]
    assert fields["CFG scale"] == written and float(written) == cfg


@pytest.mark.parametrize("label", ["v1-5, pruned.safetensors", 'a "quoted": name', "back\\slash", " spaced "])
def test_values_with_commas_colons_and_quotes_read_back(label: str):
    text = parameters_text(cell(), model(label))
    assert parse_parameters(text).fields["Model"] == label  # type: ignore[union-attr]
    assert text.count("\n") == 1  # the prompt, then the fields


def test_a_negative_prompt_that_looks_like_fields_stays_a_negative_prompt():
    negative = "x\nSteps: 99, Sampler: Euler, CFG scale: 1, Seed: 5, Size: 64x64"
    info = parse_parameters(parameters_text(cell(negative=negative), TINY))
    assert info is not None and info.negative == fold(negative) and info.fields["Steps"] == "20"
    assert info.fields["Seed"] == "4294967295"


def test_negative_prompt_label_in_a_prompt_is_refused():
    """Both parsers split the text at 'Negative prompt:'; so no prompt may hold it (write negatives in [])."""
    for command in ('"a cat. Negative prompt: dogs" -S1', '"a cat [x Negative prompt: y]" -S1'):
        with pytest.raises(Exception, match="cannot contain 'Negative prompt:'"):
            parse_prompt(command)


def png_bytes(parameters: str) -> bytes:
    return encode_png(Image.new("RGB", (8, 8)), parameters)


def chunk_types(data: bytes) -> list[bytes]:
    types, at = [], 8
    while at < len(data):
        length = int.from_bytes(data[at:at + 4], "big")
        types.append(data[at + 4:at + 8])
        at += 12 + length
    return types


def test_non_latin1_text_goes_into_an_itxt_chunk():
    assert b"iTXt" in chunk_types(png_bytes(parameters_text(cell(text="a cat in 東京"), TINY)))
    assert b"iTXt" not in chunk_types(png_bytes(parameters_text(cell(text="a café"), TINY)))


# --- property: any prompt reportgen accepts reads back exactly, in both readers -----------------------------

sd_parsers = pytest.importorskip("sd_parsers")
words = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="[]"), max_size=15)
labels = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20)


def prompts() -> st.SearchStrategy[Prompt]:
    def build(text: str, negative: str) -> Prompt | None:
        try:
            return parse_prompt(Prompt(text=text or "x", negative=negative).to_command())
        except Exception:  # what reportgen refuses needs no metadata
            return None
    return st.builds(build, words, words).filter(lambda p: p is not None)  # type: ignore[return-value]


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(prompts(), st.sampled_from([s.name for s in SAMPLERS]), st.floats(0, 1e6), labels)
def test_what_reportgen_writes_both_readers_read_back(prompt: Prompt, sampler: str, cfg: float, label: str):
    the_cell = cell(sampler, text=prompt.text, negative=prompt.negative, cfg=cfg)
    text = parameters_text(the_cell, model(label))
    fields = parameters_fields(the_cell, model(label))
    ours = parse_parameters(text)
    assert ours is not None
    assert (ours.prompt, ours.negative, ours.fields) == (prompt.text, fold(prompt.negative), fields)
    assert float(ours.fields["CFG scale"]) == cfg

    read = sd_parsers.ParserManager().parse(Image.open(io.BytesIO(png_bytes(text))))
    (found,) = read.samplers
    assert read.full_prompt == prompt.text and (read.full_negative_prompt or "") == fold(prompt.negative)
    assert found.name == fields["Sampler"] and found.parameters["scheduler"] == fields["Schedule type"]
    assert (found.parameters["steps"], found.parameters["seed"], found.parameters["cfg_scale"]) == (
        fields["Steps"], fields["Seed"], fields["CFG scale"])
    # sd-parsers never unquotes: a quoted value comes back as the JSON string reportgen wrote, one token
    name = found.model.name
    assert (json.loads(name) if name.startswith('"') else name) == fields["Model"]


def test_format_parameters_folds_whitespace_and_keeps_fields_order():
    text = format_parameters("a  b", "c\n d\te", {"Steps": "2", "Sampler": "Euler", "CFG scale": "1"})
    assert text == "a b\nNegative prompt: c d e\nSteps: 2, Sampler: Euler, CFG scale: 1"


def axis_cell(sampler: str, schedule: str, cfg: float = 7.5) -> Cell:
    return Cell(topic="t", seed_index=0, seed=1, sampler=sampler, steps=20, text="a cat", negative="", width=512,
                height=512, cfg=cfg, key="0" * 64, nfe=20, schedule_type=schedule)


@pytest.mark.parametrize("sampler, schedule, ui_name, label", [
    ("k_euler", "karras", "Euler", "Karras"), ("k_euler", "exponential", "Euler", "Exponential"),
    ("dpmpp_2m", "beta", "DPM++ 2M", "Beta"), ("dpmpp_2m", "karras", "DPM++ 2M", "Karras"),
    ("k_heun", "default", "Heun", "Uniform"), ("ddim", "trailing", "DDIM", "SGM Uniform"),
])
def test_a_schedule_of_the_axis_is_written_and_read_back_as_the_web_uis_do(sampler, schedule, ui_name, label):
    """A cell of the schedules axis names its schedule the web UI way; reportgen's reader, the web UIs' rules and
    sd-parsers read it back, and the closest reportgen command is that sampler with that schedule."""
    from reportgen.render.metadata import closest_schedule
    from reportgen.samplers import resolve

    the_cell = axis_cell(sampler, schedule, cfg=3.0)
    fields = parameters_fields(the_cell, TINY)
    assert (fields["Sampler"], fields["Schedule type"], fields["CFG scale"]) == (ui_name, label, "3")
    assert ui_sampler(fields) == (ui_name, label)
    found_sampler, found_schedule, differs = closest_schedule(fields)
    assert found_sampler is not None and differs == ""
    solver, resolved = resolve(found_sampler.name, found_schedule)  # dpmpp_2m + karras: the preset dpmpp_2m_karras
    assert (solver.name, resolved) == (sampler, schedule)
    read = sd_parsers.ParserManager().parse(Image.open(io.BytesIO(png_bytes(parameters_text(the_cell, TINY)))))
    (found,) = read.samplers
    assert (found.name, found.parameters["scheduler"]) == (ui_name, label)
