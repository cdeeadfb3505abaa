"""Glue that strings the stages together for the CLI: study -> plan -> render -> store -> grids."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from reportgen.errors import ReportgenError, check_interrupt
from reportgen.models.families import adapter
from reportgen.models.loading import load_pipeline, pick_device
from reportgen.models.sources import ModelInfo, resolve_model
from reportgen.render.execute import EXECUTORS, VERSION, RenderResult, render
from reportgen.render.grid import write_grids
from reportgen.render.metadata import model_fields, parameters_text
from reportgen.render.outputs import CellOutput
from reportgen.render.plan import (
    Cell,
    Plan,
    cell_key,
    cell_record,
    check_steps,
    for_model,
    plan,
    runtime_environment,
    scheduler_config,
)
from reportgen.render.shards import Shard, shard_work
from reportgen.render.store import Store, atomic_write, check_atomic, encode_png
from reportgen.samplers import DEFAULT_SCHEDULE, get_sampler, get_schedule, resolve
from reportgen.study.load import Study, load_study
from reportgen.study.prompt import parse_prompt


@dataclass(frozen=True)
class RenderJob:
    """A validated render: the study, its model and device, the store and the plan."""

    study: Study
    model: ModelInfo
    device: str
    dtype: str
    store: Store
    plan: Plan


def prepare_render(study_path: Path, *, topics: Iterable[str] = (), samplers: Iterable[str] = (),
                   steps: Iterable[int] = (), model: str | None = None, model_config: Path | None = None,
                   device: str | None = None, dtype: str | None = None, store: Path | None = None) -> RenderJob:
    """Validate everything and plan the cells of the study's first model (`model`, or `models`' first); writes
    nothing."""
    return prepare_renders(study_path, topics=topics, samplers=samplers, steps=steps, model=model,
                           model_config=model_config, device=device, dtype=dtype, store=store, first=True)[0]


def prepare_renders(study_path: Path, *, topics: Iterable[str] = (), samplers: Iterable[str] = (),
                    steps: Iterable[int] = (), model: str | None = None, model_config: Path | None = None,
                    device: str | None = None, dtype: str | None = None, store: Path | None = None,
                    first: bool = False) -> list[RenderJob]:
    """Validate everything and plan the cells, one job per model of the study (its `models` axis, rendered one
    after another so that one model is loaded at a time; `model` overrides them with one); writes nothing."""
    study = load_study(study_path)
    topics, samplers, steps = tuple(topics), tuple(samplers), tuple(steps)
    specs = (model,) if model else study.model_specs
    the_store = Store(store if store is not None else study.root / "store")
    jobs = []
    for spec in specs[:1] if first else specs:
        info = resolve_model(spec, model_config)
        for_this = for_model(study, info)
        chosen, kind = pick_device(device, dtype, adapter(info.family).half_dtype)
        the_plan = plan(for_this, info, chosen, kind, the_store, topics=topics, samplers=samplers, steps=steps)
        jobs.append(RenderJob(for_this, info, chosen, kind, the_store, the_plan))
    return jobs


def contributor_notes(job: RenderJob) -> list[str]:
    """What a contributor should know before rendering: the estimated time of the cells to render, and topics
    whose size is far from the model's native size (poor images, and time that grows with the pixels)."""
    from reportgen.models.sources import native_size
    from reportgen.render.estimate import estimate

    notes = []
    if job.plan.to_render:
        guess = estimate(job.plan.to_render, job.study.root, job.store, job.device)
        if guess.seconds is not None:
            notes.append(f"estimated time of the {guess.cells} cells to render: about {_duration(guess.seconds)} "
                         f"on {job.device} (from {guess.source})")
        else:
            notes.append(f"no speed measured on {job.device} yet, so no time estimate: {guess.calls:,} model calls, "
                         f"{_amount(guess.megapixel_calls)} megapixel-calls; `reportgen speed {job.study.root}` "
                         "measures one")
    native = native_size(job.model)
    planned = dict.fromkeys(c.topic for c in job.plan.cells)
    for topic in (job.study.topic(slug) for slug in planned):
        width, height = topic.prompt.width, topic.prompt.height
        if native is not None and not native / 2 <= max(width, height) <= 2 * native:
            notes.append(f"topic {topic.slug} is {width}x{height}, far from {job.model.label}'s native "
                         f"{native}x{native}: expect images unlike its training, at "
                         f"{width * height / native**2:.2g}x the time per model call of its native size")
    return notes


def _amount(value: float) -> str:
    """A quantity to two or three significant figures: '0.0021', '8.2', '1,234'."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 1 else f"{value:.2g}"


def _duration(seconds: float) -> str:
    """'45 s', '12 min', '3.5 h': as precise as an estimate deserves."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def run_render(job: RenderJob, executor: str = "batched",
               on_cell: Callable[[CellOutput], None] | None = None,
               batch_size: int | None = None, compile: bool = False, shard: Shard | None = None,
               reshard: bool = False) -> tuple[RenderResult, list[Path]]:
    """Hold the store's lock, render what is missing (of one shard's lanes, with `shard`), then draw one grid
    per topic and seed: every grid when the whole plan was rendered; a shard draws the grids of the topics
    it finds complete (other shards write the same store at the same time)."""
    check_run_options(job, executor, compile)  # before the store is touched: bad input writes nothing
    if shard is not None:
        check_atomic(job.store.root)
    with job.store.lock(None if shard is None else str(shard)):
        job.store.clean_temporary()
        work = None if shard is None else shard_work(job.plan.cells, job.plan.to_render, job.store, shard,
                                                     reshard=reshard)
        plan = job.plan if work is None else replace(job.plan, to_render=work.cells)
        result = RenderResult(cells=len(plan.cells), cached=len(plan.cached))
        if plan.to_render:
            pipe = load_pipeline(job.model, job.device, job.dtype)
            check_interrupt()  # a Ctrl-C during the model's loading that a library swallowed
            options = {"batch_size": batch_size, "compile": compile} if executor == "batched" else {}
            result = render(plan, pipe, job.model, job.store, executor=executor, on_cell=on_cell, **options)
        failed = {cell.key for cell, _ in result.failed}
        stored = {c.key for c in plan.cached} | {c.key for c in plan.to_render if c.key not in failed}
        matrix: list[Cell] = list(job.plan.matrix)
        if work is not None:  # the other shards' cells, as far as they are done now; whole topics only
            result.shard, result.shard_loads = str(shard), work.loads
            stored |= {c.key for c in matrix if c.key not in stored and job.store.has(c.key)}
            incomplete = {c.topic for c in matrix if c.key not in stored}
            matrix = [c for c in matrix if c.topic not in incomplete]
        grids = write_grids(job.study, matrix, job.store, job.study.root / "grids", stored)
    return result, grids


def final_grids(job: RenderJob) -> list[Path]:
    """The grids of every topic whose cells are all stored now (after a launcher's shards have all finished)."""
    matrix = list(job.plan.matrix)
    stored = {c.key for c in matrix if job.store.has(c.key)}
    incomplete = {c.topic for c in matrix if c.key not in stored}
    return write_grids(job.study, [c for c in matrix if c.topic not in incomplete], job.store,
                       job.study.root / "grids", stored)


def check_run_options(job: RenderJob, executor: str, compile: bool) -> None:
    """Refuse an unknown executor, or --compile where it cannot run; a dry run checks these too."""
    if executor not in EXECUTORS:
        raise ReportgenError(f"unknown executor {executor!r}; choose from {', '.join(EXECUTORS)}")
    if compile and (executor != "batched" or not job.device.startswith("cuda")):
        raise ReportgenError(f"--compile needs the batched executor on a CUDA device (here: {executor} on "
                             f"{job.device})")


def render_one(command: str, out: Path, *, model: str = "tiny", model_config: Path | None = None,
               device: str | None = None, dtype: str | None = None, executor: str = "pipeline",
               schedule: str = DEFAULT_SCHEDULE) -> Path:
    """Render one image from a prompt in the guide's syntax to `out`, with its parameters embedded; `executor`
    batched renders it as a batch of one lane, which on a CPU gives the bits of any batched render of it. A preset
    sampler (dpmpp_2m_karras) is its solver with its schedule; `schedule` gives another."""
    if executor not in EXECUTORS:
        raise ReportgenError(f"unknown executor {executor!r}; choose from {', '.join(EXECUTORS)}")
    prompt = parse_prompt(command)
    schedule = get_schedule(schedule)
    if prompt.sampler is not None:
        get_sampler(prompt.sampler)  # an unknown name is refused before the model is looked for
    if out.suffix.lower() != ".png":
        raise ReportgenError(f"--out must be a .png file, got {out}")
    from reportgen.study.load import MAX_PIXELS

    if prompt.width * prompt.height > MAX_PIXELS:  # a study can raise this limit (max_pixels); one image cannot
        raise ReportgenError(f"{prompt.width}x{prompt.height} is over the limit of {MAX_PIXELS} pixels per image")
    info = resolve_model(model, model_config)
    sampler, schedule = resolve(prompt.sampler or adapter(info.family).default_sampler, schedule)
    why = sampler.takes(schedule)
    if why is not None:
        raise ReportgenError(f"sampler {sampler.name} cannot take schedule {schedule}: {why}")
    prompt = prompt.with_(seed=0 if prompt.seed is None else prompt.seed, steps=prompt.steps or 50,
                          sampler=sampler.name)
    assert prompt.sampler is not None and prompt.steps is not None and prompt.seed is not None
    check_steps(prompt.sampler, prompt.steps, info, schedule)  # the 10,000 ceiling, what the scheduler accepts
    device, dtype = pick_device(device, dtype, adapter(info.family).half_dtype)
    environment = runtime_environment(info, device, dtype)
    key = cell_key(environment, scheduler_config(prompt.sampler, info.scheduler_config, schedule), prompt,
                   prompt.sampler, prompt.steps, schedule)
    cell = Cell(topic="", seed_index=0, seed=prompt.seed, sampler=prompt.sampler, steps=prompt.steps,
                text=prompt.text, negative=prompt.negative, width=prompt.width, height=prompt.height,
                cfg=prompt.cfg, key=key, nfe=get_sampler(prompt.sampler).nfe(prompt.steps), schedule_type=schedule,
                model=info.spec)
    pipe = load_pipeline(info, device, dtype)
    output = next(iter(EXECUTORS[executor](pipe, info, [cell])))
    if output.error:
        raise ReportgenError(f"rendering failed: {output.error}")
    record = {**cell_record(cell), "nfe_counted": output.nfe, "executor": executor, "environment": environment,
              **model_fields(info), "reportgen": VERSION,
              **({"call_rows": output.call_rows} if output.call_rows else {})}
    return atomic_write(out, encode_png(output.image, parameters_text(cell, info), record))
