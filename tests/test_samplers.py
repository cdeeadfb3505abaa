import numpy as np
import pytest

from reportgen.errors import SamplerError
from reportgen.models.loading import load_pipeline
from reportgen.models.sources import SD1_SCHEDULER, resolve_model
from reportgen.render.pipeline import pipeline_executor
from reportgen.render.plan import Cell
from reportgen.samplers import GUIDE_SAMPLERS, SAMPLERS, get_sampler


@pytest.mark.parametrize("alias, name", [
    ("k_euler_a", "k_euler_a"), ("Euler a", "k_euler_a"), ("EULER_A", "k_euler_a"),
    ("DPM++ 2M Karras", "dpmpp_2m_karras"), ("DPM++ 2M SDE", "dpmpp_2m_sde"), ("HeunDiscreteScheduler", "k_heun"),
    ("K_DPM_2_A", "k_dpm_2_a"), ("PNDMScheduler", "plms"), ("LMS", "k_lms"), ("UniPC", "unipc"),
])
def test_aliases(alias, name):
    assert get_sampler(alias).name == name


@pytest.mark.parametrize("name", ["DPM++ SDE", "dpmpp_sde", "k_dpmpp_sde"])
def test_the_single_step_sde_sampler_is_not_the_multistep_one(name):
    """In the web UIs "DPM++ SDE" is a single-step SDE sampler (DPMSolverSDEScheduler), another sampler than
    DPM++ 2M SDE; the registry has no such sampler, so the name is refused rather than silently swapped."""
    with pytest.raises(SamplerError, match="unknown sampler"):
        get_sampler(name)


def test_unknown_sampler_suggests_close_names():
    with pytest.raises(SamplerError, match="did you mean.*k_euler"):
        get_sampler("k_eular")


def test_registry_covers_the_guide_and_modern_samplers():
    names = {s.name for s in SAMPLERS}
    assert set(GUIDE_SAMPLERS) <= names
    assert {"dpmpp_2m", "dpmpp_2m_karras", "dpmpp_2m_sde", "unipc"} <= names
    assert {s.name for s in SAMPLERS if s.ancestral} == {"k_euler_a", "k_dpm_2_a", "dpmpp_2m_sde"}


def test_plms_skips_prk_and_k_samplers_use_linspace():
    assert get_sampler("plms").make_scheduler(SD1_SCHEDULER).config.skip_prk_steps is True
    assert get_sampler("k_euler").make_scheduler(SD1_SCHEDULER).config.timestep_spacing == "linspace"
    assert get_sampler("dpmpp_2m_karras").make_scheduler(SD1_SCHEDULER).config.use_karras_sigmas is True


@pytest.fixture(scope="module")
def pipes():
    """The tiny SD 1.x model, and tiny SD3 for the flow samplers, loaded once each."""
    loaded = {}

    def get(spec: str):
        if spec not in loaded:
            model = resolve_model(spec)
            loaded[spec] = model, load_pipeline(model)
        return loaded[spec]

    return get


@pytest.fixture(scope="module")
def tiny_pipe(pipes):
    return pipes("tiny")


def _cell(sampler: str, steps: int) -> Cell:
    return Cell(topic="t", seed_index=0, seed=42, sampler=sampler, steps=steps, text="a red square", negative="",
                width=32, height=32, cfg=7.5, key="k", nfe=get_sampler(sampler).nfe(steps))


@pytest.mark.parametrize("sampler", [s.name for s in SAMPLERS])
def test_every_sampler_runs_through_diffusers_and_counts_its_model_calls(pipes, sampler):
    model, pipe = pipes("tiny-sd3" if get_sampler(sampler).flow else "tiny")
    (output,) = list(pipeline_executor(pipe, model, [_cell(sampler, 3)]))
    assert output.error is None
    assert output.image.size == (32, 32)
    assert np.isfinite(output.latents).all()
    # Heun, DPM2 and DPM2 a make 2n-1 calls, PLMS n+1, the rest n: counted, not computed.
    expected = {"k_heun": 5, "k_dpm_2": 5, "k_dpm_2_a": 5, "plms": 4, "plms_trailing": 4,
                "flow_heun": 5}.get(sampler, 3)
    assert output.nfe == expected == get_sampler(sampler).nfe(3)


def test_each_sampler_says_which_predictions_it_serves():
    flow = {s.name for s in SAMPLERS if s.predictions == ("flow",)}
    assert flow == {"flow_euler", "flow_heun", "flow_dpmpp_2m", "flow_unipc"}
    assert all(s.predictions == ("epsilon", "v_prediction") for s in SAMPLERS if s.name not in flow)
    assert get_sampler("FlowMatchHeunDiscreteScheduler").name == "flow_heun"


def test_flow_solvers_take_the_models_shift_static_or_dynamic():
    """DPM++ and UniPC read the shift from flow_shift (not shift) and need flow sigmas and flow predictions."""
    from reportgen.models.configs import FLUX_DEV_SCHEDULER, SD3_SCHEDULER

    for name in ("flow_dpmpp_2m", "flow_unipc"):
        static = get_sampler(name).make_scheduler(SD3_SCHEDULER).config
        assert (static.use_flow_sigmas, static.prediction_type, static.flow_shift) == (True, "flow_prediction", 3.0)
        assert not static.use_dynamic_shifting
        dynamic = get_sampler(name).make_scheduler(FLUX_DEV_SCHEDULER).config
        assert dynamic.use_dynamic_shifting and dynamic.time_shift_type == "exponential"
    assert get_sampler("flow_heun").make_scheduler(SD3_SCHEDULER).config.shift == 3.0
    euler = get_sampler("flow_euler").make_scheduler(FLUX_DEV_SCHEDULER).config
    assert euler.use_dynamic_shifting and (euler.base_shift, euler.max_shift) == (0.5, 1.15)


def test_same_cell_twice_gives_identical_pixels(tiny_pipe):
    model, pipe = tiny_pipe
    a, b = (next(pipeline_executor(pipe, model, [_cell("k_euler_a", 4)])) for _ in range(2))
    assert a.image.tobytes() == b.image.tobytes()
    assert np.array_equal(a.latents, b.latents)
