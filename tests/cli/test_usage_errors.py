"""Usage errors are one line and exit 2 (Click's five-line box before), --help still shows the full usage, and
--store naming something other than a folder is refused in every spelling, by every command that takes it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_main


@pytest.mark.parametrize("args, expected", [
    (["render", "STUDY", "--steps", "abc"], "error: --steps: 'abc' is not an integer"),
    (["render", "STUDY", "--batch-size", "0"], "error: --batch-size: must be at least 1, got 0"),
    (["speed", "STUDY", "--steps", "1.5"], "error: --steps: '1.5' is not an integer"),
    (["preview", "STUDY", "--topic", "anime", "--count", "0"], "error: --count: must be at least 1, got 0"),
    (["render"], "error: missing argument 'study'"),
    (["image", '"a cat"'], "error: missing option '--out'"),
    (["image", '"a cat"', "--out"], "error: option '--out' requires an argument"),
    (["render", "STUDY", "--bogus"], "error: no such option: --bogus"),
    (["rendr", "STUDY"], "error: no such command 'rendr'; did you mean 'render'?"),
    (["render", "STUDY", "extra"], "error: got unexpected extra argument(s) (extra)"),
])
def test_usage_errors_are_one_line_and_exit_2(args: list[str], expected: str, tiny_study: Path, capsys,
                                              monkeypatch):
    code, err = run_main(capsys, monkeypatch, *[tiny_study if a == "STUDY" else a for a in args])
    assert (code, err) == (2, expected + "\n")
    assert not (tiny_study / "store").exists()


def test_help_still_shows_the_full_usage(capsys, monkeypatch):
    code, _ = run_main(capsys, monkeypatch, "render", "--help")
    assert code == 0
    result = subprocess.run([sys.executable, "-m", "reportgen", "render", "--help"], capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0 and "Usage:" in result.stdout and "--batch-size" in result.stdout
    assert "--store" in result.stdout and result.stderr == ""


def test_a_usage_error_in_the_console_script_is_one_line(tiny_study: Path):
    result = subprocess.run([sys.executable, "-m", "reportgen", "render", str(tiny_study), "--steps", "abc"],
                            capture_output=True, text=True)
    assert (result.returncode, result.stderr, result.stdout) == (2, "error: --steps: 'abc' is not an integer\n", "")


@pytest.fixture
def not_folders(tmp_path: Path) -> list[str]:
    """A file, and every way of spelling a path that is one or runs through one."""
    file = tmp_path / "afile"
    file.write_text("not a store")
    (tmp_path / "link").symlink_to(file)
    (tmp_path / "d").mkdir()
    return [str(file), f"{file}/", f"{file}/.", str(tmp_path / "d" / ".." / "afile"), str(tmp_path / "link"),
            f"{file}/sub", f"{file}/..", os.path.relpath(file)]


@pytest.mark.parametrize("command", [["render", "--dry-run"], ["render"], ["analyze"], ["preview", "--topic", "anime"],
                                     ["polish", "--topic", "anime", "--seeds", "1"], ["build", "--out", "SITE"]])
def test_store_that_is_not_a_folder_is_refused_in_every_form(command: list[str], not_folders: list[str],
                                                             tiny_study: Path, tmp_path: Path, capsys, monkeypatch):
    name, *options = command
    options = [str(tmp_path / "site") if o == "SITE" else o for o in options]
    for store in not_folders:
        code, err = run_main(capsys, monkeypatch, name, tiny_study, *options, "--store", store)
        assert code == 2 and err.startswith("error: --store: ") and err.count("\n") == 1, (store, err)
        assert "not a folder" in err
    assert (tmp_path / "afile").read_text() == "not a store"
    assert not (tmp_path / "site").exists() and not (tiny_study / "grids").exists()
