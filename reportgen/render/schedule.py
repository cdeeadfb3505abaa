"""What a sampler's schedule does at a step count, read from diffusers' own scheduler after `set_timesteps`.

Three facts explain most of the ways samplers reach different images as the steps grow
(docs/measurement.md, "Why samplers differ"): the first timestep (leading spacing starts lower, by an
amount that depends on the step count), the last noise level the run reaches, and whether it ends with a
final denoise to sigma 0 (DDIM and PLMS with `set_alpha_to_one = False` stop at alphas_cumprod[0], about
sigma 0.029 on SD's schedule). A fourth is a diffusers behaviour: DDIM's and PNDM's `step()` move from
timestep t to t - num_train_timesteps // N (diffusers 0.42.1, scheduling_ddim.py `step`,
scheduling_pndm.py `step_plms`), which only fits a schedule of N evenly spaced steps when N divides the
training steps.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from typing import Any

from reportgen.samplers import get_sampler

# The diffusers schedulers whose step() moves by the integer num_train_timesteps // N (checked in 0.42.1).
FIXED_STRIDE = frozenset({"DDIMScheduler", "PNDMScheduler"})


@dataclass(frozen=True)
class Schedule:
    """One sampler at one step count: where its schedule starts and ends (from diffusers' own scheduler)."""

    first_timestep: float
    last_sigma: float | None  # the last nonzero noise level the run reaches; None if the scheduler exposes none
    final_denoise: bool  # the run ends at sigma 0; False: the image is left at last_sigma
    step_problem: str  # "" or why the steps do not fit the N-step schedule (FIXED_STRIDE with N not dividing T)


def schedule(sampler: str, steps: int, base_config: dict[str, Any]) -> Schedule:
    """The schedule facts of `sampler` at `steps` for a model's scheduler config, from the registry alone (for
    cells rendered before records held them); cached per config. Exact where the pipeline calls
    `set_timesteps(steps)`, as every SD family's does; not for the flow families, whose pipelines pass a `mu`
    from the image's size (FLUX.1 its own sigmas too), so the analysis does not ask it for flow samplers.
    render records every lane's exact facts (`read_schedule` of the lane's scheduler)."""
    return _schedule(get_sampler(sampler).name, steps, json.dumps(base_config, sort_keys=True, default=str))


@functools.lru_cache(maxsize=4096)
def _schedule(sampler: str, steps: int, base_config: str) -> Schedule:
    scheduler = get_sampler(sampler).make_scheduler(json.loads(base_config))  # as rendering builds it
    mu = {"mu": 1.0} if scheduler.config.get("use_dynamic_shifting") else {}
    scheduler.set_timesteps(steps, device="cpu", **mu)
    return read_schedule(scheduler, steps)


def read_schedule(scheduler: Any, steps: int) -> Schedule:
    """The facts of a diffusers scheduler whose timesteps are set for `steps` steps."""
    timesteps = [float(t) for t in scheduler.timesteps]
    trained = int(scheduler.config.num_train_timesteps)
    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is not None:  # sigma-based schedulers (k-diffusion, DPM-Solver, UniPC, flow matching)
        values = [float(s) for s in sigmas]
        nonzero = [s for s in values if s > 0]
        last = nonzero[-1] if nonzero else None
        denoise = values[-1] == 0.0
    elif hasattr(scheduler, "final_alpha_cumprod"):  # DDIM, PNDM: the last step lands on final_alpha_cumprod
        alpha = float(scheduler.final_alpha_cumprod)
        denoise = alpha >= 1
        if denoise:  # set_alpha_to_one: the last noise level is the last timestep's, then sigma 0
            alpha = float(scheduler.alphas_cumprod[int(timesteps[-1])])
        last = math.sqrt((1 - alpha) / alpha)
    else:
        last, denoise = None, False
    return Schedule(first_timestep=timesteps[0], last_sigma=last, final_denoise=denoise,
                    step_problem=_step_problem(type(scheduler).__name__, scheduler.config, timesteps, steps, trained))


def _step_problem(name: str, config: Any, timesteps: list[float], steps: int, trained: int) -> str:
    """Why a fixed-stride scheduler's steps do not fit its schedule at `steps`, or ""."""
    if name not in FIXED_STRIDE or trained % steps == 0:
        return ""
    stride = trained // steps
    if config.timestep_spacing == "trailing":
        return (f"step() moves {trained} // {steps} = {stride} timesteps while the schedule's steps are "
                f"{trained / steps:.3g} apart ({trained} % {steps} != 0), so every step lands off the schedule")
    return (f"its {steps} steps are {trained} // {steps} = {stride} timesteps apart and cover {steps * stride} of "
            f"{trained}: the noisiest {trained % steps} are skipped (it starts at timestep {timesteps[0]:g})")
