"""What the GPU's clocks and power did while a benchmark phase ran, sampled by `nvidia-smi` alongside it.

A whole render keeps the card busy for a minute or more; the UNet alone is timed for a second or two.
If the card lowers its clocks under the longer load (power cap, heat), the render runs slower than the
UNet alone would predict, and no change to the executor can win that back. This samples the SM clock,
power draw, temperature and nvidia-smi's "clocks event reasons" every `interval_ms` in a child process,
so the benchmark itself is not disturbed, and summarises each phase:

    with ClockLog() as clocks:
        run_the_phase()
    print(clocks.line())          # "SM clock median 1755 MHz (max 1980, ...), power median 690 W ..."

Where nvidia-smi is missing or fails (a CPU run, another vendor), the summary says so and is otherwise empty.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
from typing import Any

FIELDS = ("clocks.sm", "clocks.max.sm", "power.draw", "power.limit", "temperature.gpu", "clocks_event_reasons.active")
LEGACY_REASONS_FIELD = "clocks_throttle_reasons.active"  # the same mask, as drivers before 535 name it
# nvidia-smi's clocks event (formerly "throttle") reason bits, nvmlClocksEventReasons
REASONS = {0x1: "idle", 0x2: "application clocks", 0x4: "software power cap", 0x8: "hardware slowdown",
           0x10: "sync boost", 0x20: "software thermal", 0x40: "hardware thermal", 0x80: "power brake"}


def gpu_index() -> str:
    """nvidia-smi's index of the GPU torch uses: the current device, through CUDA_VISIBLE_DEVICES if set."""
    import torch

    current = torch.cuda.current_device() if torch.cuda.is_available() else 0
    visible = [v for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return visible[current].strip() if current < len(visible) else str(current)


def reasons(mask: int) -> list[str]:
    """The names of the bits set in a clocks-event-reasons mask."""
    return [name for bit, name in REASONS.items() if mask & bit]


def summarise(lines: list[str]) -> dict[str, Any]:
    """Medians and extremes of nvidia-smi CSV samples (`FIELDS`, no header, no units); malformed lines skipped."""
    rows = []
    for line in lines:
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != len(FIELDS):
            continue
        try:
            sm, sm_max, power, limit, temperature = (float(p) for p in parts[:5])
            mask = int(parts[5], 16)
        except ValueError:  # "[N/A]" and the like
            continue
        rows.append((sm, sm_max, power, limit, temperature, mask))
    if not rows:
        return {"samples": 0}
    seen = 0
    for row in rows:
        seen |= row[5] & ~0x1  # idle between phases is not a slowdown
    return {
        "samples": len(rows),
        "sm_mhz_median": statistics.median(r[0] for r in rows), "sm_mhz_min": min(r[0] for r in rows),
        "sm_mhz_max_seen": max(r[0] for r in rows), "sm_mhz_max": rows[0][1],
        "power_w_median": statistics.median(r[2] for r in rows), "power_w_limit": rows[0][3],
        "temperature_c_max": max(r[4] for r in rows),
        "slowdown_reasons": reasons(seen),
        "power_capped_share": sum(1 for r in rows if r[5] & 0x4) / len(rows),
    }


class ClockLog:
    """Samples the GPU with nvidia-smi while the block runs; `summary` and `line()` afterwards."""

    def __init__(self, interval_ms: int = 250, command: str = "nvidia-smi", enabled: bool = True) -> None:
        self.enabled = enabled  # False (a CPU run): the block runs unobserved and report() says nothing
        self.interval_ms = interval_ms
        self.command = command
        self.summary: dict[str, Any] = {"samples": 0}
        self.problem: str | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ClockLog:
        if not self.enabled:
            return self
        executable = shutil.which(self.command)
        if executable is None:
            self.problem = f"{self.command} not found"
            return self
        query = [executable, f"--id={gpu_index()}", "--format=csv,noheader,nounits"]
        fields = FIELDS
        probe = subprocess.run([*query, f"--query-gpu={','.join(fields)}"], capture_output=True, text=True)
        if probe.returncode != 0:  # an older driver: try the reasons field's former name
            fields = (*FIELDS[:-1], LEGACY_REASONS_FIELD)
            probe = subprocess.run([*query, f"--query-gpu={','.join(fields)}"], capture_output=True, text=True)
        if probe.returncode != 0:
            message = (probe.stderr or probe.stdout).strip() or f"exit status {probe.returncode}"
            self.problem = f"{self.command}: {message.splitlines()[0]}"
            return self
        self._out = tempfile.TemporaryFile()
        self._err = tempfile.TemporaryFile()
        self._process = subprocess.Popen([*query, f"--query-gpu={','.join(fields)}", f"--loop-ms={self.interval_ms}"],
                                         stdout=self._out, stderr=self._err)
        return self

    def __exit__(self, *_: Any) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            code = self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            code = self._process.wait()
        self._out.seek(0)
        self._err.seek(0)
        lines = self._out.read().decode(errors="replace").splitlines()
        error = self._err.read().decode(errors="replace").strip()
        self._out.close()
        self._err.close()
        self.summary = summarise(lines)
        if not self.summary["samples"]:
            first = (error or (lines[0] if lines else f"no samples (exit status {code})")).splitlines()[0]
            self.problem = f"{self.command}: {first}"

    def report(self, into: dict[str, Any] | None = None, key: str = "clocks", indent: str = "  ") -> None:
        """Print the summary's line and put the summary in `into` under `key` (nothing when disabled)."""
        if self.enabled:
            if into is not None:
                into[key] = self.summary
            print(f"{indent}{self.line()}", flush=True)

    def line(self) -> str:
        """One line for a benchmark's log."""
        s = self.summary
        if not s["samples"]:
            return f"clocks: unavailable ({self.problem or 'no samples'})"
        return (f"clocks: SM median {s['sm_mhz_median']:.0f} MHz (min {s['sm_mhz_min']:.0f}, max seen "
                f"{s['sm_mhz_max_seen']:.0f}, card max {s['sm_mhz_max']:.0f}); "
                f"power median {s['power_w_median']:.0f} W of {s['power_w_limit']:.0f} W; "
                f"up to {s['temperature_c_max']:.0f} C; "
                f"power-capped in {s['power_capped_share']:.0%} of {s['samples']} samples; "
                f"slowdowns: {', '.join(s['slowdown_reasons']) or 'none'}")
