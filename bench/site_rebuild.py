"""Time `reportgen build` on a guide-sized study: 5 topics x 12 samplers x 6 step counts on the tiny model.

    python bench/site_rebuild.py [--dir /tmp/reportgen-guide64] [--size 64] [--repeats 5]

Writes the study under --dir from docs/guide (its five prompts at --size pixels, its first 12 samplers,
steps 10-100), renders it once (a few minutes on a CPU; later runs find every cell cached), builds the
site, then rebuilds it unchanged --repeats times. Each time is the wall time of the whole command, as a
user runs it: Python start-up, imports and the build.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLERS = ["ddim", "plms", "k_lms", "k_euler", "k_euler_a", "k_heun", "k_dpm_2", "k_dpm_2_a",
            "dpmpp_2m", "dpmpp_2m_karras", "dpmpp_2m_sde", "unipc"]
STEPS = [10, 20, 30, 40, 50, 100]


def write_study(folder: Path, size: int) -> Path:
    """The guide's five topics at `size` x `size` on the tiny model, 12 samplers x 6 step counts."""
    (folder / "topics").mkdir(parents=True, exist_ok=True)
    names = ", ".join(f'"{s}"' for s in SAMPLERS)
    (folder / "study.toml").write_text(f'title = "Sampler Convergence ({size}x{size}, tiny model)"\nmodel = "tiny"\n'
                                       f"samplers = [{names}]\nsteps = {STEPS}\nseeds = 1\n")
    for source in sorted((ROOT / "docs" / "guide" / "topics").glob("*.md")):
        text = re.sub(r"-W512 -H512", f"-W{size} -H{size}", source.read_text())
        text = re.sub(r"^steps:.*\n", "", text, flags=re.MULTILINE)  # the people topic's 300-700 steps: not here
        (folder / "topics" / source.name).write_text(text)
    return folder


def timed(*args: str) -> float:
    """Wall seconds of `reportgen ARGS` in a fresh process; exits if the command fails."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "reportgen", *args], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"reportgen {' '.join(args)} failed:\n{done.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/reportgen-guide64"))
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    study = write_study(args.dir / "study", args.size)
    site = args.dir / "site"
    print(f"render (cached after the first run): {timed('render', str(study)):.1f} s")
    print(f"first build of {site}: {timed('build', str(study), '--out', str(site)):.2f} s")
    times = [timed("build", str(study), "--out", str(site)) for _ in range(args.repeats)]
    print(f"rebuild, nothing changed: median {statistics.median(times):.2f} s, "
          f"min {min(times):.2f} s, max {max(times):.2f} s over {len(times)} runs")


if __name__ == "__main__":
    main()
