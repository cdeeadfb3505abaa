"""bench/gpu_clocks.py against a stand-in nvidia-smi: it runs only on GPU machines, where a bug would
cost a device session, so its sampling, parsing and fallbacks are checked here."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from gpu_clocks import ClockLog, reasons, summarise  # noqa: E402

# A stand-in nvidia-smi: one sample for a plain query; with --loop-ms, samples until terminated. With
# LEGACY=1 it rejects the reasons field's new name, as drivers before 535 do.
FAKE = """#!/bin/sh
case "$*" in
  *clocks_event_reasons*) if [ "$LEGACY" = 1 ]; then
    echo 'Field "clocks_event_reasons.active" is not a valid field to query.'; exit 2; fi ;;
esac
case "$*" in
  *--loop-ms*) ;;
  *) echo "1980, 1980, 120.00, 700.00, 35, 0x0000000000000001"; exit 0 ;;
esac
echo "1980, 1980, 650.10, 700.00, 60, 0x0000000000000000"
echo "1755, 1980, 699.80, 700.00, 66, 0x0000000000000004"
echo "1700, 1980, 700.20, 700.00, 67, 0x0000000000000004"
echo "[N/A], 1980, [N/A], 700.00, 67, [N/A]"
touch "$0.sampled"
while true; do sleep 0.05; done
"""


def fake_smi(tmp_path: Path) -> str:
    path = tmp_path / "nvidia-smi"
    path.write_text(FAKE)
    path.chmod(0o755)
    return str(path)


def run_phase(log: ClockLog) -> ClockLog:
    """Run an empty phase; with the stand-in, until it has printed its samples (it marks that with a file)."""
    marker = Path(log.command + ".sampled")
    with log:
        deadline = time.monotonic() + 30
        while log.enabled and log.problem is None and Path(log.command).is_file() and not marker.exists() \
                and time.monotonic() < deadline:
            time.sleep(0.02)
    return log


def test_summary_of_a_power_capped_phase(tmp_path: Path) -> None:
    log = run_phase(ClockLog(command=fake_smi(tmp_path)))
    s = log.summary
    assert s["samples"] == 3  # the [N/A] line is skipped; the probe's idle sample is not part of the phase
    assert s["sm_mhz_median"] == 1755 and s["sm_mhz_min"] == 1700 and s["sm_mhz_max"] == 1980
    assert s["power_w_median"] == 699.8 and s["power_w_limit"] == 700
    assert s["temperature_c_max"] == 67
    assert s["slowdown_reasons"] == ["software power cap"]
    assert abs(s["power_capped_share"] - 2 / 3) < 1e-9
    assert "SM median 1755 MHz" in log.line() and "power-capped in 67% of 3 samples" in log.line()


def test_older_drivers_field_name_is_used_when_the_new_one_is_rejected(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LEGACY", "1")
    log = run_phase(ClockLog(command=fake_smi(tmp_path)))
    assert log.summary["samples"] == 3 and log.problem is None


def test_missing_nvidia_smi_is_reported_not_raised(tmp_path: Path) -> None:
    log = run_phase(ClockLog(command=str(tmp_path / "absent-smi")))
    assert log.summary == {"samples": 0}
    assert log.line() == f"clocks: unavailable ({tmp_path / 'absent-smi'} not found)"


def test_failing_nvidia_smi_is_reported_with_its_message(tmp_path: Path) -> None:
    path = tmp_path / "nvidia-smi"
    message = "NVIDIA-SMI has failed because it could not communicate with the driver."
    path.write_text(f"#!/bin/sh\necho '{message}'\nexit 9\n")
    path.chmod(0o755)
    log = run_phase(ClockLog(command=str(path)))
    assert log.line() == f"clocks: unavailable ({path}: {message})"


def test_idle_bit_is_not_a_slowdown() -> None:
    assert reasons(0x1 | 0x4 | 0x40) == ["idle", "software power cap", "hardware thermal"]
    assert summarise(["1980, 1980, 100, 700, 40, 0x1"])["slowdown_reasons"] == []
    assert summarise(["garbage", ""]) == {"samples": 0}


def test_disabled_log_runs_nothing_and_reports_nothing(tmp_path: Path, capsys) -> None:
    log = run_phase(ClockLog(command=fake_smi(tmp_path), enabled=False))  # a CPU run
    row: dict = {}
    log.report(row)
    assert row == {} and capsys.readouterr().out == ""
    assert not Path(log.command + ".sampled").exists()  # the stand-in was never started


def test_report_puts_the_summary_in_the_result_and_prints_its_line(tmp_path: Path, capsys) -> None:
    log = run_phase(ClockLog(command=fake_smi(tmp_path)))
    row: dict = {}
    log.report(row, "unet_alone_clocks")
    assert row == {"unet_alone_clocks": log.summary} and capsys.readouterr().out == f"  {log.line()}\n"
