"""Commands with nothing to do load no model library: each runs in its own process, which lists what it imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_study

# Run the console entry point, then report which of the heavy libraries ended up in sys.modules.
SCRIPT = """
import atexit, json, sys
heavy = ("torch", "diffusers", "transformers")
atexit.register(lambda: print("IMPORTED " + json.dumps(sorted(m for m in heavy if m in sys.modules))))
sys.argv = ["reportgen", *sys.argv[1:]]
from reportgen.cli import main
main()
"""


def imported(*args: object) -> tuple[int, list[str], str]:
    """Run `reportgen ARGS` in a fresh process: (exit code, heavy modules it imported, stderr)."""
    done = subprocess.run([sys.executable, "-c", SCRIPT, *map(str, args)], capture_output=True, text=True, timeout=120)
    line = next(line for line in reversed(done.stdout.splitlines()) if line.startswith("IMPORTED "))
    return done.returncode, json.loads(line.removeprefix("IMPORTED ")), done.stderr


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny study rendered, analysed and built once: every later command finds nothing to do."""
    study = write_study(tmp_path_factory.mktemp("lazy") / "study", samplers=["k_euler", "ddim"], steps=[2, 3],
                        topics={"fox": '"a red fox" -W32 -H32 -C7.5 -S7'})
    for args in (("render", study, "--device", "cpu"), ("analyze", study, "--device", "cpu"),
                 ("build", study, "--out", study / "site", "--device", "cpu")):
        code, _, err = imported(*args)
        assert code == 0, err
    return study


def test_cached_render_with_device_cpu_imports_no_model_library(rendered: Path) -> None:
    code, heavy, err = imported("render", rendered, "--device", "cpu")
    assert code == 0 and "4 cached, 0 to render" in err, err
    assert heavy == []


def test_cached_render_choosing_its_device_imports_no_diffusers(rendered: Path) -> None:
    code, heavy, err = imported("render", rendered)
    assert code == 0, err
    assert "diffusers" not in heavy and "transformers" not in heavy  # torch only where a GPU driver is present


def test_analyze_and_build_with_nothing_new_import_no_model_library(rendered: Path) -> None:
    code, heavy, err = imported("analyze", rendered, "--device", "cpu")
    assert code == 0 and "0 distances computed" in err, err
    assert heavy == []
    code, heavy, err = imported("build", rendered, "--out", rendered / "site", "--device", "cpu")
    assert code == 0, err
    assert heavy == []


def test_info_samplers_and_new_topic_import_no_model_library(rendered: Path) -> None:
    image = next((rendered / "store" / "images").glob("*/*.png"))
    for args in (("info", image), ("samplers",),
                 ("new-topic", rendered, "owl", "--title", "Owl", "--prompt", '"an owl" -W32 -H32 -C7.5 -S3')):
        code, heavy, err = imported(*args)
        assert code == 0, err
        assert heavy == [], args


def test_verify_of_a_clean_store_imports_no_model_library(rendered: Path) -> None:
    code, heavy, err = imported("verify", rendered, "--device", "cpu")
    assert code == 0 and " good, 0 damaged, 0 unverified" in err, err
    assert heavy == []
