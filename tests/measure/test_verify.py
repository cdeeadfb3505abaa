"""`reportgen verify`: each corruption of a rendered store (issue 21) is found, repaired by --repair, and the store
and the exports then equal a clean run's; temporaries of live writers are left alone; orphans are only listed
unless --prune; render and analyze say in one line per kind what they found damaged."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import write_study
from PIL import Image, PngImagePlugin
from typer.testing import CliRunner

from reportgen.cli import app
from reportgen.measure.analysis import analyze
from reportgen.measure.exports import export_files
from reportgen.render import store as store_module
from reportgen.render.store import RECORD_CHUNK, Store, temporary_name, temporary_stale

runner = CliRunner()
PIPELINE = ["--executor", "pipeline"]  # one cell at a time: a cell rendered again is bit-identical to the first


def run(*args: object) -> Any:
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A rendered and analysed study (one topic, k_euler and the reference k_heun, 1 and 2 steps, 32x32)."""
    study = write_study(tmp_path_factory.mktemp("verify") / "study", samplers=["k_euler", "k_heun"], steps=[1, 2],
                        topics={"anime": '"an anime girl" -W32 -H32 -C7.5 -S3031912972'})
    assert run("render", study, *PIPELINE).exit_code == 0
    assert run("analyze", study).exit_code == 0
    return study


@pytest.fixture(scope="module")
def expected(clean: Path) -> dict[str, Any]:
    """The clean store's state, that every repaired one must equal."""
    return state(clean)


@pytest.fixture
def study(clean: Path, tmp_path: Path) -> Path:
    """A fresh copy of the clean study, to damage."""
    copy = tmp_path / "study"
    shutil.copytree(clean, copy)
    return copy


def cells(study: Path) -> list[Any]:
    return sorted(Store(study / "store").cells(), key=lambda c: (c.record["sampler"], c.record["steps"]))


def state(study: Path) -> dict[str, Any]:
    """What must equal a clean run's: every file of the store but damaged/ (a PNG as its pixels and its record
    without the seconds it took and the machine's load then, which no two renders share), and the exports without
    seconds."""
    root = study / "store"
    out: dict[str, Any] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "damaged" not in p.relative_to(root).parts):
        rel = path.relative_to(root).as_posix()
        if path.suffix == ".png":
            with Image.open(path) as image:
                record = json.loads(image.info[RECORD_CHUNK])
                out[rel] = (image.convert("RGB").tobytes(), {k: v for k, v in record.items()
                                                                  if k not in ("seconds", "load", "cpus")})
        elif path.name != "lock":
            out[rel] = path.read_bytes()
    from reportgen.render import jobs

    job = jobs.prepare_render(study)
    exports = export_files(analyze(job.study, job.store, job.plan.cells))
    rows = list(csv.DictReader(io.StringIO(exports["data/metrics.csv"].decode())))
    out["metrics.csv"] = [{k: v for k, v in row.items() if k != "seconds"} for row in rows]
    out["fits.json"] = _without_seconds(json.loads(exports["data/fits.json"]))
    return out


def _without_seconds(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_seconds(v) for k, v in value.items() if not k.endswith("seconds")}
    return [_without_seconds(v) for v in value] if isinstance(value, list) else value


def save_npy(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    path.write_bytes(buffer.getvalue())


def rewrite_record(path: Path, raw: str) -> None:
    """Put `raw` where the PNG's reportgen record is, keeping its pixels and its parameters."""
    with Image.open(path) as image:
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", image.info["parameters"])
        info.add_text(RECORD_CHUNK, raw)
        image.save(path, format="PNG", pnginfo=info)


def first_distance(study: Path) -> tuple[Path, dict[str, Any], str]:
    path = sorted((study / "store" / "metrics").glob("*/*.json"))[0]
    body = json.loads(path.read_text())
    return path, body, sorted(body["targets"])[0]


def swap_latents(study: Path) -> None:
    a, b = cells(study)[:2]
    data = a.latents.read_bytes()
    a.latents.write_bytes(b.latents.read_bytes())
    b.latents.write_bytes(data)


def flip_latents_byte(study: Path) -> None:
    path = cells(study)[0].latents
    data = bytearray(path.read_bytes())
    data[-7] ^= 0x10
    path.write_bytes(bytes(data))


def nan_latents(study: Path) -> None:
    path = cells(study)[0].latents
    save_npy(path, np.full_like(np.load(path), np.nan))


def wrong_shape_latents(study: Path) -> None:
    path = cells(study)[1].latents
    save_npy(path, np.zeros((4, 2, 2), np.float32))


def nan_distance(study: Path) -> None:
    path, body, target = first_distance(study)
    body["targets"][target]["latent"] = float("nan")
    path.write_text(json.dumps(body))  # json writes NaN, as a damaged or hand-edited file may hold


def other_distance(study: Path) -> None:
    path, body, target = first_distance(study)
    body["targets"][target]["latent"] = 0.5 + body["targets"][target]["latent"]
    path.write_text(json.dumps(body))


def folder_for_image(study: Path) -> None:
    path = cells(study)[2].image
    path.unlink()
    path.mkdir()
    (path / "someone's.txt").write_text("kept")  # never deleted: it is moved aside with its folder


def folder_for_latents(study: Path) -> None:
    path = cells(study)[3].latents
    path.unlink()
    path.mkdir()


def flipped_png_byte(study: Path) -> None:
    path = cells(study)[1].image
    data = bytearray(path.read_bytes())
    data[-30] ^= 0x01  # inside the last IDAT chunk's data
    path.write_bytes(bytes(data))


def truncated_png(study: Path) -> None:
    path = cells(study)[0].image
    path.write_bytes(path.read_bytes()[:-40])


def truncated_record(study: Path) -> None:
    cell = cells(study)[1]
    rewrite_record(cell.image, json.dumps(cell.record)[:-25])


def list_record(study: Path) -> None:
    rewrite_record(cells(study)[2].image, "[1, 2]")


def null_record(study: Path) -> None:
    rewrite_record(cells(study)[3].image, "null")


def flipped_pixel(study: Path) -> None:
    cell = cells(study)[0]
    with Image.open(cell.image) as image:
        info = PngImagePlugin.PngInfo()
        for key in ("parameters", RECORD_CHUNK):
            info.add_text(key, image.info[key])
        pixels = image.convert("RGB")
        pixels.putpixel((3, 3), tuple(255 - v for v in pixels.getpixel((3, 3))))
        pixels.save(cell.image, format="PNG", pnginfo=info)


CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str]] = {  # what to do, and the damage verify names
    "swapped latents": (swap_latents, "does not match the digest its record names"),
    "a flipped byte in latents": (flip_latents_byte, "does not match the digest its record names"),
    "NaN latents": (nan_latents, "does not match the digest its record names"),
    "latents of another shape": (wrong_shape_latents, "does not match the digest its record names"),
    "a NaN distance": (nan_distance, "not numbers, or not matching its checksum"),
    "another number for a distance": (other_distance, "not numbers, or not matching its checksum"),
    "a folder in a PNG's place": (folder_for_image, "is a folder"),
    "a folder in the latents' place": (folder_for_latents, "is a folder"),
    "a truncated PNG": (truncated_png, "does not decode"),
    "a flipped byte in a PNG": (flipped_png_byte, "its image data does not match the digest its record names"),
    "a truncated record": (truncated_record, "record is not JSON"),
    "a record that is a list": (list_record, "record is not an object (a list)"),
    "a record that is null": (null_record, "record is not an object (a NoneType)"),
    "a changed pixel": (flipped_pixel, "its image data does not match the digest its record names"),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_each_corruption_is_found_repaired_and_the_store_equals_a_clean_one(
        expected: dict[str, Any], study: Path, corruption: str) -> None:
    damage, why = CORRUPTIONS[corruption]
    damage(study)
    found = run("verify", study, "--json")
    assert found.exit_code == 1, found.output
    assert why in found.stderr, found.stderr
    counts = json.loads(found.stdout.splitlines()[-1])
    assert counts["clean"] is False and counts["damaged"] + counts["damaged_distances"] >= 1

    repaired = run("verify", study, "--repair", *PIPELINE, "--json")
    assert repaired.exit_code == 0, repaired.output
    assert json.loads(repaired.stdout.splitlines()[-1])["clean"] is True
    assert run("verify", study).exit_code == 0
    assert state(study) == expected
    if corruption == "a folder in a PNG's place":
        kept = list((study / "store" / "damaged").rglob("someone's.txt"))
        assert [p.read_text() for p in kept] == ["kept"]


def test_render_and_analyze_say_what_they_found_damaged(study: Path) -> None:
    folder_for_image(study)
    swap_latents(study)
    analysed = run("analyze", study)
    assert analysed.exit_code == 0, analysed.output
    assert "note: 2 cells with damaged latents left out (counted as not rendered)" in analysed.stderr
    assert "note: 1 cell blocked by a folder or another kind of file in the place of their files left out" \
        in analysed.stderr
    dry = run("render", study, "--dry-run")
    assert "4 cells: 1 cached, 3 to render" in dry.stderr
    assert "note: 2 cells with damaged latents to render again" in dry.stderr
    rendered = run("render", study, *PIPELINE)
    assert rendered.exit_code == 0, rendered.output
    assert "2 cells with damaged latents rendered again" in rendered.stderr
    assert "1 cell blocked by a folder or another kind of file in the place of their files rendered again " \
           "(damaged/ holds what was in the way)" in rendered.stderr
    other_distance(study)
    again = run("analyze", study)
    assert "note: 1 cached distance damaged (not numbers, or not matching their checksum), computed again" \
        in again.stderr
    assert run("verify", study).exit_code == 0
    truncated_png(study)
    built = run("build", study, "--out", study / "site")
    assert built.exit_code == 0, built.output
    assert "note: 1 cell with damaged images shown as not rendered; `reportgen render` renders them again" \
        in built.stderr


def test_a_record_without_a_latents_digest_is_served_but_unverified_until_repaired(
        expected: dict[str, Any], study: Path) -> None:
    cell = cells(study)[0]
    old = {k: v for k, v in cell.record.items() if k not in ("latents_sha256", "pixels_sha256")}
    with Image.open(cell.image) as image:  # as an older reportgen wrote it
        image.save(cell.image, format="PNG", pnginfo=_info(image, old, store_module.pixels_sha256(image)))
    dry = run("render", study, "--dry-run")
    assert "4 cells: 4 cached, 0 to render" in dry.stderr
    assert "note: 1 cell stored by an older reportgen name no latents digest" in dry.stderr
    found = run("verify", study)
    assert found.exit_code == 1 and "unverified: images/" in found.stderr and "1 unverified" in found.stderr
    assert run("verify", study, "--repair", *PIPELINE).exit_code == 0
    assert state(study) == expected
    nan_latents_unverified = cells(study)[0]  # and an old record's latents that hold NaN are damaged, not served
    old = {k: v for k, v in nan_latents_unverified.record.items() if k not in ("latents_sha256", "pixels_sha256")}
    with Image.open(nan_latents_unverified.image) as image:
        image.save(nan_latents_unverified.image, format="PNG",
                   pnginfo=_info(image, old, store_module.pixels_sha256(image)))
    save_npy(nan_latents_unverified.latents, np.full((4, 4, 4), np.nan, np.float32))
    assert "holds NaN or infinite values" in run("verify", study).stderr


def _info(image: Image.Image, record: dict[str, Any], pixels: str) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", image.info["parameters"])
    info.add_text(RECORD_CHUNK, json.dumps({**record, "pixels_sha256": pixels}))
    return info


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_temporaries_of_gone_writers_are_removed_and_live_ones_kept(study: Path) -> None:
    folder = cells(study)[0].image.parent
    host = store_module._HOST
    stale = [folder / f".a.png.{host}.{dead_pid()}.0123abcd.tmp", folder / ".b.png.otherhost.7.0123abcd.tmp",
             study / "store" / ".site-digests.json.12.tmp"]
    live = [folder / f".c.png.{host}.{os.getpid()}.0123abcd.tmp", folder / ".d.png.otherhost.7.89abcdef.tmp",
            folder / ".e.png.123.tmp"]
    for path in stale + live:
        path.write_bytes(b"half a file")
    hour_ago = time.time() - store_module.TEMP_MAX_AGE - 60
    for path in stale[1:]:
        os.utime(path, (hour_ago, hour_ago))  # another host's, or of an unknown one: stale once old
    found = run("verify", study, "--json")
    assert found.exit_code == 1
    counts = json.loads(found.stdout.splitlines()[-1])
    assert (counts["temporary"], counts["in_progress"]) == (3, 3), found.stderr
    repaired = run("verify", study, "--repair", *PIPELINE)
    assert repaired.exit_code == 0 and "3 temporary files of writers now gone removed" in repaired.stderr
    assert [p.exists() for p in stale + live] == [False] * 3 + [True] * 3


def test_temporary_names_never_collide_and_name_their_writer(tmp_path: Path) -> None:
    target = tmp_path / "images" / "ab" / ("ab" + "0" * 62 + ".png")
    names = {temporary_name(target).name for _ in range(200)}
    assert len(names) == 200  # one process, many writes (and threads): never the same file
    name = next(iter(names))
    assert name.startswith(f".{target.name}.{store_module._HOST}.{os.getpid()}.") and name.endswith(".tmp")
    assert socket.gethostname()
    path = tmp_path / name
    path.write_bytes(b"")
    assert temporary_stale(path) is False  # this process's own: it may be writing it right now


def test_orphans_are_listed_pruned_only_when_asked_and_unknown_files_never(study: Path) -> None:
    cell = cells(study)[0]
    orphan_key = "ab" + "c" * 62
    store = Store(study / "store")
    for path, source in ((store.image_path(orphan_key), cell.image), (store.latents_path(orphan_key), cell.latents)):
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, path)
    (study / "store" / "README.txt").write_text("my notes")
    (study / "store" / "images" / "not-a-prefix").mkdir()
    found = run("verify", study, "--json")
    assert found.exit_code == 0, found.output  # orphans and unknown files are not damage
    counts = json.loads(found.stdout.splitlines()[-1])
    assert (counts["orphaned"], counts["unknown"]) == (2, 2), found.stderr
    assert run("verify", study, "--repair", *PIPELINE).exit_code == 0
    assert store.image_path(orphan_key).exists()
    pruned = run("verify", study, "--prune")
    assert pruned.exit_code == 0 and "2 orphaned files pruned" in pruned.stderr
    assert not store.image_path(orphan_key).exists() and not store.latents_path(orphan_key).exists()
    assert (study / "store" / "README.txt").read_text() == "my notes"
    assert (study / "store" / "images" / "not-a-prefix").is_dir()


def test_prune_refuses_a_store_that_holds_none_of_the_plan(study: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    from conftest import run_main

    other = write_study(tmp_path / "other", samplers=["k_euler"], steps=[3],
                        topics={"fox": '"a red fox" -W32 -H32 -C7.5 -S5'})
    code, err = run_main(capsys, monkeypatch, "verify", other, "--store", study / "store", "--prune")
    assert code == 2 and err.startswith("error: refusing to prune: none of this plan's 1 cells is in"), err
    assert len(cells(study)) == 4


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys, monkeypatch) -> None:
    from conftest import run_main

    study = write_study(tmp_path / "study", samplers=["k_euler"], steps=[1], topics={"a": '"a" -W32 -H32 -S1'})
    code, err = run_main(capsys, monkeypatch, "verify", study)
    assert (code, err.strip()) == (2, f"error: no store at {study / 'store'}: nothing is rendered yet")
    code, err = run_main(capsys, monkeypatch, "verify", tmp_path / "nowhere")
    assert code == 2 and err.startswith("error: study folder not found") and err.count("\n") == 1
