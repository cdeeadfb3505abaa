"""Planning for every family: a sampler a model cannot take stops at planning in one line that names the ones it
does take (the refusals are diffusers' own), the reference sampler defaults per family, and records, `info` and
the site name the family."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_main, write_study
from typer.testing import CliRunner

from reportgen.cli import app
from reportgen.errors import StudyError
from reportgen.models.loading import load_pipeline
from reportgen.models.sources import resolve_model
from reportgen.render.plan import for_model
from reportgen.render.store import Store
from reportgen.samplers import get_sampler
from reportgen.study.load import load_study

SD_SAMPLERS = ("ddim, plms, k_lms, k_euler, k_euler_a, k_heun, k_dpm_2, k_dpm_2_a, dpmpp_2m, dpmpp_2m_karras, "
               "dpmpp_2m_sde, unipc, ddim_trailing, plms_trailing")


def study_for(root: Path, model: str, samplers: list[str], extra: str = "") -> Path:
    return write_study(root, samplers=samplers, steps=[2], topics={"anime": '"an anime girl" -W32 -H32 -C4 -S1'},
                       extra=extra, model=model)


@pytest.mark.parametrize(("model", "sampler", "message"), [
    ("tiny-flux", "k_euler", "sampler k_euler cannot run on tiny-flux (FLUX.1 dev): k_euler serves epsilon and "
                             "v_prediction models, and this one is flow; this model takes flow_euler, flow_dpmpp_2m, "
                             "flow_unipc"),
    ("tiny-sd2-v", "flow_euler", "sampler flow_euler cannot run on tiny-sd2-v (Stable Diffusion 1.x/2.x "
                                 "(v-prediction)): flow_euler serves flow models, and this one is v_prediction; this "
                                 f"model takes {SD_SAMPLERS}"),
    ("tiny-flux", "flow_heun", "sampler flow_heun cannot run on tiny-flux (FLUX.1 dev): FluxPipeline passes its own "
                               "sigmas, which FlowMatchHeunDiscreteScheduler.set_timesteps does not take; this model "
                               "takes flow_euler, flow_dpmpp_2m, flow_unipc"),
    ("tiny-flux-schnell", "flow_dpmpp_2m", "sampler flow_dpmpp_2m cannot run on tiny-flux-schnell (FLUX.1 schnell): "
                                           "FluxPipeline always passes mu, which DPMSolverMultistepScheduler takes "
                                           "only with dynamic shifting, and this model's scheduler config has none; "
                                           "this model takes flow_euler, flow_unipc"),
])
def test_a_sampler_the_model_cannot_take_stops_at_planning(tmp_path: Path, capsys, monkeypatch, model: str,
                                                           sampler: str, message: str):
    study = study_for(tmp_path / "study", model, [sampler])
    for command in (["render", "--dry-run"], ["render"]):
        code, err = run_main(capsys, monkeypatch, *command, study)
        assert (code, err) == (2, f"error: {message}\n"), command
    assert not (study / "store").exists()


def test_the_refusals_are_what_diffusers_fluxpipeline_does():
    """reportgen refuses these two without building anything; here FluxPipeline itself is given them."""
    import torch

    for spec, sampler, error in (("tiny-flux", "flow_heun", ValueError),
                                 ("tiny-flux-schnell", "flow_dpmpp_2m", AssertionError)):
        model = resolve_model(spec)
        pipe = load_pipeline(model)
        pipe.scheduler = get_sampler(sampler).make_scheduler(model.scheduler_config)
        with pytest.raises(error):
            pipe(prompt="x", width=32, height=32, num_inference_steps=2, output_type="latent",
                 generator=torch.Generator("cpu").manual_seed(0))


@pytest.mark.parametrize(("model", "reference"), [("tiny", "k_heun"), ("tiny-sdxl", "k_heun"),
                                                  ("tiny-sd3", "flow_heun"), ("tiny-flux", "flow_unipc"),
                                                  ("tiny-flux-schnell", "flow_unipc")])
def test_the_reference_sampler_defaults_per_family(tmp_path: Path, model: str, reference: str):
    study = load_study(study_for(tmp_path / "study", model, [reference]))
    assert not study.reference_sampler_set
    assert for_model(study, resolve_model(model)).reference_sampler == reference
    named = load_study(study_for(tmp_path / "named", model, [reference], extra='reference_sampler = "k_heun"\n'))
    if reference == "k_heun":
        assert for_model(named, resolve_model(model)).reference_sampler == "k_heun"
    else:  # named, and the model cannot take it: refused, not replaced
        with pytest.raises(StudyError, match="^reference_sampler k_heun cannot run on"):
            for_model(named, resolve_model(model))


def test_a_flux_render_names_its_family_in_records_info_and_the_site(tmp_path: Path, capsys, monkeypatch):
    study = study_for(tmp_path / "study", "tiny-flux", ["flow_euler", "flow_unipc"])
    code, err = run_main(capsys, monkeypatch, "render", study)
    assert code == 0, err
    cells = list(Store(study / "store").cells())
    assert len(cells) == 2 and {c.record["family"] for c in cells} == {"flux"}
    assert {c.record["environment"]["family"] for c in cells} == {"flux"}
    info = CliRunner().invoke(app, ["info", str(cells[0].image)])
    assert info.exit_code == 0 and "Model family: FLUX.1 dev\n" in info.stdout, info.output
    code, err = run_main(capsys, monkeypatch, "build", study, "--out", tmp_path / "site")
    assert code == 0, err
    for page in ("index.html", "index.md"):
        assert "FLUX.1 dev" in (tmp_path / "site" / page).read_text(), page
    assert json.loads((tmp_path / "site" / "data" / "fits.json").read_text()) is not None


@pytest.mark.parametrize(("guide", "model", "cells"),
                         [("guide-sdxl", "tiny-sdxl", 1401), ("guide-flux", "tiny-flux", 312)])  # 3 seeds, references
def test_the_guides_for_todays_models_plan_on_their_family(tmp_path: Path, capsys, monkeypatch, guide: str,
                                                           model: str, cells: int):
    """docs/guide-sdxl and docs/guide-flux are ready to render: every sampler they list is one their family takes
    (planned here on the family's tiny model in place of the real weights)."""
    from conftest import ROOT

    code, err = run_main(capsys, monkeypatch, "render", ROOT / "docs" / guide, "--model", model, "--dry-run",
                         "--store", tmp_path / "store")
    assert code == 0, err
    assert f"{cells} cells: 0 cached, {cells} to render" in err
    assert not (tmp_path / "store").exists()


def test_flow_families_default_to_bfloat16_on_a_gpu(tmp_path: Path, monkeypatch):
    """SD3 and FLUX.1 run in bfloat16 (their T5 and activations overflow float16); the SD families in float16.
    Planning alone needs no GPU, so CUDA is only said to be there."""
    import torch

    from reportgen.render.jobs import prepare_render

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for model, dtype in (("tiny", "float16"), ("tiny-sdxl", "float16"), ("tiny-sd3", "bfloat16"),
                         ("tiny-flux", "bfloat16")):
        sampler = "flow_euler" if "flux" in model or "sd3" in model else "k_euler"
        job = prepare_render(study_for(tmp_path / model, model, [sampler]), device="cuda")
        assert (job.device, job.dtype, job.plan.environment["dtype"]) == ("cuda", dtype, dtype), model
