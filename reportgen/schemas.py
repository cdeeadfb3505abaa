"""The schema of every JSON file reportgen reads besides its own PNG records, and the one way to read them.

One pydantic model per file kind, checked before any value is used (issue 22):

| file | model | who reads it | when it fails |
| --- | --- | --- | --- |
| `~/.cache/reportgen/file-hashes.json` | `HashCache` | models/sources.py | a cache: ignored (a note), rewritten |
| `~/.cache/reportgen/scheduler-configs.json` | `SchedulerConfigCache` | render/plan.py | a cache: as above |
| `STORE/metrics/ab/<key>.json` | `DistanceFile` | measure/distances.py | a cache: ignored (a note), rewritten |
| ... each pair in it | `DistanceEntry` | measure/distances.py | computed again |
| `STORE/site-digests.json` | `SiteDigests` | site/files.py | a cache: ignored (a note), rewritten |
| `STUDY/speed.json` | `SpeedRecord` | render/timing.py | the user's file: named, exit 2 |
| `STUDY/workflow.json` | `WorkflowRecord` | render/timing.py | the user's file: named, exit 2 |
| `MODEL/scheduler/scheduler_config.json` | `SchedulerConfig` | models/sources.py | the user's file: named, exit 2 |
| `MODEL/model_index.json` | `ModelIndex` | models/sources.py | the user's file: named, exit 2 |
| `MODEL/unet/config.json`, `vae/...` | `UNetConfig`, `VAEConfig` | models/sources.py | no native size known |

`load` reads and validates a user's file and raises the caller's ReportgenError subclass with one line
that names the file and what is wrong; `load_cache` returns None for a cache that is missing or fails
(logging one note on the `reportgen` logger, which the CLI prints). JSON is parsed by pydantic-core
(deep nesting is a parse error there, not a RecursionError); the models refuse NaN and infinity where a
number is due; files over `MAX_BYTES` are refused unread.
pydantic is imported only by the modules that read these files, never by `reportgen --help`.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from reportgen.errors import ReportgenError, SamplerError
from reportgen.samplers import get_sampler

MAX_BYTES = 64 * 1024 * 1024  # the largest JSON file read: a study's workflow.json of 200 runs is far below
MAX_TRAIN_TIMESTEPS = 100_000  # a scheduler allocates arrays of this length; SD ships 1000
NOTES = logging.getLogger("reportgen")  # the CLI prints each record as one `note:` line

M = TypeVar("M", bound=BaseModel)
E = TypeVar("E", bound=ReportgenError)


class FileProblem(ReportgenError):
    """A file that cannot be read or does not fit its schema (the message names the file)."""


class _Record(BaseModel):
    """A record reportgen writes: strict types (no '3' for 3, no true for 1); fields it does not know are
    ignored, so that a newer reportgen's additions do not make an older one refuse the file."""

    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False, frozen=True)


Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Positive = Annotated[int, Field(gt=0), StrictInt]
PositiveNumber = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Name = Annotated[str, Field(min_length=1), StrictStr]


def _sampler_name(value: str) -> str:
    try:
        get_sampler(value)
    except SamplerError as exc:
        raise ValueError(str(exc)) from None
    return value


# --- caches ------------------------------------------------------------------------------------------------

class HashCache(RootModel[dict[str, Sha256]]):
    """file-hashes.json: "<resolved path>|<size>|<mtime_ns>" -> the file's SHA-256."""

    model_config = ConfigDict(strict=True)


class SiteDigests(RootModel[dict[str, Sha256]]):
    """STORE/site-digests.json: a name for what a site file shows (`thumb-256:<pixels digest>`, `grid:...`,
    `plot:<path>`) -> the SHA-256 of the file made for it (site/files.py)."""

    model_config = ConfigDict(strict=True)


def _names_a_scheduler(entry: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(entry.get("class"), str):
        raise ValueError("has no scheduler class")
    return entry


SchedulerEntry = Annotated[dict[StrictStr, Any], AfterValidator(_names_a_scheduler)]


class SchedulerConfigCache(RootModel[dict[Sha256, SchedulerEntry]]):
    """scheduler-configs.json: per hash of (scheduler class, overrides, base config, diffusers version), the full
    scheduler config diffusers builds (render/plan.py scheduler_config)."""

    model_config = ConfigDict(strict=True)


Distance = Annotated[float, Field(ge=0)]  # the latent distance is inf against an all-zero target


DigestPair = Annotated[list[Sha256], Field(min_length=2, max_length=2)]  # (the cell's, the target's)


class DistanceFile(_Record):
    """STORE/metrics/ab/<key>.json: the cell's cached distances to each target key. Each pair is checked on its
    own (DistanceEntry), so that a damaged pair costs only itself (measure/distances.py)."""

    version: StrictInt
    targets: dict[StrictStr, Any]

    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=True, frozen=True)


class DistanceEntry(_Record):
    """One cached pair: both distances, the digests of the latents and pixels they were computed from, and a
    checksum over them and the pair's keys (measure/distances.py checks the digests and the checksum)."""

    latent: Distance
    ssim: Distance
    latents_sha256: DigestPair
    pixels_sha256: DigestPair
    sha256: Sha256

    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=True, frozen=True)


# --- the study's measured records ------------------------------------------------------------------------

class SpeedRow(_Record):
    """One sampler's timing in speed.json."""

    sampler: Name
    label: Name
    steps: Positive
    nfe: Positive
    seconds: Annotated[list[Seconds], Field(min_length=1)]
    s_per_image: PositiveNumber
    it_per_s: PositiveNumber
    calls_per_s: PositiveNumber

    _sampler = field_validator("sampler")(_sampler_name)


class SpeedRecord(_Record):
    """STUDY/speed.json, as `reportgen speed` writes it (format 1)."""

    format: Literal[1]
    measured_at: StrictStr = ""
    device: Name
    device_name: Name
    dtype: Name
    model: StrictStr = ""
    topic: StrictStr = ""
    width: Positive
    height: Positive
    steps: Positive
    samples: Positive
    executor: StrictStr = "pipeline"
    samplers: Annotated[list[SpeedRow], Field(min_length=1)]


class WorkflowCell(_Record):
    """One image of a preview or polish run."""

    seed: StrictInt
    key: Name
    seconds: Seconds | None  # required: null when the cell was not timed


class WorkflowRun(_Record):
    """One `reportgen preview` or `polish` run in workflow.json."""

    kind: Literal["preview", "polish"]
    topic: Name
    sampler: Name
    executor: Name
    store: Name
    steps: Positive
    cells: Annotated[list[WorkflowCell], Field(min_length=1)]

    _sampler = field_validator("sampler")(_sampler_name)


class WorkflowRecord(_Record):
    """STUDY/workflow.json: every preview and polish run, oldest first (format 1)."""

    format: Literal[1]
    runs: list[WorkflowRun]


# --- a model folder's configs -----------------------------------------------------------------------------

Unit = Annotated[float, Field(gt=0, le=1)]


class SchedulerConfig(BaseModel):
    """scheduler/scheduler_config.json: the settings every sampler's scheduler is built from. The keys that
    diffusers' schedulers for the registry's samplers read are checked (values they would reject or
    index out of range with; `null` too, which diffusers would use instead of its default, except where
    null is diffusers' own default: trained_betas, variance_type, sigma_min, sigma_max); other keys
    pass, as a config carries many."""

    model_config = ConfigDict(strict=True, extra="allow", allow_inf_nan=False, populate_by_name=True)

    class_name: StrictStr | None = Field(default=None, alias="_class_name")
    num_train_timesteps: Annotated[int, Field(gt=1, le=MAX_TRAIN_TIMESTEPS)] | None = None
    beta_start: Annotated[float, Field(gt=0, lt=1)] | None = None
    beta_end: Annotated[float, Field(gt=0, lt=1)] | None = None
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] | None = None
    trained_betas: list[Annotated[float, Field(gt=0, lt=1)]] | None = None
    steps_offset: Annotated[int, Field(ge=0)] | None = None
    prediction_type: Literal["epsilon", "v_prediction", "sample"] | None = None
    timestep_spacing: Literal["linspace", "leading", "trailing"] | None = None
    interpolation_type: Literal["linear", "log_linear"] | None = None
    timestep_type: Literal["discrete", "continuous"] | None = None
    final_sigmas_type: Literal["zero", "sigma_min"] | None = None
    algorithm_type: Literal["dpmsolver", "dpmsolver++", "sde-dpmsolver", "sde-dpmsolver++"] | None = None
    solver_type: Literal["midpoint", "heun", "bh1", "bh2"] | None = None
    solver_order: Annotated[int, Field(ge=1, le=3)] | None = None
    variance_type: Literal["learned", "learned_range"] | None = None
    sigma_min: PositiveNumber | None = None
    sigma_max: PositiveNumber | None = None
    clip_sample_range: PositiveNumber | None = None
    sample_max_value: PositiveNumber | None = None
    dynamic_thresholding_ratio: Unit | None = None
    lambda_min_clipped: Annotated[float, Field(allow_inf_nan=True)] | None = None
    clip_sample: StrictBool | None = None
    set_alpha_to_one: StrictBool | None = None
    skip_prk_steps: StrictBool | None = None
    rescale_betas_zero_snr: StrictBool | None = None
    thresholding: StrictBool | None = None
    use_karras_sigmas: StrictBool | None = None
    use_exponential_sigmas: StrictBool | None = None
    use_beta_sigmas: StrictBool | None = None
    use_lu_lambdas: StrictBool | None = None
    lower_order_final: StrictBool | None = None
    euler_at_final: StrictBool | None = None
    predict_x0: StrictBool | None = None
    disable_corrector: list[StrictInt] | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in data.items():
                if value is None and key in _SCHEDULER_KEYS and key not in _NULL_DEFAULTS:
                    raise ValueError(f"{key}: must not be null (diffusers would use null, not its default)")
        return data

    @field_validator("class_name")
    @classmethod
    def _a_scheduler(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Z][A-Za-z0-9]*Scheduler", value):
            raise ValueError(f"names {value!r}, which is not a diffusers scheduler class")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SchedulerConfig:
        trained = self.num_train_timesteps or 1000
        if self.beta_start is not None and self.beta_end is not None and self.beta_end <= self.beta_start:
            raise ValueError(f"beta_end ({self.beta_end:g}) must be greater than beta_start ({self.beta_start:g})")
        if self.trained_betas is not None and len(self.trained_betas) != trained:
            raise ValueError(f"trained_betas has {len(self.trained_betas)} values for {trained} train timesteps")
        if self.steps_offset is not None and self.steps_offset >= trained:
            raise ValueError(f"steps_offset ({self.steps_offset}) must be below num_train_timesteps ({trained})")
        if self.sigma_min is not None and self.sigma_max is not None and self.sigma_max <= self.sigma_min:
            raise ValueError(f"sigma_max ({self.sigma_max:g}) must be greater than sigma_min ({self.sigma_min:g})")
        if sum(bool(flag) for flag in (self.use_karras_sigmas, self.use_exponential_sigmas,
                                        self.use_beta_sigmas)) > 1:
            raise ValueError("only one of use_karras_sigmas, use_exponential_sigmas and use_beta_sigmas can be true")
        return self


_NULL_DEFAULTS = {"trained_betas", "variance_type", "sigma_min", "sigma_max"}  # diffusers' own default is null
_SCHEDULER_KEYS = {field.alias or name for name, field in SchedulerConfig.model_fields.items()}

class UNetConfig(BaseModel):
    """unet/config.json, the one value reportgen reads itself (the native size; diffusers reads the rest)."""

    model_config = ConfigDict(strict=True, extra="allow")

    sample_size: Annotated[int, Field(gt=0, le=4096)] | Annotated[list[Annotated[int, Field(gt=0, le=4096)]],
                                                              Field(min_length=1)]


class VAEConfig(BaseModel):
    """vae/config.json, the one value reportgen reads itself (its downsampling: one per block after the first)."""

    model_config = ConfigDict(strict=True, extra="allow")

    block_out_channels: Annotated[list[StrictInt], Field(min_length=1, max_length=16)]


Component = tuple[StrictStr | None, StrictStr | None]


class ModelIndex(BaseModel):
    """model_index.json: the pipeline's class and, per component folder, its [library, class]."""

    model_config = ConfigDict(strict=True, extra="allow")

    class_name: str = Field(alias="_class_name", min_length=1)

    @classmethod
    def components(cls, raw: dict[str, Any]) -> dict[str, Any]:
        """The component entries (keys without a leading underscore)."""
        return {k: v for k, v in raw.items() if not k.startswith("_")}


# --- reading -----------------------------------------------------------------------------------------------

def read_json(path: Path, *, limit: int = MAX_BYTES) -> Any:
    """The parsed JSON of `path`; FileProblem (without the path) if it cannot be read or parsed."""
    from pydantic_core import from_json

    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise FileProblem(f"cannot read it: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise FileProblem(f"over {limit // (1024 * 1024)} MiB, not read")
    try:
        return from_json(data, allow_inf_nan=True)
    except ValueError as exc:
        raise FileProblem(f"invalid JSON: {_first_line(str(exc))}") from None


def validate(kind: type[M], data: Any) -> M:
    """`data` as a `kind`; FileProblem naming the first value that does not fit (one line)."""
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        raise FileProblem(describe(exc)) from None
    except RecursionError:  # pydantic-core bounds its own depth; this is a last guard
        raise FileProblem("nested too deeply") from None


def load(path: Path, kind: type[M], error: type[E], hint: str = "") -> M:
    """Read and validate a user's file; `error` naming the file and what is wrong (plus `hint`)."""
    try:
        return validate(kind, read_json(path))
    except FileProblem as exc:
        raise error(f"{path}: {exc}{'; ' + hint if hint else ''}") from None


def load_raw(path: Path, kind: type[BaseModel], error: type[E], hint: str = "") -> dict[str, Any]:
    """Like `load`, for a JSON object whose exact values matter (they feed cache keys): the parsed object
    itself, once it fits `kind`."""
    try:
        data = read_json(path)
        validate(kind, data)
    except FileProblem as exc:
        raise error(f"{path}: {exc}{'; ' + hint if hint else ''}") from None
    return dict(data)


def load_cache(path: Path, kind: type[M], what: str) -> M | None:
    """A cache file as a `kind`, or None if it is missing or fails (then a note says it is ignored; the
    caller's next write replaces it)."""
    try:
        return validate(kind, read_json(path))
    except FileNotFoundError:
        return None
    except FileProblem as exc:
        note_once(f"ignored {what} {path} ({exc}); it is written again")
        return None


_noted: set[str] = set()


def note_once(message: str) -> None:
    """Log `message` as a note, once per process (a cache read a hundred times is named once)."""
    if message not in _noted:
        _noted.add(message)
        NOTES.warning(message)


def describe(exc: ValidationError) -> str:
    """The first problem of a ValidationError as one line: where, what, and the value found."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    where = _location(first["loc"])
    kind = first["type"]
    message = _MESSAGES.get(kind) or first["msg"].removeprefix("Value error, ").replace("Input should be", "must be", 1)
    if kind in ("model_type", "dict_type") and not where:
        message = "not a JSON object"
    found = "" if kind in ("missing", "value_error") else f" (got {_short(first.get('input'))})"
    more = f"; and {len(errors) - 1} more" if len(errors) > 1 else ""
    return f"{where + ': ' if where else ''}{message}{found}{more}"


# pydantic's messages in the words of reportgen's other errors; the rest keep pydantic's ("must be greater than 0")
_MESSAGES = {
    "missing": "missing", "model_type": "must be an object", "dict_type": "must be an object",
    "list_type": "must be a list", "tuple_type": "must be a list", "string_type": "must be a string",
    "int_type": "must be an integer", "float_type": "must be a number", "bool_type": "must be true or false",
    "too_short": "must not be empty",
}


def _location(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in ("function-after", "function-before", "constrained-str", "lax-or-strict"):
            continue
        else:
            text += ("." if text else "") + str(part)
    return text


def _short(value: Any, limit: int = 60) -> str:
    """A value for a message: its type for containers, its repr cut to `limit` characters otherwise."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "syntax error"
