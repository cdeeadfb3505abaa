"""One process against N shard processes writing one store, side by side in one run (issue 16).

    python bench/scale_out.py [--processes 2] [--reps 3] [--model tiny] [--size 32]

Writes a study (2 topics x the guide's 8 samplers x steps 4, 8, 12, 2 seeds, no separate reference), then
alternates: the whole render in one process, and N processes started together with --shard K/N, each into
a fresh store. Prints the wall time of each, the median ratio, and how evenly the partition split the
model calls. On a machine with several GPUs each shard process gets its own (--device cuda:K); on a CPU
the processes share its cores, so expect no speedup beyond the cores that one process leaves idle.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SAMPLERS = ["ddim", "plms", "k_lms", "k_euler", "k_euler_a", "k_heun", "k_dpm_2", "k_dpm_2_a"]


def write_study(folder: Path, model: str, size: int) -> Path:
    (folder / "topics").mkdir(parents=True)
    names = ", ".join(f'"{s}"' for s in SAMPLERS)
    (folder / "study.toml").write_text(f'title = "Scale-out"\nmodel = "{model}"\nsamplers = [{names}]\n'
                                       "steps = [4, 8, 12]\nseeds = 2\nreference_steps = 0\n")
    for order, (slug, prompt) in enumerate((("fox", "a red fox"), ("owl", "an owl at night"))):
        (folder / "topics" / f"{slug}.md").write_text(
            f"---\ntitle: {slug}\nprompt: '\"{prompt}\" -W{size} -H{size} -C7.5 -S{order + 1}'\norder: {order}\n---\n")
    return folder


def devices(count: int) -> list[str]:
    """One device per process: GPUs where there are enough, else the CPU for all."""
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() >= count:
        return [f"cuda:{k}" for k in range(count)]
    return ["cpu"] * count


def timed(commands: list[list[str]]) -> tuple[float, list[dict[str, object]]]:
    """Start every command at once; the wall time until the last ends, and each one's JSON line."""
    start = time.perf_counter()
    processes = [subprocess.Popen([sys.executable, "-m", "reportgen", *c], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for c in commands]
    outputs = [p.communicate() for p in processes]
    seconds = time.perf_counter() - start
    for process, (_, err) in zip(processes, outputs, strict=True):
        if process.returncode != 0:
            sys.exit(err)
    return seconds, [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    n = args.processes
    with tempfile.TemporaryDirectory() as tmp:
        study = str(write_study(Path(tmp) / "study", args.model, args.size))
        one_device, shard_devices = devices(1)[0], devices(n)
        times: dict[str, list[float]] = {"1 process": [], f"{n} processes": []}
        loads: list[int] = []
        for rep in range(args.reps):
            runs = [("1 process", [["render", study, "--device", one_device, "--json", "--store",
                                    f"{tmp}/one-{rep}"]]),
                    (f"{n} processes", [["render", study, "--device", shard_devices[k], "--json", "--shard",
                                         f"{k + 1}/{n}", "--store", f"{tmp}/many-{rep}"] for k in range(n)])]
            for name, commands in runs if rep % 2 == 0 else runs[::-1]:
                seconds, counts = timed(commands)
                times[name].append(seconds)
                if len(counts) > 1:
                    loads = [int(c["nfe"]) for c in counts]  # type: ignore[call-overload]
        for name, seconds in times.items():
            runs_text = ", ".join(f"{s:.2f}" for s in seconds)
            print(f"{name:12} median {statistics.median(seconds):6.2f} s  (runs: {runs_text})")
        ratio = statistics.median(times["1 process"]) / statistics.median(times[f"{n} processes"])
        spread = (max(loads) - min(loads)) / statistics.fmean(loads) if loads else 0.0
        print(f"{n} processes are {ratio:.2f}x one process ({shard_devices[0]}{' x ' + str(n) if n > 1 else ''}); "
              f"model calls per shard {loads} (max - min = {spread:.1%} of the mean)")


if __name__ == "__main__":
    main()
