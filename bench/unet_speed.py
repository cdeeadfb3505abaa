"""How fast the UNet alone runs at the batched executor's batch shape, in several execution variants.

The batched render spends most of its time in UNet calls of about 100-128 rows (issue 5,
docs/performance.md). This times one such call, side by side in one process, for:

- eager: the UNet as diffusers builds it;
- channels_last: its convolution weights and inputs in NHWC memory format;
- fused_qkv: diffusers' `fuse_qkv_projections()` (one matmul for Q, K and V of self-attention);
- compile: `torch.compile` (inductor, default mode, static shapes) as `reportgen render --compile`
  applies it (`batched.compile_denoiser`); compile_cl_qkv: the same on top of channels_last and fused QKV;
- compile_tuned: compile_cl_qkv with the inductor settings of diffusers' former "Accelerate inference of
  text-to-image diffusion models" tutorial (1x1 convolutions as matmuls, coordinate-descent tuning of
  the generated kernels, no epilogue fusion); its compilation takes longer than the others'.

Each variant gets warm-up calls (compilation included), then `--calls` timed calls between CUDA
events; the median is reported with TFLOP/s from torch's FlopCounterMode and the share of the card's
dense peak. Variants run in the order given and can be repeated (e.g. eager,compile,eager) to see
drift. The FLOPs are the same for every variant: they count the model's arithmetic, not the kernels'.

    python bench/unet_speed.py --device cuda --rows 128 --variants eager,channels_last,fused_qkv,compile,eager
    python bench/unet_speed.py --device cuda --rows 112 --variants eager,compile,compile_cl_qkv
    python bench/unet_speed.py --device cuda --rows 112 --variants eager --attention default,cudnn,flash,efficient
    python bench/unet_speed.py --device cuda --rows 112 --variants compile --calls 250   # a minute: do clocks drop?
    python bench/unet_speed.py --device cuda --rows 112 --variants eager,compile --cudnn-benchmark off,on

--attention times each variant under each of PyTorch's scaled-dot-product-attention backends
(`torch.nn.attention.sdpa_kernel`; "default" lets PyTorch choose). With 40 or more calls, the median of
the first and of the last quarter of the calls are printed too: a render keeps the GPU busy for a minute
or more, and a card that lowers its clocks under a sustained load shows it there. On CUDA the SM clock,
power and the driver's slowdown reasons are sampled while each variant is timed (bench/gpu_clocks.py).
--cudnn-benchmark off,on times each variant with cuDNN's convolution algorithms chosen by heuristics
(PyTorch's default) and by timing them (`torch.backends.cudnn.benchmark`).
    python bench/unet_speed.py            # CPU smoke run on the tests' tiny model
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # render_matrix's builders
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # reportgen from a checkout

from gpu_clocks import ClockLog  # noqa: E402
from render_matrix import PEAKS, build_sd15, denoiser_flops, unet_inputs  # noqa: E402

from reportgen.models.loading import load_pipeline  # noqa: E402
from reportgen.models.sources import resolve_model  # noqa: E402
from reportgen.render.batched import compile_denoiser  # noqa: E402

VARIANTS = ("eager", "channels_last", "fused_qkv", "compile", "compile_cl_qkv", "compile_tuned")
# torch._inductor.config values for compile_tuned, from diffusers' fast_diffusion tutorial (removed from
# its docs in 2025 when the optimisation pages were merged; the settings themselves are inductor's)
TUNED_INDUCTOR = {"conv_1x1_as_mm": True, "coordinate_descent_tuning": True, "epilogue_fusion": False,
                  "coordinate_descent_check_all_directions": True}


def apply_variant(pipe: Any, variant: str) -> None:
    """Put the pipeline's UNet in `variant`'s form, undoing whatever an earlier variant did."""
    import torch
    import torch._inductor.config as inductor

    defaults = _INDUCTOR_DEFAULTS.setdefault("values", {key: getattr(inductor, key) for key in TUNED_INDUCTOR})
    for key, value in TUNED_INDUCTOR.items():
        setattr(inductor, key, value if variant == "compile_tuned" else defaults[key])
    if variant.startswith("compile"):
        torch._dynamo.reset()  # else a second compile of the same module may reuse the first one's code
    unet = getattr(pipe.unet, "_orig_mod", pipe.unet)  # a compiled UNet wraps the original module
    unet.to(memory_format=torch.contiguous_format)
    if getattr(unet, "original_attn_processors", None) is not None:  # set by fuse_qkv_projections
        unet.unfuse_qkv_projections()
        unet.original_attn_processors = None  # diffusers empties this dict while restoring it; twice would fail
    pipe.unet = unet
    if variant == "channels_last":
        unet.to(memory_format=torch.channels_last)
    elif variant == "fused_qkv":
        unet.fuse_qkv_projections()
    elif variant == "compile":
        compile_denoiser(pipe)  # what `reportgen render --compile` does
    elif variant in ("compile_cl_qkv", "compile_tuned"):
        unet.to(memory_format=torch.channels_last)
        unet.fuse_qkv_projections()
        compile_denoiser(pipe)


_INDUCTOR_DEFAULTS: dict[str, dict[str, Any]] = {}


def time_calls(unet: Any, inputs: tuple[Any, ...], calls: int, cuda: bool) -> list[float]:
    """Seconds of each of `calls` UNet calls on `inputs` (CUDA events on a GPU, perf_counter on a CPU)."""
    import torch

    sample, timestep, states = inputs
    seconds = []
    for _ in range(calls):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            unet(sample, timestep, encoder_hidden_states=states, return_dict=False)
            end.record()
            end.synchronize()
            seconds.append(start.elapsed_time(end) / 1000)
        else:
            begin = time.perf_counter()
            unet(sample, timestep, encoder_hidden_states=states, return_dict=False)
            seconds.append(time.perf_counter() - begin)
    return seconds


def main() -> None:
    """Build the UNet, then warm up and time each variant in turn."""
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--rows", type=int, default=None, help="UNet batch rows (CUDA 128 = 64 CFG lanes; CPU 32)")
    parser.add_argument("--calls", type=int, default=10, help="timed calls per variant")
    parser.add_argument("--extra-rows", default="", help="comma-separated: also time each variant at these batch "
                        "sizes (a compiled UNet compiles one more static graph for each)")
    parser.add_argument("--variants", default="eager,channels_last,fused_qkv,compile,eager",
                        help=f"comma-separated, from {', '.join(VARIANTS)}")
    parser.add_argument("--attention", default="default",
                        help="comma-separated SDPA backends: default, cudnn, flash, efficient, math")
    parser.add_argument("--cudnn-benchmark", default="off",
                        help="comma-separated: off (heuristics, the default), on (torch.backends.cudnn.benchmark)")
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.startswith("cuda")

    variants = args.variants.split(",")
    extra = [int(r) for r in args.extra_rows.split(",") if r]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    if any(not 2 <= r <= (args.rows or (128 if cuda else 32)) for r in extra):
        parser.error("--extra-rows must lie between 2 and --rows")
    if cuda:
        pipe, size, rows, name = build_sd15(device, "bfloat16"), 512, args.rows or 128, torch.cuda.get_device_name()
    else:
        pipe, size, rows, name = load_pipeline(resolve_model("tiny")), 32, args.rows or 32, "CPU"
    flops = denoiser_flops(pipe, size) * rows / 2  # denoiser_flops counts a CFG pair
    peak = args.peak_tflops or (next((p for key, p in PEAKS if key in name), None) if cuda else None)
    print(f"device: {name}; torch {torch.__version__}; {size}x{size}; {rows} rows; "
          f"{flops / 1e12:.2f} TFLOP per call; peak {peak} TFLOP/s", flush=True)
    unet = pipe.unet
    inputs = unet_inputs(pipe, rows, size)
    results = []
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
                "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}
    attention = args.attention.split(",")
    if any(a != "default" and a not in backends for a in attention):
        parser.error(f"--attention takes default, {', '.join(backends)}")
    cudnn = args.cudnn_benchmark.split(",")
    if any(c not in ("off", "on") for c in cudnn):
        parser.error("--cudnn-benchmark takes off, on")
    with torch.inference_mode():
        reference = unet(*inputs[:2], encoder_hidden_states=inputs[2], return_dict=False)[0].float()
        for variant, backend, benchmark in ((v, a, c) for v in variants for a in attention for c in cudnn):
            torch.backends.cudnn.benchmark = benchmark == "on"
            with contextlib.ExitStack() as stack:
                if backend != "default":
                    stack.enter_context(sdpa_kernel(backends[backend]))
                results += time_variant(pipe, variant, backend, inputs, reference, rows, extra, args.calls, cuda,
                                        flops, peak)
    if args.json_out:
        args.json_out.write_text(json.dumps({"device": name, "torch": torch.__version__, "size": size, "rows": rows,
                                             "flops_per_call": flops, "peak_tflops": peak, "runs": results}, indent=2))


def time_variant(pipe: Any, variant: str, backend: str, inputs: tuple[Any, ...], reference: Any, rows: int,
                 extra: list[int], calls: int, cuda: bool, flops: float, peak: float | None) -> list[dict[str, Any]]:
    """Put the UNet in `variant`'s form, warm it up, then time it at `rows` and each of `extra` rows."""
    import torch
    from torch._dynamo.utils import counters

    results = []
    started = time.perf_counter()
    apply_variant(pipe, variant)
    model = pipe.unet
    for _ in range(2):  # the first call compiles a compiled variant
        output = model(inputs[0], inputs[1], encoder_hidden_states=inputs[2], return_dict=False)[0]
    if cuda:
        torch.cuda.synchronize()
    warm = time.perf_counter() - started
    error = float((output.float() - reference).abs().max() / reference.abs().max())
    cudnn = "cudnn.benchmark" if torch.backends.cudnn.benchmark else ""
    for part in (rows, *extra):
        clocks = ClockLog(enabled=cuda)
        with clocks:
            seconds = time_calls(model, tuple(x[:part] for x in inputs), calls, cuda)
        median = statistics.median(seconds)
        row = {"variant": variant, "attention": backend, "cudnn_benchmark": bool(cudnn), "rows": part,
               "median_s": median,
               "seconds": seconds, "warmup_s": warm,
               "tflops": flops * part / rows / median / 1e12, "max_rel_diff_vs_eager": error,
               "graphs_compiled_so_far": counters["stats"]["unique_graphs"]}
        if peak:
            row["share_of_peak"] = row["tflops"] / peak
        results.append(row)
        print(f"  {variant:18} {backend:9} {cudnn:15} {part:4d} rows {median * 1000:9.1f} ms/call  "
              f"{row['tflops']:7.1f} TFLOP/s" + (f"  {row['share_of_peak']:6.1%} of peak" if peak else "")
              + f"  (warm-up {warm:.0f}s; max |diff| vs eager {error:.1e} of max |output|; "
              f"{row['graphs_compiled_so_far']} graphs compiled so far)", flush=True)
        if calls >= 40:
            quarter = calls // 4
            first, last = statistics.median(seconds[:quarter]), statistics.median(seconds[-quarter:])
            row["first_quarter_median_s"], row["last_quarter_median_s"] = first, last
            print(f"    over {sum(seconds):.0f}s of calls: first quarter {first * 1000:.1f} ms/call, "
                  f"last quarter {last * 1000:.1f} ms/call ({last / first - 1:+.1%})", flush=True)
        clocks.report(row, indent="    ")
    return results


if __name__ == "__main__":
    main()
