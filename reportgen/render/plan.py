"""Expand a study into cells, each with the cache key of everything that changes its pixels."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from reportgen.errors import StudyError
from reportgen.models.families import adapter, sampler_refusal, samplers_for
from reportgen.models.sources import ModelInfo
from reportgen.render.store import Store
from reportgen.samplers import DEFAULT_SCHEDULE, get_sampler, preset_of
from reportgen.study.load import MAX_STEPS, REFERENCE_FACTOR, Study, Topic
from reportgen.study.prompt import Prompt

KEY_VERSION = 1


@dataclass(frozen=True)
class Cell:
    """One image of a matrix: a topic's prompt at one seed, rendered by one sampler for some steps."""

    topic: str
    seed_index: int
    seed: int
    sampler: str
    steps: int
    text: str
    negative: str
    width: int
    height: int
    cfg: float
    key: str
    nfe: int
    reference: bool = False  # the topic and seed's reference image (reference_steps), outside the matrix
    # the schedules axis: a name of samplers.SCHEDULES (the record's `schedule` holds what the schedule did)
    schedule_type: str = DEFAULT_SCHEDULE
    model: str = ""  # the models axis: the model's spec in a study with `models`; "" for a study of one model

    @property
    def lane(self) -> tuple[str, str, int, str, str, float]:
        """The lane the cell belongs to: (model, topic, seed, sampler, schedule, cfg); steps run along it."""
        return (self.model, self.topic, self.seed, self.sampler, self.schedule_type, self.cfg)

    @property
    def prompt(self) -> Prompt:
        """The cell as a prompt in the guide's syntax, with its sampler and steps."""
        return Prompt(text=self.text, negative=self.negative, width=self.width, height=self.height, cfg=self.cfg,
                      seed=self.seed, steps=self.steps, sampler=self.sampler)


@dataclass(frozen=True)
class Plan:
    """The cells asked for, split into those already stored and those to render."""

    cells: tuple[Cell, ...]
    cached: tuple[Cell, ...]
    to_render: tuple[Cell, ...]
    environment: dict[str, str]
    skipped: str = ""  # one line: the cells of the schedules axis left out, and why ("" when none)

    @property
    def matrix(self) -> tuple[Cell, ...]:
        """The cells of the topics' matrices: every cell but the separate reference images."""
        return tuple(c for c in self.cells if not c.reference)

    @property
    def nfe_to_run(self) -> int:
        """Model calls the render will make."""
        return sum(c.nfe for c in self.to_render)


def runtime_environment(model: ModelInfo, device: str, dtype: str) -> dict[str, str]:
    """What besides the cell's own parameters changes pixels: model and its family, dtype, device type, library
    versions. The family is left out for SD 1.x/2.x, whose keys were made before there were others."""
    family = {} if model.family == "sd" else {"family": model.family}
    return {"model": model.identity, **family, "dtype": dtype, "device": device.split(":")[0],
            "diffusers": package_version("diffusers"), "torch": package_version("torch")}


def check_sampler(sampler: str, model: ModelInfo, what: str = "sampler") -> None:
    """Raise StudyError, in one line naming the samplers the model takes, unless `model` can be sampled by it."""
    name = get_sampler(sampler).name
    reason = sampler_refusal(model.family, name, model.scheduler_config)
    if reason is not None:
        takes = ", ".join(samplers_for(model.family, model.scheduler_config))
        raise StudyError(f"{what} {name} cannot run on {model.label} ({model.family_label}): {reason}; "
                         f"this model takes {takes}")


def for_model(study: Study, model: ModelInfo) -> Study:
    """The study as it renders on `model`: without a reference_sampler of its own, its family's (Heun for SD
    models, flow Heun for flow models where the pipeline takes it); a reference the model cannot take refused."""
    if not study.reference_sampler_set:
        study = dataclasses.replace(study, reference_sampler=adapter(model.family).reference_sampler)
    check_sampler(study.reference_sampler, model, "reference_sampler")
    return study


@functools.cache
def package_version(name: str) -> str:
    """An installed package's version from its metadata (the same string as its `__version__`), without
    importing it: importing torch and diffusers costs seconds that a plan with nothing to render does not need."""
    try:
        return version(name)
    except PackageNotFoundError:
        return "-"


def scheduler_config(sampler: str, base_config: dict[str, Any], schedule: str = DEFAULT_SCHEDULE) -> dict[str, Any]:
    """The full config of the sampler's scheduler with `schedule`, as diffusers builds it from the model's config.

    Building one means importing diffusers and, for some schedulers, a fifth of a second each, so the
    result is kept in a cache file keyed by everything it depends on, diffusers' version included."""
    entry = get_sampler(sampler)
    overrides = entry.schedule_overrides(schedule)  # the sampler's own for the default schedule, as before axes
    key = hashlib.sha256(json.dumps([entry.scheduler, overrides, base_config, package_version("diffusers")],
                                    sort_keys=True, default=str).encode()).hexdigest()
    cache = _scheduler_configs()
    found = cache.get(key)
    if isinstance(found, dict) and found.get("class") == entry.scheduler:
        return found
    scheduler = entry.make_scheduler(base_config, schedule)
    config = {"class": type(scheduler).__name__, **{k: _plain(v) for k, v in dict(scheduler.config).items()
                                                     if not k.startswith("_")}}
    cache[key] = config
    _save_scheduler_configs(cache)
    return config


SCHEDULER_CACHE = "scheduler-configs.json"


def _cache_file() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "reportgen" / SCHEDULER_CACHE


@functools.cache
def _scheduler_configs() -> dict[str, Any]:
    """The cache file's entries, read once per process; one that fails its schema (reportgen/schemas.py) counts
    as empty, with a note, and is written again with the next entry."""
    from reportgen.schemas import SchedulerConfigCache, load_cache

    loaded = load_cache(_cache_file(), SchedulerConfigCache, "the scheduler config cache")
    return dict(loaded.root) if loaded is not None else {}


def _save_scheduler_configs(cache: dict[str, Any]) -> None:
    path = _cache_file()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(cache, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a cache that cannot be written only costs time


def check_steps(sampler: str, steps: int, model: ModelInfo, schedule: str = DEFAULT_SCHEDULE) -> None:
    """Raise StudyError unless `sampler`'s scheduler (with `schedule`), built for `model`, can run `steps` steps."""
    if steps > MAX_STEPS:  # before set_timesteps, which allocates per step
        raise StudyError(f"{steps} steps is over the limit of {MAX_STEPS}")
    check_sampler(sampler, model)
    if steps < model.scheduler_config.get("num_train_timesteps", 1000):
        return  # fewer steps than the model was trained with: every diffusers scheduler takes them
    name = get_sampler(sampler).name
    reason = _steps_refused(name, steps, json.dumps(model.scheduler_config, sort_keys=True, default=str), schedule)
    if reason is not None:
        raise StudyError(f"sampler {name} cannot run {steps} steps with model {model.spec}: {reason}")


@functools.lru_cache(maxsize=4096)
def _steps_refused(sampler: str, steps: int, base_config: str, schedule: str = DEFAULT_SCHEDULE) -> str | None:
    """Why diffusers' scheduler for `sampler` cannot run `steps` steps, or None; cached across plans and commands."""
    # Built exactly as rendering builds it (batched.lane_scheduler), so a refusal here is one there.
    scheduler = get_sampler(sampler).make_scheduler(json.loads(base_config), schedule)
    # a dynamically shifted flow scheduler needs a `mu`, which depends on the image's size: one in its range here
    mu = {"mu": 1.0} if scheduler.config.get("use_dynamic_shifting") else {}
    try:
        scheduler.set_timesteps(steps, device="cpu", **mu)
    except ValueError as exc:
        return " ".join(str(exc).split())
    trained = scheduler.config.num_train_timesteps
    if float(scheduler.timesteps.max()) >= trained:  # DDIM and PNDM at 1000 steps: an index past the last one
        return f"its timesteps would reach {float(scheduler.timesteps.max()):g}, past the model's last ({trained - 1})"
    return None


def cell_key(environment: dict[str, str], scheduler: dict[str, Any], prompt: Prompt, sampler: str, steps: int,
             schedule: str = DEFAULT_SCHEDULE) -> str:
    """SHA-256 over everything that changes a cell's pixels.

    The axes keep the keys made before them: the default schedule adds nothing, a (solver, schedule) pair that a
    preset sampler is (dpmpp_2m + karras) hashes as that preset (its scheduler config is the same), and the cfg and
    model are in the key already (the prompt's -C, the environment's model identity)."""
    schedule_field: dict[str, str] = {}
    if schedule != DEFAULT_SCHEDULE:
        preset = preset_of(sampler, schedule)
        if preset is not None:
            sampler = preset
        else:
            schedule_field = {"schedule": schedule}
    payload = {
        "v": KEY_VERSION, **environment, "prompt": prompt.text, "negative": prompt.negative,
        "width": prompt.width, "height": prompt.height, "cfg": prompt.cfg, "seed": prompt.seed,
        "sampler": sampler, "scheduler": scheduler, "steps": steps, **schedule_field,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def plan(study: Study, model: ModelInfo, device: str, dtype: str, store: Store, *,
         topics: Iterable[str] = (), samplers: Iterable[str] = (), steps: Iterable[int] = ()) -> Plan:
    """Every cell of the study (optionally only some topics, samplers, steps), split into cached and to-run."""
    topic_filter = set(topics)
    for slug in topic_filter:
        study.topic(slug)  # raises for an unknown slug
    sampler_filter = {get_sampler(s).name for s in samplers}
    steps_filter = set(steps)
    for n in steps_filter:
        if n <= 0:
            raise StudyError(f"steps must be > 0, got {n}")

    environment = runtime_environment(model, device, dtype)
    for name in sampler_filter or dict.fromkeys(s for topic in study.topics for s in topic.samplers):
        check_sampler(name, model)  # before its scheduler is built from the model's config
    model_name = model.spec if study.models else ""
    configs: dict[tuple[str, str], dict[str, Any]] = {}
    cells: list[Cell] = []
    skipped: dict[str, int] = {}
    for topic in study.topics:
        if topic_filter and topic.slug not in topic_filter:
            continue
        for seed_index, seed in enumerate(topic.seeds):
            for cfg in study.cfgs or (topic.prompt.cfg,):
                # the topic's own -C leaves the prompt, and so the key, as it was before the cfg axis
                prompt = topic.prompt.with_(seed=seed, steps=None, sampler=None, count=None, cfg=cfg)
                for name in topic.samplers:
                    for schedule in study.schedules:
                        # --sampler dpmpp_2m_karras also picks the schedules axis's dpmpp_2m + karras
                        if sampler_filter and not sampler_filter & {name, preset_of(name, schedule)}:
                            continue
                        why = get_sampler(name).takes(schedule)
                        if why is not None:
                            skipped[why] = skipped.get(why, 0) + len(topic.steps)
                            continue
                        config = configs.setdefault((name, schedule),
                                                    scheduler_config(name, model.scheduler_config, schedule))
                        for n in topic.steps:
                            if steps_filter and n not in steps_filter:
                                continue
                            cells.append(Cell(
                                topic=topic.slug, seed_index=seed_index, seed=seed, sampler=name, steps=n,
                                text=prompt.text, negative=prompt.negative, width=prompt.width,
                                height=prompt.height, cfg=prompt.cfg,
                                key=cell_key(environment, config, prompt, name, n, schedule),
                                nfe=get_sampler(name).nfe(n), schedule_type=schedule, model=model_name,
                            ))
                cells.extend(_reference_cell(study, topic, seed_index, seed, prompt, environment, model, configs,
                                             sampler_filter, steps_filter, model_name))
    if not cells:
        raise StudyError("no cells match the --topic/--sampler/--steps filters")
    for name, schedule, n in dict.fromkeys((c.sampler, c.schedule_type, c.steps) for c in cells if not c.reference):
        check_steps(name, n, model, schedule)
    for topic in study.topics:
        if any(c.reference and c.topic == topic.slug for c in cells):
            _check_reference_steps(study, topic, model)
    unique: dict[str, Cell] = {}  # a lane equal to a preset's (dpmpp_2m + karras beside dpmpp_2m_karras): once
    for cell in cells:
        unique.setdefault(cell.key, cell)
    cells = list(unique.values())
    cached = tuple(c for c in cells if store.has(c.key))
    cached_keys = {c.key for c in cached}
    return Plan(tuple(cells), cached, tuple(c for c in cells if c.key not in cached_keys), environment,
                skipped_line(skipped))


def skipped_line(skipped: dict[str, int]) -> str:
    """'skipped 12 cells of the schedules axis: DDIMScheduler takes no use_karras_sigmas (8); ...', or ''."""
    if not skipped:
        return ""
    reasons = "; ".join(f"{why} ({n})" for why, n in skipped.items())
    return f"skipped {sum(skipped.values())} cells of the schedules axis that their sampler cannot take: {reasons}"


def _reference_cell(study: Study, topic: Topic, seed_index: int, seed: int, prompt: Prompt,
                    environment: dict[str, str], model: ModelInfo, configs: dict[tuple[str, str], dict[str, Any]],
                    sampler_filter: set[str], steps_filter: set[int], model_name: str = "") -> list[Cell]:
    """The topic and seed's reference cell (reference sampler at reference_steps), unless the matrix holds it, the
    study renders none (reference_steps = 0) or the filters leave it out. Its key is any cell's key: a matrix
    cell at the same sampler and steps would be the same image. One per (model, topic, seed, cfg), always at the
    reference sampler's own schedule."""
    name, n = study.reference_sampler, study.reference_steps_for(topic)
    if n is None or (name in topic.samplers and n in topic.steps) or (sampler_filter and name not in sampler_filter) \
            or (steps_filter and n not in steps_filter):
        return []
    config = configs.setdefault((name, DEFAULT_SCHEDULE), scheduler_config(name, model.scheduler_config))
    return [Cell(topic=topic.slug, seed_index=seed_index, seed=seed, sampler=name, steps=n, text=prompt.text,
                 negative=prompt.negative, width=prompt.width, height=prompt.height, cfg=prompt.cfg,
                 key=cell_key(environment, config, prompt, name, n), nfe=get_sampler(name).nfe(n), reference=True,
                 model=model_name)]


def _check_reference_steps(study: Study, topic: Topic, model: ModelInfo) -> None:
    """check_steps for the topic's reference cell, its error naming reference_steps and what to change."""
    n = study.reference_steps_for(topic)
    assert n is not None
    try:
        check_steps(study.reference_sampler, n, model)
    except StudyError as exc:
        source = "reference_steps" if study.reference_steps else \
            f"the default reference_steps ({REFERENCE_FACTOR} x topic {topic.slug}'s {max(topic.steps)} steps)"
        raise StudyError(f"{study.root / 'study.toml'}: {source}: {exc}; set reference_steps to a count it can run "
                         "(0: no separate reference), or choose another reference_sampler") from None


def cell_record(cell: Cell) -> dict[str, Any]:
    """The cell's fields as a plain dict for the store's JSON record."""
    return asdict(cell)


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value
