"""Which family a model is, from the model itself, without loading weights: a folder's model_index.json (its
pipeline class) and config files, or a single checkpoint's key names (a .safetensors header; a .ckpt through
torch's memory-mapped loader, which reads no tensor data).

Key names are those diffusers' own single-file loader checks (loaders/single_file_utils.py CHECKPOINT_KEY_NAMES),
by presence only: diffusers' `infer_diffusers_model_type` also checks the real models' widths, so it reads a tiny
SD 2.x, SDXL or SD3 checkpoint as SD 1.x. v prediction is not in the keys (SD 2.x 512-base and 768-v have the
same keys and shapes); it comes from the scheduler config of --model-config.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from reportgen.errors import ModelError
from reportgen.models.families import ADAPTERS, PIPELINE_FAMILIES

REFINER = "StableDiffusionXLImg2ImgPipeline"
# Where each family's single files keep each text encoder (the key prefix diffusers' converters read). FLUX.1's
# files hold the transformer alone (as Black Forest Labs ships them): all else comes from --model-config.
TEXT_ENCODER_PREFIXES: dict[str, dict[str, str]] = {
    "sd": {"text_encoder": "cond_stage_model."},
    "sdxl": {"text_encoder": "conditioner.embedders.0.", "text_encoder_2": "conditioner.embedders.1."},
    "sd3": {"text_encoder": "text_encoders.clip_l.", "text_encoder_2": "text_encoders.clip_g.",
            "text_encoder_3": "text_encoders.t5xxl."},
}
_LORA = re.compile(r"lora_(unet|te\d?|transformer)_|\.lora_(down|up|A|B)\.|\.(hada|lokr)_w")
_KNOWN = "SD 1.x/2.x, SDXL, SD3, FLUX.1"


def folder_family(path: Path) -> tuple[str, str]:
    """(family, variant) of a diffusers folder; ModelError for a pipeline class reportgen does not know or a
    refiner."""
    index = _index(path)
    name = index.get("_class_name")
    if name == REFINER:
        raise ModelError(f"{path} is an SDXL refiner ({REFINER}), which refines images another model made; "
                         "give a text-to-image model (e.g. the SDXL base) as --model")
    if name not in PIPELINE_FAMILIES:
        raise ModelError(f"{path}: pipeline class {name!r} is not one reportgen knows "
                         f"(it knows {', '.join(PIPELINE_FAMILIES)})")
    family = PIPELINE_FAMILIES[name]
    return family, _folder_variant(path, family)


def check_text_encoders(path: Path, family: str, components: Iterable[str] | None = None) -> None:
    """ModelError unless the folder has every text encoder its family needs (or `components` of them), named in
    model_index.json and there."""
    index = _index(path)
    for component in ADAPTERS[family].text_encoders if components is None else components:
        entry = index.get(component)
        if not (isinstance(entry, list) and len(entry) == 2 and entry[1]) or not (path / component).is_dir():
            raise ModelError(f"{path} is a {ADAPTERS[family].label} model without its {component}, which the "
                             "family needs to encode a prompt")


def _index(path: Path) -> dict[str, Any]:
    index_file = path / "model_index.json"
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{index_file}: unreadable: {exc}") from None
    return index if isinstance(index, dict) else {}


def _folder_variant(path: Path, family: str) -> str:
    """FLUX.1 dev or schnell: whether the transformer has a guidance embedding (FluxTransformer2DModel's
    guidance_embeds); '' for the other families."""
    if family != "flux":
        return ""
    try:
        config = json.loads((path / "transformer" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path / 'transformer' / 'config.json'}: unreadable: {exc}") from None
    return "dev" if config.get("guidance_embeds") else "schnell"


def lora_files(path: Path) -> list[Path]:
    """The LoRA weight files in a folder that is not a diffusers model (as diffusers and the trainers save them)."""
    names = ("pytorch_lora_weights.safetensors", "pytorch_lora_weights.bin", "adapter_model.safetensors")
    found = [path / n for n in names if (path / n).is_file()]
    return found or [f for f in sorted(path.glob("*.safetensors")) if _is_lora(checkpoint_keys(f))]


def checkpoint_keys(path: Path) -> set[str]:
    """A checkpoint's tensor names, no tensor read: the .safetensors header, or a .ckpt memory-mapped."""
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="np") as handle:
                return set(handle.keys())
        import torch

        data = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as exc:  # safetensors and torch raise their own types for a damaged or foreign file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: cannot read the checkpoint's keys: {first}") from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    return {str(k) for k in data} if isinstance(data, dict) else set()


def checkpoint_family(path: Path, keys: set[str]) -> tuple[str, str]:
    """(family, variant) of a single-file checkpoint from its keys; ModelError for a LoRA, a refiner or a
    checkpoint of no family reportgen knows."""

    def has(name: str) -> bool:
        return name in keys or f"model.diffusion_model.{name}" in keys

    if _is_lora(keys):
        raise ModelError(f"{path} is a LoRA, which changes a model but is not one; give the model it was "
                         "trained for as --model")
    if has("double_blocks.0.img_attn.norm.key_norm.scale"):
        return "flux", "dev" if has("guidance_in.in_layer.bias") else "schnell"
    if has("joint_blocks.0.context_block.adaLN_modulation.1.bias"):
        return "sd3", ""
    if any(k.startswith("conditioner.embedders.1.") for k in keys):
        return "sdxl", ""
    if any(k.startswith("conditioner.embedders.0.model.") for k in keys):
        raise ModelError(f"{path} is an SDXL refiner (its only text encoder is OpenCLIP-G), which refines images "
                         "another model made; give a text-to-image model (e.g. the SDXL base) as --model")
    if any(k.startswith("model.diffusion_model.input_blocks.") for k in keys):
        return "sd", ""
    raise ModelError(f"{path} is not a checkpoint of a family reportgen knows ({_KNOWN}): none of their keys is "
                     "in it")


def missing_text_encoders(family: str, keys: set[str]) -> list[str]:
    """The text encoders a family's single file should hold but does not (loaded from --model-config instead)."""
    prefixes = TEXT_ENCODER_PREFIXES.get(family, {})
    return [name for name, prefix in prefixes.items() if not any(k.startswith(prefix) for k in keys)]


def _is_lora(keys: set[str]) -> bool:
    return any(_LORA.search(k) for k in keys)
