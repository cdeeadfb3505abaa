"""What every family adapter says: its static facts (no torch needed) and how its pipeline runs, in pieces.

An adapter mirrors, step for step, what its family's diffusers pipeline does for one image, split into the pieces
a batched loop needs (render/batched.py): encode a prompt pair once, start a lane (timesteps, initial noise, step
arguments), one denoiser call for the rows of many lanes with one timestep per row, each lane's guidance, decode.
The tensors are torch tensors; torch is imported inside the methods, so planning never loads it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from reportgen.samplers import Sampler


@dataclass
class Conditioning:
    """One prompt's encoder outputs for one row (or, after `cat`, for the rows of one denoiser call).

    `rows` have one row each on dim 0 and are concatenated across rows; `shared` are the same for every row of a
    call (Flux's `txt_ids`) and are taken once."""

    rows: dict[str, Any]
    shared: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def cat(items: list[Conditioning]) -> Conditioning:
        """The rows of several prompts, in order, as one batch; their shared tensors must agree in shape."""
        import torch

        first = items[0]
        for other in items[1:]:
            for key, value in first.shared.items():
                if other.shared[key].shape != value.shape:
                    raise ValueError(f"rows of one call disagree on {key!r}: {tuple(value.shape)} and "
                                     f"{tuple(other.shared[key].shape)}")
        return Conditioning({k: torch.cat([c.rows[k] for c in items]) for k in first.rows}, dict(first.shared))

    def pad(self, rows: int) -> Conditioning:
        """The same rows with rows of zeros appended up to `rows` (for calls of a fixed size)."""
        return Conditioning({k: pad_rows(v, rows) for k, v in self.rows.items()}, self.shared)

    def slice(self, start: int, stop: int) -> Conditioning:
        """Rows `start` to `stop`."""
        return Conditioning({k: v[start:stop] for k, v in self.rows.items()}, self.shared)


def pad_rows(tensor: Any, rows: int) -> Any:
    """`tensor` with rows of zeros appended up to `rows` (None stays None)."""
    if tensor is None or tensor.shape[0] == rows:
        return tensor
    import torch

    return torch.cat([tensor, tensor.new_zeros((rows - tensor.shape[0], *tensor.shape[1:]))])


def calculate_shift(image_seq_len: int, base_seq_len: int, max_seq_len: int, base_shift: float,
                    max_shift: float) -> float:
    """The dynamic-shifting `mu` for an image of `image_seq_len` tokens, as diffusers' Flux and SD3 pipelines
    compute it (`calculate_shift`, the same function in both)."""
    m = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return image_seq_len * m + (base_shift - m * base_seq_len)


class FamilyAdapter:
    """A model family: its pipeline class and denoiser, which samplers it takes, and its pipeline in pieces."""

    name = ""
    label = ""
    pipeline_class = ""
    denoiser_attr = "unet"
    flow = False
    text_encoders: tuple[str, ...] = ("text_encoder",)  # components it cannot run without
    reference_sampler = "k_heun"  # study.toml's reference_sampler when it names none
    default_sampler = "k_lms"  # `image`, `preview` and `polish` without -A/--sampler
    rows_per_lane = 2  # rows a lane takes in a denoiser call at most: a CFG pair
    half_dtype = "float16"  # the GPU dtype where --dtype names none

    # -- static facts ------------------------------------------------------------------------------
    def prediction(self, scheduler_config: dict[str, Any]) -> str:
        """What the denoiser predicts: epsilon or v_prediction (from the shipped scheduler config), or flow."""
        return "flow" if self.flow else str(scheduler_config.get("prediction_type") or "epsilon")

    def refuses(self, sampler: Sampler, scheduler_config: dict[str, Any]) -> str | None:
        """Why this family's pipeline cannot run `sampler` on a model with this scheduler config, or None."""
        prediction = self.prediction(scheduler_config)
        if prediction not in sampler.predictions:
            kinds = " and ".join(sampler.predictions)
            return f"{sampler.name} serves {kinds} models, and this one is {prediction}"
        return None

    # -- the loaded pipeline -----------------------------------------------------------------------
    def denoiser(self, pipe: Any) -> Any:
        """The pipeline's denoiser (its UNet or transformer)."""
        return getattr(pipe, self.denoiser_attr)

    def set_denoiser(self, pipe: Any, module: Any) -> None:
        """Replace the pipeline's denoiser (by a compiled one)."""
        setattr(pipe, self.denoiser_attr, module)

    def pipeline_kwargs(self, text: str, negative: str) -> dict[str, Any]:
        """The prompt arguments of the pipeline's own call for one image."""
        return {"prompt": text, "negative_prompt": negative or None}

    # -- a lane --------------------------------------------------------------------------------------
    def guided(self, pipe: Any, cfg: float) -> bool:
        """Whether a lane at this CFG scale needs an unconditional row (the pipeline's do_classifier_free_guidance)."""
        return cfg > 1

    def guidance_row(self, pipe: Any, cfg: float, dtype: Any) -> Any:
        """A lane's row of the denoiser's guidance input (a guidance-distilled model), on the CPU, else None."""
        return None

    def encode(self, pipe: Any, text: str, negative: str, guided: bool) -> tuple[Conditioning, Conditioning | None]:
        """The prompt's conditional row and, when guided, the negative prompt's unconditional row."""
        raise NotImplementedError

    def timesteps(self, pipe: Any, scheduler: Any, steps: int, width: int, height: int) -> Any:
        """Set the lane's scheduler as the pipeline's retrieve_timesteps sets it, but on the CPU; its timesteps."""
        scheduler.set_timesteps(steps, device="cpu")
        return scheduler.timesteps

    def initial_latents(self, pipe: Any, scheduler: Any, width: int, height: int, generator: Any, dtype: Any) -> Any:
        """The initial noise exactly as the pipeline's prepare_latents draws it with a CPU generator (on the CPU)."""
        from diffusers.utils.torch_utils import randn_tensor

        shape = (1, self.denoiser(pipe).config.in_channels, height // pipe.vae_scale_factor,
                 width // pipe.vae_scale_factor)
        return randn_tensor(shape, generator=generator, dtype=dtype) * scheduler.init_noise_sigma

    def model_input(self, scheduler: Any, latents: Any, t: Any) -> Any:
        """A lane's denoiser input at timestep `t`."""
        return scheduler.scale_model_input(latents, t)

    def step_kwargs(self, scheduler: Any, generator: Any) -> dict[str, Any]:
        """The extra arguments the pipeline passes to `scheduler.step`: eta 0 and the generator, where taken."""
        parameters = set(inspect.signature(scheduler.step).parameters)
        kwargs: dict[str, Any] = {}
        if "eta" in parameters:
            kwargs["eta"] = 0.0  # the pipeline's default
        if "generator" in parameters:
            kwargs["generator"] = generator
        return kwargs

    def timestep_rows(self, timesteps: Any, dtype: Any) -> Any:
        """A lane's rows of the denoiser's per-sample timestep tensor, one per timestep (float32, as the
        denoisers' time embeddings cast them)."""
        import torch

        return timesteps.to(torch.float32)

    # -- one denoiser call ---------------------------------------------------------------------------
    def size_inputs(self, pipe: Any, height: int, width: int, dtype: Any, device: Any) -> dict[str, Any]:
        """Denoiser inputs that depend only on the image size, the same for every row (made once per size)."""
        return {}

    def denoise(self, pipe: Any, sample: Any, timestep: Any, cond: Conditioning, guidance: Any,
                fixed: dict[str, Any]) -> Any:
        """One denoiser call for all rows: `sample` and `timestep` with one row each, `cond` with as many rows,
        `guidance` rows or None, `fixed` from size_inputs. Returns the model output, one row per row."""
        raise NotImplementedError

    def guide(self, uncond: Any, cond: Any, cfg: float) -> Any:
        """Classifier-free guidance, as every pipeline here writes it."""
        return uncond + cfg * (cond - uncond)

    # -- output -------------------------------------------------------------------------------------
    def to_spatial(self, pipe: Any, latents: Any, width: int, height: int) -> Any:
        """The denoiser's latents (as the pipeline returns them with output_type='latent') as (B, C, h, w)."""
        return latents

    def decode(self, pipe: Any, latents: Any) -> Any:
        """Spatial latents to images (B, 3, H, W) in [0, 1], exactly as the pipeline decodes them."""
        vae = pipe.vae
        images = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
        return pipe.image_processor.postprocess(images, output_type="pt", do_denormalize=[True] * len(images))
