"""Load an identified model as a diffusers pipeline on a device and dtype."""

from __future__ import annotations

import os
import sys
from typing import Any

from reportgen.errors import ModelError
from reportgen.models.families import adapter
from reportgen.models.families.detect import checkpoint_keys, missing_text_encoders
from reportgen.models.sources import ModelInfo
from reportgen.models.tiny import build_tiny


def pick_device(device: str | None = None, dtype: str | None = None, half: str = "float16") -> tuple[str, str]:
    """Choose (device, dtype): CUDA with `half` (the model family's: float16, bfloat16 for SD3 and FLUX.1) when
    present, else CPU with float32; both overridable.

    torch is imported only to look for a GPU (no device given, or a GPU asked for): `--device cpu` needs none,
    and neither does a Linux machine without the device files every GPU driver torch can use creates."""
    if device is not None and device not in ("cpu", "mps") and not device.startswith("cuda"):
        raise ModelError(f"unknown device {device!r} (use cpu, cuda, cuda:N or mps)")
    if device is None and not gpu_driver_present():
        device = "cpu"
    if device != "cpu":
        import torch

        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ModelError(f"device {device!r} asked for, but CUDA is not available")
        if device == "mps" and not torch.backends.mps.is_available():
            raise ModelError(f"device {device!r} asked for, but MPS is not available")
    if dtype is None:
        dtype = "float32" if device == "cpu" else half
    if dtype not in ("float32", "float16", "bfloat16"):
        raise ModelError(f"unknown dtype {dtype!r} (use float32, float16 or bfloat16)")
    return device, dtype



# NVIDIA's driver (/dev/nvidiactl), ROCm's (/dev/kfd, which torch.cuda also serves) and WSL's GPU bridge (/dev/dxg)
GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg")


def gpu_driver_present() -> bool:
    """False only where torch.cuda cannot be available: Linux with none of the GPU drivers' device files."""
    return not sys.platform.startswith("linux") or any(os.path.exists(path) for path in GPU_DEVICE_FILES)


def load_pipeline(info: ModelInfo, device: str = "cpu", dtype: str = "float32") -> Any:
    """Load the model as its family's diffusers pipeline on `device` in `dtype`."""
    import torch
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    # diffusers logs a failed load before raising it, and we report that failure ourselves, in one line
    diffusers_logging.set_verbosity(diffusers_logging.CRITICAL)
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    torch_dtype = getattr(torch, dtype)
    try:
        if info.kind == "tiny":
            pipe = build_tiny(info.spec)
        elif info.kind == "single-file":
            pipe = _from_single_file(info)
        else:
            assert info.path is not None
            pipe = _pipeline_class(info).from_pretrained(info.path, local_files_only=True, **_options(info))
        for name, component in pipe.components.items():
            if name.startswith("tokenizer") and component is not None:
                _check_tokenizer(component)
    except Exception as exc:  # third-party code reading third-party files fails in many ways; each means "cannot load"
        if info.kind == "single-file" and info.config is None:
            raise ModelError(_single_file_hint(info)) from None
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot load model {info.spec!r}: {message}") from None
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()  # diffusers' single-file T5 (SD3) is left in training mode: its dropout would be on
    if hasattr(pipe, "safety_checker"):
        pipe.safety_checker = None
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device=device, dtype=torch_dtype)


def _pipeline_class(info: ModelInfo) -> Any:
    import diffusers

    return getattr(diffusers, adapter(info.family).pipeline_class)


def _options(info: ModelInfo) -> dict[str, Any]:
    """What reportgen turns off when loading: SD's safety checker, SDXL's invisible watermark (neither touches
    latents, which is all reportgen takes from the pipeline)."""
    if info.family == "sd":
        return {"safety_checker": None, "requires_safety_checker": False}
    if info.family == "sdxl":
        return {"add_watermarker": False}
    return {}


def _from_single_file(info: ModelInfo) -> Any:
    """The family's `from_single_file`, with the text encoders the file lacks loaded from --model-config (diffusers
    looks for those in the config folder's model weights only, and fails). FLUX.1 files hold the transformer alone:
    FluxTransformer2DModel.from_single_file, everything else from --model-config."""
    import transformers

    assert info.path is not None
    kwargs: dict[str, Any] = {"local_files_only": True, **_options(info)}
    if info.config is not None:
        kwargs["config"] = str(info.config)
    if info.family == "flux":
        import diffusers

        assert info.config is not None  # resolve_model asks for it
        transformer = diffusers.FluxTransformer2DModel.from_single_file(
            str(info.path), config=str(info.config), subfolder="transformer", local_files_only=True)
        return diffusers.FluxPipeline.from_pretrained(info.config, transformer=transformer, local_files_only=True)
    if info.config is not None:
        import json

        index = json.loads((info.config / "model_index.json").read_text(encoding="utf-8"))
        for name in missing_text_encoders(info.family, checkpoint_keys(info.path)):
            entry = index.get(name)
            if isinstance(entry, list) and len(entry) == 2 and entry[1]:
                kwargs[name] = getattr(transformers, entry[1]).from_pretrained(info.config, subfolder=name,
                                                                              local_files_only=True)
    return _pipeline_class(info).from_single_file(str(info.path), **kwargs)


def _check_tokenizer(tokenizer: Any) -> None:
    """Refuse a tokenizer with no vocabulary: transformers makes one, without error, from a missing tokenizer/."""
    if tokenizer is None or tokenizer.vocab_size <= len(tokenizer.all_special_tokens):
        raise ValueError("it has no usable tokenizer (is its tokenizer folder missing or empty?)")



def _single_file_hint(info: ModelInfo) -> str:
    """Why a checkpoint without --model-config failed: diffusers needs its architecture's configs."""
    try:
        from diffusers.loaders.single_file_utils import fetch_diffusers_config, load_single_file_checkpoint

        repo = fetch_diffusers_config(load_single_file_checkpoint(str(info.path)))["pretrained_model_name_or_path"]
    except Exception:  # a checkpoint diffusers cannot even classify
        return (f"cannot load {info.spec!r}: diffusers does not recognise it as a Stable Diffusion checkpoint; "
                "pass --model-config with a diffusers folder of the same architecture")
    return (f"cannot load {info.spec!r}: a single-file checkpoint needs its model configs, which diffusers takes "
            f"from the hub repo {repo!r}, not in the local cache; pass --model-config with a diffusers folder "
            "of the same architecture, or run once online")
