"""The flow-matching families: SD3/SD3.5 (MMDiT on CLIP-L, CLIP-G and T5) and FLUX.1 (packed latents, position
ids; `dev` guidance-distilled, `schnell` not).

Mirrors diffusers 0.42.1's `StableDiffusion3Pipeline.__call__` and `FluxPipeline.__call__` (pipelines/
stable_diffusion_3/, pipelines/flux/). Both differ from the SD pipelines in the same places: no
`scale_model_input`, no `init_noise_sigma`, nothing but (output, t, latents) passed to `scheduler.step`.
"""

from __future__ import annotations

from typing import Any

from reportgen.models.families.base import Conditioning, FamilyAdapter, calculate_shift
from reportgen.samplers import Sampler


class FlowAdapter(FamilyAdapter):
    """What SD3 and FLUX.1 share."""

    denoiser_attr = "transformer"
    flow = True
    reference_sampler = "flow_heun"
    default_sampler = "flow_euler"
    half_dtype = "bfloat16"  # as both ship and run: their T5 and activations overflow float16

    def initial_latents(self, pipe: Any, scheduler: Any, width: int, height: int, generator: Any, dtype: Any) -> Any:
        """prepare_latents' draw; neither pipeline multiplies by init_noise_sigma (1.0 for flow schedulers anyway)."""
        from diffusers.utils.torch_utils import randn_tensor

        return randn_tensor(self.latent_shape(pipe, width, height), generator=generator, dtype=dtype)

    def latent_shape(self, pipe: Any, width: int, height: int) -> tuple[int, int, int, int]:
        """The shape prepare_latents draws for one image."""
        channels = pipe.transformer.config.in_channels
        return (1, channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)

    def model_input(self, scheduler: Any, latents: Any, t: Any) -> Any:
        """The latents as they are: neither pipeline calls scale_model_input."""
        return latents

    def step_kwargs(self, scheduler: Any, generator: Any) -> dict[str, Any]:
        """Nothing: both pipelines call scheduler.step(noise_pred, t, latents)."""
        return {}

    def decode(self, pipe: Any, latents: Any) -> Any:
        """As both pipelines decode: latents / scaling_factor + shift_factor."""
        vae = pipe.vae
        latents = latents / vae.config.scaling_factor + vae.config.shift_factor
        images = vae.decode(latents.to(vae.dtype), return_dict=False)[0]
        return pipe.image_processor.postprocess(images, output_type="pt", do_denormalize=[True] * len(images))


class StableDiffusion3Adapter(FlowAdapter):
    """SD3 and SD3.5: CFG with a negative prompt; the model's static shift, or dynamic shifting where its
    scheduler config asks for it."""

    name = "sd3"
    label = "Stable Diffusion 3"
    pipeline_class = "StableDiffusion3Pipeline"
    # The T5 (text_encoder_3) is optional: diffusers' pipeline runs without it (zeros in its place).
    text_encoders = ("text_encoder", "text_encoder_2")

    def encode(self, pipe: Any, text: str, negative: str, guided: bool) -> tuple[Conditioning, Conditioning | None]:
        """encode_prompt as the pipeline calls it (max_sequence_length 256, its default)."""
        embeds, negative_embeds, pooled, negative_pooled = pipe.encode_prompt(
            text, None, None, device=pipe._execution_device, do_classifier_free_guidance=guided,
            negative_prompt=negative or None)
        cond = Conditioning({"encoder_hidden_states": embeds, "pooled_projections": pooled})
        uncond = (Conditioning({"encoder_hidden_states": negative_embeds, "pooled_projections": negative_pooled})
                  if guided else None)
        return cond, uncond

    def timesteps(self, pipe: Any, scheduler: Any, steps: int, width: int, height: int) -> Any:
        """No sigmas (the scheduler's own spacing); `mu` only where the scheduler's config has
        use_dynamic_shifting (SD3 and SD3.5 ship a static shift)."""
        kwargs: dict[str, Any] = {}
        config = scheduler.config
        if config.get("use_dynamic_shifting", None):
            patch = pipe.transformer.config.patch_size
            tokens = (height // pipe.vae_scale_factor // patch) * (width // pipe.vae_scale_factor // patch)
            kwargs["mu"] = calculate_shift(tokens, config.get("base_image_seq_len", 256),
                                           config.get("max_image_seq_len", 4096), config.get("base_shift", 0.5),
                                           config.get("max_shift", 1.16))
        scheduler.set_timesteps(steps, device="cpu", **kwargs)
        return scheduler.timesteps

    def denoise(self, pipe: Any, sample: Any, timestep: Any, cond: Conditioning, guidance: Any,
                fixed: dict[str, Any]) -> Any:
        """The MMDiT on all rows."""
        return pipe.transformer(hidden_states=sample, timestep=timestep,
                                encoder_hidden_states=cond.rows["encoder_hidden_states"],
                                pooled_projections=cond.rows["pooled_projections"], return_dict=False)[0]


class FluxAdapter(FlowAdapter):
    """FLUX.1: dev takes `-C` as its guidance embedding (one call per step, no unconditional row); schnell has
    none and ignores it. Negative prompts are ignored, as FluxPipeline ignores them without true CFG."""

    name = "flux"
    label = "FLUX.1"
    pipeline_class = "FluxPipeline"
    text_encoders = ("text_encoder", "text_encoder_2")
    reference_sampler = "flow_unipc"  # FluxPipeline cannot run flow Heun (refuses() says why)
    rows_per_lane = 1

    def refuses(self, sampler: Sampler, scheduler_config: dict[str, Any]) -> str | None:
        """What FluxPipeline cannot run: it always passes its own sigmas and a `mu`."""
        reason = super().refuses(sampler, scheduler_config)
        if reason is not None:
            return reason
        if sampler.scheduler == "FlowMatchHeunDiscreteScheduler":
            return ("FluxPipeline passes its own sigmas, which FlowMatchHeunDiscreteScheduler.set_timesteps does "
                    "not take")
        if sampler.scheduler == "DPMSolverMultistepScheduler" and not scheduler_config.get("use_dynamic_shifting"):
            return ("FluxPipeline always passes mu, which DPMSolverMultistepScheduler takes only with dynamic "
                    "shifting, and this model's scheduler config has none")
        return None

    def pipeline_kwargs(self, text: str, negative: str) -> dict[str, Any]:
        """The prompt only: without true CFG, FluxPipeline does not use a negative prompt."""
        return {"prompt": text}

    def guided(self, pipe: Any, cfg: float) -> bool:
        """Never: dev is guidance-distilled (CFG is an input), schnell takes none."""
        return False

    def guidance_row(self, pipe: Any, cfg: float, dtype: Any) -> Any:
        """dev: the CFG scale as the guidance embedding's input, float32 as the pipeline makes it; schnell: None."""
        if not pipe.transformer.config.guidance_embeds:
            return None
        import torch

        return torch.full([1], cfg, dtype=torch.float32)

    def encode(self, pipe: Any, text: str, negative: str, guided: bool) -> tuple[Conditioning, Conditioning | None]:
        """encode_prompt as the pipeline calls it (max_sequence_length 512); `txt_ids` shared by all rows."""
        embeds, pooled, text_ids = pipe.encode_prompt(text, None, device=pipe._execution_device)
        return Conditioning({"encoder_hidden_states": embeds, "pooled_projections": pooled},
                            {"txt_ids": text_ids}), None

    def latent_shape(self, pipe: Any, width: int, height: int) -> tuple[int, int, int, int]:
        """prepare_latents' shape before packing: 16 channels, sides rounded down to even latent sizes."""
        factor = pipe.vae_scale_factor * 2
        return (1, pipe.transformer.config.in_channels // 4, 2 * (height // factor), 2 * (width // factor))

    def initial_latents(self, pipe: Any, scheduler: Any, width: int, height: int, generator: Any, dtype: Any) -> Any:
        """prepare_latents' draw, packed into 2x2 patches."""
        latents = super().initial_latents(pipe, scheduler, width, height, generator, dtype)
        _, channels, h, w = latents.shape
        return pipe._pack_latents(latents, 1, channels, h, w)

    def timesteps(self, pipe: Any, scheduler: Any, steps: int, width: int, height: int) -> Any:
        """sigmas = linspace(1, 1/n, n) unless the scheduler has use_flow_sigmas; `mu` from the image's token count
        passed always; then set_begin_index(0)."""
        import numpy as np

        config = scheduler.config
        _, _, h, w = self.latent_shape(pipe, width, height)
        mu = calculate_shift((h // 2) * (w // 2), config.get("base_image_seq_len", 256),
                             config.get("max_image_seq_len", 4096), config.get("base_shift", 0.5),
                             config.get("max_shift", 1.15))
        if getattr(config, "use_flow_sigmas", False):
            scheduler.set_timesteps(steps, device="cpu", mu=mu)
        else:
            scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), device="cpu", mu=mu)
        scheduler.set_begin_index(0)
        return scheduler.timesteps

    def timestep_rows(self, timesteps: Any, dtype: Any) -> Any:
        """t.to(latents' dtype) / 1000, as the pipeline feeds them (the transformer multiplies by 1000 again)."""
        return timesteps.to(dtype) / 1000

    def size_inputs(self, pipe: Any, height: int, width: int, dtype: Any, device: Any) -> dict[str, Any]:
        """The latent image's position ids (`img_ids`), shared by every row."""
        _, _, h, w = self.latent_shape(pipe, width, height)
        return {"img_ids": pipe._prepare_latent_image_ids(1, h // 2, w // 2, device, dtype)}

    def denoise(self, pipe: Any, sample: Any, timestep: Any, cond: Conditioning, guidance: Any,
                fixed: dict[str, Any]) -> Any:
        """The transformer on all rows, each with its own timestep and (dev) guidance value."""
        return pipe.transformer(hidden_states=sample, timestep=timestep, guidance=guidance,
                                pooled_projections=cond.rows["pooled_projections"],
                                encoder_hidden_states=cond.rows["encoder_hidden_states"],
                                txt_ids=cond.shared["txt_ids"], img_ids=fixed["img_ids"], return_dict=False)[0]

    def to_spatial(self, pipe: Any, latents: Any, width: int, height: int) -> Any:
        """Packed latents (B, tokens, 64) unpacked to (B, 16, h, w), as the pipeline does before decoding."""
        return pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor)
