"""Where a batched render's time goes: UNet calls, the lanes' own steps, admission, decode, delivery, store.

Wraps the batched executor's stages with timers (synchronising CUDA around each, so the stages no longer
overlap: the total is a little higher than an ordinary render's) and renders one study into a fresh store.

    python bench/profile_batched.py                          # CPU, tiny model, 2 topics x 8 samplers x 4,8,12
    python bench/profile_batched.py --device cuda --topics 2 # SD 1.5 architecture, random weights, 512x512
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # render_matrix's model and study builders
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # reportgen from a checkout

from render_matrix import build_sd15, write_study  # noqa: E402 (after the sys.path lines above)

from reportgen import batched  # noqa: E402
from reportgen.models import SD1_SCHEDULER, ModelInfo, load_pipeline, resolve_model  # noqa: E402
from reportgen.plan import plan  # noqa: E402
from reportgen.render import render  # noqa: E402
from reportgen.store import Store  # noqa: E402
from reportgen.study import load_study  # noqa: E402

TOTALS: dict[str, float] = defaultdict(float)
COUNTS: dict[str, int] = defaultdict(int)


def timed(name: str, function: Callable[..., Any], sync: Callable[[], None]) -> Callable[..., Any]:
    """`function` that adds its wall time (CUDA synchronised before and after) to TOTALS[name]."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        sync()
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            sync()
            TOTALS[name] += time.perf_counter() - start
            COUNTS[name] += 1

    return wrapper


def main() -> None:
    """Build the model, wrap the stages, render, print the breakdown."""
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--topics", type=int, default=2)
    parser.add_argument("--steps", default=None, help="comma-separated (CPU 4,8,12; CUDA 10,...,100)")
    parser.add_argument("--batch-size", type=int, default=None)
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    steps = [int(s) for s in (args.steps or ("10,20,30,40,50,100" if cuda else "4,8,12")).split(",")]
    if cuda:
        dtype, size = "bfloat16", 512
        pipe = build_sd15(args.device, dtype)
        model = ModelInfo("bench-sd15-random", "bench", "bench-sd15-random-v1", scheduler_config=dict(SD1_SCHEDULER))
    else:
        dtype, size = "float32", 32
        model = resolve_model("tiny")
        pipe = load_pipeline(model, args.device, dtype)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    run = batched._BatchedRun
    unet = run._unet
    run._unet = timed("unet", unet, sync)  # type: ignore[method-assign]
    tick = run._tick

    def tick_rest(self: Any, active: list[Any]) -> None:
        tick(self, active)

    run._tick = timed("tick (all)", tick_rest, sync)  # type: ignore[method-assign]
    run._admit = timed("admit", run._admit, sync)  # type: ignore[method-assign]
    run._decode = timed("decode", run._decode, sync)  # type: ignore[method-assign]
    run._deliver = timed("deliver (to PIL)", run._deliver, sync)  # type: ignore[method-assign]
    Store.put = timed("store.put (PNG + fsync)", Store.put, sync)  # type: ignore[method-assign]

    root = Path(tempfile.mkdtemp(prefix="profile-batched-"))
    warm = write_study(root / "warm", 1, [2], size)
    options = {"batch_size": args.batch_size}
    study = load_study(warm)
    render(plan(study, model, args.device, dtype, Store(root / "warm-store")), pipe, model, Store(root / "warm-store"),
           executor="batched", **options)
    TOTALS.clear()
    COUNTS.clear()
    study = load_study(write_study(root / "study", args.topics, steps, size))
    store = Store(root / "store")
    the_plan = plan(study, model, args.device, dtype, store)
    start = time.perf_counter()
    result = render(the_plan, pipe, model, store, executor="batched", **options)
    total = time.perf_counter() - start
    TOTALS["tick: lanes' own work (tick - unet)"] = TOTALS["tick (all)"] - TOTALS["unet"]
    print(f"{args.device}: {result.rendered} images, {result.nfe} model calls in {total:.2f}s "
          f"({result.nfe / total:.1f} calls/s)")
    for name in ("unet", "tick: lanes' own work (tick - unet)", "admit", "decode", "deliver (to PIL)",
                 "store.put (PNG + fsync)"):
        calls = COUNTS.get(name, COUNTS["tick (all)"])
        print(f"  {name:38} {TOTALS[name]:8.2f}s  {TOTALS[name] / total:6.1%}  ({calls} calls)")
    ticks = COUNTS["tick (all)"]
    print(f"  ticks: {ticks}, mean rows per UNet call: {2 * result.nfe / max(ticks, 1):.1f}")


if __name__ == "__main__":
    main()
