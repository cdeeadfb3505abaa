"""Execute planned cells and stream each finished image into the store.

An executor turns cells into `CellOutput`s, one at a time, in any order. `pipeline` runs diffusers'
StableDiffusionPipeline once per cell: the reference every other executor is checked against.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from reportgen.errors import RenderError
from reportgen.models import ModelInfo
from reportgen.plan import Cell, Plan, cell_record
from reportgen.samplers import get_sampler
from reportgen.store import Store

VERSION = "0.1.0"
WRITES_IN_FLIGHT = 8  # finished cells waiting for the store's worker thread at most


@dataclass
class CellOutput:
    """What an executor made of one cell."""

    cell: Cell
    image: Any  # PIL.Image.Image
    latents: np.ndarray
    nfe: int
    seconds: float
    error: str | None = None


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


Executor = Callable[[Any, ModelInfo, Iterable[Cell]], Iterator[CellOutput]]


def pipeline_executor(pipe: Any, model: ModelInfo, cells: Iterable[Cell]) -> Iterator[CellOutput]:
    """Render each cell with one call of the diffusers pipeline (CFG pair in one UNet batch)."""
    import torch

    calls = [0]
    hook = pipe.unet.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        for cell in cells:
            pipe.scheduler = get_sampler(cell.sampler).make_scheduler(model.scheduler_config)
            calls[0] = 0
            start = time.perf_counter()
            with torch.inference_mode():
                latents = pipe(
                    prompt=cell.text, negative_prompt=cell.negative or None, width=cell.width, height=cell.height,
                    num_inference_steps=cell.steps, guidance_scale=cell.cfg,
                    generator=torch.Generator("cpu").manual_seed(cell.seed), output_type="latent",
                ).images
                image = decode_latents(pipe, latents)[0]
            yield finish(cell, image, latents[0], calls[0], time.perf_counter() - start)
    finally:
        hook.remove()


def decode_latents(pipe: Any, latents: Any) -> list[Any]:
    """Latents to PIL images exactly as the pipeline does it (VAE decode, then postprocess)."""
    vae = pipe.vae
    images = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
    return list(pipe.image_processor.postprocess(images, output_type="pil", do_denormalize=[True] * len(images)))


NONFINITE = "the model produced NaN or infinite latents"
BLACK = "the decoded image is all black (NaN or overflow in the VAE)"


def finish(cell: Cell, image: Any, latents: Any, nfe: int, seconds: float) -> CellOutput:
    """Package an executor's result, flagging broken outputs (non-finite latents, an all-black image) so
    they are never stored. A NaN from the VAE becomes black once the image is converted to 8 bits."""
    array = latents.detach().float().cpu().numpy() if hasattr(latents, "detach") else np.asarray(latents, np.float32)
    error = None
    if not np.isfinite(array).all():
        error = NONFINITE
    elif not np.asarray(image).any():
        error = BLACK
    return CellOutput(cell, image, array, nfe, seconds, error)


def retry_decode_float32(pipe: Any, output: CellOutput) -> CellOutput:
    """Decode an all-black half-precision cell again with the VAE upcast to float32, as diffusers' own
    `force_upcast` does for VAEs that overflow in float16; the latents are kept, so the cell is the same."""
    import torch

    vae = pipe.vae
    dtype = vae.dtype
    try:
        vae.to(torch.float32)
        with torch.inference_mode():
            image = decode_latents(pipe, torch.from_numpy(output.latents)[None].to(vae.device))[0]
    finally:
        vae.to(dtype)
    return finish(output.cell, image, output.latents, output.nfe, output.seconds)


def batched_executor(pipe: Any, model: ModelInfo, cells: Iterable[Cell], **options: Any) -> Iterator[CellOutput]:
    """Render all cells in shared UNet batches (reportgen.batched), imported only when used."""
    from reportgen.batched import batched_executor as run

    return run(pipe, model, cells, **options)


EXECUTORS: dict[str, Executor] = {"batched": batched_executor, "pipeline": pipeline_executor}


def parameters_text(cell: Cell, model: ModelInfo) -> str:
    """The widely read `parameters` text: prompt, negative prompt, then 'Steps: ..., Sampler: ...' line."""
    lines = [cell.text]
    if cell.negative:
        lines.append(f"Negative prompt: {cell.negative}")
    lines.append(
        f"Steps: {cell.steps}, Sampler: {get_sampler(cell.sampler).ui_name}, CFG scale: {cell.cfg:g}, "
        f"Seed: {cell.seed}, Size: {cell.width}x{cell.height}, Model hash: {model.short_hash}, Model: {model.label}"
    )
    return "\n".join(lines)


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


def render(plan: Plan, pipe: Any, model: ModelInfo, store: Store, *, executor: str = "pipeline",
           on_cell: Callable[[CellOutput], None] | None = None, **options: Any) -> RenderResult:
    """Render the plan's uncached cells with `executor` (given `options`), storing each as soon as it is finished."""
    if executor not in EXECUTORS:
        raise RenderError(f"unknown executor {executor!r}; choose from {', '.join(EXECUTORS)}")
    result = RenderResult(cells=len(plan.cells), cached=len(plan.cached))
    start = time.perf_counter()
    half = str(getattr(pipe.vae, "dtype", "")).endswith(("float16", "bfloat16"))
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
                record = {**cell_record(output.cell), "nfe_counted": output.nfe, "seconds": round(output.seconds, 4),
                          "executor": executor, "environment": plan.environment, "model_spec": model.spec,
                          "reportgen": VERSION, **({"vae_upcast": True} if upcast else {}),
                          **({"compiled": True} if options.get("compile") else {})}
                writer.put(output, record, parameters_text(output.cell, model))
            else:
                result.failed.append((output.cell, output.error))
                if on_cell is not None:
                    on_cell(output)
    result.seconds = time.perf_counter() - start
    return result
