"""Every JSON file reportgen reads goes through its schema (reportgen/schemas.py, issue 22): a cache that fails
is ignored, named in one note and written again; a user's file that fails is named with what is wrong, exit 2.
A fuzz test per file kind: every generated document loads or is refused in one line; nothing else escapes."""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import run_main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reportgen.errors import ReportgenError
from reportgen.models.sources import SD1_SCHEDULER, file_sha256, resolve_model
from reportgen.render.timing import load_speed, workflow_runs
from reportgen.samplers import SAMPLERS

FUZZ = settings(max_examples=40, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8) | st.sampled_from([0, -1, 10**30, "", "0" * 64, "k_euler", "preview", 1e308]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12)


def mutated(good: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A good document with values replaced, keys dropped, or anything else JSON at all."""
    def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        found = [prefix]
        if isinstance(value, dict):
            for key, item in value.items():
                found += paths(item, (*prefix, key))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                found += paths(item, (*prefix, index))
        return found

    def apply(path: tuple[Any, ...], replacement: Any, drop: bool) -> Any:
        doc = json.loads(json.dumps(good))
        if not path:
            return replacement
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        if drop and isinstance(parent, dict):
            parent.pop(path[-1])
        else:
            parent[path[-1]] = replacement
        return doc

    return st.one_of(json_values, st.builds(apply, st.sampled_from(paths(good)), json_values, st.booleans()))


def one_line(exc: ReportgenError) -> None:
    message = str(exc)
    assert message.strip() and "\n" not in message, repr(message)


# --- the checkpoint hash cache --------------------------------------------------------------------------------

@pytest.mark.parametrize("content", ["[1, 2]", "5", '"text"', '{"a": 5}', "{", "[" * 10_000])
def test_a_hash_cache_that_is_not_one_is_ignored_noted_and_rewritten(content: str, tmp_path: Path, monkeypatch,
                                                                      caplog):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cache = tmp_path / "cache" / "reportgen" / "file-hashes.json"
    cache.parent.mkdir(parents=True)
    cache.write_text(content)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"weights")
    with caplog.at_level(logging.WARNING, logger="reportgen"):
        assert file_sha256(weights) == hashlib.sha256(b"weights").hexdigest()
    (note,) = [r.getMessage() for r in caplog.records]
    assert note.startswith(f"ignored the checkpoint hash cache {cache} (") and note.endswith("; it is written again")
    assert list(json.loads(cache.read_text()).values()) == [hashlib.sha256(b"weights").hexdigest()]


def test_the_hash_cache_note_is_one_line_from_the_cli(tiny_study: Path, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cache = tmp_path / "cache" / "reportgen" / "file-hashes.json"
    cache.parent.mkdir(parents=True)
    cache.write_text("[]")
    from safetensors.numpy import save_file

    # a checkpoint's header is read at planning (its family is in its keys): one SD key is enough here
    save_file({"model.diffusion_model.input_blocks.0.0.weight": np.zeros(1, np.float32)},
              str(tmp_path / "m.safetensors"))
    code, err = run_main(capsys, monkeypatch, "render", tiny_study, "--model", tmp_path / "m.safetensors",
                         "--dry-run")
    assert code == 0
    assert [line for line in err.splitlines() if line.startswith("note: ignored")] == [
        f"note: ignored the checkpoint hash cache {cache} (not a JSON object (got a list)); it is written again"]


@FUZZ
@given(mutated({"/m.safetensors|1|2": "0" * 64}))
def test_fuzz_hash_cache(document: Any) -> None:
    with tempfile.TemporaryDirectory() as folder:
        cache = Path(folder) / "reportgen" / "file-hashes.json"
        cache.parent.mkdir()
        cache.write_text(json.dumps(document))
        weights = Path(folder) / "w.ckpt"
        weights.write_bytes(b"w")
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("XDG_CACHE_HOME", folder)
            assert file_sha256(weights) == hashlib.sha256(b"w").hexdigest()


# --- speed.json and workflow.json --------------------------------------------------------------------------

ROW = {"sampler": "k_euler", "label": "K_EULER", "steps": 4, "nfe": 4, "seconds": [0.1, 0.2], "s_per_image": 0.15,
       "it_per_s": 26.6, "calls_per_s": 26.6}
SPEED = {"format": 1, "measured_at": "2025-01-01T00:00:00+00:00", "device": "cpu", "device_name": "CPU",
         "dtype": "float32", "model": "tiny", "topic": "anime", "width": 32, "height": 32, "cfg": 7.5, "steps": 4,
         "samples": 2, "batch": 1, "executor": "pipeline", "samplers": [ROW]}


@pytest.mark.parametrize("change, problem", [
    ({"samplers": [{}]}, "samplers[0].sampler: missing"),
    ({"samplers": [5]}, "samplers[0]: must be an object (got 5)"),
    ({"samplers": "k_euler"}, "samplers: must be a list (got 'k_euler')"),
    ({"samplers": [{**ROW, "it_per_s": 0}]}, "samplers[0].it_per_s: must be greater than 0 (got 0)"),
    ({"samplers": [{**ROW, "it_per_s": "fast"}]}, "samplers[0].it_per_s: must be a number (got 'fast')"),
    ({"device_name": None}, "device_name: must be a string (got None)"),
    ({"steps": 0}, "steps: must be greater than 0 (got 0)"),
    ({"samplers": [{**ROW, "steps": 0}]}, "samplers[0].steps: must be greater than 0 (got 0)"),
])
def test_a_damaged_speed_json_is_named_by_build(change: dict, problem: str, tiny_study: Path, tmp_path: Path,
                                                capsys, monkeypatch):
    speed = tiny_study / "speed.json"
    speed.write_text(json.dumps({**SPEED, **change}))
    code, err = run_main(capsys, monkeypatch, "build", tiny_study, "--out", tmp_path / "site")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: {speed}: {problem}") and "run `reportgen speed` again" in err
    assert not (tmp_path / "site").exists()


def test_a_missing_device_name_is_named(tiny_study: Path):
    (tiny_study / "speed.json").write_text(json.dumps({k: v for k, v in SPEED.items() if k != "device_name"}))
    with pytest.raises(ReportgenError, match="speed.json: device_name: missing; repair it"):
        load_speed(tiny_study)
    (tiny_study / "speed.json").write_text(json.dumps(SPEED))
    assert load_speed(tiny_study) == SPEED  # a good file is read as written, fields the schema skips included


@FUZZ
@given(mutated(SPEED))
def test_fuzz_speed_json(document: Any) -> None:
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "speed.json").write_text(json.dumps(document))
        try:
            speed = load_speed(Path(folder))
        except ReportgenError as exc:
            one_line(exc)
            return
        assert speed is not None
        for row in speed["samplers"]:  # what the site computes from it cannot fail
            assert row["nfe"] / row["steps"] > 0 and 1.0 / row["it_per_s"] > 0 and min(row["seconds"]) >= 0


WORKFLOW = {"format": 1, "runs": [
    {"kind": "preview", "topic": "anime", "sampler": "k_euler", "steps": 2, "executor": "batched", "store": "/s",
     "cells": [{"seed": 1, "key": "ab" * 32, "seconds": 0.5}, {"seed": 2, "key": "cd" * 32, "seconds": None}]},
    {"kind": "polish", "topic": "anime", "sampler": "k_euler", "steps": 4, "executor": "batched", "store": "/s",
     "cells": [{"seed": 1, "key": "ef" * 32, "seconds": 1.5}]}]}


@FUZZ
@given(mutated(WORKFLOW))
def test_fuzz_workflow_json(document: Any) -> None:
    from reportgen.site.speed import workflow_summary

    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "workflow.json").write_text(json.dumps(document))
        try:
            runs = workflow_runs(Path(folder))
        except ReportgenError as exc:
            one_line(exc)
            return
        assert isinstance(runs, list)
        workflow_summary(Path(folder))  # what the site computes from it cannot fail


# --- the distances cache -----------------------------------------------------------------------------------

def distance_cache(tmp: Path) -> Any:
    from reportgen.measure.distances import DistanceCache
    from reportgen.render.store import Store

    return DistanceCache(Store(tmp / "store"))


D = "ab" * 32
METRICS = {"version": 2, "targets": {"ab" * 32: {"latent": 0.5, "ssim": 0.25, "latents_sha256": [D, D],
                                                 "pixels_sha256": [D, D], "sha256": D}}}


@pytest.mark.parametrize("content", ['{"version": 2, "targets": []}', '{"version": "2", "targets": {}}', "[1]", "{"])
def test_a_damaged_distances_file_is_ignored_and_noted(content: str, tmp_path: Path, caplog):
    cache = distance_cache(tmp_path)
    path = cache.path("cd" * 32)
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with caplog.at_level(logging.WARNING, logger="reportgen"):
        assert cache._read("cd" * 32) == {}
    assert [r.getMessage().startswith(f"ignored the distances cache {path} (") for r in caplog.records] == [True]


@pytest.mark.parametrize("pair", [5, {"latent": "far"}, {**METRICS["targets"][D], "ssim": -1},
                                  {**METRICS["targets"][D], "latents_sha256": [D]}])
def test_a_damaged_pair_costs_only_itself(pair: Any, tmp_path: Path) -> None:
    cache = distance_cache(tmp_path)
    path = cache.path("cd" * 32)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"version": 2, "targets": {**METRICS["targets"], "x": pair}}))
    assert cache._read("cd" * 32) == {D: METRICS["targets"][D], "x": {}}  # {}: computed again when asked for


@FUZZ
@given(mutated(METRICS))
def test_fuzz_distances_cache(document: Any) -> None:
    with tempfile.TemporaryDirectory() as folder:
        cache = distance_cache(Path(folder))
        path = cache.path("cd" * 32)
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(document))
        for values in cache._read("cd" * 32).values():  # each pair fits its schema, or is {} (never used)
            assert values == {} or all(isinstance(values[m], float) and values[m] >= 0 for m in ("latent", "ssim"))


# --- a model folder's configs ----------------------------------------------------------------------------------

def model_folder(root: Path, scheduler: Any, index: Any = None) -> Path:
    (root / "scheduler").mkdir(parents=True, exist_ok=True)
    (root / "model_index.json").write_text(json.dumps(index if index is not None else {
        "_class_name": "StableDiffusionPipeline", "scheduler": ["diffusers", "PNDMScheduler"]}))
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler))
    return root


@pytest.mark.parametrize("scheduler, problem", [
    ([1, 2], "not a JSON object (got a list)"),
    ({**SD1_SCHEDULER, "_class_name": "UNet2DConditionModel"},
     "_class_name: names 'UNet2DConditionModel', which is not a diffusers scheduler class"),
    ({**SD1_SCHEDULER, "num_train_timesteps": -5}, "num_train_timesteps: must be greater than 1 (got -5)"),
    ({**SD1_SCHEDULER, "steps_offset": -1}, "steps_offset: must be greater than or equal to 0 (got -1)"),
    ({**SD1_SCHEDULER, "beta_start": "x"}, "beta_start: must be a number (got 'x')"),
])
def test_a_damaged_scheduler_config_is_named(scheduler: Any, problem: str, tmp_path: Path, tiny_study: Path,
                                             capsys, monkeypatch):
    folder = model_folder(tmp_path / "model", scheduler)
    code, err = run_main(capsys, monkeypatch, "render", tiny_study, "--model", folder, "--dry-run")
    config = folder / "scheduler" / "scheduler_config.json"
    assert (code, err) == (2, f"error: {config}: {problem}; not a scheduler config this model can use\n")


def test_a_model_index_that_is_not_one_is_named(tmp_path: Path, tiny_study: Path, capsys, monkeypatch):
    folder = model_folder(tmp_path / "model", SD1_SCHEDULER, index=["x"])
    code, err = run_main(capsys, monkeypatch, "render", tiny_study, "--model", folder, "--dry-run")
    assert (code, err) == (2, f"error: {folder / 'model_index.json'}: not a JSON object (got a list); not a "
                              "diffusers model index\n")


SCHEDULER_KEYS = {**SD1_SCHEDULER, "prediction_type": "epsilon", "timestep_spacing": "leading",
                  "use_karras_sigmas": False, "interpolation_type": "linear", "final_sigmas_type": "zero",
                  "solver_order": 2, "algorithm_type": "dpmsolver++", "sigma_min": 0.03, "sigma_max": 14.6}


@FUZZ
@given(mutated(SCHEDULER_KEYS))
def test_fuzz_scheduler_config(document: Any) -> None:
    """Any config the schema accepts builds every registered sampler's scheduler and sets its timesteps."""
    from reportgen.render.plan import check_steps, scheduler_config

    with tempfile.TemporaryDirectory() as folder:
        try:
            info = resolve_model(str(model_folder(Path(folder), document)))
        except ReportgenError as exc:
            one_line(exc)
            return
        for sampler in SAMPLERS:
            scheduler_config(sampler.name, info.scheduler_config)
            scheduler = sampler.make_scheduler(info.scheduler_config)
            scheduler.set_timesteps(3, device="cpu")
            try:
                check_steps(sampler.name, 3, info)
            except ReportgenError as exc:
                one_line(exc)


# --- the scheduler config cache ------------------------------------------------------------------------------

def fresh_scheduler_cache(folder: Path, content: str, patch: pytest.MonkeyPatch) -> Path:
    from reportgen.render import plan

    patch.setenv("XDG_CACHE_HOME", str(folder))
    plan._scheduler_configs.cache_clear()
    cache = folder / "reportgen" / "scheduler-configs.json"
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(content)
    return cache


@pytest.mark.parametrize("content", ["[" * 10_000, "[]", '{"ab": {"class": "EulerDiscreteScheduler"}}',
                                     '{"' + "0" * 64 + '": {"steps_offset": 1}}'])
def test_a_damaged_scheduler_config_cache_is_ignored_noted_and_rewritten(content: str, tmp_path: Path,
                                                                        monkeypatch, caplog):
    from reportgen.render.plan import _scheduler_configs, scheduler_config

    cache = fresh_scheduler_cache(tmp_path, content, monkeypatch)
    with caplog.at_level(logging.WARNING, logger="reportgen"):
        config = scheduler_config("k_euler", SD1_SCHEDULER)
    assert config["class"] == "EulerDiscreteScheduler"
    assert [r.getMessage().startswith(f"ignored the scheduler config cache {cache} (") for r in caplog.records] == [
        True]
    assert list(json.loads(cache.read_text()).values()) == [config]
    _scheduler_configs.cache_clear()


@FUZZ
@given(mutated({"0" * 64: {"class": "EulerDiscreteScheduler", "num_train_timesteps": 1000}}))
def test_fuzz_scheduler_config_cache(document: Any) -> None:
    from reportgen.render.plan import _scheduler_configs, scheduler_config

    with tempfile.TemporaryDirectory() as folder, pytest.MonkeyPatch.context() as patch:
        fresh_scheduler_cache(Path(folder), json.dumps(document), patch)
        assert scheduler_config("k_euler", SD1_SCHEDULER)["class"] == "EulerDiscreteScheduler"
        _scheduler_configs.cache_clear()


@FUZZ
@given(mutated({"sample_size": 64, "in_channels": 4}), mutated({"block_out_channels": [32, 64, 64, 64]}))
def test_fuzz_unet_and_vae_configs(unet: Any, vae: Any) -> None:
    """The native size read from a model's unet/ and vae/ configs: a positive side, or None; never a crash."""
    from reportgen.models.sources import ModelInfo, native_size

    with tempfile.TemporaryDirectory() as folder:
        for name, document in (("unet", unet), ("vae", vae)):
            (Path(folder) / name).mkdir()
            (Path(folder) / name / "config.json").write_text(json.dumps(document))
        side = native_size(ModelInfo("m", "folder", "x", path=Path(folder)))
        assert side is None or side > 0
