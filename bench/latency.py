"""Whole-process latency of commands with nothing to do, and the batched executor's gain as a user sees it.

    python bench/latency.py [--dir /tmp/reportgen-latency] [--repeats 5] [--gain-runs 5] [--only latency|gain]

Part 1 copies examples/demo into --dir, renders, analyses and builds it once (a minute on a CPU; later
runs find it done), then times each command below --repeats times as a user runs it (Python start-up and
imports included) and prints the median beside its budget (issue 17).

Part 2 renders a 2 topics x 4 samplers x steps {2, 4} tiny study into a fresh store with each executor,
alternating which goes first, --gain-runs times each, and prints the ratio of their fastest whole commands.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUDGETS = (  # (what, arguments after `reportgen`, budget in seconds)
    ("render, all cached", ["render", "{study}"], 2.5),
    ("render, all cached, --device cpu", ["render", "{study}", "--device", "cpu"], 1.0),
    ("analyze, nothing new", ["analyze", "{study}"], 2.0),
    ("build, nothing changed", ["build", "{study}", "--out", "{site}"], 1.5),
    ("info IMAGE", ["info", "{image}"], 1.0),
)
GAIN_TARGET = 1.3


def run(args: list[str]) -> float:
    """Seconds of one whole `reportgen ARGS` process; exits if it fails."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "reportgen", *args], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"reportgen {' '.join(args)} failed:\n{done.stderr}")
    return seconds


def latency(folder: Path, repeats: int) -> bool:
    """Part 1: print each command's median beside its budget; True if every one is within it."""
    study, site = folder / "demo", folder / "site"
    if not study.exists():
        shutil.copytree(ROOT / "examples" / "demo", study, ignore=shutil.ignore_patterns("store", "grids", "site"))
    for args in (["render", str(study)], ["analyze", str(study)], ["build", str(study), "--out", str(site)]):
        run(args)  # whatever is left to do, done once, untimed
    image = str(next((study / "store" / "images").glob("*/*.png")))
    ok = True
    print(f"{'command':36} {'median':>8} {'budget':>8}   (whole process, median of {repeats})")
    for what, template, budget in BUDGETS:
        args = [a.format(study=study, site=site, image=image) for a in template]
        times = [run(args) for _ in range(repeats)]
        median = statistics.median(times)
        ok &= median <= budget
        print(f"{what:36} {median:7.2f}s {budget:7.1f}s   {'ok' if median <= budget else 'OVER'}"
              f"  (fastest {min(times):.2f}s, slowest {max(times):.2f}s)")
    return ok


def gain(runs: int) -> bool:
    """Part 2: the whole render command, batched against the per-cell pipeline, alternating, fresh stores."""
    with tempfile.TemporaryDirectory() as tmp:
        study = Path(tmp) / "study"
        (study / "topics").mkdir(parents=True)
        # one seed and no separate reference: the 16 cells the issue names (the defaults would add 38)
        (study / "study.toml").write_text('title = "Gain"\nmodel = "tiny"\nsteps = [2, 4]\nseeds = 1\n'
                                          'reference_steps = 0\n'
                                          'samplers = ["k_euler", "k_heun", "ddim", "dpmpp_2m"]\n')
        for order, (slug, prompt) in enumerate((("fox", "a red fox"), ("owl", "an owl at night"))):
            (study / "topics" / f"{slug}.md").write_text(
                f"---\ntitle: {slug}\nprompt: '\"{prompt}\" -W32 -H32 -C7.5 -S{order + 1}'\norder: {order}\n---\n")
        times: dict[str, list[float]] = {"batched": [], "pipeline": []}
        for i in range(runs):
            for executor in (("batched", "pipeline") if i % 2 == 0 else ("pipeline", "batched")):  # order alternates
                store = Path(tmp) / f"store-{executor}-{i}"
                times[executor].append(run(["render", str(study), "--device", "cpu", "--executor", executor,
                                            "--store", str(store)]))
            cells = len(list((store / "images").glob("*/*.png")))
    ratio = min(times["pipeline"]) / min(times["batched"])
    print(f"\nwhole `reportgen render` of 2 topics x 4 samplers x steps {{2, 4}} (tiny, {cells} cells), "
          f"fastest of {runs}:")
    for executor, seconds in times.items():
        print(f"  {executor:9} {min(seconds):6.2f}s  (all: {', '.join(f'{s:.2f}' for s in seconds)})")
    print(f"  batched is {ratio:.2f}x the pipeline's speed (target {GAIN_TARGET}x): "
          f"{'ok' if ratio >= GAIN_TARGET else 'UNDER'}")
    return ratio >= GAIN_TARGET


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "reportgen-latency")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--gain-runs", type=int, default=5)
    parser.add_argument("--only", choices=("latency", "gain"), default=None, help="run one part alone")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.dir.mkdir(parents=True, exist_ok=True)
    ok = True
    if args.only != "gain":
        ok &= latency(args.dir, args.repeats)
    if args.only != "latency":
        ok &= gain(args.gain_runs)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
