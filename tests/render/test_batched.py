"""The batched executor against the per-cell pipeline of every model family: same images, same model-call
counts, shared calls."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from reportgen.cli import app
from reportgen.errors import ReportgenError
from reportgen.models.families import adapter, samplers_for
from reportgen.models.loading import load_pipeline
from reportgen.models.sources import resolve_model
from reportgen.render import batched as batched_module
from reportgen.render.execute import EXECUTORS
from reportgen.render.plan import Cell, plan
from reportgen.render.store import Store
from reportgen.samplers import get_sampler
from reportgen.study.load import load_study

# Batching changes only the order of float32 sums inside the denoiser's kernels (the kernels picked depend on
# the batch size), so latents agree to rounding, grown over a few steps; images to one 8-bit level.
LATENT_TOLERANCE = 1e-3
PIXEL_TOLERANCE = 2
# One tiny model per family (SD 1.x, SD 2.x v-prediction, SDXL, SD3, FLUX.1 dev and schnell).
MODELS = ["tiny", "tiny-sd2-v", "tiny-sdxl", "tiny-sd3", "tiny-flux", "tiny-flux-schnell"]


def model_samplers(spec: str) -> list[str]:
    """The samplers the model takes, from the registry (every one of them is tested)."""
    model = resolve_model(spec)
    return samplers_for(model.family, model.scheduler_config)


CASES = [(spec, name) for spec in MODELS for name in model_samplers(spec)]


def topic(root: Path, slug: str, prompt: str, samplers: list[str], steps: list[int]) -> None:
    names = ", ".join(samplers)
    (root / "topics" / f"{slug}.md").write_text(
        f"---\ntitle: {slug}\nprompt: '{prompt}'\nsamplers: [{names}]\nsteps: {steps}\n---\n")


def render_both(root: Path, spec: str):
    """Every sampler the model takes at 2 steps on one prompt, every other one at 3 steps on a second prompt with a
    negative prompt and another CFG, one lane without CFG; rendered by both executors, the batched one 3 lanes at
    a time."""
    names = model_samplers(spec)
    (root / "topics").mkdir()
    (root / "study.toml").write_text(f'title = "t"\nmodel = "{spec}"\nsamplers = {names}\nsteps = [2]\nseeds = 1\n'
                                     "reference_steps = 0\n")
    topic(root, "anime", '"an anime girl" -W32 -H32 -C7.5 -S3031912972', names, [2])
    topic(root, "food", '"a hamburger [blurry, dark]" -W32 -H32 -C5 -S4053222918', names[1::2], [3])
    topic(root, "plain", '"grown tiger" -W32 -H32 -C1 -S7', [names[0] if "flow" in names[0] else "k_euler_a"], [3])
    model = resolve_model(spec)
    pipe = load_pipeline(model)
    cells = plan(load_study(root), model, "cpu", "float32", Store(root / "store")).to_render
    reference = {o.cell.key: o for o in EXECUTORS["pipeline"](pipe, model, cells)}
    rows: list[int] = []  # the rows of each tick's lanes, before padding
    calls: list[int] = []  # the rows of each denoiser call, padding included
    denoiser = adapter(model.family).denoiser(pipe)
    hook = denoiser.register_forward_pre_hook(lambda _module, args, kwargs: calls.append(
        (args[0] if args else kwargs["hidden_states"]).shape[0]), with_kwargs=True)
    real = batched_module._BatchedRun._denoise

    def counted(self, sample, *args):
        rows.append(sample.shape[0])
        return real(self, sample, *args)

    batched_module._BatchedRun._denoise = counted
    try:
        batched = list(EXECUTORS["batched"](pipe, model, cells, batch_size=3))
    finally:
        hook.remove()
        batched_module._BatchedRun._denoise = real
    assert set(calls) == {batched_module.CPU_ROWS_PER_CALL}  # on a CPU every call has the same rows (padded)
    return cells, reference, batched, rows


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory):
    """render_both of a model, once per model in this module."""
    done: dict[str, tuple] = {}

    def get(spec: str) -> tuple:
        if spec not in done:
            done[spec] = render_both(tmp_path_factory.mktemp(spec), spec)
        return done[spec]

    return get


@pytest.fixture(scope="module")
def outputs(rendered):
    """The SD 1.x tiny model's renders."""
    return rendered("tiny")


@pytest.mark.parametrize(("spec", "name"), CASES)
def test_batched_images_equal_the_pipeline(rendered, spec: str, name: str):
    cells, reference, batched, _ = rendered(spec)
    mine = [o for o in batched if o.cell.sampler == name]
    assert len(mine) == sum(c.sampler == name for c in cells) >= 1
    for output in mine:
        expected = reference[output.cell.key]
        assert output.error is None and expected.error is None
        assert output.latents.shape == expected.latents.shape and output.latents.ndim == 3  # (C, h, w)
        assert np.abs(output.latents - expected.latents).max() <= LATENT_TOLERANCE
        pixels = np.abs(np.asarray(output.image, dtype=int) - np.asarray(expected.image, dtype=int))
        assert pixels.max() <= PIXEL_TOLERANCE


@pytest.mark.parametrize(("spec", "name"), CASES)
def test_counted_calls_equal_the_formula(rendered, spec: str, name: str):
    _, reference, batched, _ = rendered(spec)
    for output in (o for o in batched if o.cell.sampler == name):
        assert output.nfe == get_sampler(name).nfe(output.cell.steps) == reference[output.cell.key].nfe


@pytest.mark.parametrize("spec", MODELS)
def test_lanes_share_denoiser_calls_within_the_cap(rendered, spec: str):
    cells, _, batched, rows = rendered(spec)
    family = adapter(resolve_model(spec).family)
    assert sorted(o.cell.key for o in batched) == sorted(c.key for c in cells)
    assert max(rows) <= family.rows_per_lane * 3  # at most 3 lanes, each a CFG pair where the family guides
    assert len(rows) < sum(o.nfe for o in batched) / 2  # calls were shared, and admission kept batches full
    guided = family.rows_per_lane == 2  # FLUX.1 never takes an unconditional row: a guided step is one row
    assert sum(rows) == sum(o.nfe * (2 if guided and o.cell.cfg > 1 else 1) for o in batched)


def test_render_batched_then_rerun_makes_no_calls(tiny_study: Path):
    runner = CliRunner()
    first = runner.invoke(app, ["render", str(tiny_study), "--executor", "batched", "--batch-size", "3", "--json"])
    assert first.exit_code == 0, first.output
    counts = json.loads(first.stdout.strip().splitlines()[-1])
    assert (counts["rendered"], counts["nfe"]) == (8, 2 * (2 + 4 + 3 + 7))
    records = [cell.record for cell in Store(tiny_study / "store").cells()]
    assert {r["executor"] for r in records} == {"batched"}
    again = runner.invoke(app, ["render", str(tiny_study), "--json"])
    assert again.exit_code == 0
    counts = json.loads(again.stdout.strip().splitlines()[-1])
    assert (counts["rendered"], counts["cached"], counts["nfe"]) == (0, 8, 0)


def test_unknown_executor_writes_nothing(tiny_study: Path):
    result = CliRunner().invoke(app, ["render", str(tiny_study), "--executor", "warp"])
    assert isinstance(result.exception, ReportgenError) and "unknown executor 'warp'" in str(result.exception)
    assert not (tiny_study / "store").exists()


@pytest.mark.parametrize(("spec", "name"), [(s, n) for s, n in CASES if s in ("tiny", "tiny-sd3", "tiny-flux")])
def test_lane_schedulers_never_read_device_values_on_the_host(spec: str, name: str):
    """On CUDA, a scheduler step that reads a device value on the host (`.item()`, `nonzero()`, `if t > 0`)
    waits for the GPU's queued denoiser call. The meta device has no values at all, so a lane whose latents and
    model output live there fails on any such read, and on any mix of devices; it must step through."""
    import torch

    from reportgen.render.batched import lane_scheduler

    model = resolve_model(spec)
    family = adapter(model.family)
    cell = one_cell(name, 3)
    pipe = load_pipeline(model)
    scheduler = lane_scheduler(pipe, cell, model)
    kwargs = family.step_kwargs(scheduler, torch.Generator("cpu").manual_seed(0))
    shape = family.initial_latents(pipe, scheduler, 32, 32, torch.Generator("cpu"), torch.float32).shape
    latents = torch.zeros(shape, device="meta")
    for t in scheduler.timesteps:
        model_output = torch.zeros_like(family.model_input(scheduler, latents, t))
        latents = scheduler.step(model_output, t, latents, **kwargs, return_dict=False)[0]
    assert latents.device.type == "meta" and len(scheduler.timesteps) == cell.nfe  # every call was stepped


def one_cell(sampler: str, steps: int) -> Cell:
    return Cell(topic="t", seed_index=0, seed=1, sampler=sampler, steps=steps, text="x", negative="", width=32,
                height=32, cfg=7.5, key=f"{sampler}-{steps}", nfe=get_sampler(sampler).nfe(steps))


def test_lanes_balance_to_the_longest_lane():
    from reportgen.render.batched import balanced_lanes
    from reportgen.samplers import GUIDE_SAMPLERS

    guide = [one_cell(name, 3) for name in GUIDE_SAMPLERS]
    # the guide's 8 samplers at 3 steps: 5 x 3 calls (+1 for PLMS) + 3 x 5 = 31; the longest lane has 5
    assert balanced_lanes(guide) == 7
    assert balanced_lanes(guide[:1]) == 1


@pytest.mark.parametrize(("spec", "rows_per_call"), [("tiny", 6), ("tiny-flux", 3)])
def test_compiled_render_pads_every_call_to_one_size(rendered, monkeypatch: pytest.MonkeyPatch, spec: str,
                                                     rows_per_call: int):
    """`--compile` gives the denoiser one static shape: every call padded to its rows per lane (2 with CFG, 1 for
    FLUX.1) times the lanes. The compiler itself is replaced by nothing here (compiling on a 2-core CPU takes
    minutes); the padding of every input (text rows, pooled rows, guidance rows) is what is tested."""
    from reportgen.render import batched

    cells, reference, _, _ = rendered(spec)
    model = resolve_model(spec)
    pipe = load_pipeline(model)
    monkeypatch.setattr(batched, "compile_denoiser", lambda pipe: None)
    rows: list[int] = []
    hook = adapter(model.family).denoiser(pipe).register_forward_pre_hook(
        lambda _module, args, kwargs: rows.append((args[0] if args else kwargs["hidden_states"]).shape[0]),
        with_kwargs=True)
    try:
        padded = list(EXECUTORS["batched"](pipe, model, cells, batch_size=3, compile=True))
    finally:
        hook.remove()
    assert set(rows) == {rows_per_call}
    assert len(padded) == len(cells)
    for output in padded:
        expected = reference[output.cell.key]
        assert output.nfe == expected.nfe
        assert np.abs(output.latents - expected.latents).max() <= LATENT_TOLERANCE


def test_compile_needs_cuda(tiny_study: Path):
    result = CliRunner().invoke(app, ["render", str(tiny_study), "--compile"])
    assert isinstance(result.exception, ReportgenError)
    assert "--compile needs the batched executor on a CUDA device" in str(result.exception)
    assert not (tiny_study / "store").exists()


def test_cells_seconds_add_up_to_the_render_time(outputs):
    """Each cell's seconds are its share of the ticks and the decode it took part in: every interval of the
    render is counted once, so the shares add up to the render's time (no interval twice, none left out)."""
    import time

    cells, _, _, _ = outputs
    model = resolve_model("tiny")
    pipe = load_pipeline(model)
    start = time.perf_counter()
    rendered = list(EXECUTORS["batched"](pipe, model, cells, batch_size=3))
    wall = time.perf_counter() - start
    total = sum(o.seconds for o in rendered)
    assert 0.9 * wall <= total <= wall, (total, wall)
    assert all(o.seconds > 0 for o in rendered)


def test_lanes_of_other_schedules_and_cfg_values_share_calls_and_equal_the_pipeline(tmp_path: Path):
    """The schedules and cfg axes in one batch: lanes of karras and exponential sigmas and of CFG 3 and 9 (none the
    topic's -C7.5) share denoiser calls, each guided by its own CFG, and give the per-cell pipeline's images."""
    root = tmp_path / "axes"
    (root / "topics").mkdir(parents=True)
    (root / "study.toml").write_text('title = "t"\nmodel = "tiny"\nsamplers = ["k_euler", "dpmpp_2m", "ddim"]\n'
                                     'steps = [3]\nseeds = 1\nreference_steps = 0\n'
                                     'schedules = ["default", "karras", "exponential"]\ncfg = [3, 9]\n')
    topic(root, "anime", '"an anime girl" -W32 -H32 -C7.5 -S3031912972', ["k_euler", "dpmpp_2m", "ddim"], [3])
    model = resolve_model("tiny")
    pipe = load_pipeline(model)
    cells = plan(load_study(root), model, "cpu", "float32", Store(root / "store")).to_render
    # k_euler and dpmpp_2m take the three schedules, DDIM the default only: 7 lanes x 2 cfg values
    assert len(cells) == 14 and {(c.schedule_type, c.cfg) for c in cells} == {
        (s, g) for s in ("default", "karras", "exponential") for g in (3.0, 9.0)}
    reference = {o.cell.key: o for o in EXECUTORS["pipeline"](pipe, model, cells)}
    mixes: list[set[tuple[str, float]]] = []
    real = batched_module._BatchedRun._tick

    def watched(self, active):
        mixes.append({(lane.cell.schedule_type, lane.cell.cfg) for lane in active})
        return real(self, active)

    batched_module._BatchedRun._tick = watched
    try:
        batched = list(EXECUTORS["batched"](pipe, model, cells, batch_size=6))
    finally:
        batched_module._BatchedRun._tick = real
    assert max(len(m) for m in mixes) >= 3  # one call held lanes of several schedules and cfg values
    assert any(len({g for _, g in m}) == 2 for m in mixes)  # both cfg values in one call
    assert sorted(o.cell.key for o in batched) == sorted(c.key for c in cells)
    for output in batched:
        expected = reference[output.cell.key]
        assert output.error is None and expected.error is None
        assert np.abs(output.latents - expected.latents).max() <= LATENT_TOLERANCE
        pixels = np.abs(np.asarray(output.image, dtype=int) - np.asarray(expected.image, dtype=int))
        assert pixels.max() <= PIXEL_TOLERANCE
    # and the axes change the pixels: a schedule and a cfg value other than the defaults are not the default image
    by = {(o.cell.sampler, o.cell.schedule_type, o.cell.cfg): o.latents for o in batched}
    assert np.abs(by[("k_euler", "karras", 3.0)] - by[("k_euler", "default", 3.0)]).max() > 1e-3
    assert np.abs(by[("k_euler", "default", 9.0)] - by[("k_euler", "default", 3.0)]).max() > 1e-3
