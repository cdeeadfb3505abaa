"""The per-cell executor: one call of the model family's own diffusers pipeline per cell, the reference every
other executor is checked against."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from reportgen.models.families import adapter_for_pipeline
from reportgen.models.sources import ModelInfo
from reportgen.render.outputs import CellOutput, decode_latents, finish
from reportgen.render.plan import Cell
from reportgen.samplers import get_sampler


def pipeline_executor(pipe: Any, model: ModelInfo, cells: Iterable[Cell]) -> Iterator[CellOutput]:
    """Render each cell with one call of the pipeline (a CFG pair in one denoiser batch); model calls are counted
    at the denoiser."""
    import torch

    family = adapter_for_pipeline(pipe)
    calls = [0]
    hook = family.denoiser(pipe).register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        for cell in cells:
            pipe.scheduler = get_sampler(cell.sampler).make_scheduler(model.scheduler_config, cell.schedule_type)
            calls[0] = 0
            start = time.perf_counter()
            with torch.inference_mode():
                latents = pipe(
                    **family.pipeline_kwargs(cell.text, cell.negative), width=cell.width, height=cell.height,
                    num_inference_steps=cell.steps, guidance_scale=cell.cfg,
                    generator=torch.Generator("cpu").manual_seed(cell.seed), output_type="latent",
                ).images
                latents = family.to_spatial(pipe, latents, cell.width, cell.height)
                image = decode_latents(pipe, latents)[0]
            yield finish(cell, image, latents[0], calls[0], time.perf_counter() - start)
    finally:
        hook.remove()
