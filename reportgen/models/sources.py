"""Identify a model without loading its weights: where it is, its family, its content identity, its scheduler config.

Sources: `tiny` and the other tiny families (`tiny-sd2-v`, `tiny-sdxl`, `tiny-sd3`, `tiny-flux`,
`tiny-flux-schnell`: seeded models built from configs in code, for tests: models/tiny.py), `demo` (the small
trained model shipped in the package), a local diffusers folder, a single-file `.safetensors`/`.ckpt`
checkpoint, or a hub id through the standard Hugging Face cache. The family comes from the model itself
(models/families/detect.py). The planner needs only what `resolve_model` returns; models/loading.py loads
the weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reportgen.errors import ModelError
from reportgen.models.configs import FAMILY_SCHEDULERS, SD1_SCHEDULER, TINY_MODELS
from reportgen.models.families import adapter
from reportgen.models.families.detect import (
    check_text_encoders,
    checkpoint_family,
    checkpoint_keys,
    folder_family,
    lora_files,
    missing_text_encoders,
)

__all__ = ["SD1_SCHEDULER", "ModelInfo", "file_sha256", "resolve_model"]
DEMO_DIR = Path(__file__).parent.parent / "assets" / "demo-model"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w.-]+)?$")  # org/name, or org/name@revision
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
    family: str = "sd"  # a key of models.families.ADAPTERS
    variant: str = ""  # FLUX.1: dev or schnell

    @property
    def family_label(self) -> str:
        """The family as people name it: 'FLUX.1 dev', 'Stable Diffusion 1.x/2.x (v-prediction)'."""
        label = adapter(self.family).label + (f" {self.variant}" if self.variant else "")
        return label + (" (v-prediction)" if self.prediction == "v_prediction" else "")

    @property
    def prediction(self) -> str:
        """What the denoiser predicts: epsilon, v_prediction or flow."""
        return adapter(self.family).prediction(self.scheduler_config)

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
    if spec in TINY_MODELS:
        tiny = TINY_MODELS[spec]
        return ModelInfo(spec, "tiny", tiny.identity, scheduler_config=dict(tiny.scheduler), family=tiny.family,
                         variant=tiny.variant)
    if spec == "demo":
        if not (DEMO_DIR / "model_index.json").is_file():
            raise ModelError(f"the demo model is not installed ({DEMO_DIR} is missing)")
        return _folder_info(DEMO_DIR, spec, "demo")
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            if lora_files(path):
                raise ModelError(f"{path} holds a LoRA, which changes a model but is not one; give the model it "
                                 "was trained for as --model")
            raise ModelError(f"{path} is not a diffusers model folder (no model_index.json)")
        return _folder_info(path, spec, "folder")
    if path.suffix in (".safetensors", ".ckpt"):
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        return _single_file_info(spec, path, Path(config).expanduser() if config else None)
    if _HUB_ID.match(spec) and not spec.startswith((".", "/")) and not path.exists():
        return _hub_info(spec)
    raise ModelError(f"model not found: {spec!r} (expected {', '.join(TINY_MODELS)}, demo, a diffusers folder, "
                     "a .safetensors/.ckpt file or a hub id like org/name)")


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, cached by (path, size, mtime) so a multi-GB checkpoint is hashed once."""
    path = path.resolve()
    stat = path.stat()
    cache_file = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "reportgen" / "file-hashes.json"
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    from reportgen.schemas import HashCache, load_cache

    loaded = load_cache(cache_file, HashCache, "the checkpoint hash cache")
    cache = dict(loaded.root) if loaded is not None else {}
    if key in cache:
        return cache[key]
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


def _single_file_info(spec: str, path: Path, config: Path | None) -> ModelInfo:
    """A checkpoint file: its family from its keys; the scheduler config from --model-config, else the one its
    family's folders ship."""
    keys = checkpoint_keys(path)
    family, variant = checkpoint_family(path, keys)
    if config is not None:
        if not (config / "model_index.json").is_file():
            raise ModelError(f"--model-config {config} is not a diffusers model folder")
        _check_index(config)
        config_family, _ = folder_family(config)
        if config_family != family:
            raise ModelError(f"--model-config {config} is a {adapter(config_family).label} folder, but {path} is "
                             f"a {adapter(family).label} checkpoint")
        # what the file lacks comes from the folder (FLUX.1 files hold the transformer alone)
        needed = adapter(family).text_encoders
        check_text_encoders(config, family, None if family == "flux" else
                            [name for name in missing_text_encoders(family, keys) if name in needed])
    elif family == "flux":
        raise ModelError(f"{path} is a FLUX.1 checkpoint, which holds the transformer alone; pass --model-config "
                         "with a diffusers FLUX.1 folder for its text encoders and VAE")
    default = FAMILY_SCHEDULERS[(family, variant)]
    scheduler = _read_scheduler(config, default) if config else dict(default)
    return ModelInfo(spec, "single-file", "sha256:" + file_sha256(path), path=path, config=config,
                     scheduler_config=scheduler, family=family, variant=variant)


def _folder_info(path: Path, spec: str, kind: str) -> ModelInfo:
    family, variant, scheduler = _identify_folder(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
        relative = file.relative_to(path).as_posix()
        content = (file_sha256(file) if file.suffix in _WEIGHT_SUFFIXES
                   else hashlib.sha256(file.read_bytes()).hexdigest())
        digest.update(f"{relative}\0{content}\n".encode())
    return ModelInfo(spec, kind, "sha256:" + digest.hexdigest(), path=path, family=family, variant=variant,
                     scheduler_config=scheduler)


def _identify_folder(path: Path) -> tuple[str, str, dict[str, Any]]:
    """A diffusers folder's family, variant and scheduler config, each checked (the text encoders last)."""
    _check_index(path)
    family, variant = folder_family(path)
    scheduler = _read_scheduler(path, FAMILY_SCHEDULERS.get((family, variant), SD1_SCHEDULER))
    check_text_encoders(path, family)
    return family, variant, scheduler


def _read_scheduler(folder: Path, default: dict[str, Any] = SD1_SCHEDULER) -> dict[str, Any]:
    """The folder's scheduler config, checked against its schema (reportgen/schemas.py); `default` (the one its
    family ships) if absent."""
    from reportgen.schemas import SchedulerConfig, load_raw

    config = folder / "scheduler" / "scheduler_config.json"
    try:
        return load_raw(config, SchedulerConfig, ModelError, "not a scheduler config this model can use")
    except FileNotFoundError:
        return dict(default)


def _check_index(folder: Path) -> None:
    """Refuse a model folder whose model_index.json is not a pipeline's index (reportgen/schemas.py)."""
    from reportgen.schemas import ModelIndex, load_raw

    try:
        load_raw(folder / "model_index.json", ModelIndex, ModelError, "not a diffusers model index")
    except FileNotFoundError:
        raise ModelError(f"{folder} is not a diffusers model folder (no model_index.json)") from None


def _hub_info(spec: str) -> ModelInfo:
    """Resolve a hub id (`org/name`, or `org/name@revision` pinned to a commit, branch or tag) through the
    standard cache (downloading only when online and not cached)."""
    from diffusers import DiffusionPipeline

    repo_id, _, revision = spec.partition("@")
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    try:
        folder = Path(DiffusionPipeline.download(repo_id, revision=revision or None, local_files_only=offline))
    except Exception as exc:  # huggingface_hub raises many types here; each means "not available"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot find hub model {spec!r} (offline: {offline}): {first}") from None
    family, variant, scheduler = _identify_folder(folder)
    return ModelInfo(spec, "hub", f"hub:{repo_id}@{folder.name}", path=folder, family=family, variant=variant,
                     scheduler_config=scheduler)


TINY_NATIVE_SIZE = 64  # the tiny models are built for (and tested at) 64x64 or less


def native_size(info: ModelInfo) -> int | None:
    """The image side the model was built for (its UNet's sample size times its VAE's downsampling), read from
    its configs; None where they are not at hand (a single file without --model-config)."""
    if info.kind == "tiny":
        return TINY_NATIVE_SIZE
    folder = info.config if info.kind == "single-file" else info.path
    if folder is None:
        return None
    from reportgen.schemas import FileProblem, UNetConfig, VAEConfig, read_json, validate

    try:
        unet = validate(UNetConfig, read_json(folder / "unet" / "config.json"))
        vae = validate(VAEConfig, read_json(folder / "vae" / "config.json"))
    except (OSError, FileProblem):
        return None  # another architecture, or configs we cannot read: no size to compare with
    side = unet.sample_size[0] if isinstance(unet.sample_size, list) else unet.sample_size
    return side * 2 ** (len(vae.block_out_channels) - 1)
