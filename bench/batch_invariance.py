"""What batch invariance costs on a CPU: the batched render with every denoiser call at CPU_ROWS_PER_CALL rows
(padded) against calls as wide as each tick, side by side in one process, alternating, fresh stores.

    python bench/batch_invariance.py [--model demo] [--reps 3] [--rows 8]

Renders examples/demo's study (its topics, samplers and steps; --model tiny renders them at 32x32 on the
tiny model) and prints each run's seconds, the median ratio padded / unpadded, and the rows computed.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # reportgen from a checkout

from reportgen.render import batched  # noqa: E402
from reportgen.render.jobs import prepare_render, run_render  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def study_copy(folder: Path, model: str) -> Path:
    """examples/demo in `folder`; on the tiny model its prompts at 32x32."""
    study = folder / "demo"
    shutil.copytree(ROOT / "examples" / "demo", study, ignore=shutil.ignore_patterns("store", "grids", "site"))
    if model != "demo":
        toml = study / "study.toml"
        toml.write_text("\n".join(f'model = "{model}"' if line.startswith("model") else line
                                  for line in toml.read_text().splitlines()) + "\n")
        for page in (study / "topics").glob("*.md"):
            page.write_text(page.read_text().replace("-W64 -H64", "-W32 -H32"))
    return study


def render_once(study: Path, store: Path, rows: int | None, topics: tuple[str, ...] = ()) -> tuple[float, int]:
    """Seconds of one batched render into a fresh `store` with `rows` per call (None: as wide as the tick),
    and the rows the denoiser computed."""
    batched.CPU_ROWS_PER_CALL = rows
    computed = [0]
    real = batched._BatchedRun._denoise

    def counting(self: batched._BatchedRun, sample: object, *args: object) -> object:
        out = real(self, sample, *args)  # type: ignore[arg-type]
        total = sample.shape[0]  # type: ignore[attr-defined]
        computed[0] += -(-total // rows) * rows if rows else total
        return out

    batched._BatchedRun._denoise = counting  # type: ignore[method-assign]
    try:
        job = prepare_render(study, device="cpu", store=store, topics=topics)
        start = time.perf_counter()
        run_render(job, "batched")
        return time.perf_counter() - start, computed[0]
    finally:
        batched._BatchedRun._denoise = real  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--rows", type=int, default=batched.CPU_ROWS_PER_CALL or 8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        study = study_copy(Path(tmp), args.model)
        first = sorted(page.stem for page in (study / "topics").glob("*.md"))[0]
        render_once(study, Path(tmp) / "warm", args.rows, (first,))  # imports, model load, caches: not timed
        times: dict[str, list[float]] = {"fixed rows": [], "tick-wide": []}
        rows: dict[str, int] = {}
        for rep in range(args.reps):
            order = [("fixed rows", args.rows), ("tick-wide", None)]
            for name, value in order if rep % 2 == 0 else order[::-1]:
                seconds, rows[name] = render_once(study, Path(tmp) / f"{name}-{rep}", value)
                times[name].append(seconds)
        for name, seconds in times.items():
            print(f"{name:11} median {statistics.median(seconds):7.2f} s  rows computed {rows[name]:,}  "
                  f"(runs: {', '.join(f'{s:.2f}' for s in seconds)})")
        ratio = statistics.median(times["fixed rows"]) / statistics.median(times["tick-wide"])
        print(f"fixed rows of {args.rows} cost {ratio:.3f}x the tick-wide render ({args.model}, {args.reps} reps)")


if __name__ == "__main__":
    main()
