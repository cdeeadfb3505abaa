"""The `reportgen` command line: parse options, call one stage, print. No torch at import time."""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import stat
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperGroup

from reportgen.errors import ReportgenError, printable, request_interrupt


class Interrupted(Exception):
    """Ctrl-C while a command ran."""


class Commands(TyperGroup):
    """Typer's command group, except that Ctrl-C and EOFError reach main() instead of Click's handlers."""

    def invoke(self, ctx: Any) -> Any:
        """Run the command, turning Ctrl-C into Interrupted and an EOFError into a ReportgenError."""
        # Click would print only a blank line for Ctrl-C, and "Aborted!" (the user's Ctrl-D) for any EOFError
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise Interrupted() from None
        except EOFError as exc:  # no command reads stdin, so this is a file that ends too soon
            detail = str(exc) or "no data"
            raise ReportgenError(f"unexpected end of file: {detail} (an empty or truncated file?)") from exc


app = typer.Typer(
    cls=Commands, help="Reproducible, measured sampler-convergence guides for Stable Diffusion.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)

T = TypeVar("T")

def _store_path(value: Path | None) -> Path | None:
    """--store: refuse a path that is, or runs through, something other than a folder, in any spelling
    (`f`, `./f/`, `f/.`, `d/../f`, a link to a file, `f/sub`) before anything runs."""
    if value is None:
        return None
    try:
        mode = os.stat(value).st_mode
    except FileNotFoundError:
        return value  # created by the first render
    except NotADirectoryError:
        raise typer.BadParameter(f"{value} runs through a file, not a folder") from None
    except OSError as exc:
        raise typer.BadParameter(f"{value}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(mode):
        raise typer.BadParameter(f"{value} is a file, not a folder")
    return value


StudyArg = Annotated[Path, typer.Argument(help="Study folder (study.toml + topics/*.md).")]
ModelOpt = Annotated[str | None, typer.Option(
    "--model", help="tiny, demo, a diffusers folder, a .safetensors/.ckpt file or a hub id; default: the study's.")]
ModelConfigOpt = Annotated[Path | None, typer.Option(
    "--model-config", help="Diffusers folder whose configs describe a single-file checkpoint.")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:N or mps; default: cuda if present.")]
DtypeOpt = Annotated[str | None, typer.Option("--dtype", help="float32, float16 or bfloat16; default: float16 on GPU.")]
StoreOpt = Annotated[Path | None, typer.Option("--store", help="Image store folder; default: STUDY/store.",
                                                callback=_store_path)]


def main() -> None:
    """Entry point: run the app; reportgen's errors and usage errors become one line and exit 2, Ctrl-C one
    line and exit 130. Every line printed from here is escaped for the terminal (errors.printable)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # its import-time notices are not ours to print
    _print_notes()
    click = _click_exceptions()
    request_interrupt(False)
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_ctrl_c)
    try:
        code = app(standalone_mode=False)  # Click's errors reach here instead of printing a box
    except ReportgenError as exc:
        _fail(str(exc))
    except click.NoArgsIsHelpError:
        sys.exit(2)  # the help was printed: a command is needed
    except click.UsageError as exc:
        _fail(usage_error(exc))
    except (Interrupted, typer.Abort):
        typer.echo("interrupted: stored images and computed distances are kept; run the same command again to go on",
                   err=True)
        sys.exit(130)
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, previous)
    sys.exit(code if isinstance(code, int) else 0)


def _on_ctrl_c(signum: int, frame: Any) -> None:
    """Ctrl-C: Python's KeyboardInterrupt, and remembered, should a library swallow it (errors.check_interrupt)."""
    request_interrupt()
    raise KeyboardInterrupt


def _fail(message: str) -> None:
    typer.echo(f"error: {printable(message)}", err=True)
    sys.exit(2)


def _click_exceptions() -> Any:
    """Click's exception module: Typer 0.2x vendors Click as typer._click, earlier ones use click itself."""
    try:
        from typer._click import exceptions
    except ImportError:  # an older Typer
        from click import exceptions  # type: ignore[no-redef]
    return exceptions


def usage_error(exc: Any) -> str:
    """A Click usage error as reportgen's one line: `--steps: 'abc' is not an integer`."""
    click = _click_exceptions()
    if isinstance(exc, click.BadParameter) and not isinstance(exc, click.MissingParameter):
        param = exc.param
        hint = exc.param_hint or (param.opts[0] if param is not None and param.opts[:1] and
                                  param.param_type_name == "option" else
                                  (param.human_readable_name if param is not None else "value"))
        return f"{hint if isinstance(hint, str) else ' / '.join(hint)}: {_bad_value(exc)}"
    sentences = " ".join(exc.format_message().split()).rstrip(".").split(". ")
    return "; ".join(sentence[:1].lower() + sentence[1:] for sentence in sentences)


def _bad_value(exc: Any) -> str:
    """What is wrong with an option's value, in words, from the parse error underneath when there is one."""
    cause = exc.__cause__
    errors = cause.errors() if hasattr(cause, "errors") else []
    if errors:
        first, value = errors[0], errors[0].get("input")
        bounds = first.get("ctx") or {}
        if first["type"] in ("int_parsing", "int_type", "int_from_float"):
            return f"{value!r} is not an integer"
        if first["type"] in ("float_parsing", "float_type"):
            return f"{value!r} is not a number"
        for key, words in (("ge", "at least"), ("gt", "more than"), ("le", "at most"), ("lt", "less than")):
            if key in bounds:
                return f"must be {words} {bounds[key]}, got {value}"
    return " ".join(exc.message.split()).rstrip(".")


class _Notes(logging.Handler):
    """Prints what the library logs on the `reportgen` logger (a cache ignored, ...) as one `note:` line."""

    def emit(self, record: logging.LogRecord) -> None:
        """Print the record's message, escaped, on stderr."""
        typer.echo(f"note: {printable(record.getMessage())}", err=True)


def _print_notes() -> None:
    logger = logging.getLogger("reportgen")
    if not any(isinstance(handler, _Notes) for handler in logger.handlers):
        logger.addHandler(_Notes())
    logger.propagate = False


@app.command()
def render(
    study: StudyArg,
    topic: Annotated[list[str] | None, typer.Option("--topic", help="Only this topic (repeatable).")] = None,
    sampler: Annotated[list[str] | None, typer.Option("--sampler", help="Only this sampler (repeatable).")] = None,
    steps: Annotated[list[int] | None, typer.Option("--steps", help="Only this step count (repeatable).")] = None,
    model: ModelOpt = None,
    model_config: ModelConfigOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    store: StoreOpt = None,
    executor: Annotated[str, typer.Option("--executor", help="How cells run: batched (all cells share UNet batches) "
                                          "or pipeline (one diffusers call per cell, the reference).")] = "batched",
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="Cells per shared UNet call "
                                                      "(batched); default: from free GPU memory, 16 on a CPU.")] = None,
    compile: Annotated[bool, typer.Option("--compile", help="CUDA: run the UNet under torch.compile (about 40 s "
                                          "to compile on an H200; 1.26x faster after that).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would run, render nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON line of counts.")] = False,
    shard: Annotated[str | None, typer.Option("--shard", help="K/N: render only shard K of N (lanes dealt by "
                                              "model calls; docs/scale-out.md). Under accelerate launch or "
                                              "torchrun each process takes its shard from the launcher.")] = None,
    reshard: Annotated[bool, typer.Option("--reshard", help="With --shard: deal the cells left into N shards "
                                          "anew (written to STORE/shards/ even with --dry-run).")] = False,
) -> None:
    """Render every cell of the study's topic x sampler x steps matrices that is not stored yet."""
    from reportgen.render import jobs as workflow
    from reportgen.render import launch as launching
    from reportgen.render.shards import parse_shard

    launched = launching.from_environment()
    if launched is not None and shard is not None:
        raise ReportgenError(f"--shard {shard} given, but the launcher already made this process shard "
                             f"{launched.shard} (WORLD_SIZE {launched.world}); drop --shard")
    if reshard and shard is None and launched is None:
        raise ReportgenError("--reshard needs --shard K/N (or a launcher)")
    the_shard = launched.shard if launched is not None else parse_shard(shard) if shard is not None else None
    device = launching.launch_device(launched, device) if launched is not None else device
    speak = launched is None or launched.main  # under a launcher only rank 0 prints, but for errors
    jobs = workflow.prepare_renders(study, topics=topic or (), samplers=sampler or (), steps=steps or (),
                                    model=model, model_config=model_config, device=device, dtype=dtype, store=store)
    if len(jobs) > 1 and the_shard is not None:
        raise ReportgenError(f"--shard takes one model; this study renders {len(jobs)} (models): give --model")
    for job in jobs:
        workflow.check_run_options(job, executor, compile)  # every model's, before any renders
    failed = False
    for job in jobs:
        failed |= _render_job(job, study, executor, batch_size, compile, dry_run, as_json, the_shard, reshard,
                              launched, speak)
    if failed:
        raise typer.Exit(1)
    if not dry_run and speak:
        typer.echo(f"next: reportgen build {shlex.quote(str(study))} --out {shlex.quote(str(study / 'site'))}",
                   err=True)


def _render_job(job: Any, study: Path, executor: str, batch_size: int | None, compile: bool, dry_run: bool,
                as_json: bool, the_shard: Any, reshard: bool, launched: Any, speak: bool) -> bool:
    """Render (or with dry_run, plan) one model's cells of the study; whether any failed."""
    from reportgen.render import jobs as workflow
    from reportgen.render import launch as launching
    from reportgen.render.shards import shard_work

    def say(text: str) -> None:
        if speak:
            typer.echo(text, err=True)

    plan = job.plan
    say(f"{len(plan.cells)} cells: {len(plan.cached)} cached, {len(plan.to_render)} to render "
        f"({plan.nfe_to_run} model calls) with {job.model.spec} on {job.device}/{job.dtype}")
    if plan.skipped:
        say(plan.skipped)
    if speak:
        _echo_notes(job)
    damaged = dict(job.store.damaged)  # what planning found damaged: those cells are rendered again
    if speak:
        _echo_unverified(damaged, study)
    if dry_run:
        for line in _damage_lines(damaged, "to render again"):
            say(f"note: {line}")
        counts: dict[str, Any] = {"cells": len(plan.cells), "rendered": 0, "cached": len(plan.cached),
                                  "to_render": len(plan.to_render), "nfe": 0, "planned_nfe": plan.nfe_to_run}
        if the_shard is not None:
            work = shard_work(plan.cells, plan.to_render, job.store, the_shard, reshard=reshard, write=reshard)
            mine = sum(c.nfe for c in work.cells)
            say(f"shard {the_shard}: {len(work.cells)} cells to render ({mine} model calls); model calls left per "
                f"shard: {', '.join(map(str, work.loads))}")
            counts |= {"shard": str(the_shard), "shard_to_render": len(work.cells), "shard_nfe": mine,
                       "shard_loads": list(work.loads), "shard_cells": [c.key for c in work.cells]}
        if as_json and speak:
            typer.echo(json.dumps(counts))
        return False
    todo = plan.to_render if the_shard is None else shard_work(plan.cells, plan.to_render, job.store, the_shard,
                                                               reshard=reshard, write=False).cells
    result, grids = _with_progress(len(todo), sum(c.nfe for c in todo),
                                   lambda advance: workflow.run_render(job, executor, advance, batch_size, compile,
                                                                       the_shard, reshard), quiet=not speak)
    shards = [] if launched is None else launching.gather(launched, _shard_summary(result))
    if not speak:
        for cell, why in result.failed:
            typer.echo(f"failed: shard {result.shard}: {cell.topic} seed {cell.seed} {cell.sampler} {cell.steps} "
                       f"steps: {why}", err=True)
        return bool(result.failed)
    if shards:  # rank 0 speaks for every shard, and draws the grids of every topic now complete
        grids = workflow.final_grids(job)
        say(f"{len(shards)} shards: rendered {sum(s['rendered'] for s in shards)}, failed "
            f"{sum(s['failed'] for s in shards)}, {sum(s['nfe'] for s in shards)} model calls; per shard: "
            + "; ".join(f"{s['shard']} {s['rendered']} cells, {s['nfe']} calls in {s['seconds']:.1f}s" for s in shards))
    say(f"rendered {result.rendered}, cached {result.cached}, failed {len(result.failed)}, "
        f"{result.nfe} model calls in {result.seconds:.1f}s{f' (shard {result.shard})' if result.shard else ''}; "
        f"grids in {grids[0].parent if grids else '-'}")
    for line in _damage_lines(damaged, "rendered again", {c.key for c in plan.to_render} -
                              {c.key for c, _ in result.failed}):
        typer.echo(line, err=True)
    for cell, why in result.warnings:
        typer.echo(f"warning: {cell.topic} seed {cell.seed} {cell.sampler} {cell.steps} steps: {why}", err=True)
    for cell, why in result.failed:
        typer.echo(f"failed: {cell.topic} seed {cell.seed} {cell.sampler} {cell.steps} steps: {why}", err=True)
    if as_json:
        summary = {"cells": result.cells, "rendered": result.rendered, "cached": result.cached,
                   "failed": len(result.failed), "nfe": result.nfe, "planned_nfe": plan.nfe_to_run,
                   "seconds": round(result.seconds, 3), "grids": [str(g) for g in grids]}
        if result.shard:
            summary |= {"shard": result.shard, "shard_loads": list(result.shard_loads)}
        if shards:
            summary |= {"shards": shards}
        typer.echo(json.dumps(summary))
    return bool(result.failed or any(s["failed"] for s in shards))




def _shard_summary(result: Any) -> dict[str, Any]:
    """One shard's counts, as the launcher's processes exchange them."""
    return {"shard": result.shard, "rendered": result.rendered, "failed": len(result.failed), "nfe": result.nfe,
            "seconds": round(result.seconds, 3)}


def _echo_notes(job: Any) -> None:
    """A render job's notes for contributors (estimated time, sizes far from native, captions the demo model
    cannot draw), one line each on stderr."""
    from reportgen.render.jobs import contributor_notes

    for note in contributor_notes(job):
        typer.echo(f"note: {note}", err=True)
    if job.model.kind == "demo":
        from reportgen.demo.data import caption_problem

        for slug in dict.fromkeys(c.topic for c in job.plan.cells):
            problem = caption_problem(job.study.topic(slug).prompt.text)
            if problem:
                typer.echo(f"warning: topic {slug}: {problem}, so expect noise or a guess (its captions: "
                           "docs/demo-model.md)", err=True)


@app.command()
def analyze(
    study: StudyArg,
    model: ModelOpt = None,
    model_config: ModelConfigOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    store: StoreOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON line: counts and the fits.")] = False,
) -> None:
    """Measure convergence of the rendered cells (distances, indicator/converged steps, rates); cached."""
    from rich.console import Console
    from rich.table import Table

    from reportgen.measure.analysis import analyze as measure
    from reportgen.measure.exports import fits_records
    from reportgen.render import jobs as workflow

    jobs = workflow.prepare_renders(study, model=model, model_config=model_config, device=device, dtype=dtype,
                                    store=store)
    job = jobs[0]  # a study with `models`: every model's cells, measured each against its own references
    result = measure(job.study, job.store, [c for j in jobs for c in j.plan.cells], job.model.scheduler_config)
    typer.echo(f"{len(result.cells)} cells measured ({result.missing} not rendered), {result.computed} distances "
               f"computed, {result.cached} cached; thresholds on {result.thresholds.metric} distance: indicator "
               f"{result.thresholds.indicator:g}, converged {result.thresholds.converged:g}", err=True)
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    if result.axes:
        from reportgen.measure.axes import compare_axes

        for comparison in compare_axes(result):
            typer.echo(f"finding: {comparison.text}", err=True)
    _echo_unverified(job.store.damaged, study)
    for line in _damage_lines(job.store.damaged, "left out (counted as not rendered); `reportgen render` renders "
                              "them again"):
        typer.echo(f"note: {line}", err=True)
    for line in result.redone:
        typer.echo(f"note: {line}", err=True)
    if result.cache_problem:
        typer.echo(f"note: the distances were not cached ({result.cache_problem}); they are computed again next "
                   "time", err=True)
    fits = fits_records(result)
    if as_json:
        typer.echo(json.dumps({"cells": len(result.cells), "missing": result.missing, "computed": result.computed,
                               "cached": result.cached, "fits": fits}))
        return
    axes = [a for a in ("model", "schedule", "cfg") if a in result.axes]
    table = Table("topic", "sampler", *axes, "indicator: steps (calls)", "converged: steps (calls)",
                  "to the reference: steps (calls)", "exponent (expected), fit range", "status")
    for f in fits:
        exponent = "-" if f["exponent"] is None else \
            f"{f['exponent']:.2f} ({f['expected_exponent']}), {f['fit_steps'][0]}-{f['fit_steps'][-1]} steps"
        table.add_row(f["topic"], f["label"], *(f"{f[a]:g}" if a == "cfg" else str(f[a]) for a in axes),
                      _steps_calls(f, "indicator"), _steps_calls(f, "converged"),
                      _steps_calls(f, "reference_converged"),
                      exponent if f["exponent"] is not None else f["fit_note"] or "-", f["status"])
    Console(width=160).print(table)


def _damage_lines(damaged: dict[str, str], done: str, keys: set[str] | None = None) -> list[str]:
    """One line per kind of damaged cell (cells stored by an older reportgen are said apart)."""
    from reportgen.render.store import damage_lines

    return damage_lines({k: v for k, v in damaged.items() if v != "unverified"}, done, keys)


def _echo_unverified(damaged: dict[str, str], study: Path) -> None:
    count = sum(1 for kind in damaged.values() if kind == "unverified")
    if count:
        typer.echo(f"note: {count} cell{'s' if count != 1 else ''} stored by an older reportgen name no latents "
                   f"digest, so their latents are only checked whole and finite; `reportgen verify {study} --repair` "
                   "renders them again", err=True)


@app.command()
def verify(
    study: StudyArg,
    repair: Annotated[bool, typer.Option("--repair", help="Render damaged cells again, compute damaged distances "
                                         "again, move obstacles into STORE/damaged/, remove killed writers' "
                                         "temporary files.")] = False,
    prune: Annotated[bool, typer.Option("--prune", help="Remove orphaned files (cells no plan of this study names; "
                                        "never on a store shared with other studies).")] = False,
    model: ModelOpt = None,
    model_config: ModelConfigOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    store: StoreOpt = None,
    executor: Annotated[str, typer.Option("--executor", help="How --repair renders: batched or pipeline "
                                          "(as for render).")] = "batched",
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="As for render.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON line of counts.")] = False,
) -> None:
    """Check every image, latents file, record and cached distance of the study's store (exit 1 if damaged)."""
    from reportgen.measure.verify import verify_and_repair
    from reportgen.render import jobs as workflow

    jobs = workflow.prepare_renders(study, model=model, model_config=model_config, device=device, dtype=dtype,
                                    store=store)
    if repair and len(jobs) > 1:
        raise ReportgenError(f"--repair renders with one model; this study has {len(jobs)} (models): give --model")
    job = jobs[0]
    if len(jobs) > 1:  # every model's cells are the study's: none of them is an orphan to prune
        from dataclasses import replace

        cells = tuple(c for j in jobs for c in j.plan.cells)
        job = replace(job, plan=replace(job.plan, cells=cells, cached=tuple(c for j in jobs for c in j.plan.cached),
                                        to_render=tuple(c for j in jobs for c in j.plan.to_render)))
    if repair:
        workflow.check_run_options(job, executor, False)
    report = verify_and_repair(job, repair=repair, prune=prune, executor=executor, batch_size=batch_size)
    for line in report.lines():
        typer.echo(line, err=True)
    if as_json:
        typer.echo(json.dumps(report.counts()))
    if not report.clean:
        raise typer.Exit(1)


def _steps_calls(fit: dict[str, Any], what: str) -> str:
    return "-" if fit[f"{what}_steps"] is None else f"{fit[f'{what}_steps']} ({fit[f'{what}_nfe']})"


@app.command()
def samplers() -> None:
    """List the sampler registry: names, aliases, diffusers class, models served, model calls per step, ancestral."""
    from rich.console import Console
    from rich.table import Table

    from reportgen.samplers import SAMPLERS

    table = Table("name", "label", "aliases", "diffusers scheduler", "serves", "model calls", "ancestral", "order")
    for s in SAMPLERS:
        table.add_row(s.name, s.label, ", ".join(s.aliases), s.scheduler, ", ".join(s.predictions), s.calls,
                      "yes" if s.ancestral else "no", str(s.order))
    Console(width=160).print(table)


@app.command()
def info(image: Annotated[Path, typer.Argument(
        help="A PNG made by reportgen, or a PNG, JPEG or WebP from the web UIs or ComfyUI.")]) -> None:
    """Print an image's parameters, whether its pixels are as rendered, and the command that reproduces it."""
    from reportgen.render.info import describe_image

    report = describe_image(image)
    for line in report.lines:
        typer.echo(line)
    if report.problem:
        raise ReportgenError(report.problem)


@app.command()
def image(
    prompt: Annotated[str, typer.Argument(
        help='A prompt in the guide\'s syntax: \'"an anime girl" -W512 -H512 -C7.5 -S1 -s20 -A k_euler\'.')],
    out: Annotated[Path, typer.Option("--out", help="PNG file to write.")],
    model: Annotated[str, typer.Option("--model", help="As for render.")] = "tiny",
    model_config: ModelConfigOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    executor: Annotated[str, typer.Option("--executor", help="pipeline (diffusers' own call) or batched (a batch "
                                          "of one lane: on a CPU the bits of the cell in any batched render)")]
    = "pipeline",
    schedule: Annotated[str, typer.Option("--schedule", help="The sigma schedule: default (the sampler's own), "
                                          "karras, exponential, beta or trailing (web UI labels too).")] = "default",
) -> None:
    """Render one image from a prompt in the guide's syntax (defaults: -s50, -A k_lms)."""
    from reportgen.render import jobs as workflow

    path = workflow.render_one(prompt, out, model=model, model_config=model_config, device=device, dtype=dtype,
                               executor=executor, schedule=schedule)
    typer.echo(str(path))


@app.command()
def build(
    study: StudyArg,
    out: Annotated[Path, typer.Option(
        "--out", help="Site folder to write (replaced as a whole when the build succeeds).")],
    templates: Annotated[Path | None, typer.Option(
        "--templates", help="Folder of templates that override the built-in ones.")] = None,
    model: ModelOpt = None,
    model_config: ModelConfigOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    store: StoreOpt = None,
) -> None:
    """Build the static site (HTML and Markdown) from the rendered cells; renders nothing, works offline."""
    from reportgen.site.build import build_site

    result = build_site(study, out, templates=templates, model=model, model_config=model_config, device=device,
                        dtype=dtype, store=store)
    typer.echo(f"built {result.pages} pages from {result.stored} of {result.total} cells "
               f"({result.total - result.stored} not rendered yet), reusing {result.reused} files, "
               f"in {result.seconds:.2f}s", err=True)
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    typer.echo(str(result.index.absolute()))


@app.command("new-topic")
def new_topic(
    study: StudyArg,
    slug: Annotated[str, typer.Argument(help="File name of the topic page: a-z, 0-9, '-' and '_'.")],
    title: Annotated[str, typer.Option("--title", help="The topic's title.")],
    prompt: Annotated[str, typer.Option(
        "--prompt", help='The prompt in the guide\'s syntax: \'"a red fox" -W512 -H512 -C7.5 -S123\'.')],
) -> None:
    """Add a topic page (front matter and a commentary stub) to a study; never overwrites one."""
    from reportgen.render import jobs
    from reportgen.study.scaffold import new_topic as write_topic

    typer.echo(str(write_topic(study, slug, title, prompt)))
    try:
        _echo_notes(jobs.prepare_render(study, topics=[slug]))
    except ReportgenError as exc:  # the page is written; only what render would say of it is missing
        typer.echo(f"note: cannot plan its cells yet: {exc}", err=True)
    typer.echo(f"next: reportgen render {shlex.quote(str(study))} --topic {slug}", err=True)


@app.command()
def speed(
    study: StudyArg,
    sampler: Annotated[list[str] | None, typer.Option(
        "--sampler", help="Only this sampler (repeatable); default: the study's.")] = None,
    steps: Annotated[int | None, typer.Option(
        "--steps", min=1, help="Steps per image (default: steps of study.toml's speed table, else 50).")] = None,
    samples: Annotated[int | None, typer.Option(
        "--samples", min=1, help="Images averaged per sampler (default 3).")] = None,
    topic: Annotated[str | None, typer.Option(
        "--topic", help="Topic whose prompt is timed; default: the first.")] = None,
    model: ModelOpt = None,
    model_config: ModelConfigOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
) -> None:
    """Time each sampler alone as the guide did (batch 1, 3-sample average); write STUDY/speed.json."""
    from reportgen.render.timing import SPEED_FILE, measure_speed

    record = measure_speed(study, samplers=sampler or (), steps=steps, samples=samples, topic=topic, model=model,
                           model_config=model_config, device=device, dtype=dtype)
    typer.echo(f"{record['device_name']} ({record['device']}/{record['dtype']}), {record['steps']} steps, "
               f"{record['width']}x{record['height']}, mean of {record['samples']}:")
    for row in record["samplers"]:
        typer.echo(f"  {row['label']:16} {row['it_per_s']:9.3f} it/s {row['s_per_image']:9.3f} s/image")
    typer.echo(str(study / SPEED_FILE))


WorkflowTopic = Annotated[str, typer.Option("--topic", help="The topic (its prompt, size and CFG).")]
WorkflowSampler = Annotated[str | None, typer.Option("--sampler", help="Sampler (default k_lms, which converges).")]
BatchSizeOpt = Annotated[int | None, typer.Option("--batch-size", min=1, help="Cells per shared UNet call.")]


@app.command()
def preview(
    study: StudyArg,
    topic: WorkflowTopic,
    count: Annotated[int, typer.Option(
        "--count", min=1, help="How many seeds: the topic's seed and the next ones.")] = 100,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Steps per preview.")] = 10,
    sampler: WorkflowSampler = None,
    model: ModelOpt = None,
    model_config: ModelConfigOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    store: StoreOpt = None,
    batch_size: BatchSizeOpt = None,
) -> None:
    """Render many seeds at few steps onto a contact sheet labelled with seeds (STUDY/previews/)."""
    from reportgen.render.preview import run_preview

    out = run_preview(study, topic, count=count, steps=steps, sampler=sampler, model=model, model_config=model_config,
                      device=device, dtype=dtype, store=store, batch_size=batch_size)
    typer.echo(f"{out.result.rendered} rendered, {out.result.cached} cached in {out.seconds:.1f}s", err=True)
    typer.echo(str(out.paths[0]))


@app.command()
def polish(
    study: StudyArg,
    topic: WorkflowTopic,
    seeds: Annotated[str, typer.Option("--seeds", help="Seeds chosen from a contact sheet: 17,42.")],
    steps: Annotated[int, typer.Option("--steps", min=1, help="Steps per final image.")] = 100,
    sampler: WorkflowSampler = None,
    model: ModelOpt = None,
    model_config: ModelConfigOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    store: StoreOpt = None,
    batch_size: BatchSizeOpt = None,
) -> None:
    """Render the chosen seeds at many steps; copies of the finals go to STUDY/polished/."""
    from reportgen.render.preview import parse_seeds, run_polish

    out = run_polish(study, topic, parse_seeds(seeds), steps=steps, sampler=sampler, model=model,
                     model_config=model_config, device=device, dtype=dtype, store=store, batch_size=batch_size)
    typer.echo(f"{out.result.rendered} rendered, {out.result.cached} cached in {out.seconds:.1f}s", err=True)
    for path in out.paths:
        typer.echo(str(path))


PROGRESS_EVERY = 10.0  # seconds between progress lines when stderr is no terminal (a log file, a batch job)


def _with_progress(total: int, calls: int, work: Callable[[Callable[[Any], None]], T], quiet: bool = False) -> T:
    """Run `work(advance)`, where `advance` moves one cell on: under a rich progress bar on a terminal, else
    with a plain line at least every PROGRESS_EVERY seconds, so a log shows the render is alive; `quiet`
    (a launcher's other processes) shows nothing."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if quiet:
        return work(lambda _output: None)
    console = Console(stderr=True)
    if not console.is_terminal:
        return _with_progress_lines(total, calls, work)
    columns = (TextColumn("rendering"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("render", total=total)
        return work(lambda _output: progress.advance(task))


def _with_progress_lines(total: int, calls: int, work: Callable[[Callable[[Any], None]], T]) -> T:
    """`work(advance)` with a progress line every PROGRESS_EVERY seconds from a timer thread, since a batched
    render can run minutes before its first cell is finished."""
    import threading
    import time

    done = [0, 0]  # cells, model calls
    start = time.monotonic()
    stop = threading.Event()

    def report() -> None:
        while not stop.wait(PROGRESS_EVERY):
            elapsed = time.monotonic() - start
            left = f", about {elapsed * (calls - done[1]) / done[1]:.0f} s left" if done[1] else ""
            typer.echo(f"rendering: {done[0]}/{total} cells, {done[1]:,}/{calls:,} model calls, "
                       f"{elapsed:.0f} s{left}", err=True)

    def advance(output: Any) -> None:
        done[0] += 1
        done[1] += getattr(output, "nfe", 0)

    thread = threading.Thread(target=report, name="reportgen-progress", daemon=True)
    try:  # started inside the try: a Ctrl-C that lands in start() still stops the thread
        thread.start()
        return work(advance)
    finally:
        stop.set()


if __name__ == "__main__":
    main()
