"""What an image says about how it was made: the `parameters` text reportgen writes for other tools, and
the reader for any image `reportgen info` is given (reportgen's, the web UIs', ComfyUI's).

The `parameters` text follows the web UIs' "infotext" (AUTOMATIC1111 stable-diffusion-webui 1.10, also
read by Forge, sd-parsers and sd-prompt-reader); the rules below are written from that format's
documented and observed behaviour (docs/store.md), not from its code:

    <prompt>
    Negative prompt: <negative prompt>          (only when there is one)
    Steps: 20, Sampler: Euler, Schedule type: Uniform, CFG scale: 7.5, Seed: 1, Size: 512x512, ...

- The parser reads each line stripped and joins them with newlines; a line starting with
  `Negative prompt:` switches to the negative prompt, and the last line is the fields only if it holds at
  least three `key: value` pairs. sd-parsers splits the text at `Negative prompt:` anywhere. So both
  prompts are written on one line with their runs of whitespace folded to one space (CLIP's tokenizer
  folds them the same way, so the model sees the same tokens; reportgen's own record keeps the exact
  text), and reportgen refuses a prompt containing `Negative prompt:` (study/prompt.py).
- A value holding `,`, `:` or `"` (or a control character, or leading or trailing space) is written as a
  JSON string, as the format quotes; `,` and `:` inside it are written `\\u002c` and `\\u003a`, so that
  sd-parsers, which splits the line at every `,` and `:` and never unquotes, still keeps it as one value.
- Since 1.9 a sampler without a `Schedule type` is read with that sampler's default schedule (Karras for
  DPM++ 2M, DPM2 and DPM2 a; Exponential for DPM++ 2M SDE), so every image names its schedule, read from
  the full scheduler config its key hashes (`use_karras_sigmas`, ..., `timestep_spacing`).
- CFG is written in Python's shortest exact form (`repr`), never rounded.
"""

from __future__ import annotations

import json
import re
import struct
import unicodedata
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reportgen.errors import StoreError
from reportgen.models.sources import ModelInfo
from reportgen.render.plan import Cell, scheduler_config
from reportgen.render.store import PARAMETERS_CHUNK, RECORD_CHUNK
from reportgen.samplers import DEFAULT_SCHEDULE, SAMPLERS, SCHEDULES, Sampler, get_sampler
from reportgen.study.prompt import NEGATIVE_LABEL

MAX_PIXELS_READ = 89_478_485  # Pillow's own warning limit: `info` decodes no image larger than this
MAX_RECORD_DEPTH = 32  # reportgen's record is flat; deeper JSON is not one

# The web UIs' schedule names, by the diffusers setting that selects the same sigmas.
SCHEDULE_TYPES = {"uniform": "Uniform", "karras": "Karras", "exponential": "Exponential", "beta": "Beta",
                  "trailing": "SGM Uniform"}
# The schedule a web UI (1.9 and later) reads for a sampler written without `Schedule type`; others: Uniform.
UI_DEFAULT_SCHEDULE = {"DPM++ 2M": "Karras", "DPM++ SDE": "Karras", "DPM++ 2S a": "Karras", "DPM2": "Karras",
                       "DPM2 a": "Karras", "Restart": "Karras", "DPM++ 2M SDE": "Exponential",
                       "DPM++ 2M SDE Heun": "Exponential", "DPM++ 3M SDE": "Exponential"}
_FIELD = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')  # the format's key: value pairs


# --- writing ---------------------------------------------------------------------------------------------

def schedule_of(config: dict[str, Any]) -> str:
    """The schedule a scheduler config selects: karras, exponential, beta, trailing or uniform."""
    for flag, name in (("use_karras_sigmas", "karras"), ("use_exponential_sigmas", "exponential"),
                       ("use_beta_sigmas", "beta")):
        if config.get(flag):
            return name
    return "trailing" if config.get("timestep_spacing") == "trailing" else "uniform"


def sampler_fields(sampler: Sampler, config: dict[str, Any]) -> dict[str, str]:
    """`Sampler`, `Schedule type` (and, for trailing spacing, `Timestep spacing`) as the web UIs write them,
    for `sampler` built with its full scheduler `config` (render/plan.py scheduler_config)."""
    schedule = schedule_of(config)
    fields = {"Sampler": sampler.ui_name, "Schedule type": SCHEDULE_TYPES[schedule]}
    if schedule == "trailing":  # no web UI spaces DDIM or PLMS so; the name alone would be read as leading
        fields["Timestep spacing"] = "trailing"
    return fields


def parameters_fields(cell: Cell, model: ModelInfo) -> dict[str, str]:
    """The fields line of a cell's `parameters` text, in the web UIs' order, as text."""
    sampler = get_sampler(cell.sampler)
    config = scheduler_config(sampler.name, model.scheduler_config, cell.schedule_type)  # what the key hashes
    return {"Steps": str(cell.steps), **sampler_fields(sampler, config), "CFG scale": number(cell.cfg),
            "Seed": str(cell.seed), "Size": f"{cell.width}x{cell.height}", "Model hash": model.short_hash,
            "Model": model.label, "RNG": "CPU"}  # reportgen draws its noise from a CPU generator


def model_fields(model: ModelInfo) -> dict[str, str]:
    """What a record keeps to name its model again from anywhere: the spec as given, and for a folder or a
    file its absolute path (and the --model-config folder's), since a relative spec means another folder
    to a command run elsewhere; and its family, by name and as people name it."""
    fields = {"model_spec": model.spec, "family": model.family, "family_label": model.family_label}
    if model.kind in ("folder", "single-file") and model.path is not None:
        fields["model_path"] = str(model.path.resolve())
    if model.config is not None:
        fields["model_config"] = str(model.config.resolve())
    return fields


def parameters_text(cell: Cell, model: ModelInfo) -> str:
    """The widely read `parameters` text: prompt, negative prompt, then the 'Steps: ..., Sampler: ...' line."""
    return format_parameters(cell.text, cell.negative, parameters_fields(cell, model))


def format_parameters(prompt: str, negative: str, fields: dict[str, str]) -> str:
    """Prompt, negative prompt and fields in the infotext layout, each read back exactly (see the module)."""
    lines = [fold(prompt)]
    if fold(negative):
        lines.append(f"{NEGATIVE_LABEL} {fold(negative)}")
    lines.append(", ".join(f"{key}: {quote(value)}" for key, value in fields.items()))
    return "\n".join(lines)


def fold(text: str) -> str:
    """`text` on one line: every run of whitespace (newlines and tabs included) one space, none at the ends."""
    return " ".join(text.split())


def number(value: float) -> str:
    """A float in its shortest exact form: 7.5, 7.123456789, 1234567 (never rounded to 6 digits)."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def quote(value: str) -> str:
    """A field value as the format writes it: as is when plain, else a JSON string (`,` and `:` escaped)."""
    plain = (value and value == value.strip() and not value.startswith('"')
             and not any(ch in ',:"\\' or _control(ch) for ch in value))
    if plain:
        return value
    text = json.dumps(value, ensure_ascii=False)
    text = text.replace(",", "\\u002c").replace(":", "\\u003a")
    return "".join(f"\\u{ord(ch):04x}" if _control(ch) and ord(ch) <= 0xFFFF else ch for ch in text)


def _control(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")


# --- reading the infotext --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Infotext:
    """A parsed `parameters` text: the prompts and the fields (values unquoted, as text)."""

    prompt: str
    negative: str
    fields: dict[str, str]


def parse_parameters(text: str) -> Infotext | None:
    """Read an infotext by the format's rules; None if its last line holds fewer than three fields."""
    *lines, last = text.strip().split("\n")
    if len(_FIELD.findall(last)) < 3:
        return None
    prompt: list[str] = []
    negative: list[str] = []
    target = prompt
    for line in (line.strip() for line in lines):
        if line.startswith(NEGATIVE_LABEL):
            target, line = negative, line[len(NEGATIVE_LABEL):].strip()
        target.append(line)
    fields = {key: _unquote(value) for key, value in _FIELD.findall(last)}
    return Infotext("\n".join(prompt).strip(), "\n".join(negative).strip(), fields)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            loaded = json.loads(value)
        except ValueError:
            return value
        return loaded if isinstance(loaded, str) else value
    return value


def ui_sampler(fields: dict[str, str]) -> tuple[str, str]:
    """(sampler, schedule) a web UI reads from `Sampler` and `Schedule type`, with the 1.9 rules: a name
    ending in a schedule ("DPM++ 2M Karras") is split, and a missing or `Automatic` schedule is the
    sampler's default."""
    name, schedule = fields.get("Sampler", ""), fields.get("Schedule type", "Automatic")
    labels = {*SCHEDULE_TYPES.values(), "Automatic", "Polyexponential", "Align Your Steps", "Simple", "Normal",
              "DDIM", "KL Optimal"}
    for label in sorted(labels, key=len, reverse=True):
        if name.endswith(" " + label):
            name, schedule = name[:-len(label) - 1], label
            break
    if schedule == "Automatic":
        schedule = UI_DEFAULT_SCHEDULE.get(name, "Uniform")
    return name, schedule


def closest_sampler(fields: dict[str, str]) -> tuple[Sampler | None, str]:
    """The registry's sampler closest to what a web UI image names, and what differs ('' if nothing)."""
    name, schedule = ui_sampler(fields)
    spacing = fields.get("Timestep spacing", "")
    candidates = [s for s in SAMPLERS if s.ui_name == name]
    if not candidates:
        return None, f"reportgen has no sampler {name!r}"
    for sampler in candidates:
        config = {**sampler.overrides}
        if SCHEDULE_TYPES[schedule_of(config)] == schedule and (spacing != "trailing") == (
                config.get("timestep_spacing") != "trailing"):
            return sampler, ""
    sampler = next((s for s in candidates if s.overrides.get("timestep_spacing") != "trailing"), candidates[0])
    return sampler, f"reportgen's {sampler.name} uses the {SCHEDULE_TYPES[schedule_of(sampler.overrides)]} " \
                    f"schedule, the image {schedule}"


def closest_schedule(fields: dict[str, str]) -> tuple[Sampler | None, str, str]:
    """closest_sampler with the schedules axis: (sampler, schedule, what differs), where a registry sampler with
    another schedule (`--schedule`) gives what the image names: "Euler, Schedule type: Karras" is k_euler with
    karras."""
    sampler, differs = closest_sampler(fields)
    if sampler is None or not differs:
        return sampler, DEFAULT_SCHEDULE, differs
    _, wanted = ui_sampler(fields)
    for name, schedule in SCHEDULES.items():
        if schedule.label == wanted and name != DEFAULT_SCHEDULE and sampler.takes(name) is None:
            return sampler, name, ""
    return sampler, DEFAULT_SCHEDULE, differs


# --- reading image files ---------------------------------------------------------------------------------

@dataclass
class ImageMetadata:
    """What an image file carries, read without decoding its pixels."""

    path: Path
    format: str  # PNG, JPEG or WEBP
    size: tuple[int, int]
    parameters: str | None = None  # PNG `parameters`, or EXIF UserComment in JPEG/WebP
    record: dict[str, Any] | None = None  # reportgen's JSON record
    record_problem: str = ""  # why a `reportgen` chunk is not a record
    comfy_prompt: Any = None  # ComfyUI's API graph (`prompt` chunk), parsed
    comfy_workflow: bool = False  # a ComfyUI `workflow` chunk is present
    other: tuple[str, ...] = ()  # names of other text chunks, unread
    _image: Any = field(default=None, repr=False)

    def pixels_sha256(self) -> str:
        """SHA-256 of the decoded RGB pixels, as the store computes it; StoreError if they cannot be decoded."""
        import hashlib

        from PIL import Image

        try:
            with Image.open(self.path) as image:  # the size was checked when the header was read
                image.load()
                return hashlib.sha256(image.convert("RGB").tobytes()).hexdigest()
        except (OSError, ValueError, SyntaxError, struct.error, Image.DecompressionBombError) as exc:
            raise StoreError(_first_line(str(exc)) or type(exc).__name__) from None


def read_image_metadata(path: Path) -> ImageMetadata:
    """Read an image's text chunks or EXIF without decoding pixels; StoreError (one line) if it is not a PNG,
    JPEG or WebP image, cannot be read, or claims more than MAX_PIXELS_READ pixels."""
    from PIL import Image, JpegImagePlugin, PngImagePlugin, WebPImagePlugin

    try:
        with open(path, "rb") as handle:
            magic = handle.read(12)
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from None
    opener: Any
    if magic.startswith(b"\x89PNG\r\n\x1a\n"):
        opener = PngImagePlugin.PngImageFile
    elif magic.startswith(b"\xff\xd8\xff"):
        opener = JpegImagePlugin.JpegImageFile
    elif magic[:4] == b"RIFF" and magic[8:12] == b"WEBP":
        opener = WebPImagePlugin.WebPImageFile
    else:
        raise StoreError(f"{path} is not a PNG, JPEG or WebP image")
    try:
        # The plugin class itself reads the header and the text chunks before the pixels, and skips
        # Image.open's decompression-bomb check: the size is checked here, before anything is decoded.
        # Pillow's warnings about damaged EXIF tags would print a file's own text to stderr: not ours.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with opener(str(path)) as image:
                width, height = image.size
                info = dict(image.info)
                exif = image.getexif().get_ifd(0x8769).get(0x9286) if image.format in ("JPEG", "WEBP") else None
                kind = str(image.format)
    except (OSError, ValueError, SyntaxError, struct.error, Image.DecompressionBombError) as exc:
        raise StoreError(f"cannot read image {path}: {_first_line(str(exc)) or type(exc).__name__}") from None
    if width * height > MAX_PIXELS_READ:
        raise StoreError(f"{path}: its header claims {width}x{height} = {width * height:,} pixels, over the "
                         f"limit of {MAX_PIXELS_READ:,}; not read (a decompression bomb?)")
    meta = ImageMetadata(path, kind, (width, height))
    parameters = info.pop(PARAMETERS_CHUNK, None)
    if exif is not None:
        parameters = user_comment(exif)
    meta.parameters = parameters if isinstance(parameters, str) and parameters else None
    raw = info.pop(RECORD_CHUNK, None)
    if isinstance(raw, str):
        meta.record, meta.record_problem = parse_record(raw)
    prompt = info.pop("prompt", None)
    if isinstance(prompt, str):
        meta.comfy_prompt = _json(prompt)
    meta.comfy_workflow = isinstance(info.pop("workflow", None), str)
    meta.other = tuple(sorted(k for k, v in info.items() if isinstance(v, str) and isinstance(k, str)
                              and k not in _NOT_TEXT))
    return meta


_NOT_TEXT = {"dpi", "gamma", "transparency", "aspect", "icc_profile", "exif", "srgb", "progressive",
             "progression", "jfif", "jfif_version", "jfif_unit", "jfif_density", "adobe", "adobe_transform",
             "loop", "duration", "background", "timestamp"}


def parse_record(raw: str) -> tuple[dict[str, Any] | None, str]:
    """reportgen's JSON record, or (None, why not)."""
    try:
        record = json.loads(raw)
    except RecursionError:
        return None, "nested too deeply"
    except ValueError as exc:
        return None, f"not JSON ({_first_line(str(exc))})"
    if not isinstance(record, dict):
        return None, "not a JSON object"
    if _depth(record) > MAX_RECORD_DEPTH:
        return None, "nested too deeply"
    return record, ""


def user_comment(raw: Any) -> str | None:
    """An EXIF UserComment as text: its 8-byte character code (UNICODE: UTF-16, either byte order; ASCII;
    none) then the text, as the web UIs write JPEG and WebP parameters."""
    if isinstance(raw, str):
        return raw.rstrip("\0") or None
    if not isinstance(raw, bytes | bytearray):
        return None
    prefix, body = bytes(raw[:8]), bytes(raw[8:])
    if prefix == b"UNICODE\0":
        if body[:2] in (b"\xfe\xff", b"\xff\xfe"):
            text = body.decode("utf-16", "replace")
        else:  # no byte-order mark: mostly-ASCII text has its zero bytes first in big-endian
            big = body[0::2].count(0) >= body[1::2].count(0)
            text = body[: len(body) // 2 * 2].decode("utf-16-be" if big else "utf-16-le", "replace")
    elif prefix in (b"ASCII\0\0\0", b"\0" * 8):
        text = body.decode("utf-8", "replace")
    else:
        text = bytes(raw).decode("utf-8", "replace")
    return text.rstrip("\0") or None


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _depth(value: Any, level: int = 0) -> int:
    if level > MAX_RECORD_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


# --- ComfyUI ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ComfySampler:
    """A KSampler node of a ComfyUI graph and the values its inputs hold (None where linked or absent)."""

    node: str
    kind: str
    sampler: Any
    scheduler: Any
    steps: Any
    cfg: Any
    seed: Any
    positive: str | None
    negative: str | None


def comfy_samplers(graph: Any) -> list[ComfySampler]:
    """The KSampler and KSamplerAdvanced nodes of a ComfyUI API graph (`prompt` chunk), in node order."""
    if not isinstance(graph, dict):
        return []
    found = []
    for node_id, node in graph.items():
        if not isinstance(node, dict) or node.get("class_type") not in ("KSampler", "KSamplerAdvanced"):
            continue
        inputs: dict[str, Any] = node["inputs"] if isinstance(node.get("inputs"), dict) else {}
        seed = inputs.get("noise_seed", inputs.get("seed"))
        found.append(ComfySampler(
            str(node_id), str(node["class_type"]), _literal(inputs.get("sampler_name")),
            _literal(inputs.get("scheduler")), _literal(inputs.get("steps")), _literal(inputs.get("cfg")),
            _literal(seed), _text(graph, inputs.get("positive")), _text(graph, inputs.get("negative"))))
    return found


def _literal(value: Any) -> Any:
    """A node input's own value; None for a link to another node ([node id, output])."""
    return None if isinstance(value, list | dict) else value


def _text(graph: dict[str, Any], link: Any) -> str | None:
    """The prompt text of the text-encode node a conditioning input links to, if it holds one itself."""
    if not (isinstance(link, list) and link and isinstance(link[0], str | int)):
        return None
    node = graph.get(str(link[0]))
    inputs = node.get("inputs") if isinstance(node, dict) else None
    text = inputs.get("text") if isinstance(inputs, dict) else None
    return text if isinstance(text, str) else None
