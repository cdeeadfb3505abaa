"""The one registry of samplers: each guide name maps to a diffusers scheduler and its configuration.

Configurations follow how Stable Diffusion 1.x ships them (scaled-linear betas from the model's own
scheduler config, `steps_offset=1`, PLMS without the PRK warm-up) and, for the k-diffusion samplers
the guide used (K_LMS, K_EULER, ...), the `linspace` timestep spacing that matches k-diffusion's
discretisation of the model's sigmas.

Each sampler says which predictions it serves: the diffusion samplers epsilon and v_prediction models (the
scheduler converts a v prediction itself), the flow samplers flow-matching models (SD3, FLUX.1). A flow sampler
takes the model's own shift from its FlowMatchEuler config, static (`shift`) or dynamic (`use_dynamic_shifting`
and its base/max shift), translated into the flags each scheduler class reads (`_flow_base`).
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from reportgen.errors import SamplerError


@dataclass(frozen=True)
class Sampler:
    """A named way to sample: a diffusers scheduler class plus the config overrides that define it."""

    name: str
    label: str
    scheduler: str
    overrides: dict[str, Any] = field(default_factory=dict)
    calls: str = "n"
    ancestral: bool = False
    order: int = 1
    aliases: tuple[str, ...] = ()
    paper: str = ""
    ui: str = ""  # the web UIs' name for this solver when it is not the first alias (its schedule aside)
    predictions: tuple[str, ...] = ("epsilon", "v_prediction")
    base: str = "model"  # how the model's scheduler config becomes this scheduler's: a key of _BASES
    # A preset (dpmpp_2m_karras): another sampler with a schedule of its own, named so before schedules were an
    # axis; its cells keep the keys they had, and a (solver, schedule) cell equal to it shares them (render/plan.py).
    preset: tuple[str, str] | None = None

    @property
    def flow(self) -> bool:
        """Whether it samples flow-matching models."""
        return "flow" in self.predictions

    @property
    def ui_name(self) -> str:
        """The web UIs' `Sampler:` name ("Euler a", "DPM++ 2M"); the schedule is a field of its own since
        their 1.9 (render/metadata.py writes `Schedule type`)."""
        return self.ui or (self.aliases[0] if self.aliases else self.label)

    def nfe(self, steps: int) -> int:
        """Denoiser evaluations for `steps` steps (a CFG pair counts as one)."""
        return _CALLS[self.calls](steps)

    def base_config(self, model_config: dict[str, Any]) -> dict[str, Any]:
        """The config this sampler's scheduler is built from (before its overrides), from the model's."""
        return _BASES[self.base](model_config)

    def takes(self, schedule: str) -> str | None:
        """Why this sampler cannot take `schedule` (a name of SCHEDULES), or None when it can."""
        entry = SCHEDULES[schedule]
        if schedule == DEFAULT_SCHEDULE:
            return None
        if self.preset is not None:
            return f"{self.name} has a schedule of its own ({self.preset[1]})"
        if self.flow:
            return "flow samplers take the model's own shifted sigmas only"
        if entry.flag != "timestep_spacing" and self.scheduler not in SIGMA_SCHEDULERS:
            return f"{self.scheduler} takes no {entry.flag}"
        return None

    def schedule_overrides(self, schedule: str = "default") -> dict[str, Any]:
        """This sampler's config overrides with `schedule`'s on top (refused if it cannot take it)."""
        why = self.takes(schedule)
        if why is not None:
            raise SamplerError(f"sampler {self.name} cannot take schedule {schedule}: {why}")
        return {**self.overrides, **SCHEDULES[schedule].overrides}

    def make_scheduler(self, base_config: dict[str, Any], schedule: str = "default") -> Any:
        """A fresh diffusers scheduler for this sampler (with `schedule`), from a model's scheduler config."""
        # Building some schedulers costs far more than copying one (KDPM2: about 180 ms, mostly in
        # from_config), and every cell needs its own: copy a fresh instance built once per config.
        config = self.base_config(base_config)
        return copy.deepcopy(_template(self.scheduler, json.dumps(config, sort_keys=True, default=str),
                                       json.dumps(self.schedule_overrides(schedule), sort_keys=True)))


@functools.lru_cache(maxsize=64)
def _template(scheduler: str, base_config: str, overrides: str) -> Any:
    """A never-used scheduler built from JSON-encoded configs (hashable, so it can be cached)."""
    import diffusers

    return getattr(diffusers, scheduler).from_config(json.loads(base_config), **json.loads(overrides))


def _flow_heun_base(config: dict[str, Any]) -> dict[str, Any]:
    """FlowMatchHeunDiscreteScheduler takes only num_train_timesteps and a static `shift` (no dynamic shifting:
    a model with dynamic shifting gets its static `shift`)."""
    return {"num_train_timesteps": config.get("num_train_timesteps", 1000), "shift": config.get("shift", 1.0)}


def _flow_solver_base(config: dict[str, Any]) -> dict[str, Any]:
    """DPMSolverMultistep and UniPCMultistep on flow sigmas: they read the shift from `flow_shift` (not `shift`)
    and need `use_flow_sigmas` and `prediction_type="flow_prediction"` (without them they run, wrongly, with no
    error); dynamic shifting with the exponential time shift FlowMatchEuler uses."""
    return {"num_train_timesteps": config.get("num_train_timesteps", 1000), "use_flow_sigmas": True,
            "prediction_type": "flow_prediction", "flow_shift": config.get("shift", 1.0),
            "use_dynamic_shifting": bool(config.get("use_dynamic_shifting", False)),
            "time_shift_type": "exponential"}


_BASES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "model": lambda config: config,  # the model's own config, the sampler's overrides on top
    "flow-heun": _flow_heun_base,
    "flow-solver": _flow_solver_base,
}

_CALLS: dict[str, Callable[[int], int]] = {
    "n": lambda n: n,
    "n+1": lambda n: n + 1,
    "2n-1": lambda n: 2 * n - 1,
}

_K = {"timestep_spacing": "linspace"}
_FLOW = ("flow",)
_LEADING = {"timestep_spacing": "leading", "steps_offset": 1}
_TRAILING = {"timestep_spacing": "trailing", "steps_offset": 0}

SAMPLERS: tuple[Sampler, ...] = (
    # The guide's eight.
    Sampler("ddim", "DDIM", "DDIMScheduler", {**_LEADING, "clip_sample": False, "set_alpha_to_one": False},
            aliases=("DDIM",), paper="Song et al. 2020, Denoising Diffusion Implicit Models"),
    Sampler("plms", "PLMS", "PNDMScheduler", {**_LEADING, "skip_prk_steps": True, "set_alpha_to_one": False},
            calls="n+1", order=4, aliases=("PLMS", "PNDM"),
            paper="Liu et al. 2022, Pseudo Numerical Methods for Diffusion Models"),
    Sampler("k_lms", "K_LMS", "LMSDiscreteScheduler", _K, order=4, aliases=("LMS",),
            paper="Karras et al. 2022 (k-diffusion), linear multistep"),
    Sampler("k_euler", "K_EULER", "EulerDiscreteScheduler", _K, aliases=("Euler",),
            paper="Karras et al. 2022, Elucidating the Design Space, Algorithm 1"),
    Sampler("k_euler_a", "K_EULER_A", "EulerAncestralDiscreteScheduler", _K, ancestral=True,
            aliases=("Euler a", "Euler Ancestral"), paper="k-diffusion, ancestral Euler"),
    Sampler("k_heun", "K_HEUN", "HeunDiscreteScheduler", _K, calls="2n-1", order=2, aliases=("Heun",),
            paper="Karras et al. 2022, Elucidating the Design Space, Algorithm 2"),
    Sampler("k_dpm_2", "K_DPM_2", "KDPM2DiscreteScheduler", _K, calls="2n-1", order=2, aliases=("DPM2",),
            paper="Karras et al. 2022 (k-diffusion), DPM-Solver-2 variant"),
    Sampler("k_dpm_2_a", "K_DPM_2_A", "KDPM2AncestralDiscreteScheduler", _K, calls="2n-1", order=2,
            ancestral=True, aliases=("DPM2 a", "DPM2 Ancestral"), paper="k-diffusion, ancestral DPM-Solver-2"),
    # Modern samplers.
    Sampler("dpmpp_2m", "DPM++ 2M", "DPMSolverMultistepScheduler",
            {**_K, "algorithm_type": "dpmsolver++", "solver_order": 2}, order=2,
            aliases=("DPM++ 2M", "k_dpmpp_2m"), paper="Lu et al. 2022, DPM-Solver++"),
    # dpmpp_2m with the karras schedule, as a sampler of its own: studies and stores made before schedules were
    # an axis name it so (its overrides are exactly dpmpp_2m's with karras', so it builds the same scheduler).
    Sampler("dpmpp_2m_karras", "DPM++ 2M Karras", "DPMSolverMultistepScheduler",
            {**_K, "algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}, order=2,
            aliases=("DPM++ 2M Karras", "k_dpmpp_2m_karras"), ui="DPM++ 2M",
            paper="Lu et al. 2022, DPM-Solver++; Karras sigmas", preset=("dpmpp_2m", "karras")),
    Sampler("dpmpp_2m_sde", "DPM++ 2M SDE", "DPMSolverMultistepScheduler",
            {**_K, "algorithm_type": "sde-dpmsolver++", "solver_order": 2}, ancestral=True,
            # not "DPM++ SDE": in the web UIs that is another, single-step sampler (DPMSolverSDEScheduler)
            aliases=("DPM++ 2M SDE",), paper="Lu et al. 2022, DPM-Solver++ (SDE)"),
    Sampler("unipc", "UniPC", "UniPCMultistepScheduler", _K, order=2, aliases=("UniPC",),
            paper="Zhao et al. 2023, UniPC"),
    # Variants: the same solvers with trailing timestep spacing (Lin et al. 2023, Common Diffusion
    # Noise Schedules and Sample Steps are Flawed), whose first step starts at the last timestep.
    Sampler("ddim_trailing", "DDIM trailing", "DDIMScheduler",
            {**_TRAILING, "clip_sample": False, "set_alpha_to_one": False}, ui="DDIM",
            paper="DDIM with trailing spacing, Lin et al. 2023", preset=("ddim", "trailing")),
    Sampler("plms_trailing", "PLMS trailing", "PNDMScheduler",
            {**_TRAILING, "skip_prk_steps": True, "set_alpha_to_one": False}, calls="n+1", order=4, ui="PLMS",
            paper="PLMS with trailing spacing, Lin et al. 2023", preset=("plms", "trailing")),
    # Flow matching (SD3, FLUX.1): the same solvers on a rectified flow, with the model's shifted sigmas.
    Sampler("flow_euler", "Flow Euler", "FlowMatchEulerDiscreteScheduler", predictions=_FLOW,
            aliases=("Euler (flow)",), paper="Esser et al. 2024, Scaling Rectified Flow Transformers (SD3), Euler"),
    Sampler("flow_heun", "Flow Heun", "FlowMatchHeunDiscreteScheduler", calls="2n-1", order=2, predictions=_FLOW,
            base="flow-heun", aliases=("Heun (flow)",), paper="Karras et al. 2022, Algorithm 2, on a rectified flow"),
    Sampler("flow_dpmpp_2m", "Flow DPM++ 2M", "DPMSolverMultistepScheduler",
            {"algorithm_type": "dpmsolver++", "solver_order": 2}, order=2, predictions=_FLOW, base="flow-solver",
            aliases=("DPM++ 2M (flow)",), paper="Lu et al. 2022, DPM-Solver++, on flow sigmas"),
    Sampler("flow_unipc", "Flow UniPC", "UniPCMultistepScheduler", {"solver_order": 2}, order=2,
            predictions=_FLOW, base="flow-solver", aliases=("UniPC (flow)",),
            paper="Zhao et al. 2023, UniPC, on flow sigmas"),
)

@dataclass(frozen=True)
class Schedule:
    """A sigma schedule (the web UIs' `Schedule type`), as the diffusers setting that selects it."""

    name: str
    label: str  # the web UIs' `Schedule type` label (AUTOMATIC1111 modules/sd_schedulers.py)
    flag: str  # the diffusers config key it sets
    overrides: dict[str, Any]
    paper: str = ""


DEFAULT_SCHEDULE = "default"
SCHEDULES: dict[str, Schedule] = {s.name: s for s in (
    Schedule(DEFAULT_SCHEDULE, "", "", {}, "the sampler's own (the registry's overrides, the model's config)"),
    Schedule("karras", "Karras", "use_karras_sigmas", {"use_karras_sigmas": True},
             "Karras et al. 2022, Elucidating the Design Space, eq. 5 (rho = 7)"),
    Schedule("exponential", "Exponential", "use_exponential_sigmas", {"use_exponential_sigmas": True},
             "sigmas evenly spaced in log sigma (k-diffusion get_sigmas_exponential)"),
    Schedule("beta", "Beta", "use_beta_sigmas", {"use_beta_sigmas": True},
             "Lee et al. 2024, Beta Sampling is All You Need (alpha = beta = 0.6)"),
    Schedule("trailing", "SGM Uniform", "timestep_spacing", {"timestep_spacing": "trailing", "steps_offset": 0},
             "Lin et al. 2023, Common Diffusion Noise Schedules and Sample Steps are Flawed (trailing spacing)"),
)}
# The diffusers classes (0.42) whose __init__ takes use_karras_sigmas, use_exponential_sigmas and use_beta_sigmas
# among the diffusion samplers' (tests/test_samplers.py checks this against diffusers' signatures). DDIM, PNDM and
# EulerAncestral take none of them; every diffusion sampler's class takes timestep_spacing.
SIGMA_SCHEDULERS = frozenset({"LMSDiscreteScheduler", "EulerDiscreteScheduler", "HeunDiscreteScheduler",
                              "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler",
                              "DPMSolverMultistepScheduler", "UniPCMultistepScheduler"})


def get_schedule(name: str) -> str:
    """A schedule's name from its name or its web UI label ("Karras", "SGM Uniform", "Automatic": default)."""
    wanted = _key(str(name))
    for schedule in SCHEDULES.values():
        if wanted in (_key(schedule.name), _key(schedule.label)) or (
                schedule.name == DEFAULT_SCHEDULE and wanted == "automatic"):
            return schedule.name
    close = difflib.get_close_matches(str(name).lower(), list(SCHEDULES), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise SamplerError(f"unknown schedule {name!r}{hint} (known: {', '.join(SCHEDULES)})")


def resolve(name: str, schedule: str = DEFAULT_SCHEDULE) -> tuple[Sampler, str]:
    """A (sampler, schedule) pair, a preset's name (dpmpp_2m_karras, "DPM++ 2M Karras") resolved to its solver and
    schedule: the form `image` and `info` render and reproduce with."""
    sampler = get_sampler(name)
    if sampler.preset is not None and schedule == DEFAULT_SCHEDULE:
        return get_sampler(sampler.preset[0]), sampler.preset[1]
    return sampler, get_schedule(schedule)


def preset_of(sampler: str, schedule: str) -> str | None:
    """The preset sampler that is `sampler` with `schedule` (dpmpp_2m + karras: dpmpp_2m_karras), or None."""
    for entry in SAMPLERS:
        if entry.preset == (sampler, schedule):
            return entry.name
    return None


GUIDE_SAMPLERS: tuple[str, ...] = ("ddim", "plms", "k_lms", "k_euler", "k_euler_a", "k_heun", "k_dpm_2", "k_dpm_2_a")

def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower().replace("++", "pp"))


def _lookup_table() -> dict[str, Sampler]:
    table: dict[str, Sampler] = {}
    for sampler in SAMPLERS:
        # The first sampler using a scheduler class answers to that class name (DPMSolverMultistep: dpmpp_2m).
        for alias in (sampler.scheduler, sampler.label, *sampler.aliases, sampler.name):
            table.setdefault(_key(alias), sampler)
        table[_key(sampler.name)] = sampler
    return table


_LOOKUP = _lookup_table()


def get_sampler(name: str) -> Sampler:
    """Find a sampler by its name, an alias, a UI name or a diffusers class name."""
    found = _LOOKUP.get(_key(str(name)))
    if found is None:
        choices = sorted({s.name for s in SAMPLERS} | {a for s in SAMPLERS for a in s.aliases})
        close = difflib.get_close_matches(str(name), choices, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(s.name for s in SAMPLERS)}"
        raise SamplerError(f"unknown sampler {name!r}{hint}")
    return found

