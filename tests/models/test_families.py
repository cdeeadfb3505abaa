"""Every model family loads for real and is recognised from the model itself: each tiny family saved as a diffusers
folder and, where diffusers supports it, as one single-file checkpoint, renders what the in-memory tiny model
renders; models reportgen cannot render (an unknown pipeline class or checkpoint, a LoRA, a refiner, a family
without a text encoder it needs) stop before anything is written, in one line."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_main, write_study
from family_checkpoints import flux_converter_reading_widths, save_family_checkpoint

from reportgen.errors import ModelError
from reportgen.models.families import adapter
from reportgen.models.loading import load_pipeline
from reportgen.models.sources import resolve_model
from reportgen.models.tiny import build_tiny
from reportgen.render.execute import EXECUTORS
from reportgen.render.plan import Cell, runtime_environment
from reportgen.samplers import get_sampler

FAMILIES = {"tiny-sd2-v": ("sd", ""), "tiny-sdxl": ("sdxl", ""), "tiny-sd3": ("sd3", ""),
            "tiny-flux": ("flux", "dev"), "tiny-flux-schnell": ("flux", "schnell")}
# Weights loaded from a file sit at other memory alignments than weights built in code, and the CPU kernels may take
# other paths for them: renders of the transformers (SD3, FLUX.1) differ by rounding (up to 1.1e-6 seen), never
# more; a real difference is far larger (SD3's T5 left with dropout on: 0.03). The UNet families render exactly.
LOAD_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Each tiny family saved as a diffusers folder (save_pretrained), and the same weights as one checkpoint."""
    root = tmp_path_factory.mktemp("families")
    for spec, (family, _) in FAMILIES.items():
        pipe = build_tiny(spec)
        pipe.save_pretrained(root / spec)
        save_family_checkpoint(pipe, family, root / f"{spec}.safetensors")
    save_family_checkpoint(build_tiny("tiny-sd3"), "sd3", root / "tiny-sd3-no-t5.safetensors", include_t5=False)
    return root


def one_cell(spec: str, steps: int = 2) -> Cell:
    sampler = adapter(resolve_model(spec).family).default_sampler
    return Cell(topic="t", seed_index=0, seed=5, sampler=sampler, steps=steps, text="a red cube", negative="",
                width=32, height=32, cfg=4.0, key="k", nfe=get_sampler(sampler).nfe(steps))


def assert_same_render(mine, theirs, tolerance: float) -> None:
    assert mine.error is None and theirs.error is None
    assert np.abs(mine.latents - theirs.latents).max() <= tolerance
    pixels = np.abs(np.asarray(mine.image, dtype=int) - np.asarray(theirs.image, dtype=int))
    assert pixels.max() <= 1


@pytest.mark.parametrize("spec", FAMILIES)
def test_a_saved_folder_is_its_family_and_renders_as_the_tiny_model(saved: Path, spec: str):
    model = resolve_model(str(saved / spec))
    assert (model.kind, model.family, model.variant) == ("folder", *FAMILIES[spec])
    shipped = resolve_model(spec).scheduler_config  # the folder's holds these and diffusers' defaults for the rest
    assert {k: model.scheduler_config[k] for k in shipped} == shipped
    assert type(load_pipeline(model)).__name__ == adapter(model.family).pipeline_class
    (mine,) = EXECUTORS["pipeline"](load_pipeline(model), model, [one_cell(spec)])
    (theirs,) = EXECUTORS["pipeline"](load_pipeline(resolve_model(spec)), resolve_model(spec), [one_cell(spec)])
    assert_same_render(mine, theirs, LOAD_TOLERANCE)


@pytest.mark.parametrize(("spec", "file"), [("tiny-sd2-v", "tiny-sd2-v"), ("tiny-sdxl", "tiny-sdxl"),
                                            ("tiny-sd3", "tiny-sd3"), ("tiny-sd3", "tiny-sd3-no-t5")])
def test_a_single_file_is_its_family_and_renders_as_the_tiny_model(saved: Path, spec: str, file: str):
    """diffusers' from_single_file of the family's pipeline class, configs from --model-config. SD3 renders the
    same only because reportgen puts every module in eval mode (diffusers leaves the single-file T5 in training
    mode, dropout on); a file without the T5 (as sd3_medium_incl_clips ships) takes it from --model-config."""
    model = resolve_model(str(saved / f"{file}.safetensors"), saved / spec)
    assert (model.kind, model.family) == ("single-file", FAMILIES[spec][0])
    assert model.prediction == ("v_prediction" if spec == "tiny-sd2-v" else resolve_model(spec).prediction)
    (mine,) = EXECUTORS["pipeline"](load_pipeline(model), model, [one_cell(spec)])
    (theirs,) = EXECUTORS["pipeline"](load_pipeline(resolve_model(spec)), resolve_model(spec), [one_cell(spec)])
    assert_same_render(mine, theirs, LOAD_TOLERANCE)


def test_flux_single_file_needs_model_config_and_diffusers_converts_only_flux1_widths(saved: Path, monkeypatch):
    """A FLUX.1 file holds the transformer alone: without --model-config it is refused at once. With it,
    diffusers' converter fails on any transformer narrower than FLUX.1's 3072 (it hard-codes that width), so a tiny
    file loads only with the converter reading the widths from the file; reportgen's route (the transformer from
    the file, the rest from the folder) then renders what the folder renders."""
    path = saved / "tiny-flux.safetensors"
    assert resolve_model(str(path), saved / "tiny-flux").variant == "dev"
    with pytest.raises(ModelError, match=r"FLUX\.1 checkpoint, which holds the transformer alone; pass --model-config"):
        resolve_model(str(path))
    model = resolve_model(str(path), saved / "tiny-flux")
    with pytest.raises(ModelError, match="cannot load model .*split_with_sizes") as refused:
        load_pipeline(model)
    assert "\n" not in str(refused.value)

    from diffusers.loaders import single_file_model

    entry = {**single_file_model.SINGLE_FILE_LOADABLE_CLASSES["FluxTransformer2DModel"],
             "checkpoint_mapping_fn": flux_converter_reading_widths}
    monkeypatch.setitem(single_file_model.SINGLE_FILE_LOADABLE_CLASSES, "FluxTransformer2DModel", entry)
    (mine,) = EXECUTORS["pipeline"](load_pipeline(model), model, [one_cell("tiny-flux")])
    folder = resolve_model(str(saved / "tiny-flux"))
    (theirs,) = EXECUTORS["pipeline"](load_pipeline(folder), folder, [one_cell("tiny-flux")])
    assert_same_render(mine, theirs, LOAD_TOLERANCE)


def test_a_checkpoints_family_comes_from_its_keys_alone(saved: Path):
    for spec, (family, variant) in FAMILIES.items():
        model = resolve_model(str(saved / f"{spec}.safetensors"), saved / spec)
        assert (model.family, model.variant) == (family, variant), spec
    # without --model-config: the scheduler config its family's folders ship
    assert resolve_model(str(saved / "tiny-sdxl.safetensors")).scheduler_config["_class_name"] == \
        "EulerDiscreteScheduler"
    with pytest.raises(ModelError, match="--model-config .* is a Stable Diffusion XL folder, but .* is a Stable "
                                         "Diffusion 3 checkpoint"):
        resolve_model(str(saved / "tiny-sd3.safetensors"), saved / "tiny-sdxl")


def test_the_family_is_in_the_key_for_every_family_but_sd():
    """A cell of one family is never served from another's: the same identity under two families gives two keys
    (SD 1.x/2.x keys stay as they were: tests/render/test_keys.py)."""
    sdxl = resolve_model("tiny-sdxl")
    as_sd = dataclasses.replace(sdxl, family="sd")
    assert runtime_environment(sdxl, "cpu", "float32")["family"] == "sdxl"
    assert "family" not in runtime_environment(as_sd, "cpu", "float32")
    assert runtime_environment(sdxl, "cpu", "float32") != runtime_environment(as_sd, "cpu", "float32")


def flux_folder_without_t5(saved: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "no-t5"
    shutil.copytree(saved / "tiny-flux", folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["text_encoder_2"] = [None, None]
    (folder / "model_index.json").write_text(json.dumps(index))
    shutil.rmtree(folder / "text_encoder_2")
    return folder


def lora_file(tmp_path: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "style.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 8),
               "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(8, 4)}, str(path))
    return path


def refiner_file(tmp_path: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "refiner.safetensors"
    save_file({"conditioner.embedders.0.model.transformer.resblocks.0.mlp.c_proj.bias": torch.zeros(4),
               "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3)}, str(path))
    return path


def unknown_file(tmp_path: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "unknown.safetensors"
    save_file({"blocks.0.attn.qkv.weight": torch.zeros(4, 4)}, str(path))
    return path


def folder_of_class(saved: Path, tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    shutil.copytree(saved / "tiny-sdxl", folder)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": name}))
    return folder


def lora_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "lora"
    folder.mkdir()
    shutil.copy(lora_file(tmp_path), folder / "pytorch_lora_weights.safetensors")
    return folder


@pytest.mark.parametrize(("make", "message"), [
    (lambda saved, tmp: folder_of_class(saved, tmp, "KandinskyV22Pipeline"),
     "pipeline class 'KandinskyV22Pipeline' is not one reportgen knows (it knows StableDiffusionPipeline, "
     "StableDiffusionXLPipeline, StableDiffusion3Pipeline, FluxPipeline)"),
    (lambda saved, tmp: folder_of_class(saved, tmp, "StableDiffusionXLImg2ImgPipeline"),
     "is an SDXL refiner (StableDiffusionXLImg2ImgPipeline), which refines images another model made"),
    (flux_folder_without_t5, "is a FLUX.1 model without its text_encoder_2, which the family needs"),
    (lambda saved, tmp: lora_folder(tmp), "holds a LoRA, which changes a model but is not one"),
    (lambda saved, tmp: lora_file(tmp), "is a LoRA, which changes a model but is not one"),
    (lambda saved, tmp: refiner_file(tmp), "is an SDXL refiner (its only text encoder is OpenCLIP-G)"),
    (lambda saved, tmp: unknown_file(tmp), "is not a checkpoint of a family reportgen knows (SD 1.x/2.x, SDXL, "
                                           "SD3, FLUX.1)"),
])
def test_a_model_reportgen_cannot_render_is_one_line_and_writes_nothing(saved: Path, tmp_path: Path, capsys,
                                                                        monkeypatch, make, message: str):
    model = make(saved, tmp_path)
    study = write_study(tmp_path / "study", samplers=["k_euler"], steps=[2],
                        topics={"anime": '"an anime girl" -W32 -H32 -C7.5 -S1'})
    code, err = run_main(capsys, monkeypatch, "render", study, "--model", model)
    assert code == 2 and err.startswith(f"error: {model}") and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (study / "store").exists() and not (study / "grids").exists()
