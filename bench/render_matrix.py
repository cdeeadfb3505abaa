"""Render the same study with the batched executor and the per-cell pipeline, interleaved, in one process.

CPU (default when no GPU): the tests' tiny model of the family, 2 topics x the family's samplers (the guide's 8
for SD and SDXL, flow Euler, DPM++ 2M and UniPC for FLUX.1) x 3 step counts.
CUDA: the family at full size built from configs in code with random weights (timing needs no weights, so
nothing is downloaded), in half precision, on the samplers x {10, 20, 30, 40, 50, 100} matrix: `--family sd`
(default) an SD 1.5-architecture UNet, VAE and CLIP text encoder at 512x512; `--family sdxl` SDXL base's UNet,
VAE, CLIP-L and OpenCLIP-G at 1024x1024; `--family flux` FLUX.1 dev's transformer, VAE, CLIP-L and T5-XXL at
1024x1024. It also prints model calls/s and the fraction of the card's dense bf16/fp16 peak reached, from FLOPs
per denoiser call (a CFG pair for SD and SDXL, one row for FLUX.1 dev) counted by torch's FlopCounterMode.
The SDXL and FLUX.1 builds have not run on CUDA (no GPU was available when they were written); their FLOPs and
parameter counts were checked on torch's meta device (tests/bench/test_render_matrix.py).

Before each batched throughput run on CUDA, the UNet alone is timed at that render's batch shape (the
lane count the executor will choose, two rows per lane), so the share of the UNet's own speed that the
whole render keeps is printed next to it. With --compile the UNet is compiled by the executor's own
option (`reportgen render --compile`: torch.compile with static shapes, every call padded to one size),
and that timing is also the compile's warm-up, reported apart.

Everything is time-boxed by --budget (seconds, model building included): a run that would not finish
in time, judged from the rates already measured, is skipped and said so; a watchdog prints what was
measured and exits if the budget is overrun anyway.

    python bench/render_matrix.py                       # CPU, tiny model
    python bench/render_matrix.py --family flux --quick # CPU, tiny FLUX.1 dev
    python bench/render_matrix.py --device cuda --budget 330 --json-out result.json
    python bench/render_matrix.py --device cuda --family sdxl --reps 1 --throughput-topics 2
    python bench/render_matrix.py --device cuda --reps 0 --throughput-topics 4,8 --compile
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing, hence E402 on the imports below
sys.path.insert(0, str(ROOT / "bench"))  # gpu_clocks, when run from elsewhere

from gpu_clocks import ClockLog  # noqa: E402

from reportgen.models.configs import FLUX_DEV_SCHEDULER, SDXL_SCHEDULER  # noqa: E402
from reportgen.models.families import adapter_for_pipeline  # noqa: E402
from reportgen.models.loading import load_pipeline  # noqa: E402
from reportgen.models.sources import SD1_SCHEDULER, ModelInfo, resolve_model  # noqa: E402
from reportgen.models.tiny import byte_tokenizer, t5_tokenizer  # noqa: E402
from reportgen.render.batched import auto_lanes, compile_denoiser, probe_inputs  # noqa: E402
from reportgen.render.execute import render  # noqa: E402
from reportgen.render.plan import plan  # noqa: E402
from reportgen.render.store import Store  # noqa: E402
from reportgen.samplers import GUIDE_SAMPLERS, get_sampler  # noqa: E402
from reportgen.study.load import load_study  # noqa: E402

TOPICS = [  # the guide's prompts; CFG 7.5 as in the guide
    ("anime", "an anime girl", 3031912972),
    ("nature", "valley landscape wallpaper, d&d art, fantasy, painted, 4k, high detail", 1458228930),
    ("food", "a hamburger with a bowl of french fries", 4053222918),
    ("animals", "grown tiger, full body", 3721629802),
    ("people", "portrait photo of a middle-aged woman with short grey hair, studio lighting", 2131956332),
]
# Dense (no sparsity) bf16/fp16 tensor-core peaks from the vendors' datasheets, TFLOP/s; first match wins.
PEAKS = [("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("H200", 989.4), ("GH200", 989.4),
         ("A100", 312.0), ("L40S", 362.1), ("L4", 121.0), ("A10G", 70.0), ("RTX 4090", 165.2)]


def parse() -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--family", choices=sorted(FAMILIES), default="sd",
                   help="the model family: sd (SD 1.5), sdxl (SDXL base) or flux (FLUX.1 dev)")
    p.add_argument("--dtype", default=None, help="CUDA: bfloat16 (default) or float16; CPU: float32")
    p.add_argument("--reps", type=int, default=3, help="repetitions of each executor (interleaved)")
    p.add_argument("--topics", type=int, default=None, help="topics in the compared study (CPU 2, CUDA 1)")
    p.add_argument("--steps", default=None, help="step counts, comma-separated (CPU 4,8,12; CUDA 10,...,100)")
    p.add_argument("--size", type=int, default=None,
                   help="image side in pixels (CPU 32, CUDA 512 for sd, 1024 for sdxl and flux)")
    p.add_argument("--batch-size", type=int, default=None, help="lanes per UNet call (default: automatic)")
    p.add_argument("--throughput-topics", default=None,
                   help="after the comparison, batched-only runs of these many topics, comma-separated (CUDA 4)")
    p.add_argument("--quick", action="store_true", help="steps 10,20 and 1 repetition: a smoke run")
    p.add_argument("--budget", type=float, default=None, help="seconds for the whole run (CPU 1800, CUDA 330)")
    p.add_argument("--channels-last", action="store_true", help="CUDA: UNet in channels_last memory format")
    p.add_argument("--fuse-qkv", action="store_true", help="CUDA: diffusers' fuse_qkv_projections() on the UNet")
    p.add_argument("--compile", action="store_true",
                   help="CUDA: the throughput runs compile the UNet as `reportgen render --compile` does")
    p.add_argument("--cudnn-benchmark", action="store_true",
                   help="CUDA: torch.backends.cudnn.benchmark (convolution algorithms timed, not guessed)")
    p.add_argument("--unet-alone-calls", type=int, default=5,
                   help="CUDA: timed calls of the UNet alone before each throughput run (5 take about a second)")
    p.add_argument("--cpu-rows", type=int, default=None,
                   help="--model demo: rows of every CPU denoiser call in the render (render/batched.py's "
                        "CPU_ROWS_PER_CALL) for this run, to compare call sizes")
    p.add_argument("--peak-tflops", type=float, default=None, help="override the card's assumed dense peak")
    p.add_argument("--json-out", type=Path, default=None, help="also write the results as JSON here")
    p.add_argument("--model", choices=("demo",), default=None,
                   help="demo: the shipped demo model's render of examples/demo (one seed, no separate reference) "
                        "against its UNet alone at the render's rows, in one process (CPU); nothing else runs")
    return p.parse_args()


def build_sd15(device: str, dtype: str) -> Any:
    """An SD 1.5-architecture pipeline (UNet 860M, VAE, CLIP ViT-L text encoder) with random weights."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = byte_tokenizer()
    torch.manual_seed(0)
    with torch.device(device):  # initialise on the card: 1B parameters are slow to initialise on a CPU
        unet = UNet2DConditionModel(  # SD 1.x: the defaults are its blocks; its text width is 768
            sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
            block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=0.18215)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=768, intermediate_size=3072, num_attention_heads=12,
            num_hidden_layers=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id))
    pipe = StableDiffusionPipeline(
        vae=vae.eval(), text_encoder=text_encoder.eval(), unet=unet.eval(), tokenizer=tokenizer,
        scheduler=PNDMScheduler.from_config(SD1_SCHEDULER), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device=device, dtype=getattr(torch, dtype))


def build_sdxl(device: str, dtype: str) -> Any:
    """An SDXL base-architecture pipeline (UNet 2.6B, VAE, CLIP-L and OpenCLIP-G text encoders) with random
    weights; the configs are those of stabilityai/stable-diffusion-xl-base-1.0's folders."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tokenizer, tokenizer_2 = byte_tokenizer(), byte_tokenizer(pad_token="!")
    torch.manual_seed(0)
    with torch.device(device), default_dtype(getattr(torch, dtype)):
        unet = UNet2DConditionModel(
            sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
            use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=1024,
            block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=0.13025, force_upcast=True)
        text_encoder = CLIPTextModel(_clip_config(tokenizer, 768, 12, 12, 3072, "quick_gelu", 768))
        text_encoder_2 = CLIPTextModelWithProjection(_clip_config(tokenizer_2, 1280, 32, 20, 5120, "gelu", 1280))
    pipe = StableDiffusionXLPipeline(
        vae=vae.eval(), text_encoder=text_encoder.eval(), text_encoder_2=text_encoder_2.eval(), unet=unet.eval(),
        tokenizer=tokenizer, tokenizer_2=tokenizer_2, scheduler=EulerDiscreteScheduler.from_config(SDXL_SCHEDULER),
        force_zeros_for_empty_prompt=True, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device=device, dtype=getattr(torch, dtype))


def build_flux(device: str, dtype: str) -> Any:
    """A FLUX.1 dev-architecture pipeline (transformer 11.9B, VAE, CLIP-L and T5-XXL encoders) with random
    weights; FluxTransformer2DModel's defaults are FLUX.1's sizes, the rest black-forest-labs/FLUX.1-dev's."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5Config, T5EncoderModel

    tokenizer, tokenizer_2 = byte_tokenizer(), t5_tokenizer()
    torch.manual_seed(0)
    # built in the run's dtype: in float32 first, FLUX.1's 17B parameters would take 68 GB before the cast
    with torch.device(device), default_dtype(getattr(torch, dtype)):
        transformer = FluxTransformer2DModel(guidance_embeds=True)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=16, layers_per_block=2, sample_size=1024,
            block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=0.3611, shift_factor=0.1159,
            use_quant_conv=False, use_post_quant_conv=False)
        text_encoder = CLIPTextModel(_clip_config(tokenizer, 768, 12, 12, 3072, "quick_gelu", 768))
        text_encoder_2 = T5EncoderModel(T5Config(  # T5 v1.1 XXL, the encoder FLUX.1 ships
            vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
            feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1))
    pipe = FluxPipeline(
        vae=vae.eval(), text_encoder=text_encoder.eval(), text_encoder_2=text_encoder_2.eval(),
        transformer=transformer.eval(), tokenizer=tokenizer, tokenizer_2=tokenizer_2,
        scheduler=FlowMatchEulerDiscreteScheduler.from_config(FLUX_DEV_SCHEDULER))
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device=device, dtype=getattr(torch, dtype))


@contextlib.contextmanager
def default_dtype(dtype: Any) -> Iterator[None]:
    """torch's default dtype set to `dtype` for the block (modules built in it get parameters of that dtype)."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _clip_config(tokenizer: Any, width: int, layers: int, heads: int, ffn: int, act: str, projection: int) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=width, intermediate_size=ffn, num_attention_heads=heads,
        num_hidden_layers=layers, max_position_embeddings=77, hidden_act=act, projection_dim=projection,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


# Per family: the full-size builder, its scheduler config, the tiny model for the CPU, its samplers, its size.
FAMILIES: dict[str, dict[str, Any]] = {
    "sd": {"build": build_sd15, "scheduler": SD1_SCHEDULER, "tiny": "tiny", "samplers": GUIDE_SAMPLERS,
           "size": 512},
    "sdxl": {"build": build_sdxl, "scheduler": SDXL_SCHEDULER, "tiny": "tiny-sdxl", "samplers": GUIDE_SAMPLERS,
             "size": 1024},
    "flux": {"build": build_flux, "scheduler": FLUX_DEV_SCHEDULER, "tiny": "tiny-flux",
             "samplers": ("flow_euler", "flow_dpmpp_2m", "flow_unipc"), "size": 1024},
}


def denoiser_flops(pipe: Any, size: int) -> float:
    """FLOPs of one model call at `size` pixels (a CFG pair where the family guides, else one row), counted by
    torch's FlopCounterMode: works on any device, the meta device included."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    family = adapter_for_pipeline(pipe)
    inputs = probe_inputs(pipe, family.rows_per_lane, size, size)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        family.denoise(pipe, *inputs)
    return float(counter.get_total_flops())


def unet_inputs(pipe: Any, rows: int, size: int) -> tuple[Any, Any, Any]:
    """Seeded random UNet inputs for `rows` rows at `size` pixels: latents, timesteps 999..1, text states."""
    import torch

    unet, device = pipe.unet, pipe._execution_device
    side = size // pipe.vae_scale_factor
    generator = torch.Generator("cpu").manual_seed(0)
    sample = torch.randn((rows, unet.config.in_channels, side, side), generator=generator)
    states = torch.randn((rows, 77, unet.config.cross_attention_dim), generator=generator)
    return (sample.to(device, unet.dtype), torch.linspace(999, 1, rows, device=device),
            states.to(device, unet.dtype))


def write_study(root: Path, topics: int, steps: list[int], size: int,
                samplers: tuple[str, ...] = GUIDE_SAMPLERS) -> Path:
    """A study folder: `topics` of the guide's prompts x `samplers` (the guide's 8) x `steps`."""
    (root / "topics").mkdir(parents=True)
    names = ", ".join(f'"{s}"' for s in samplers)
    (root / "study.toml").write_text(f'title = "bench"\nmodel = "tiny"\nsamplers = [{names}]\nsteps = {steps}\n')
    for order, (slug, text, seed) in enumerate((TOPICS * 10)[:topics]):
        slug = f"{slug}{order}"
        (root / "topics" / f"{slug}.md").write_text(
            f"---\ntitle: {slug}\nprompt: '\"{text}\" -W{size} -H{size} -C7.5 -S{seed + order}'\norder: {order}\n---\n")
    return root


class Bench:
    """Runs renders into fresh stores, keeps every measurement, and enforces the time box."""

    def __init__(self, pipe: Any, model: ModelInfo, device: str, dtype: str, budget: float, started: float,
                 unet_alone_calls: int = 5) -> None:
        self.pipe, self.model, self.device, self.dtype = pipe, model, device, dtype
        self.family = adapter_for_pipeline(pipe)
        self.budget, self.started, self.unet_alone_calls = budget, started, unet_alone_calls
        self.runs: list[dict[str, Any]] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="render-matrix-"))

    def left(self) -> float:
        """Seconds left in the budget."""
        return self.budget - (time.perf_counter() - self.started)

    def run(self, study_dir: Path, executor: str, label: str, batch_size: int | None,
            compile: bool = False, unet_alone: bool = False) -> dict[str, Any] | None:
        """Render the whole study into a fresh store with `executor`; None if the time box forbids it.
        With `unet_alone`, first time the denoiser by itself at the render's batch shape. (The result keys say
        "unet" for any denoiser, as the results written before the other families did.)"""
        import torch

        study = load_study(study_dir)
        store = Store(self.tmp / f"store-{len(self.runs)}")
        the_plan = plan(study, self.model, self.device, self.dtype, store)
        predicted = self.predict(executor, the_plan.nfe_to_run)
        if predicted is not None and predicted > self.left() - 5:
            print(f"  skipped {label} {executor}: needs about {predicted:.0f}s, {self.left():.0f}s left", flush=True)
            return None
        row: dict[str, Any] = {"label": label, "executor": executor}
        if executor == "batched":
            if compile:
                compile_denoiser(self.pipe)
            cells = the_plan.to_render
            lanes = batch_size or auto_lanes(self.pipe, cells)
            row["lanes"] = lanes
            if unet_alone:
                row.update(self.time_unet(self.family.rows_per_lane * lanes, cells[0].width, self.unet_alone_calls))
        # the lanes computed above, passed on, so that the executor's memory probe is not counted below
        options = {"batch_size": row["lanes"], "compile": compile} if executor == "batched" else {}
        counter = CallCounter(self.family.denoiser(self.pipe))
        self.family.set_denoiser(self.pipe, counter)
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        clocks = ClockLog(enabled=self.device == "cuda")
        start = time.perf_counter()
        try:
            with clocks:
                result = render(the_plan, self.pipe, self.model, store, executor=executor, **options)
                if self.device == "cuda":
                    torch.cuda.synchronize()
        finally:
            self.family.set_denoiser(self.pipe, counter.unet)
        seconds = time.perf_counter() - start
        clocks.report(row)
        shutil.rmtree(store, ignore_errors=True)
        images = result.rendered + len(result.failed)
        row.update({"images": images, "failed": len(result.failed), "nfe": result.nfe, "seconds": seconds,
                    "images_per_s": images / seconds, "calls_per_s": result.nfe / seconds,
                    "unet_calls": len(counter.rows), "unet_rows": sum(counter.rows), "unet_seconds": counter.seconds,
                    "useful_rows": sum(c.nfe * (2 if self.family.guided(self.pipe, c.cfg) else 1)
                                       for c in the_plan.to_render)})
        if self.device == "cuda":
            row["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        # compiled: a count that grows during a timed run means recompiling
        if hasattr(self.family.denoiser(self.pipe), "_orig_mod"):
            from torch._dynamo.utils import counters

            row["graphs_compiled_so_far"] = counters["stats"]["unique_graphs"]
            print(f"  ({row['graphs_compiled_so_far']} graphs compiled so far)", flush=True)
        self.runs.append(row)
        print(f"  {label:10} {executor:8} {images:4d} images {result.nfe:6d} calls {seconds:8.2f}s "
              f"{row['images_per_s']:7.3f} images/s {row['calls_per_s']:8.2f} calls/s; "
              f"{row['unet_calls']} denoiser calls of {row['useful_rows'] / row['unet_calls']:.1f} rows on average"
              + (f" (padded to {row['unet_rows'] / row['unet_calls']:.1f})" if row["unet_rows"] != row["useful_rows"]
                 else "")
              + (f"  ({len(result.failed)} non-finite)" if result.failed else ""), flush=True)
        return row

    def time_unet(self, rows: int, size: int, calls: int = 5) -> dict[str, Any]:
        """The denoiser alone at `rows` rows of `size` pixels: a warm-up (which compiles a compiled one), then
        `calls` timed calls."""
        import torch

        inputs = probe_inputs(self.pipe, rows, size, size)
        clocks = ClockLog(enabled=self.device == "cuda")

        def timed_call() -> float:
            if self.device == "cuda":
                torch.cuda.synchronize()
            begin = time.perf_counter()
            self.family.denoise(self.pipe, *inputs)
            if self.device == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - begin

        with torch.inference_mode():
            warmup = [timed_call() for _ in range(2)]  # the first compiles a compiled UNet
            with clocks:
                seconds = [timed_call() for _ in range(calls)]
        alone = statistics.median(seconds)
        per_call = self.family.rows_per_lane  # rows of one model call: a CFG pair, or one
        out = {"unet_alone_rows": rows, "unet_alone_s": alone, "unet_alone_calls_per_s": rows / per_call / alone,
               "unet_warmup_s": warmup[0], "unet_alone_calls": calls}
        print(f"  denoiser alone at {rows} rows: {alone * 1000:.1f} ms/call, {rows / per_call / alone:.2f} calls/s "
              f"(median of {calls} calls over {sum(seconds):.1f}s; warm-up {warmup[0]:.1f}s)", flush=True)
        clocks.report(out, "unet_alone_clocks")
        return out

    def predict(self, executor: str, nfe: int) -> float | None:
        """Seconds a render of `nfe` calls would take at this executor's slowest measured rate."""
        # Warm-up rates mislead (first calls pay for kernel selection): the first real run is not predicted,
        # and the watchdog stops it if it overruns.
        measured = [r for r in self.runs if r["executor"] == executor and r["label"] != "warm-up"]
        return nfe / min(r["calls_per_s"] for r in measured) if measured else None


class CallCounter:
    """Stands in for the pipeline's denoiser and records the rows of every call, and the seconds the calls took
    (meaningful on a CPU only, where a call returns when its work is done)."""

    def __init__(self, unet: Any) -> None:
        self.unet = unet
        self.rows: list[int] = []
        self.seconds = 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.rows.append((args[0] if args else kwargs["hidden_states"]).shape[0])  # UNets positional, DiTs not
        start = time.perf_counter()
        try:
            return self.unet(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start

    def __getattr__(self, name: str) -> Any:
        return getattr(self.unet, name)


def demo_against_unet(args: argparse.Namespace) -> None:
    """The demo render's model calls/s beside its UNet alone at the rows the render calls it with (and at a
    whole tick's rows), timed before and after the render in the same process and thread settings."""
    import torch

    from reportgen.render import batched

    if args.cpu_rows:
        batched.CPU_ROWS_PER_CALL = args.cpu_rows
    model = resolve_model("demo")
    pipe = load_pipeline(model, "cpu", "float32")
    tmp = Path(tempfile.mkdtemp(prefix="render-demo-"))
    try:
        study = tmp / "demo"
        shutil.copytree(ROOT / "examples" / "demo", study, ignore=shutil.ignore_patterns("store", "grids", "site"))
        toml = study / "study.toml"
        toml.write_text(toml.read_text().replace("seeds = 3", "seeds = 1") + "reference_steps = 0\n")
        bench = Bench(pipe, model, "cpu", "float32", args.budget or 1800.0, time.perf_counter(), 30)
        print(f"device: CPU; demo model, 64x64; torch {torch.__version__}; threads {torch.get_num_threads()}")
        warm = write_study(tmp / "warm", 1, [2], 64, GUIDE_SAMPLERS)
        (warm / "study.toml").write_text((warm / "study.toml").read_text().replace('"tiny"', '"demo"'))
        bench.run(warm, "batched", "warm-up", None)
        rows = tuple(sorted({batched.CPU_ROWS_PER_CALL, 2 * batched.CPU_LANES}))
        before = {r: bench.time_unet(r, 64, 30)["unet_alone_calls_per_s"] for r in rows}
        run = bench.run(study, "batched", "demo", None)
        after = {r: bench.time_unet(r, 64, 30)["unet_alone_calls_per_s"] for r in rows}
        assert run is not None
        print(f"\ndemo render (batched, {run['images']} images, {run['nfe']} model calls): {run['calls_per_s']:.2f} "
              f"model calls/s")
        print(f"  inside the render, its {run['unet_calls']} denoiser calls took {run['unet_seconds']:.2f} s of "
              f"{run['seconds']:.2f} s ({run['unet_seconds'] / run['seconds']:.1%}): the rest is the render's own work")
        for r in rows:
            alone = (before[r] + after[r]) / 2
            print(f"  the UNet alone at {r} rows: {alone:.2f} calls/s (before {before[r]:.2f}, after {after[r]:.2f}); "
                  f"the render keeps {run['calls_per_s'] / alone:.1%}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    """Build the model, warm up, run the interleaved comparison, then print medians and peak fractions."""
    import torch

    args = parse()
    if args.model == "demo":
        demo_against_unet(args)
        return
    started = time.perf_counter()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.startswith("cuda")
    dtype = args.dtype or ("bfloat16" if cuda else "float32")
    steps = [int(s) for s in (args.steps or ("10,20,30,40,50,100" if cuda else "4,8,12")).split(",")]
    reps = args.reps
    if args.quick:
        steps, reps = steps[:2], 1
    topics = args.topics or (1 if cuda else 2)
    family = FAMILIES[args.family]
    size = args.size or (family["size"] if cuda else 32)
    samplers: tuple[str, ...] = family["samplers"]
    budget = args.budget or (330.0 if cuda else 1800.0)
    throughput_topics = [int(t) for t in (args.throughput_topics or ("4" if cuda else "")).split(",") if t.strip()]

    if cuda:
        pipe = family["build"](device, dtype)
        denoiser = adapter_for_pipeline(pipe).denoiser(pipe)
        if args.channels_last:
            denoiser.to(memory_format=torch.channels_last)
        if args.fuse_qkv:
            denoiser.fuse_qkv_projections()
        label = {"sd": "sd15"}.get(args.family, args.family)
        model = ModelInfo(f"bench-{label}-random", "bench", f"bench-{label}-random-v1",
                          scheduler_config=dict(family["scheduler"]), family=args.family,
                          variant="dev" if args.family == "flux" else "")
        name = torch.cuda.get_device_name()
    else:
        model = resolve_model(family["tiny"])
        pipe = load_pipeline(model, device, dtype)
        name = "CPU"
    flops = denoiser_flops(pipe, size)  # on the eager denoiser: the FLOPs are the model's, however it is run
    if cuda and args.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    bench = Bench(pipe, model, device, dtype, budget, started, args.unet_alone_calls)
    print(f"device: {name}; dtype {dtype}; {size}x{size}; torch {torch.__version__}; threads {torch.get_num_threads()}"
          + ("; denoiser compiled" if cuda and args.compile else "") + ("; channels_last" if args.channels_last else "")
          + ("; fused QKV" if args.fuse_qkv else "") + ("; cudnn.benchmark" if cuda and args.cudnn_benchmark else ""))
    rows = "a CFG pair" if adapter_for_pipeline(pipe).rows_per_lane == 2 else "one row"
    print(f"{model.family_label}: FLOPs per model call ({rows}): {flops / 1e9:.3f} GFLOP (FlopCounterMode)")
    peak = args.peak_tflops or next((p for key, p in PEAKS if key in name), None) if cuda else None
    if cuda:
        print(f"assumed dense {dtype} peak: {peak} TFLOP/s" + (" (--peak-tflops)" if args.peak_tflops else
                                                              " (datasheet, by device name)"))

    def summary() -> dict[str, Any]:
        compared = [r for r in bench.runs if r["label"].startswith("rep")]
        ratios = []
        for label in dict.fromkeys(r["label"] for r in compared):
            pair = {r["executor"]: r for r in compared if r["label"] == label}
            if len(pair) == 2:
                ratios.append(pair["pipeline"]["seconds"] / pair["batched"]["seconds"])
        out: dict[str, Any] = {"device": name, "dtype": dtype, "size": size, "steps": steps, "topics": topics,
                               "compile": args.compile, "channels_last": args.channels_last,
                               "fuse_qkv": args.fuse_qkv, "cudnn_benchmark": cuda and args.cudnn_benchmark,
                               "family": args.family, "samplers": list(samplers), "flops_per_call": flops,
                               "peak_tflops": peak,
                               "runs": bench.runs, "ratios": ratios,
                               "median_ratio": statistics.median(ratios) if ratios else None}
        print("\nsummary")
        for executor in ("pipeline", "batched"):
            rows = [r for r in compared if r["executor"] == executor]
            if rows:
                ips = statistics.median(r["images_per_s"] for r in rows)
                cps = statistics.median(r["calls_per_s"] for r in rows)
                line = f"  {executor:8} median {ips:.3f} images/s, {cps:.2f} model calls/s over {len(rows)} runs"
                if peak:
                    line += f", {cps * flops / 1e12 / peak:.1%} of peak"
                print(line)
                out[executor] = {"images_per_s": ips, "calls_per_s": cps}
        for r in (r for r in bench.runs if r["label"] == "throughput"):
            line = (f"  batched, {r['images']} images, {r['lanes']} lanes: {r['images_per_s']:.3f} images/s, "
                    f"{r['calls_per_s']:.2f} calls/s")
            if peak:
                line += f", {r['calls_per_s'] * flops / 1e12 / peak:.1%} of peak"
            if "unet_alone_calls_per_s" in r:
                alone = r["unet_alone_calls_per_s"]
                line += (f"; the denoiser alone at {r['unet_alone_rows']} rows: {alone:.2f} calls/s"
                         + (f" ({alone * flops / 1e12 / peak:.1%} of peak)" if peak else "")
                         + f", of which the render keeps {r['calls_per_s'] / alone:.1%}")
            clocks = [r.get(k, {}).get("sm_mhz_median") for k in ("unet_alone_clocks", "clocks")]
            if None not in clocks:
                line += f"; SM clock median {clocks[0]:.0f} MHz alone, {clocks[1]:.0f} MHz in the render"
            print(line)
        if ratios:
            print(f"  median ratio batched/pipeline (speedup): {out['median_ratio']:.2f}x "
                  f"(per repetition: {', '.join(f'{x:.2f}' for x in ratios)})")
        if args.json_out:
            args.json_out.write_text(json.dumps(out, indent=2))
        return out

    def overrun(*_: Any) -> None:
        print(f"\ntime box of {budget:.0f}s overrun: stopping with what was measured", flush=True)
        summary()
        raise SystemExit(3)

    signal.signal(signal.SIGALRM, overrun)
    signal.alarm(max(1, int(budget - (time.perf_counter() - started))))
    try:
        # first calls pay for kernel selection and caches
        warm = write_study(bench.tmp / "warm", 1, [2], size, samplers)
        for executor in ("pipeline", "batched") if reps else ("batched",):
            bench.run(warm, executor, "warm-up", args.batch_size)
        study = write_study(bench.tmp / "study", topics, steps, size, samplers)
        print(f"study: {topics} topics x {len(samplers)} samplers x steps {steps}, "
              f"{sum(get_sampler(s).nfe(n) for s in samplers for n in steps) * topics} model calls")
        for rep in range(reps):  # alternate which executor goes first, so drift in the machine hits both
            order = ("batched", "pipeline") if rep % 2 == 0 else ("pipeline", "batched")
            for executor in order:
                bench.run(study, executor, f"rep{rep + 1}", args.batch_size)
        for count in throughput_topics:  # last: compiling replaces the UNet the comparison above ran eagerly
            big = write_study(bench.tmp / f"throughput-{count}", count, steps, size, samplers)
            bench.run(big, "batched", "throughput", args.batch_size, compile=args.compile, unet_alone=cuda)
    finally:
        signal.alarm(0)
        shutil.rmtree(bench.tmp, ignore_errors=True)
    summary()


if __name__ == "__main__":
    main()
