"""Time `reportgen verify` on a clean store the size of docs/guide: 462 cells at 512x512, tiny model.

    python bench/verify_store.py [--dir /tmp/reportgen-verify] [--repeats 5] [--baseline /work/main]

The store is made once, without rendering: docs/guide's own study.toml and topics planned for the tiny
model, and every planned cell put into the store through `Store.put` with a 512x512 picture (a gradient
with noise, about the size of a real PNG) and 4x64x64 latents, as a render would, plus three cached
distances per cell (as `analyze` leaves them; their values are made up, their digests are real). Then,
side by side in one run, each --repeats times in a fresh process: `reportgen render --dry-run` against an
empty store (start-up, imports and planning, which every command pays), `reportgen verify`, and
`render --dry-run` against the full store (planning checks every cell it finds, as verify does). The
differences are what checking every file costs; each file is read once. With --baseline CHECKOUT, also
`render --dry-run` of another checkout of reportgen (an older one decoded every PNG to check it) on the
same store, side by side.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def make_store(study: Path) -> int:
    """Put a made-up cell under every key docs/guide plans for the tiny model; return the number of cells."""
    import numpy as np
    from PIL import Image

    from reportgen.measure.distances import METRICS_VERSION, entry
    from reportgen.render import jobs
    from reportgen.render.plan import cell_record
    from reportgen.render.store import atomic_write

    job = jobs.prepare_render(study, model="tiny", device="cpu", dtype="float32")
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 512, dtype=np.float32)
    for i, cell in enumerate(job.plan.cells):
        base = (ramp[None, :, None] * 0.6 + ramp[:, None, None] * 0.4 + i) % 256
        pixels = np.clip(base + rng.normal(0, 6, (512, 512, 3)), 0, 255).astype(np.uint8)
        latents = rng.standard_normal((4, 64, 64)).astype(np.float32)
        record = {**cell_record(cell), "nfe_counted": cell.nfe, "seconds": 1.0, "executor": "bench",
                  "environment": job.plan.environment, "model_spec": "tiny", "reportgen": "bench"}
        job.store.put(cell.key, Image.fromarray(pixels), latents, record, "bench")
    cells = [job.store.get(c.key) for c in job.plan.cells]
    for i, cell in enumerate(cells):
        assert cell is not None
        targets = {t.key: entry({"latent": 0.1, "ssim": 0.2}, cell, t)
                   for t in (cells[(i + 1) % len(cells)], cells[(i + 7) % len(cells)], cells[(i + 40) % len(cells)])
                   if t is not None}
        atomic_write(job.store.metrics_path(cell.key),
                     json_bytes({"version": METRICS_VERSION, "targets": targets}))
    return len(cells)


def json_bytes(body: object) -> bytes:
    import json

    return json.dumps(body, sort_keys=True).encode()


def timed(*args: str, checkout: Path = ROOT) -> float:
    """Wall seconds of `reportgen ARGS` of `checkout` in a fresh process; exits if the command fails."""
    import os

    env = {**os.environ, "PYTHONPATH": str(checkout)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "reportgen", *args], capture_output=True, text=True, env=env,
                          cwd=checkout)  # `-m` puts the working folder first on sys.path
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"reportgen {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/reportgen-verify"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline", type=Path, help="another reportgen checkout, to time its render --dry-run")
    args = parser.parse_args()
    study = args.dir / "guide"
    if not (study / "store").is_dir():
        shutil.copytree(ROOT / "docs" / "guide", study, dirs_exist_ok=True)
        start = time.perf_counter()
        print(f"made a store of {make_store(study)} cells in {time.perf_counter() - start:.1f} s")
    files = sum(1 for p in (study / "store").rglob("*") if p.is_file())
    size = sum(p.stat().st_size for p in (study / "store").rglob("*") if p.is_file()) / 2**20
    print(f"store: {files} files, {size:.0f} MiB")
    common = [str(study), "--model", "tiny", "--device", "cpu", "--dtype", "float32"]
    empty = args.dir / "empty-store"
    timed("verify", *common)  # once first, so every command meets the same warm page cache
    times: dict[str, list[float]] = {"plan only": [], "verify": [], "render --dry-run": []}
    if args.baseline:
        times["baseline dry-run"] = []
    for _ in range(args.repeats):
        times["plan only"].append(timed("render", *common, "--dry-run", "--store", str(empty)))
        times["verify"].append(timed("verify", *common))
        times["render --dry-run"].append(timed("render", *common, "--dry-run"))
        if args.baseline:
            times["baseline dry-run"].append(timed("render", *common, "--dry-run", checkout=args.baseline))
    base = statistics.median(times["plan only"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:17} median {median:5.2f} s of {args.repeats} (min {min(values):.2f}, max {max(values):.2f}); "
              f"{median / base:.2f}x plan only, +{median - base:.2f} s")


if __name__ == "__main__":
    main()
