"""Where a batched render's time goes, on the host and on the GPU, without changing how the stages overlap.

Wraps the batched executor's stages (admission, the tick's input gathering, the UNet call, the lanes' own
steps, decode, delivery) and the store's writes with timers, then renders one study into a fresh store.
Each stage gets its host time (perf_counter: how long the Python call took) and, on CUDA, its GPU span: a
CUDA event recorded as the host enters the stage and another as it leaves, read after the render, so
nothing waits for the GPU that would not wait anyway. A span covers the stage's kernels plus any time the
GPU sat idle waiting for the host inside it; the GPU time between spans is idle. So:

- UNet span close to the UNet alone (`bench/render_matrix.py` prints it) and small other spans: the
  render is GPU-bound and the rest is other GPU work;
- host time per tick close to the GPU time per tick: the host is the bottleneck and the GPU waits for it.

    python bench/profile_batched.py                                   # CPU, tiny model, 2 topics x 8 x 4,8,12
    python bench/profile_batched.py --device cuda --topics 4 --compile # SD 1.5 architecture, random weights
    python bench/profile_batched.py --topics 4 --size 64 --batch-size 56 --stub-unet   # the host's own work

--stub-unet replaces the UNet's forward with zeros, so what is left is the host's own work per tick
(admission, gathering inputs, the lanes' steps, decode, store) at a render's real lane count.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # render_matrix's model and study builders
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # reportgen from a checkout

from gpu_clocks import ClockLog  # noqa: E402 (after the sys.path lines above)
from render_matrix import build_sd15, unet_inputs, write_study  # noqa: E402

from reportgen.models.loading import load_pipeline  # noqa: E402
from reportgen.models.sources import SD1_SCHEDULER, ModelInfo, resolve_model  # noqa: E402
from reportgen.render import batched  # noqa: E402
from reportgen.render.execute import render  # noqa: E402
from reportgen.render.plan import plan  # noqa: E402
from reportgen.render.store import Store  # noqa: E402
from reportgen.study.load import load_study  # noqa: E402

STAGES = ("admit", "gather inputs", "unet", "lanes' steps", "decode", "deliver (to PIL)", "store.put (worker)")


class Timeline:
    """Host seconds per stage and, on CUDA, a pair of events per stage call."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.reset()

    def reset(self) -> None:
        """Forget everything timed so far (the warm-up)."""
        self.host: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.events: dict[str, list[tuple[Any, Any]]] = defaultdict(list)
        self.unet_launches: list[float] = []  # host time at each UNet call, for the host's time per tick

    def event(self) -> Any:
        import torch

        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def wrap(self, name: str, function: Callable[..., Any], gpu: bool = True) -> Callable[..., Any]:
        """`function`, timed on the host and (when `gpu`, on CUDA) spanned on the GPU's stream."""

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            begin = self.event() if self.cuda and gpu else None
            start = time.perf_counter()
            if name == "unet":
                self.unet_launches.append(start)
            try:
                return function(*args, **kwargs)
            finally:
                self.host[name] += time.perf_counter() - start
                self.calls[name] += 1
                if begin is not None:
                    self.events[name].append((begin, self.event()))

        return wrapper

    def gpu_seconds(self, name: str) -> float:
        return sum(a.elapsed_time(b) for a, b in self.events[name]) / 1000


def instrument(timeline: Timeline) -> None:
    """Replace the executor's stages with timed ones. The tick is split so that gathering inputs, the UNet
    call and the lanes' steps are timed apart; the store is written on a worker thread (host time only)."""
    run = batched._BatchedRun
    unet, step_lanes = run._denoise, run._step_lanes
    run._denoise = timeline.wrap("unet", unet)  # type: ignore[method-assign]
    run._step_lanes = timeline.wrap("lanes' steps", step_lanes)  # type: ignore[method-assign]
    tick = run._tick

    def gather_then_rest(self: Any, active: list[Any]) -> None:
        # "gather inputs" is the tick minus the UNet call and the lanes' steps, taken below
        tick(self, active)

    run._tick = timeline.wrap("tick", gather_then_rest, gpu=False)  # type: ignore[method-assign]
    run._admit = timeline.wrap("admit", run._admit)  # type: ignore[method-assign]
    run._decode = timeline.wrap("decode", run._decode)  # type: ignore[method-assign]
    run._deliver = timeline.wrap("deliver (to PIL)", run._deliver, gpu=False)  # type: ignore[method-assign]
    Store.put = timeline.wrap("store.put (worker)", Store.put, gpu=False)  # type: ignore[method-assign]


def main() -> None:
    """Build the model, instrument the stages, render, print the breakdown."""
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--topics", type=int, default=2)
    parser.add_argument("--steps", default=None, help="comma-separated (CPU 4,8,12; CUDA 10,...,100)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--compile", action="store_true", help="CUDA: as `reportgen render --compile`")
    parser.add_argument("--size", type=int, default=None, help="image side in pixels (CPU 32, CUDA 512)")
    parser.add_argument("--stub-unet", action="store_true", help="the UNet returns zeros at once")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    steps = [int(s) for s in (args.steps or ("10,20,30,40,50,100" if cuda else "4,8,12")).split(",")]
    if cuda:
        dtype, size = "bfloat16", args.size or 512
        pipe = build_sd15(args.device, dtype)
        model = ModelInfo("bench-sd15-random", "bench", "bench-sd15-random-v1", scheduler_config=dict(SD1_SCHEDULER))
    else:
        dtype, size = "float32", args.size or 32
        model = resolve_model("tiny")
        pipe = load_pipeline(model, args.device, dtype)
    if args.stub_unet:
        pipe.unet.forward = lambda sample, *_args, **_kwargs: (torch.zeros_like(sample),)
    timeline = Timeline(cuda)
    instrument(timeline)

    root = Path(tempfile.mkdtemp(prefix="profile-batched-"))
    study = load_study(write_study(root / "study", args.topics, steps, size))
    options = {"batch_size": args.batch_size, "compile": args.compile}
    warm_study = load_study(write_study(root / "warm", 1, [2], size))  # first calls pay for kernel selection
    warm = Store(root / "warm-store")
    render(plan(warm_study, model, args.device, dtype, warm), pipe, model, warm, executor="batched",
           batch_size=args.batch_size)
    if args.compile:  # compile the graph of the render's batch shape now, so that the render does not
        cells = plan(study, model, args.device, dtype, Store(root / "store")).to_render
        rows = 2 * (args.batch_size or batched.auto_lanes(pipe, cells))
        batched.compile_denoiser(pipe)
        sample, timestep, states = unet_inputs(pipe, rows, size)
        with torch.inference_mode():
            pipe.unet(sample, timestep, encoder_hidden_states=states, return_dict=False)
    timeline.reset()
    store = Store(root / "store")
    the_plan = plan(study, model, args.device, dtype, store)
    if cuda:
        torch.cuda.synchronize()
    clocks = ClockLog(enabled=cuda)
    with clocks:
        begin = timeline.event() if cuda else None
        start = time.perf_counter()
        result = render(the_plan, pipe, model, store, executor="batched", **options)
        end = timeline.event() if cuda else None
        if cuda:
            torch.cuda.synchronize()
        total = time.perf_counter() - start
    timeline.host["gather inputs"] = timeline.host["tick"] - timeline.host["unet"] - timeline.host["lanes' steps"]
    timeline.calls["gather inputs"] = timeline.calls["tick"]
    ticks = timeline.calls["tick"]
    print(f"{args.device}: {result.rendered} images, {result.nfe} model calls in {total:.2f}s "
          f"({result.nfe / total:.1f} calls/s); {ticks} ticks, {2 * result.nfe / max(ticks, 1):.1f} rows per tick"
          + ("; UNet compiled" if args.compile else ""))
    clocks.report()
    print(f"  {'stage':24} {'calls':>6} {'host s':>8} {'host share':>10}" + (f" {'GPU span s':>10} {'share':>6}"
                                                                          if cuda else ""))
    spans = 0.0
    for name in STAGES:
        line = f"  {name:24} {timeline.calls[name]:6d} {timeline.host[name]:8.2f} {timeline.host[name] / total:10.1%}"
        if cuda and timeline.events[name]:
            gpu = timeline.gpu_seconds(name)
            spans += gpu
            line += f" {gpu:10.2f} {gpu / total:6.1%}"
        print(line)
    if cuda and begin is not None and end is not None:
        wall = begin.elapsed_time(end) / 1000
        print(f"  GPU outside every span (idle, or work between stages): {wall - spans:.2f}s "
              f"of {wall:.2f}s on the GPU's clock ({(wall - spans) / wall:.1%})")
    launches = timeline.unet_launches
    if len(launches) > 2:
        host_tick = statistics.median(b - a for a, b in zip(launches, launches[1:], strict=False))
        line = f"  median host time from one UNet call to the next: {host_tick * 1000:.1f} ms"
        if cuda:
            unet_gpu = statistics.median(a.elapsed_time(b) for a, b in timeline.events["unet"])
            line += f"; median GPU span of a UNet call: {unet_gpu:.1f} ms"
        print(line)


if __name__ == "__main__":
    main()
