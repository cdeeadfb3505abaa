"""Model families: one adapter per family (base.py says what an adapter is), the registry, and which samplers
a family takes. Detection of a model's family is in detect.py; loading in models/loading.py.

    family  pipeline (model_index.json _class_name)  denoiser                predicts
    sd      StableDiffusionPipeline                  UNet2DConditionModel    epsilon | v_prediction (SD 1.x, 2.x)
    sdxl    StableDiffusionXLPipeline                UNet2DConditionModel    epsilon | v_prediction
    sd3     StableDiffusion3Pipeline                 SD3Transformer2DModel   flow
    flux    FluxPipeline                             FluxTransformer2DModel  flow (dev: guidance-distilled)
"""

from __future__ import annotations

from typing import Any

from reportgen.models.families.base import Conditioning, FamilyAdapter
from reportgen.models.families.flow import FluxAdapter, StableDiffusion3Adapter
from reportgen.models.families.sd import StableDiffusionAdapter, StableDiffusionXLAdapter
from reportgen.samplers import SAMPLERS, get_sampler

__all__ = ["ADAPTERS", "Conditioning", "FamilyAdapter", "adapter", "adapter_for_pipeline", "sampler_refusal",
           "samplers_for"]

ADAPTERS: dict[str, FamilyAdapter] = {a.name: a for a in (
    StableDiffusionAdapter(), StableDiffusionXLAdapter(), StableDiffusion3Adapter(), FluxAdapter())}
PIPELINE_FAMILIES: dict[str, str] = {a.pipeline_class: a.name for a in ADAPTERS.values()}


def adapter(family: str) -> FamilyAdapter:
    """The adapter of a family by its name."""
    return ADAPTERS[family]


def adapter_for_pipeline(pipe: Any) -> FamilyAdapter:
    """The adapter of a loaded pipeline, by its class (what model_index.json's _class_name names)."""
    name = type(pipe).__name__
    if name not in PIPELINE_FAMILIES:
        raise ValueError(f"no model family uses {name}")
    return ADAPTERS[PIPELINE_FAMILIES[name]]


def sampler_refusal(family: str, sampler: str, scheduler_config: dict[str, Any]) -> str | None:
    """Why a model of `family` with this scheduler config cannot be sampled by `sampler`, or None."""
    return ADAPTERS[family].refuses(get_sampler(sampler), scheduler_config)


def samplers_for(family: str, scheduler_config: dict[str, Any]) -> list[str]:
    """The registry's samplers a model of `family` with this scheduler config takes, in registry order."""
    return [s.name for s in SAMPLERS if ADAPTERS[family].refuses(s, scheduler_config) is None]
