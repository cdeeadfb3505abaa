"""Scheduler configs as each family's model folders ship them (`scheduler/scheduler_config.json`), and the tiny
models' names. Plain data: nothing here imports torch or diffusers.

Sources (the hub is not reachable from here; each config was cross-checked against copies of the file found in
public repositories): SD 1.x `stable-diffusion-v1-5/stable-diffusion-v1-5`; SD 2.x 768-v
`stabilityai/stable-diffusion-2-1`; SDXL `stabilityai/stable-diffusion-xl-base-1.0`; SD3
`stabilityai/stable-diffusion-3-medium-diffusers` (SD3.5 ships the same); FLUX.1 `black-forest-labs/FLUX.1-dev`
and `black-forest-labs/FLUX.1-schnell`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
SD2_V_SCHEDULER: dict[str, Any] = {
    "_class_name": "DDIMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}
SDXL_SCHEDULER: dict[str, Any] = {
    "_class_name": "EulerDiscreteScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}
SD3_SCHEDULER: dict[str, Any] = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000,
                                 "shift": 3.0}
FLUX_DEV_SCHEDULER: dict[str, Any] = {  # resolution-dependent ("dynamic") shifting
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "max_image_seq_len": 4096,
    "max_shift": 1.15,
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
}
FLUX_SCHNELL_SCHEDULER: dict[str, Any] = {**FLUX_DEV_SCHEDULER, "shift": 1.0, "use_dynamic_shifting": False}

# A single file without --model-config: the scheduler config its family's folders ship.
FAMILY_SCHEDULERS: dict[tuple[str, str], dict[str, Any]] = {
    ("sd", ""): SD1_SCHEDULER, ("sdxl", ""): SDXL_SCHEDULER, ("sd3", ""): SD3_SCHEDULER,
    ("flux", "dev"): FLUX_DEV_SCHEDULER, ("flux", "schnell"): FLUX_SCHNELL_SCHEDULER,
}


@dataclass(frozen=True)
class TinyModel:
    """A seeded model built in code for tests: its family, identity (for cache keys) and scheduler config."""

    name: str
    family: str
    variant: str
    identity: str
    scheduler: dict[str, Any]


TINY_MODELS: dict[str, TinyModel] = {m.name: m for m in (
    TinyModel("tiny", "sd", "", "reportgen-tiny-v1", SD1_SCHEDULER),  # SD 1.x; its keys are pinned (test_keys.py)
    TinyModel("tiny-sd2-v", "sd", "", "reportgen-tiny-sd2-v-v1", SD2_V_SCHEDULER),
    TinyModel("tiny-sdxl", "sdxl", "", "reportgen-tiny-sdxl-v1", SDXL_SCHEDULER),
    TinyModel("tiny-sd3", "sd3", "", "reportgen-tiny-sd3-v1", SD3_SCHEDULER),
    TinyModel("tiny-flux", "flux", "dev", "reportgen-tiny-flux-dev-v1", FLUX_DEV_SCHEDULER),
    TinyModel("tiny-flux-schnell", "flux", "schnell", "reportgen-tiny-flux-schnell-v1", FLUX_SCHNELL_SCHEDULER),
)}
