"""Measure the demo model: caption-check pass rate on held-out captions and how much seeds vary (issue 6).

    python scripts/demo_quality.py [--model FOLDER] [--seeds 3] [--steps 50] [--sampler k_euler] [--sheet out.png]
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
from pathlib import Path

import numpy as np
from PIL import Image

from reportgen.demo.check import evaluate, layout
from reportgen.demo.data import held_out_scenes
from reportgen.models.loading import load_pipeline
from reportgen.models.sources import DEMO_DIR, resolve_model


def main() -> None:
    """Draw the held-out captions, check them, print the numbers, optionally save a contact sheet."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(DEMO_DIR))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--sampler", default="k_euler")
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: its default)")
    parser.add_argument("--sheet", type=Path, default=None, help="save all images as one PNG (rows: seeds)")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = load_pipeline(resolve_model(args.model))
    captions = [s.caption for s in held_out_scenes()]
    started = time.time()
    results = evaluate(pipe, captions, list(range(args.seeds)), args.steps, args.sampler, args.guidance)
    seconds = time.time() - started
    passed = sum(v.ok for _, _, v, _ in results)
    print(f"held-out captions: {len(captions)} x {args.seeds} seeds, {args.sampler} {args.steps} steps, "
          f"CFG {args.guidance}: {passed}/{len(results)} = {passed / len(results):.1%} match ({seconds:.0f}s)")
    for kind in ("shape", "landscape"):
        rows = [v.ok for c, _, v, _ in results if any(s.caption == c and s.kind == kind for s in held_out_scenes())]
        print(f"  {kind}: {sum(rows)}/{len(rows)}")
    for caption, seed, verdict, _ in results:
        if not verdict.ok:
            print(f"  fail seed {seed}: {caption!r}: {verdict.reason}")

    # Seed diversity: per caption, how far apart the main element lands across seeds, and pixel change.
    by_caption: dict[str, list[tuple[np.ndarray, tuple[float, float, float]]]] = {}
    for caption, _, _, image in results:
        pixels = np.asarray(image, dtype=np.float32) / 255
        by_caption.setdefault(caption, []).append((pixels, layout(image, caption)))
    moves, areas, pixel_changes = [], [], []
    for items in by_caption.values():
        for (p1, l1), (p2, l2) in itertools.combinations(items, 2):
            pixel_changes.append(float(np.abs(p1 - p2).mean()))
            if not any(math.isnan(v) for v in (*l1, *l2)):
                moves.append(math.hypot(l1[0] - l2[0], l1[1] - l2[1]) * 64)
                areas.append(abs(l1[2] - l2[2]) / max(l1[2], l2[2]))
    if pixel_changes:
        print(f"seed pairs: {len(pixel_changes)}; mean |pixel change| {np.mean(pixel_changes):.3f}; "
              f"main element moves {np.mean(moves):.1f} px on average (median {np.median(moves):.1f}), "
              f"its area changes {np.mean(areas):.0%}; identical pairs: {sum(c < 1e-3 for c in pixel_changes)}")
    if args.sheet:
        rows = [np.concatenate([np.asarray(im) for _, s, _, im in results if s == seed], 1)
                for seed in range(args.seeds)]
        Image.fromarray(np.concatenate(rows, 0)).save(args.sheet)
        print(f"sheet: {args.sheet}")


if __name__ == "__main__":
    main()
