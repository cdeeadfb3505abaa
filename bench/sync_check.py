"""Count the calls in a batched render that make the host wait for the GPU, per sampler (CUDA only).

A tick queues one UNet call and then steps every lane; the host should run ahead of the GPU and queue
the next call while this one computes. Any call that synchronises (`.item()`, `nonzero()`, a copy from
pageable host memory) stalls the host until the queued UNet call is done, and the GPU then idles until
the host has queued the next one. This renders the tests' tiny model on the GPU, one sampler at a time,
under `torch.cuda.set_sync_debug_mode("warn")`, and prints how many synchronising calls each render made,
per UNet call, and where (the Python line that made them).

    python bench/sync_check.py                # every registered sampler, 4 seeds x 6 steps each
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # reportgen from a checkout

from reportgen.models.loading import load_pipeline  # noqa: E402
from reportgen.models.sources import resolve_model  # noqa: E402
from reportgen.render.execute import EXECUTORS  # noqa: E402
from reportgen.render.plan import plan  # noqa: E402
from reportgen.render.store import Store  # noqa: E402
from reportgen.samplers import SAMPLERS  # noqa: E402
from reportgen.study.load import load_study  # noqa: E402


def main() -> None:
    """Render each sampler's cells with the batched executor and count the synchronising calls."""
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=4)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("sync_check needs a CUDA device")
    root = Path(tempfile.mkdtemp(prefix="sync-check-"))
    (root / "topics").mkdir()
    names = ", ".join(f'"{s.name}"' for s in SAMPLERS)
    (root / "study.toml").write_text(f'title = "sync"\nmodel = "tiny"\nsamplers = [{names}]\n'
                                     f"steps = [{args.steps}]\nseeds = {args.seeds}\n")
    (root / "topics" / "t.md").write_text("---\ntitle: t\nprompt: '\"a red circle\" -W64 -H64 -C7.5 -S1'\n---\n")
    model = resolve_model("tiny")
    pipe = load_pipeline(model, "cuda", "float32")
    study = load_study(root)
    calls: list[int] = []
    pipe.unet.register_forward_pre_hook(lambda _module, inputs: calls.append(inputs[0].shape[0]))
    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}; {args.seeds} seeds x "
          f"{args.steps} steps per sampler, all lanes in one batch")
    for sampler in SAMPLERS:
        cells = plan(study, model, "cuda", "float32", Store(root / "store"), samplers=[sampler.name]).to_render
        calls.clear()
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                outputs = list(EXECUTORS["batched"](pipe, model, cells))
            finally:
                torch.cuda.set_sync_debug_mode("default")
        syncs = [w for w in caught if "synchroniz" in str(w.message)]
        where = Counter(f"{Path(w.filename).name}:{w.lineno}" for w in syncs)
        broken = sum(o.error is not None for o in outputs)
        print(f"  {sampler.name:16} {len(calls):3d} UNet calls, {len(syncs):4d} synchronising calls "
              f"({len(syncs) / max(1, len(calls)):.2f} per UNet call)"
              + (f"; {broken} broken images" if broken else "")
              + (f"; at {', '.join(f'{k} x{n}' for k, n in where.most_common(4))}" if where else ""), flush=True)


if __name__ == "__main__":
    main()
