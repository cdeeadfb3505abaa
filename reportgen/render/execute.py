"""Execute planned cells and stream each finished image into the store.

An executor turns cells into `CellOutput`s, one at a time, in any order: `pipeline` (render/pipeline.py)
runs diffusers' pipeline once per cell, the reference every other executor is checked against; `batched`
(render/batched.py) runs all cells in shared UNet calls.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from typing import Any

from reportgen.errors import RenderError, check_interrupt
from reportgen.models.sources import ModelInfo
from reportgen.render.metadata import model_fields, parameters_text
from reportgen.render.outputs import BLACK, CellOutput, retry_decode_float32
from reportgen.render.pipeline import pipeline_executor
from reportgen.render.plan import Cell, Plan, cell_record
from reportgen.render.schedule import Schedule, read_schedule
from reportgen.render.store import Store

VERSION = "0.1.0"
WRITES_IN_FLIGHT = 8  # finished cells waiting for the store's worker thread at most


@dataclass
class RenderResult:
    """A render's outcome: counts, model calls made, and the cells that failed with why."""

    cells: int
    rendered: int = 0
    cached: int = 0
    nfe: int = 0
    seconds: float = 0.0
    failed: list[tuple[Cell, str]] = field(default_factory=list)
    warnings: list[tuple[Cell, str]] = field(default_factory=list)
    shard: str = ""  # "K/N" when this render was one shard of many (render/shards.py)
    shard_loads: tuple[int, ...] = ()  # model calls that were left to each shard of the partition when it began


Executor = Callable[[Any, ModelInfo, Iterable[Cell]], Iterator[CellOutput]]


def batched_executor(pipe: Any, model: ModelInfo, cells: Iterable[Cell], **options: Any) -> Iterator[CellOutput]:
    """Render all cells in shared UNet batches (reportgen.render.batched), imported only when used."""
    from reportgen.render.batched import batched_executor as run

    return run(pipe, model, cells, **options)


EXECUTORS: dict[str, Executor] = {"batched": batched_executor, "pipeline": pipeline_executor}


class _StoreWriter:
    """Stores finished cells on one worker thread, so PNG encoding and fsync overlap the next UNet calls.

    At most `WRITES_IN_FLIGHT` cells wait, so memory stays flat. A cell counts as rendered (and
    `on_cell` hears of it) only once its write has finished; a failed write raises its StoreError in the
    render's thread at the next cell or at the end, and leaving the block waits for every write already
    started, so an interrupted render still leaves every finished image whole."""

    def __init__(self, store: Store, result: RenderResult, on_cell: Callable[[CellOutput], None] | None) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.store, self.result, self.on_cell = store, result, on_cell
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reportgen-store")
        self.pending: deque[tuple[Future[Any], CellOutput]] = deque()

    def put(self, output: CellOutput, record: dict[str, Any], parameters: str) -> None:
        """Queue one cell's write, then account for the writes that have finished."""
        future = self.pool.submit(self.store.put, output.cell.key, output.image, output.latents, record, parameters)
        self.pending.append((future, output))
        while self.pending and (len(self.pending) > WRITES_IN_FLIGHT or self.pending[0][0].done()):
            self._settle()

    def _settle(self) -> None:
        future, output = self.pending.popleft()
        future.result()  # a StoreError from the worker is raised here
        self.result.rendered += 1
        if self.on_cell is not None:
            self.on_cell(output)

    def __enter__(self) -> _StoreWriter:
        return self

    def __exit__(self, kind: Any, *_: Any) -> None:
        try:
            while self.pending and kind is None:
                self._settle()
        finally:
            self.pool.shutdown(wait=True)  # even on an error: writes already started finish whole


def _schedule(pipe: Any, cell: Cell, model: ModelInfo,
              known: dict[tuple[str, str, int, int, int], Schedule]) -> Schedule:
    """The cell's schedule facts, from a scheduler set up exactly as its lane's (render/batched.lane_scheduler)."""
    what = (cell.sampler, cell.schedule_type, cell.steps, cell.width, cell.height)
    if what not in known:
        from reportgen.render.batched import lane_scheduler

        known[what] = read_schedule(lane_scheduler(pipe, cell, model), cell.steps)
    return known[what]


def machine_load() -> dict[str, Any]:
    """The machine's 1-minute load average and CPU count when a cell is stored, so a page can say that its seconds
    were measured on a busy machine (more runnable work than CPUs); {} where the OS has no load average."""
    try:
        return {"load": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}
    except (AttributeError, OSError):
        return {}


def render(plan: Plan, pipe: Any, model: ModelInfo, store: Store, *, executor: str = "pipeline",
           on_cell: Callable[[CellOutput], None] | None = None, **options: Any) -> RenderResult:
    """Render the plan's uncached cells with `executor` (given `options`), storing each as soon as it is finished."""
    if executor not in EXECUTORS:
        raise RenderError(f"unknown executor {executor!r}; choose from {', '.join(EXECUTORS)}")
    result = RenderResult(cells=len(plan.cells), cached=len(plan.cached))
    start = time.perf_counter()
    half = str(getattr(pipe.vae, "dtype", "")).endswith(("float16", "bfloat16"))
    schedules: dict[tuple[str, str, int, int, int], Schedule] = {}
    with _StoreWriter(store, result, on_cell) as writer:
        for output in EXECUTORS[executor](pipe, model, plan.to_render, **options):
            result.nfe += output.nfe
            upcast = False
            if output.error == BLACK and half:
                output = retry_decode_float32(pipe, output)
                upcast = output.error is None
                if upcast:
                    result.warnings.append((output.cell, "all black in half precision; decoded again in float32"))
            if output.error is not None and half:
                output.error += " in half precision; try --dtype float32"
            if output.error is None:
                facts = _schedule(pipe, output.cell, model, schedules)
                record = {**cell_record(output.cell), "schedule": asdict(facts),
                          "nfe_counted": output.nfe, "seconds": round(output.seconds, 4),
                          "executor": executor, "environment": plan.environment, **model_fields(model),
                          "reportgen": VERSION, **machine_load(), **({"vae_upcast": True} if upcast else {}),
                          **({"compiled": True} if options.get("compile") else {}),
                          **({"call_rows": output.call_rows} if output.call_rows else {})}
                writer.put(output, record, parameters_text(output.cell, model))
            else:
                result.failed.append((output.cell, output.error))
                if on_cell is not None:
                    on_cell(output)
            check_interrupt()  # a Ctrl-C that a library swallowed: this cell and the ones before it are kept
    result.seconds = time.perf_counter() - start
    return result
