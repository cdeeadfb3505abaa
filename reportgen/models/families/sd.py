"""Stable Diffusion 1.x/2.x and SDXL base: a UNet on CLIP text, epsilon or v prediction.

Mirrors diffusers 0.42.1's `StableDiffusionPipeline.__call__` and `StableDiffusionXLPipeline.__call__`
(pipelines/stable_diffusion/, pipelines/stable_diffusion_xl/). v prediction needs nothing of its own: every
scheduler takes `prediction_type` from the model's config and converts the model's output itself.
"""

from __future__ import annotations

from typing import Any

from reportgen.models.families.base import Conditioning, FamilyAdapter


class StableDiffusionAdapter(FamilyAdapter):
    """SD 1.x and 2.x (768-v included): one CLIP text encoder, `encoder_hidden_states` per row."""

    name = "sd"
    label = "Stable Diffusion 1.x/2.x"
    pipeline_class = "StableDiffusionPipeline"

    def guided(self, pipe: Any, cfg: float) -> bool:
        """CFG above 1, unless the UNet takes the guidance scale as an embedding (time_cond_proj_dim)."""
        return cfg > 1 and pipe.unet.config.time_cond_proj_dim is None

    def guidance_row(self, pipe: Any, cfg: float, dtype: Any) -> Any:
        """The guidance-scale embedding row of a UNet with time_cond_proj_dim (LCM-style), else None."""
        dim = pipe.unet.config.time_cond_proj_dim
        if dim is None:
            return None
        import torch

        return pipe.get_guidance_scale_embedding(torch.tensor([cfg - 1.0]), embedding_dim=dim).to(dtype=dtype)

    def encode(self, pipe: Any, text: str, negative: str, guided: bool) -> tuple[Conditioning, Conditioning | None]:
        """encode_prompt as the pipeline calls it (an empty negative prompt encodes "")."""
        positive, negative_embeds = pipe.encode_prompt(text, pipe._execution_device, 1, guided, negative or None)
        uncond = Conditioning({"encoder_hidden_states": negative_embeds}) if guided else None
        return Conditioning({"encoder_hidden_states": positive}), uncond

    def denoise(self, pipe: Any, sample: Any, timestep: Any, cond: Conditioning, guidance: Any,
                fixed: dict[str, Any]) -> Any:
        """The UNet on all rows."""
        return pipe.unet(sample, timestep, encoder_hidden_states=cond.rows["encoder_hidden_states"],
                         timestep_cond=guidance, return_dict=False)[0]


class StableDiffusionXLAdapter(StableDiffusionAdapter):
    """SDXL base: two CLIP text encoders (the second's pooled output per row) and the size as `add_time_ids`."""

    name = "sdxl"
    label = "Stable Diffusion XL"
    pipeline_class = "StableDiffusionXLPipeline"
    text_encoders = ("text_encoder", "text_encoder_2")

    def encode(self, pipe: Any, text: str, negative: str, guided: bool) -> tuple[Conditioning, Conditioning | None]:
        """encode_prompt as the pipeline calls it: no negative prompt gives zeros where the model says
        force_zeros_for_empty_prompt (SDXL base does)."""
        embeds, negative_embeds, pooled, negative_pooled = pipe.encode_prompt(
            text, None, pipe._execution_device, 1, guided, negative or None)
        cond = Conditioning({"encoder_hidden_states": embeds, "text_embeds": pooled})
        uncond = (Conditioning({"encoder_hidden_states": negative_embeds, "text_embeds": negative_pooled})
                  if guided else None)
        return cond, uncond

    def timesteps(self, pipe: Any, scheduler: Any, steps: int, width: int, height: int) -> Any:
        """As SD, then set_begin_index(0) where the scheduler has it (the SDXL pipeline does; SD's does not)."""
        scheduler.set_timesteps(steps, device="cpu")
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(0)
        return scheduler.timesteps

    def size_inputs(self, pipe: Any, height: int, width: int, dtype: Any, device: Any) -> dict[str, Any]:
        """`_get_add_time_ids` with the pipeline's defaults: original = target size = the image's, crop (0, 0);
        the negative rows get the same ids."""
        projection = pipe.text_encoder_2.config.projection_dim
        ids = pipe._get_add_time_ids((height, width), (0, 0), (height, width), dtype=dtype,
                                     text_encoder_projection_dim=projection)
        return {"time_ids": ids.to(device)}

    def denoise(self, pipe: Any, sample: Any, timestep: Any, cond: Conditioning, guidance: Any,
                fixed: dict[str, Any]) -> Any:
        """The UNet on all rows, with the pooled text and the size as added conditions."""
        added = {"text_embeds": cond.rows["text_embeds"], "time_ids": fixed["time_ids"].repeat(sample.shape[0], 1)}
        return pipe.unet(sample, timestep, encoder_hidden_states=cond.rows["encoder_hidden_states"],
                         timestep_cond=guidance, added_cond_kwargs=added, return_dict=False)[0]

    def decode(self, pipe: Any, latents: Any) -> Any:
        """As the SDXL pipeline decodes: a float16 VAE with force_upcast decodes in float32; latents_mean/std
        where the VAE config has them."""
        import torch

        vae = pipe.vae
        upcast = vae.dtype == torch.float16 and vae.config.force_upcast
        dtype = torch.float32 if upcast else vae.dtype
        mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
        if mean is not None and std is not None:
            mean = torch.tensor(mean).view(1, -1, 1, 1).to(latents.device, latents.dtype)
            std = torch.tensor(std).view(1, -1, 1, 1).to(latents.device, latents.dtype)
            latents = latents * std / vae.config.scaling_factor + mean
        else:
            latents = latents / vae.config.scaling_factor
        try:
            if upcast:
                vae.to(torch.float32)
            images = vae.decode(latents.to(dtype), return_dict=False)[0]
        finally:
            if upcast:
                vae.to(torch.float16)
        return pipe.image_processor.postprocess(images, output_type="pt", do_denormalize=[True] * len(images))
