"""Find and load a Stable Diffusion pipeline from one of four sources.

`tiny` (a seeded model built from configs in code, for tests), `demo` (the small trained model shipped
in the package), a local diffusers folder, a single-file `.safetensors`/`.ckpt` checkpoint, or a hub id
through the standard Hugging Face cache. `resolve_model` identifies a model without loading its weights
(the planner needs only its identity and scheduler config); `load_pipeline` loads it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from reportgen.errors import ModelError

# Stable Diffusion 1.x's scheduler config, as its model folders ship it.
SD1_SCHEDULER: dict[str, Any] = {
    "_class_name": "PNDMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "trained_betas": None,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "clip_sample": False,
}
TINY_VERSION = "reportgen-tiny-v1"
DEMO_DIR = Path(__file__).parent / "assets" / "demo-model"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".bin", ".pt", ".pth")


@dataclass(frozen=True)
class ModelInfo:
    """A model identified without loading it: where it is, its content identity, its scheduler config."""

    spec: str
    kind: str  # tiny | demo | folder | single-file | hub
    identity: str
    path: Path | None = None
    config: Path | None = None
    scheduler_config: dict[str, Any] = field(default_factory=dict)

    @property
    def short_hash(self) -> str:
        """The first 10 hex digits of the identity, as the common UIs print a 'Model hash'."""
        if self.identity.startswith("sha256:"):
            return self.identity[7:17]
        return hashlib.sha256(self.identity.encode()).hexdigest()[:10]

    @property
    def label(self) -> str:
        """A short human name for captions."""
        return self.spec if self.kind in ("tiny", "demo", "hub") else Path(self.spec).name


def resolve_model(spec: str, config: str | Path | None = None) -> ModelInfo:
    """Identify `spec` (tiny, demo, a folder, a checkpoint file or a hub id) without loading weights."""
    if spec == "tiny":
        return ModelInfo(spec, "tiny", TINY_VERSION, scheduler_config=dict(SD1_SCHEDULER))
    if spec == "demo":
        if not (DEMO_DIR / "model_index.json").is_file():
            raise ModelError(f"the demo model is not installed ({DEMO_DIR} is missing)")
        return _folder_info(DEMO_DIR, spec, "demo")
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelError(f"{path} is not a diffusers model folder (no model_index.json)")
        return _folder_info(path, spec, "folder")
    if path.suffix in (".safetensors", ".ckpt"):
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        config_path = Path(config).expanduser() if config else None
        if config_path is not None and not (config_path / "model_index.json").is_file():
            raise ModelError(f"--model-config {config_path} is not a diffusers model folder")
        scheduler = _read_scheduler(config_path) if config_path else dict(SD1_SCHEDULER)
        return ModelInfo(spec, "single-file", "sha256:" + file_sha256(path), path=path, config=config_path,
                         scheduler_config=scheduler)
    if _HUB_ID.match(spec) and not spec.startswith((".", "/")) and not path.exists():
        return _hub_info(spec)
    raise ModelError(f"model not found: {spec!r} (expected tiny, demo, a diffusers folder, "
                     "a .safetensors/.ckpt file or a hub id like org/name)")


def pick_device(device: str | None = None, dtype: str | None = None) -> tuple[str, str]:
    """Choose (device, dtype): CUDA with float16 when present, else CPU with float32; both overridable."""
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} asked for, but CUDA is not available")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ModelError(f"device {device!r} asked for, but MPS is not available")
    if device not in ("cpu", "mps") and not device.startswith("cuda"):
        raise ModelError(f"unknown device {device!r} (use cpu, cuda, cuda:N or mps)")
    if dtype is None:
        dtype = "float32" if device == "cpu" else "float16"
    if dtype not in ("float32", "float16", "bfloat16"):
        raise ModelError(f"unknown dtype {dtype!r} (use float32, float16 or bfloat16)")
    return device, dtype


def load_pipeline(info: ModelInfo, device: str = "cpu", dtype: str = "float32") -> Any:
    """Load the model as a diffusers StableDiffusionPipeline on `device` in `dtype`."""
    import torch
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    # diffusers logs a failed load before raising it, and we report that failure ourselves, in one line
    diffusers_logging.set_verbosity(diffusers_logging.CRITICAL)
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    torch_dtype = getattr(torch, dtype)
    try:
        if info.kind == "tiny":
            pipe = build_tiny_pipeline()
        elif info.kind == "single-file":
            kwargs: dict[str, Any] = {"local_files_only": True}
            if info.config is not None:
                kwargs["config"] = str(info.config)
            pipe = StableDiffusionPipeline.from_single_file(str(info.path), **kwargs)
        else:
            assert info.path is not None
            pipe = StableDiffusionPipeline.from_pretrained(info.path, local_files_only=True, safety_checker=None,
                                                           requires_safety_checker=False)
        _check_tokenizer(pipe.tokenizer)
    except Exception as exc:  # third-party code reading third-party files fails in many ways; each means "cannot load"
        if info.kind == "single-file" and info.config is None:
            raise ModelError(_single_file_hint(info)) from None
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot load model {info.spec!r}: {message}") from None
    pipe.safety_checker = None
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device=device, dtype=torch_dtype)


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


@lru_cache(maxsize=1)
def tiny_components() -> dict[str, Any]:
    """The tiny model's parts, built from configs with seeded weights (about 1M parameters)."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = byte_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        # diffusers' models are torch modules at run time, but its stubs hide nn.Module's methods (eval)
        unet: Any = UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8,
        )
        vae: Any = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, block_out_channels=(8, 16, 16, 16),
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            norm_num_groups=8, sample_size=64,
        )
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_attention_heads=4,
            num_hidden_layers=2, max_position_embeddings=77, projection_dim=32,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ))
    return {"unet": unet.eval(), "vae": vae.eval(), "text_encoder": text_encoder.eval(), "tokenizer": tokenizer,
            "scheduler": PNDMScheduler.from_config(SD1_SCHEDULER)}


def build_tiny_pipeline() -> Any:
    """A fresh StableDiffusionPipeline around copies of the tiny model's seeded parts."""
    import copy

    from diffusers import StableDiffusionPipeline

    parts = tiny_components()
    return StableDiffusionPipeline(
        vae=copy.deepcopy(parts["vae"]), text_encoder=copy.deepcopy(parts["text_encoder"]),
        unet=copy.deepcopy(parts["unet"]), tokenizer=parts["tokenizer"], scheduler=copy.deepcopy(parts["scheduler"]),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def byte_tokenizer(words: tuple[str, ...] = ()) -> Any:
    """A CLIP tokenizer whose vocabulary is generated: the 256 byte symbols, their end-of-word forms,
    optional whole `words`, and the two special tokens. Any text tokenizes; no file is needed."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    symbols = sorted(ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for token in [*symbols, *(s + "</w>" for s in symbols)]:
        vocab.setdefault(token, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in words:  # merge left to right so each listed word becomes one token
        pieces = list(word)
        pieces[-1] += "</w>"
        while len(pieces) > 1:
            merges.append((pieces[0], pieces[1]))
            pieces = [pieces[0] + pieces[1], *pieces[2:]]
            vocab.setdefault(pieces[0], len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    # tokenizers' BPE takes (a, b) pairs, as here; transformers annotates merges as "a b" lines
    unique_merges: Any = list(dict.fromkeys(merges))
    return CLIPTokenizer(vocab=vocab, merges=unique_merges, model_max_length=77)


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, cached by (path, size, mtime) so a multi-GB checkpoint is hashed once."""
    path = path.resolve()
    stat = path.stat()
    cache_file = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "reportgen" / "file-hashes.json"
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return str(cache[key])
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    cache[key] = digest.hexdigest()
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache))
        os.replace(tmp, cache_file)
    except OSError:
        pass  # a hash cache that cannot be written only costs time
    return digest.hexdigest()


def _folder_info(path: Path, spec: str, kind: str) -> ModelInfo:
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
        relative = file.relative_to(path).as_posix()
        content = (file_sha256(file) if file.suffix in _WEIGHT_SUFFIXES
                   else hashlib.sha256(file.read_bytes()).hexdigest())
        digest.update(f"{relative}\0{content}\n".encode())
    return ModelInfo(spec, kind, "sha256:" + digest.hexdigest(), path=path, scheduler_config=_read_scheduler(path))


def _read_scheduler(folder: Path) -> dict[str, Any]:
    config = folder / "scheduler" / "scheduler_config.json"
    try:
        return dict(json.loads(config.read_text()))
    except FileNotFoundError:
        return dict(SD1_SCHEDULER)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{config}: unreadable scheduler config: {exc}") from None


def _hub_info(repo_id: str) -> ModelInfo:
    """Resolve a hub id through the standard cache (downloading only when online and not cached)."""
    from diffusers import DiffusionPipeline

    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    try:
        folder = Path(DiffusionPipeline.download(repo_id, local_files_only=offline))
    except Exception as exc:  # huggingface_hub raises many types here; each means "not available"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot find hub model {repo_id!r} (offline: {offline}): {first}") from None
    return ModelInfo(repo_id, "hub", f"hub:{repo_id}@{folder.name}", path=folder,
                     scheduler_config=_read_scheduler(folder))
