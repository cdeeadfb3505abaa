"""The demo model's data, caption check and shipped weights (issue 6)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from reportgen.demo.check import check_image, evaluate
from reportgen.demo.data import all_scenes, draw, held_out_scenes, parse_caption, sample_batch, training_scenes
from reportgen.models.loading import load_pipeline
from reportgen.models.sources import DEMO_DIR, resolve_model


def test_data_is_deterministic_and_held_out_is_disjoint() -> None:
    first, captions = sample_batch(training_scenes(), 16, seed=3)
    again, captions_again = sample_batch(training_scenes(), 16, seed=3)
    assert captions == captions_again and np.array_equal(first, again)
    assert not np.array_equal(first, sample_batch(training_scenes(), 16, seed=4)[0])
    held = {s.caption for s in held_out_scenes()}
    assert held and held.isdisjoint(s.caption for s in training_scenes())
    assert {s.kind for s in held_out_scenes()} == {"shape", "landscape"}


def test_check_accepts_drawn_pictures_and_rejects_wrong_ones() -> None:
    rng = random.Random(0)
    scenes = all_scenes()
    for scene in rng.sample(scenes, 60):
        picture = draw(scene, rng)
        assert check_image(picture, scene.caption).ok, scene.caption
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert sum(check_image(noise, s.caption).ok for s in scenes) <= len(scenes) // 20
    red_left = parse_caption("a red circle at the left on a white background")
    picture = draw(red_left, rng)
    for wrong in ("a red circle at the right on a white background", "a red square at the left on a white background",
                  "a blue circle at the left on a white background", "a red circle at the left on a black background"):
        assert not check_image(picture, wrong).ok, wrong
    sunny = draw(parse_caption("green hills under a blue sky with a sun"), rng)
    assert not check_image(sunny, "green hills under a blue sky").ok
    assert not check_image(sunny, "the sea under a blue sky with a sun").ok


def test_parse_caption_rejects_other_text() -> None:
    with pytest.raises(ValueError, match="not a caption"):
        parse_caption("an anime girl")


def test_shipped_demo_model_loads_offline_and_draws_its_captions() -> None:
    """The issue's bar, as docs/demo-model.md measures it: the held-out captions at 50 steps of a
    deterministic sampler, at least 80% matching (one seed here; four in the docs)."""
    from transformers import CLIPTokenizer

    info = resolve_model("demo")
    assert info.path == DEMO_DIR
    assert CLIPTokenizer.from_pretrained(DEMO_DIR / "tokenizer").tokenize("a red circle")[1] == "red</w>"
    size = sum(p.stat().st_size for p in DEMO_DIR.rglob("*") if p.is_file())
    assert size <= 25e6
    pipe = load_pipeline(info)
    captions = [scene.caption for scene in held_out_scenes()]
    results = evaluate(pipe, captions, seeds=[0], steps=50, sampler="k_euler")
    assert all(np.asarray(image).shape == (64, 64, 3) for *_, image in results)
    failed = [(c, v.reason) for c, _, v, _ in results if not v.ok]
    assert len(failed) <= 0.2 * len(captions), failed


def test_training_script_saves_a_loadable_pipeline_and_is_reproducible(tmp_path) -> None:
    """A few steps of each phase: the folder loads with StableDiffusionPipeline, and the same seed gives
    the same weights (steps, not a time box)."""
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    from reportgen.demo.train import main

    args = ["--vae-steps", "2", "2", "--unet-steps", "2", "--batch", "4", "--count", "16"]
    main([*args, "--out", str(tmp_path / "a")])
    main([*args, "--out", str(tmp_path / "b")])
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "a", local_files_only=True)
    image = pipe("a red circle at the left on a white background", num_inference_steps=2, height=64, width=64,
                 output_type="np").images[0]
    assert image.shape == (64, 64, 3)
    for part in ("unet", "vae", "text_encoder"):
        name = "model.safetensors" if part == "text_encoder" else "diffusion_pytorch_model.safetensors"
        a, b = (load_file(tmp_path / run / part / name) for run in ("a", "b"))
        assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
