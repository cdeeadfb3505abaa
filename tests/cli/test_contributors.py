"""What contributors are told: estimated time, sizes far from native, captions the demo model cannot draw,
what to run next, and progress when stderr is a log file."""

from __future__ import annotations

from pathlib import Path

from conftest import run_main, write_study


def test_dry_run_estimates_from_stored_cells_and_render_names_the_build(tiny_study: Path, capsys, monkeypatch):
    code, err = run_main(capsys, monkeypatch, "render", tiny_study, "--dry-run", "--device", "cpu")
    assert code == 0, err
    assert "no speed measured on cpu yet, so no time estimate: 32 model calls" in err  # 2 topics x (2+4 + 3+7)
    code, err = run_main(capsys, monkeypatch, "render", tiny_study, "--topic", "anime", "--device", "cpu")
    assert code == 0, err
    assert f"next: reportgen build {tiny_study} --out {tiny_study / 'site'}" in err
    code, err = run_main(capsys, monkeypatch, "render", tiny_study, "--dry-run", "--device", "cpu")
    assert code == 0, err
    assert "estimated time of the 4 cells to render: about" in err and "(from stored cells)" in err


def test_a_size_far_from_native_is_warned_about(tmp_path: Path, capsys, monkeypatch):
    study = write_study(tmp_path / "s", samplers=["k_euler"], steps=[2],
                        topics={"big": '"a fox" -W512 -H512 -C7.5 -S1', "fits": '"a fox" -W64 -H64 -C7.5 -S1'})
    code, err = run_main(capsys, monkeypatch, "render", study, "--dry-run", "--device", "cpu")
    assert code == 0, err
    assert "topic big is 512x512, far from tiny's native 64x64" in err and "64x the time per model call" in err
    assert "topic fits" not in err


def test_demo_captions_outside_its_grammar_are_warned_about(tmp_path: Path, capsys, monkeypatch):
    study = write_study(tmp_path / "s", samplers=["k_euler"], steps=[2],
                        topics={"fox": '"a red fox in the snow" -W64 -H64 -C7.5 -S1',
                                "words": '"a red circle on the sea" -W64 -H64 -C7.5 -S1',
                                "ok": '"a red circle at the left on a white background" -W64 -H64 -C7.5 -S1'})
    code, err = run_main(capsys, monkeypatch, "render", study, "--dry-run", "--device", "cpu", "--model", "demo")
    assert code == 0, err
    assert "warning: topic fox: the demo model never saw 'fox', 'in', 'snow'" in err
    assert "warning: topic words: its words, but not one of the demo model's captions" in err
    assert "topic ok" not in err


def test_new_topic_says_what_it_will_cost_and_what_to_run_next(tiny_study: Path, capsys, monkeypatch):
    code, err = run_main(capsys, monkeypatch, "new-topic", tiny_study, "owl", "--title", "Owl",
                         "--prompt", '"an owl" -W512 -H512 -C7.5 -S3')
    assert code == 0, err
    assert "no speed measured" in err and "16 model calls" in err  # k_euler 2+4, k_heun 3+7
    assert "topic owl is 512x512, far from tiny's native 64x64" in err
    assert err.rstrip().endswith(f"next: reportgen render {tiny_study} --topic owl")


def test_render_without_a_terminal_prints_progress_lines(tiny_study: Path, capsys, monkeypatch):
    from reportgen import cli

    monkeypatch.setattr(cli, "PROGRESS_EVERY", 0.01)
    code, err = run_main(capsys, monkeypatch, "render", tiny_study, "--device", "cpu")
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.startswith("rendering: ")]
    assert lines and all(" cells, " in line and "/32 model calls" in line for line in lines)
