"""`reportgen info`: its Reproduce line reproduces (batched cells too, bit for bit on a CPU; bfloat16 cells
with their dtype and device), it reads the web UIs' and ComfyUI's images, it checks the pixels, escapes what
it prints, and refuses hostile files in one line."""

from __future__ import annotations

import io
import json
import shlex
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import run_main, write_study
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin
from typer.testing import CliRunner

from reportgen.cli import app
from reportgen.render.store import Store, encode_png

runner = CliRunner()


def invoke(*args: object) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def reproduce_line(image: Path) -> str:
    code, out, _ = invoke("info", image)
    assert code == 0, out
    return next(line for line in out.splitlines() if line.startswith("Reproduce: "))


def run_printed(line: str, out: Path) -> Path:
    """Run the printed command (as a shell would split it, the comment dropped) with --out replaced."""
    words = shlex.split(line.removeprefix("Reproduce: "), comments=True)
    assert words[:2] == ["reportgen", "image"]
    words[words.index("--out") + 1] = str(out)
    code, stdout, stderr = invoke(*words[1:])
    assert code == 0, stdout + stderr
    return out


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).astype(int)


def text_png(path: Path, size: int = 8, **chunks: str) -> Path:
    """A black RGB PNG of size x size pixels carrying these text chunks, as another tool would write it."""
    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    Image.new("RGB", (size, size)).save(path, pnginfo=info)
    return path


def record(path: Path) -> dict:
    with Image.open(path) as image:
        return json.loads(image.info["reportgen"])


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """Four cells rendered batched in float32, two batched in bfloat16, one per-cell in bfloat16."""
    root = tmp_path_factory.mktemp("info")
    topic = {"anime": '"an anime girl [bad hands]" -W32 -H32 -C7.5 -S3031912972'}
    float32 = write_study(root / "float32", samplers=["k_euler", "k_euler_a"], steps=[2, 3], topics=topic)
    bfloat16 = write_study(root / "bfloat16", samplers=["k_euler", "k_euler_a"], steps=[2], topics=topic)
    out: dict[str, list[Path]] = {}
    for name, study, store, extra in (
            ("batched", float32, "store", []), ("bf16", bfloat16, "store", ["--dtype", "bfloat16"]),
            ("bf16-pipeline", bfloat16, "alone", ["--dtype", "bfloat16", "--executor", "pipeline", "--sampler",
                                                  "k_euler"])):
        code, _, err = invoke("render", study, "--store", study / store, *extra)
        assert code == 0, err
        out[name] = [c.image for c in Store(study / store).cells()]
    assert [len(images) for images in out.values()] == [4, 2, 1]
    return out


def test_a_batched_cells_command_reproduces_it_exactly_on_a_cpu(rendered, tmp_path: Path):
    worst = 0
    for image in rendered["batched"]:
        line = reproduce_line(image)
        assert "--device cpu --dtype float32 --executor batched --out" in line
        assert "levels of 255" not in line  # on a CPU no tolerance to state: the batch does not change the bits
        again = run_printed(line, tmp_path / "again.png")
        assert record(again)["key"] == record(image)["key"]  # the very same cell
        worst = max(worst, int(np.abs(pixels(again) - pixels(image)).max()))
    assert worst == 0


def test_a_cell_rendered_with_other_call_rows_says_it_may_differ(rendered, tmp_path: Path):
    from reportgen.render.outputs import CPU_ROWS_PER_CALL

    image = rendered["batched"][0]
    stored = record(image)
    assert stored["call_rows"] == CPU_ROWS_PER_CALL  # what the batch's calls had, in the record
    with Image.open(image) as opened:
        older = encode_png(opened.convert("RGB"), opened.info["parameters"], {**stored, "call_rows": 8})
    (tmp_path / "older.png").write_bytes(older)
    line = reproduce_line(tmp_path / "older.png")
    assert f"denoiser calls of 8 rows; this reportgen makes calls of {CPU_ROWS_PER_CALL}" in line
    assert "#" not in reproduce_line(image)  # the current call rows: nothing to warn of


def test_a_bfloat16_cells_command_carries_dtype_and_device(rendered, tmp_path: Path):
    for image in rendered["bf16"] + rendered["bf16-pipeline"]:
        line = reproduce_line(image)
        assert "--device cpu --dtype bfloat16" in line
        again = run_printed(line, tmp_path / "again.png")
        assert record(again)["key"] == record(image)["key"]
        difference = np.abs(pixels(again) - pixels(image)).max()
        assert difference == 0 and "#" not in line  # alone or batched: reproduced bit for bit on a CPU


def test_a_folder_model_is_named_by_its_absolute_path(tmp_path: Path, monkeypatch):
    from reportgen.models.tiny import build_tiny_pipeline

    build_tiny_pipeline().save_pretrained(tmp_path / "models" / "mine")
    study = write_study(tmp_path / "study", samplers=["k_euler"], steps=[2],
                        topics={"cat": '"a cat" -W32 -H32 -S1'})
    monkeypatch.chdir(tmp_path)
    assert invoke("render", study, "--model", "models/mine", "--executor", "pipeline")[0] == 0
    (cell,) = Store(study / "store").cells()
    line = reproduce_line(cell.image)
    assert f"--model {tmp_path / 'models' / 'mine'} " in line
    monkeypatch.chdir(study)  # from anywhere else, the printed command still finds the model
    again = run_printed(line, tmp_path / "again.png")
    assert record(again)["key"] == cell.record["key"] and np.array_equal(pixels(again), pixels(cell.image))


def test_edited_pixels_are_named(rendered, tmp_path: Path):
    image = rendered["batched"][0]
    with Image.open(image) as original:
        info = PngImagePlugin.PngInfo()
        for key, value in original.info.items():
            if isinstance(value, str):
                info.add_text(key, value)
        edited = original.convert("RGB")
    edited.putpixel((0, 0), (255, 0, 0) if edited.getpixel((0, 0)) != (255, 0, 0) else (0, 0, 0))
    edited.save(tmp_path / "edited.png", pnginfo=info)
    code, out, _ = invoke("info", tmp_path / "edited.png")
    assert code == 0 and "Pixels: EDITED after rendering" in out
    assert "Pixels: as rendered" in invoke("info", image)[1]


# --- other tools' images -----------------------------------------------------------------------------------

WEB_UI = ("a red fox, (masterpiece:1.2)\nNegative prompt: blurry, lowres\n"
          "Steps: 24, Sampler: DPM++ 2M, CFG scale: 6.5, Seed: 1234, Size: 512x768, Model hash: 6ce0161689, "
          'Model: "v1-5\\u002c pruned", Version: v1.10.1')


def exif_with_user_comment(text: str) -> bytes:
    """EXIF as the web UIs write it for JPEG and WebP: UserComment, b'UNICODE\\0' + UTF-16 big-endian."""
    payload = b"UNICODE\0" + text.encode("utf-16-be")
    ifd0 = struct.pack(">H", 1) + struct.pack(">HHII", 0x8769, 4, 1, 26) + struct.pack(">I", 0)
    exif_ifd = struct.pack(">H", 1) + struct.pack(">HHII", 0x9286, 7, len(payload), 44) + struct.pack(">I", 0)
    return b"Exif\0\0" + b"MM" + struct.pack(">HI", 42, 8) + ifd0 + exif_ifd + payload


@pytest.mark.parametrize("kind", ["png", "jpeg", "webp"])
def test_a_web_ui_image_is_read_with_the_closest_command(kind: str, tmp_path: Path):
    path = tmp_path / f"webui.{kind}"
    image = Image.new("RGB", (16, 16), (10, 20, 30))
    if kind == "png":
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", WEB_UI)
        image.save(path, pnginfo=info)
    else:
        image.save(path, format=kind.upper(), exif=exif_with_user_comment(WEB_UI))
    code, out, err = invoke("info", path)
    assert code == 0, err
    assert "Made by: a web UI" in out
    # DPM++ 2M without a Schedule type is Karras in the web UIs since 1.9: reportgen's dpmpp_2m_karras
    assert ("Read as: Steps: 24, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1234, "
            "Size: 512x768, Model hash: 6ce0161689, Model: v1-5, pruned") in out
    line = next(line for line in out.splitlines() if line.startswith("Reproduce: "))
    words = shlex.split(line.removeprefix("Reproduce: "), comments=True)
    assert words[2] == '"a red fox, (masterpiece:1.2) [blurry, lowres]" -W512 -H768 -C6.5 -S1234 -s24 ' \
                       "-Adpmpp_2m_karras"
    assert "closest, not the same image" in line


def test_a_web_ui_prompt_reportgen_cannot_say_gets_no_command(tmp_path: Path):
    path = tmp_path / "brackets.png"
    text_png(path, parameters="a [de-emphasised] cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1")
    code, out, _ = invoke("info", path)
    assert code == 0 and "Reproduce: none (reportgen's prompt syntax cannot say it: " in out


COMFY_PROMPT = {
    "3": {"class_type": "KSampler", "inputs": {"seed": 156680208700286, "steps": 20, "cfg": 8, "sampler_name":
          "euler", "scheduler": "normal", "denoise": 1, "model": ["4", 0], "positive": ["6", 0],
          "negative": ["7", 0], "latent_image": ["5", 0]}},
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a bottle with a galaxy inside", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["4", 1]}},
}


def test_a_comfyui_png_is_named_with_its_ksampler(tmp_path: Path):
    path = tmp_path / "comfy.png"
    text_png(path, prompt=json.dumps(COMFY_PROMPT), workflow=json.dumps({"nodes": [], "links": []}))
    code, out, _ = invoke("info", path)
    assert code == 0
    assert "Made by: ComfyUI (a `prompt` graph of 5 nodes, and a `workflow` chunk)" in out
    assert "KSampler node 3: sampler euler, scheduler normal, steps 20, CFG 8, seed 156680208700286" in out
    assert "  positive: a bottle with a galaxy inside" in out and "  negative: text, watermark" in out


def test_no_generation_parameters_only_when_there_are_none(tmp_path: Path, capsys, monkeypatch):
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    code, err = run_main(capsys, monkeypatch, "info", tmp_path / "plain.png")
    assert (code, err) == (2, f"error: {tmp_path / 'plain.png'} carries no generation parameters\n")
    text_png(tmp_path / "other.png", invokeai_metadata="{}")
    code, err = run_main(capsys, monkeypatch, "info", tmp_path / "other.png")
    assert code == 2 and "carries no generation parameters reportgen reads (its text chunks: invokeai_metadata)" in err


def test_control_characters_and_escape_sequences_are_shown_escaped(tmp_path: Path, capsys, monkeypatch):
    path = tmp_path / "hostile.png"
    text_png(path, parameters="a cat \x1b]0;TITLE\x07 \x9b31m red \u202e\nSteps: 2, Sampler: Euler, CFG scale: 7, "
                              "Seed: 1, Model: \x1b[2J")
    code, out, _ = invoke("info", path)
    assert code == 0
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out and "\u202e" not in out
    assert "a cat \\x1b]0;TITLE\\x07 \\x9b31m red \\u202e" in out
    weird = tmp_path / "\x1b]0;name\x07.png"
    weird.write_bytes(b"not an image")
    code, err = run_main(capsys, monkeypatch, "info", weird)
    assert code == 2 and "\x1b" not in err and "\\x1b]0;name\\x07.png is not a PNG, JPEG or WebP image" in err


# --- hostile files: one line, exit 2 -------------------------------------------------------------------------

def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with a parameters chunk and almost no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"tEXt", b"parameters\0a cat\nSteps: 2, Sampler: Euler, CFG scale: 7, Seed: 1")
            + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("width, height", [(20_000, 20_000), (100_000, 100_000)])
def test_a_png_claiming_too_many_pixels_is_one_line(width: int, height: int, tmp_path: Path, capsys, monkeypatch):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming(width, height))
    code, err = run_main(capsys, monkeypatch, "info", path)
    assert code == 2 and err.count("\n") == 1
    assert f"its header claims {width}x{height} = {width * height:,} pixels, over the limit" in err


def test_a_record_of_deeply_nested_json_is_one_line(tmp_path: Path, capsys, monkeypatch):
    path = tmp_path / "nested.png"
    text_png(path, parameters="a cat\nSteps: 2, Sampler: Euler, CFG scale: 7, Seed: 1",
             reportgen="[" * 100_000 + "]" * 100_000)
    code, err = run_main(capsys, monkeypatch, "info", path)
    assert (code, err) == (2, f"error: {path}: reportgen's record is malformed (nested too deeply), so the command "
                              "that reproduces it is unknown\n")
    # and the store treats such a file as not stored (render draws it again) instead of failing
    store = Store(tmp_path / "store")
    target = store.image_path("ab" * 32)
    target.parent.mkdir(parents=True)
    target.write_bytes(path.read_bytes())
    assert store.get("ab" * 32) is None


def test_a_record_with_a_pixel_digest_but_wrong_values(tmp_path: Path, capsys, monkeypatch):
    path = tmp_path / "odd.png"
    path.write_bytes(encode_png(Image.new("RGB", (8, 8)), "x\nSteps: 1, Sampler: Euler, CFG scale: 1",
                                {"topic": {"a": [1]}, **{k: None for k in ("seed_index", "seed", "sampler", "steps",
                                 "text", "negative", "width", "height", "cfg", "key", "nfe")}}))
    code, err = run_main(capsys, monkeypatch, "info", path)
    assert code == 2 and "record is malformed" in err and err.count("\n") == 1


def test_a_truncated_image_says_its_pixels_are_damaged(rendered, tmp_path: Path):
    data = rendered["batched"][0].read_bytes()
    cut = data.rindex(b"IDAT") + 20  # the text chunks come before the pixels: they survive
    (tmp_path / "cut.png").write_bytes(data[:cut])
    code, out, _ = invoke("info", tmp_path / "cut.png")
    assert code == 0 and "Pixels: damaged: they cannot be decoded" in out and "Reproduce: " in out


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzz_info_on_damaged_images(rendered, data) -> None:
    """Bytes of a reportgen PNG, a web UI JPEG or a ComfyUI PNG, cut, flipped or spliced: `info` describes what
    is left or refuses it in one line; nothing else escapes."""
    from reportgen.errors import ReportgenError
    from reportgen.render.info import describe_image

    sources = [rendered["batched"][0].read_bytes(), comfy_png(), jpeg_bytes()]
    original = data.draw(st.sampled_from(sources))
    at = data.draw(st.integers(0, len(original) - 1))
    kind = data.draw(st.sampled_from(["cut", "flip", "splice"]))
    if kind == "cut":
        damaged = original[:at]
    elif kind == "flip":
        damaged = original[:at] + bytes([original[at] ^ data.draw(st.integers(1, 255))]) + original[at + 1:]
    else:
        damaged = original[:at] + data.draw(st.binary(max_size=64)) + original[at:]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "damaged.png"
        path.write_bytes(damaged)
        try:
            report = describe_image(path)
        except ReportgenError as exc:
            assert str(exc) and "\n" not in str(exc)
            return
        assert all("\x1b" not in line for line in report.lines) and "\n" not in report.problem


def comfy_png() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", json.dumps(COMFY_PROMPT))
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="JPEG", exif=exif_with_user_comment(WEB_UI))
    return buffer.getvalue()


def test_a_cell_of_the_axes_prints_them_and_reproduces_exactly(tmp_path: Path):
    """A cell with the karras schedule and a CFG of the cfg axis: info names its axes, and its Reproduce line (with
    --schedule) renders the same cell, bit for bit on a CPU."""
    study = write_study(tmp_path / "study", samplers=["k_euler"], steps=[2],
                        topics={"cat": '"a cat" -W32 -H32 -C7.5 -S1'}, extra='schedules = ["karras"]\ncfg = [4.5]\n')
    code, _, err = invoke("render", study)
    assert code == 0, err
    (cell,) = Store(study / "store").cells()
    code, out, _ = invoke("info", cell.image)
    assert code == 0
    assert "Steps: 2, Sampler: Euler, Schedule type: Karras, CFG scale: 4.5, Seed: 1" in out
    assert "Axes: model tiny, sampler k_euler, schedule karras (Karras), cfg 4.5, steps 2, seed 1" in out
    line = reproduce_line(cell.image)
    assert "-C4.5" in line and "--schedule karras" in line
    again = run_printed(line, tmp_path / "again.png")
    assert record(again)["key"] == cell.key and record(again)["schedule_type"] == "karras"
    assert int(np.abs(pixels(again) - pixels(cell.image)).max()) == 0


def test_a_web_ui_image_with_a_schedule_gets_it_as_an_option(tmp_path: Path):
    path = tmp_path / "webui.png"
    text_png(path, 16, parameters="a cat\nSteps: 12, Sampler: Euler, Schedule type: Exponential, CFG scale: 5, "
                                  "Seed: 3, Size: 512x512, Model hash: 6ce0161689")
    code, out, err = invoke("info", path)
    assert code == 0, err
    line = next(line for line in out.splitlines() if line.startswith("Reproduce: "))
    words = shlex.split(line.removeprefix("Reproduce: "), comments=True)
    assert words[2].endswith("-Ak_euler") and words[3:5] == ["--schedule", "exponential"]
    assert "uses the Uniform schedule" not in line
