"""bench/render_matrix.py's full-size SDXL and FLUX.1 builds, checked where they can be without a GPU: built on
torch's meta device (shapes, no memory), their denoisers have the real models' parameter counts, and torch's
FlopCounterMode counts one model call of each at 1024x1024 through the same path the CUDA run takes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import render_matrix  # noqa: E402

from reportgen.models.families import adapter_for_pipeline  # noqa: E402


@pytest.mark.parametrize(("family", "parameters", "text_encoders", "tflops"), [
    # stabilityai/stable-diffusion-xl-base-1.0's UNet; FLUX.1-dev's transformer and T5 v1.1 XXL encoder
    ("sdxl", 2_567_463_684, ("text_encoder", "text_encoder_2"), (13.0, 14.0)),
    ("flux", 11_901_408_320, ("text_encoder", "text_encoder_2"), (70.0, 80.0)),
])
def test_full_size_builds_have_the_real_models_sizes(family: str, parameters: int, text_encoders: tuple[str, ...],
                                                     tflops: tuple[float, float]):
    pipe = render_matrix.FAMILIES[family]["build"]("meta", "bfloat16")
    denoiser = adapter_for_pipeline(pipe).denoiser(pipe)
    assert sum(p.numel() for p in denoiser.parameters()) == parameters
    assert {p.dtype for p in denoiser.parameters()} == {__import__("torch").bfloat16}  # built in it, not cast
    assert all(getattr(pipe, name) is not None for name in text_encoders)
    if family == "flux":
        assert sum(p.numel() for p in pipe.text_encoder_2.parameters()) == 4_762_310_656  # T5 v1.1 XXL's encoder
    flops = render_matrix.denoiser_flops(pipe, render_matrix.FAMILIES[family]["size"])
    assert tflops[0] * 1e12 < flops < tflops[1] * 1e12  # measured 13.52 (a CFG pair) and 74.38 (one row)
