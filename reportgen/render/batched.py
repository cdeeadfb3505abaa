"""The batched executor: every cell is a lane with its own scheduler, and all lanes share denoiser calls.

Each tick gathers the input of every active lane (the CFG pair of each in the same batch, one timestep
per sample) into one call of the model's denoiser (UNet or transformer), then hands each lane its slice:
guidance and `scheduler.step` with the lane's own generator, exactly as the model family's pipeline does
for a batch of one. The executor talks to the family's adapter (models/families/), never to a pipeline
class. Lanes end at different ticks (steps and calls per step differ), so waiting lanes are admitted as
others finish and the batch stays full. Finished lanes are decoded together and streamed out at once, so
memory stays flat however large the study.

A cell's pixels do not depend on which lanes share its batch: on a CPU every denoiser call has the same
number of rows (CPU_ROWS_PER_CALL, the last call of a tick padded with zero rows) and every decode the same
number of images (`decode_batch`, padded likewise), and the CPU kernels compute each row of a call of a
given size the same way whatever the other rows hold. So a killed and resumed render, or one cell rendered
again after a repair, gives the same bits as an uninterrupted render (on the same machine and torch
build, with the same thread count). On CUDA the rows are not padded (unless compiled) and a cell's pixels
may differ by a level or two with its batch: docs/performance.md.

On CUDA nothing in a tick waits for the GPU, so the host queues the next UNet call while this one
computes: every scheduler keeps its state on the CPU, and every copy from host to device, the noise
that ancestral samplers draw from their CPU generators included, goes through pinned memory without
waiting (`_PinnedUploads`). `bench/sync_check.py` counts the calls that still synchronise, per sampler.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from torch.overrides import TorchFunctionMode

from reportgen.errors import RenderError, check_interrupt
from reportgen.models.families import Conditioning, adapter_for_pipeline
from reportgen.models.families.base import pad_rows
from reportgen.models.sources import ModelInfo
from reportgen.render.outputs import CPU_ROWS_PER_CALL, CellOutput, finish
from reportgen.render.plan import Cell
from reportgen.samplers import get_sampler

CPU_LANES = 16  # lanes per call on a CPU when calls are not padded to CPU_ROWS_PER_CALL (a test's contrast)
MAX_AUTO_LANES = 256  # cap of the automatic choice on GPUs; a study's own parallelism is usually lower
MEMORY_SHARE = 0.6  # of the free GPU memory the denoiser's activations may use; the rest is VAE decode and slack
DECODE_BATCH = 8  # finished lanes decoded per VAE call


@dataclass(eq=False)
class Lane:
    """One cell in flight: its scheduler, generator, latents and how far along its timesteps it is."""

    cell: Cell
    scheduler: Any
    timesteps: Any  # the scheduler's own timestep tensor: step() and scale_model_input() get its items
    times: Any  # the family's rows of the denoiser's per-sample timestep tensor, on the device, one per timestep
    generator: Any
    latents: Any
    step_kwargs: dict[str, Any]
    guided: bool  # takes an unconditional row (CFG) besides its conditional one
    prompt_key: tuple[str, str, bool]
    guidance: Any = None  # the lane's row of a guidance-distilled denoiser's guidance input (FLUX.1 dev, LCM)
    index: int = 0
    nfe: int = 0
    seconds: float = 0.0

    @property
    def done(self) -> bool:
        """Whether every timestep has been taken."""
        return self.index >= len(self.times)

    @property
    def rows(self) -> int:
        """Rows the lane takes in each denoiser call: a CFG pair, or one."""
        return 2 if self.guided else 1


@dataclass
class _Pending:
    """Finished lanes whose decoded images are on their way to host memory."""

    lanes: list[Lane]
    images: Any
    latents: Any
    event: Any = None
    seconds: float = 0.0  # host time spent decoding and converting these lanes' images

    def wait(self) -> None:
        """Block until the images have reached host memory (at once on a CPU)."""
        if self.event is not None:
            self.event.synchronize()


def batched_executor(pipe: Any, model: ModelInfo, cells: Iterable[Cell], *, batch_size: int | None = None,
                     decode_batch: int = DECODE_BATCH, compile: bool = False) -> Iterator[CellOutput]:
    """Render all cells in shared denoiser batches of at most `batch_size` lanes (automatic when None).

    With `compile`, the denoiser runs under `torch.compile` with static shapes and every call is padded to
    the same number of rows, so one graph serves the whole render."""
    import torch

    if batch_size is not None and batch_size < 1:
        raise RenderError(f"--batch-size must be at least 1, got {batch_size}")
    if compile:
        compile_denoiser(pipe)
    groups: dict[tuple[int, int], list[Cell]] = {}
    for cell in cells:  # lanes of different sizes cannot share a denoiser call
        groups.setdefault((cell.height, cell.width), []).append(cell)
    with torch.inference_mode():
        for group in groups.values():
            yield from _BatchedRun(pipe, model, group, batch_size, decode_batch, pad=compile).run()


def compile_denoiser(pipe: Any) -> None:
    """Put the pipeline's denoiser under `torch.compile` (inductor, default mode) with static shapes, once.

    A static graph is specialised to one batch size, so the executor pads every call to one size. The
    first call compiles (about 40 s for an SD 1.5 UNet on an H200; docs/performance.md)."""
    import torch

    family = adapter_for_pipeline(pipe)
    denoiser = family.denoiser(pipe)
    if not hasattr(denoiser, "_orig_mod"):  # not compiled yet by an earlier size group or render
        family.set_denoiser(pipe, torch.compile(denoiser, dynamic=False))


def lane_scheduler(pipe: Any, cell: Cell, model: ModelInfo) -> Any:
    """A lane's scheduler with its timesteps set as the family's pipeline sets them, but with all its state on
    the CPU: its step() then reads sigmas and timesteps without waiting for the GPU (DDIM and PNDM index with
    the timestep; the others look up their step index with nonzero())."""
    scheduler = get_sampler(cell.sampler).make_scheduler(model.scheduler_config, cell.schedule_type)
    adapter_for_pipeline(pipe).timesteps(pipe, scheduler, cell.steps, cell.width, cell.height)
    return scheduler


def auto_lanes(pipe: Any, cells: list[Cell]) -> int:
    """The automatic lane count for one size group: on a CPU the lanes that fill one call of
    CPU_ROWS_PER_CALL rows (every call has that many rows anyway); on CUDA what memory allows, and no more
    than the cells can fill."""
    if pipe._execution_device.type != "cuda":
        return auto_batch_size(pipe, cells[0].height, cells[0].width)
    return min(auto_batch_size(pipe, cells[0].height, cells[0].width), balanced_lanes(cells))


def balanced_lanes(cells: list[Cell]) -> int:
    """Lanes enough to keep every tick equally full: a render takes at least as many ticks as its longest
    lane has model calls, so more lanes than all calls / that many would only fill the first ticks."""
    calls = [cell.nfe for cell in cells]
    return max(1, math.ceil(sum(calls) / max(calls)))


class _BatchedRun:
    """One size group's lanes run to completion: admit, tick, decode, stream."""

    def __init__(self, pipe: Any, model: ModelInfo, cells: list[Cell], batch_size: int | None,
                 decode_batch: int, pad: bool = False) -> None:
        import torch

        self.torch = torch
        self.pipe = pipe
        self.model = model
        self.family = adapter_for_pipeline(pipe)
        self.device = pipe._execution_device
        self.size = (cells[0].height, cells[0].width)
        self.embeds: dict[tuple[str, str, bool], tuple[Conditioning, Conditioning | None]] = {}
        self.fixed: dict[str, Any] | None = None  # the denoiser's inputs that depend only on the size
        self.decode_batch = max(1, decode_batch)
        # Longest lanes first: the batch then drains on short lanes, so the last ticks are not half empty.
        ordered = sorted(cells, key=lambda c: -c.nfe)
        self.waiting: deque[Cell] = deque(ordered)
        self.lanes = batch_size or auto_lanes(pipe, cells)
        self.max_rows: int | None = None  # lowered if a denoiser call runs out of memory
        # every denoiser call gets this many rows: one static graph when compiled; on a CPU, batch invariance
        self.pad_rows = (self.family.rows_per_lane * self.lanes if pad
                         else CPU_ROWS_PER_CALL if self.device.type == "cpu" else None)
        self.pad_decode = self.device.type == "cpu"  # every decode of decode_batch images, for the same reason
        self.lms_coefficients: dict[tuple[bytes, int, int, int], float] = {}  # _share_lms_coefficients
        self._rows_key: tuple[Any, ...] = ()
        self._rows_cond: Conditioning | None = None

    def run(self) -> Iterator[CellOutput]:
        """Tick until every lane is finished, yielding each cell as soon as it is decoded.

        A cell's seconds are its share, by rows, of each tick it took part in (admissions and waits for the
        GPU included), plus its share of the decode it was part of; so the cells' seconds add up to the
        render's time, less the store's."""
        active: list[Lane] = []
        pending: list[_Pending] = []
        ready: list[Lane] = []  # finished lanes not yet decoded
        while self.waiting or active:
            check_interrupt()  # a Ctrl-C that a library swallowed stops the render here
            start = time.perf_counter()
            while self.waiting and len(active) < self.lanes:
                active.append(self._admit(self.waiting.popleft()))
            self._tick(active)
            # Outputs of the previous tick are read back only now, after this tick's work was queued,
            # so a GPU keeps computing while the store encodes and writes PNGs.
            for item in pending:
                item.wait()  # what a GPU still had to do of the previous tick: counted as this tick's time
            rows = sum(lane.rows for lane in active)
            elapsed = time.perf_counter() - start
            for lane in active:
                lane.seconds += elapsed * lane.rows / rows
            for item in pending:
                yield from self._deliver(item)
            ready += [lane for lane in active if lane.done]
            active = [lane for lane in active if not lane.done]
            # Padded decodes (CPU) wait until decode_batch lanes are ready, so a decode's padding is not
            # computed for nothing (a tick finishes 1 to 3 lanes of the demo); the last decode takes the rest.
            now = len(ready) // self.decode_batch * self.decode_batch if self.pad_decode and (
                self.waiting or active) else len(ready)
            pending = [self._decode(ready[i:i + self.decode_batch]) for i in range(0, now, self.decode_batch)]
            ready = ready[now:]
        for item in pending:
            start = time.perf_counter()
            item.wait()  # the last tick's work too: these are its lanes
            item.seconds += time.perf_counter() - start
            yield from self._deliver(item)

    def _admit(self, cell: Cell) -> Lane:
        """Start a lane as the pipeline starts a call: scheduler, timesteps, initial noise, step kwargs."""
        torch, pipe, family = self.torch, self.pipe, self.family
        scheduler = lane_scheduler(pipe, cell, self.model)
        if hasattr(scheduler, "get_lms_coefficient"):
            self._share_lms_coefficients(scheduler)
        timesteps = scheduler.timesteps
        guided = family.guided(pipe, cell.cfg)
        key = (cell.text, cell.negative, guided)
        positive, _ = self._embeddings(key)
        dtype = positive.rows["encoder_hidden_states"].dtype  # the pipelines draw noise in the text's dtype
        if self.fixed is None:
            self.fixed = family.size_inputs(pipe, *self.size, dtype, self.device)
        generator = torch.Generator("cpu").manual_seed(cell.seed)
        # drawn on the CPU, as randn_tensor does for a CPU generator; copied to the device via pinned memory
        latents = _to_device(family.initial_latents(pipe, scheduler, cell.width, cell.height, generator, dtype),
                             self.device)
        guidance = family.guidance_row(pipe, cell.cfg, dtype)
        # on the device, so that gathering a tick's timesteps is one kernel and not a host-to-device copy
        times = _to_device(family.timestep_rows(timesteps, dtype), self.device)
        return Lane(cell, scheduler, timesteps, times, generator, latents, family.step_kwargs(scheduler, generator),
                    guided, key, guidance=None if guidance is None else _to_device(guidance, self.device))

    def _share_lms_coefficients(self, scheduler: Any) -> None:
        """K_LMS integrates its coefficients numerically (scipy's quad) at every step of every lane: 5% of the
        demo's render. They depend only on the lane's sigmas, the order and the step, so lanes with the same
        sigmas share them; the values are the scheduler's own."""
        own = scheduler.get_lms_coefficient
        sigmas = scheduler.sigmas.cpu().numpy().tobytes()

        def shared(order: int, t: int, current_order: int) -> float:
            key = (sigmas, order, t, current_order)
            if key not in self.lms_coefficients:
                self.lms_coefficients[key] = own(order, t, current_order)
            return self.lms_coefficients[key]

        scheduler.get_lms_coefficient = shared

    def _embeddings(self, key: tuple[str, str, bool]) -> tuple[Conditioning, Conditioning | None]:
        """The prompt's conditional and (guided) unconditional rows, encoded once per distinct prompt."""
        if key not in self.embeds:
            text, negative, guided = key
            self.embeds[key] = self.family.encode(self.pipe, text, negative, guided)
        return self.embeds[key]

    def _tick(self, active: list[Lane]) -> None:
        """One shared denoiser call for every active lane, then each lane's own scheduler step."""
        torch, family = self.torch, self.family
        guided = [lane for lane in active if lane.guided]
        inputs = [family.model_input(lane.scheduler, lane.latents, lane.timesteps[lane.index]) for lane in active]
        rows = [inputs[i] for i, lane in enumerate(active) if lane.guided] + inputs  # unconditional rows, then all
        row_lanes = guided + active
        sample = torch.cat(rows)
        timestep = torch.stack([lane.times[lane.index] for lane in row_lanes])
        guidance = torch.cat([lane.guidance for lane in row_lanes]) if active[0].guidance is not None else None
        noise = self._denoise(sample, timestep, self._row_conditioning(guided, active), guidance)
        uncond_row = {id(lane): i for i, lane in enumerate(guided)}
        uploads = _PinnedUploads() if self.device.type == "cuda" else contextlib.nullcontext()
        with uploads:
            self._step_lanes(active, guided, uncond_row, noise)

    def _step_lanes(self, active: list[Lane], guided: list[Lane], uncond_row: dict[int, int], noise: Any) -> None:
        """Each lane's guidance and `scheduler.step` on its slice of the denoiser's output."""
        for j, lane in enumerate(active):
            noise_pred = noise[len(guided) + j:len(guided) + j + 1]
            if lane.guided:
                u = uncond_row[id(lane)]
                noise_pred = self.family.guide(noise[u:u + 1], noise_pred, lane.cell.cfg)
            t = lane.timesteps[lane.index]
            lane.latents = lane.scheduler.step(noise_pred, t, lane.latents, **lane.step_kwargs, return_dict=False)[0]
            lane.index += 1
            lane.nfe += 1  # a CFG pair is one model evaluation, as Sampler.nfe counts it

    def _row_conditioning(self, guided: list[Lane], active: list[Lane]) -> Conditioning:
        """The text conditioning of the rows [unconditional of guided lanes, conditional of all], reused while
        the lanes do not change."""
        key = tuple(lane.prompt_key for lane in guided) + (None,) + tuple(lane.prompt_key for lane in active)
        if key != self._rows_key or self._rows_cond is None:
            rows = [self.embeds[lane.prompt_key][1] for lane in guided] + [self.embeds[lane.prompt_key][0]
                                                                            for lane in active]
            self._rows_key, self._rows_cond = key, Conditioning.cat(rows)  # type: ignore[arg-type]
        return self._rows_cond

    def _denoise(self, sample: Any, timestep: Any, cond: Conditioning, guidance: Any) -> Any:
        """The denoiser on all rows, the one place it is called; on running out of GPU memory, in halves, and
        remember the smaller size. With `pad_rows`, every call is padded to that many rows."""
        torch = self.torch
        assert self.fixed is not None
        total = sample.shape[0]
        while True:
            size = self.max_rows or self.pad_rows or total
            rows = -(-total // size) * size if self.pad_rows else total  # padded to whole calls of `size` rows
            sample_, timestep_, guidance_ = (pad_rows(x, rows) for x in (sample, timestep, guidance))
            cond_ = cond.pad(rows)
            try:
                parts = [self.family.denoise(self.pipe, sample_[i:i + size], timestep_[i:i + size],
                                             cond_.slice(i, i + size),
                                             None if guidance_ is None else guidance_[i:i + size], self.fixed)
                         for i in range(0, rows, size)]
                return (parts[0] if len(parts) == 1 else torch.cat(parts))[:total]
            except torch.cuda.OutOfMemoryError:
                if size == 1:
                    raise
                size = max(1, size // 2)
                self.max_rows = size  # when padding, each new size compiles one more graph
                self.lanes = max(1, min(self.lanes, size))  # admit no more lanes than fit in one call
                torch.cuda.empty_cache()

    def _decode(self, lanes: list[Lane]) -> _Pending:
        """Decode finished lanes together and start copying the results to host memory."""
        start = time.perf_counter()
        height, width = self.size
        latents = self.family.to_spatial(self.pipe, self.torch.cat([lane.latents for lane in lanes]), width, height)
        rows = self.decode_batch if self.pad_decode else len(lanes)
        images = self.family.decode(self.pipe, pad_rows(latents, rows))[:len(lanes)]
        item = _Pending(lanes, _to_host(images), _to_host(latents))
        if images.device.type == "cuda":
            item.event = self.torch.cuda.Event()
            item.event.record()
        item.seconds = time.perf_counter() - start
        return item

    def _deliver(self, item: _Pending) -> Iterator[CellOutput]:
        """Turn a decode's images (already waited for) into PIL images and yield one output per lane."""
        from diffusers.image_processor import VaeImageProcessor

        start = time.perf_counter()
        images = VaeImageProcessor.numpy_to_pil(VaeImageProcessor.pt_to_numpy(item.images))
        share = (item.seconds + time.perf_counter() - start) / len(item.lanes)
        for lane, image, latents in zip(item.lanes, images, item.latents, strict=True):
            yield finish(lane.cell, image, latents, lane.nfe, lane.seconds + share,
                         self.pad_rows if self.device.type == "cpu" else None)


class _PinnedUploads(TorchFunctionMode):
    """Within a tick's scheduler steps, `cpu_tensor.to(cuda_device)` copies through pinned memory without
    waiting. A copy from pageable memory makes the host wait until the GPU has finished all queued work,
    the UNet call included; diffusers makes one for every ancestral noise draw (`randn_tensor` with a CPU
    generator) and for UniPC's CPU sigmas. The values are the same; only the host stops waiting."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        import torch

        kwargs = kwargs or {}
        if func is torch.Tensor.to and args and args[0].device.type == "cpu" and "non_blocking" not in kwargs:
            target = kwargs.get("device", args[1] if len(args) > 1 else None)
            if isinstance(target, (str, torch.device)) and torch.device(target).type == "cuda":
                return args[0].pin_memory().to(*args[1:], **kwargs, non_blocking=True)
        return func(*args, **kwargs)


def _to_device(tensor: Any, device: Any) -> Any:
    """Copy a CPU tensor to `device` through pinned memory, without waiting for the GPU's queued work (a
    copy from pageable memory synchronises with it)."""
    if getattr(device, "type", device) != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def _to_host(tensor: Any) -> Any:
    """Start a copy to pinned host memory (a no-op on the CPU), so the GPU is not stalled waiting for it."""
    import torch

    if tensor.device.type != "cuda":
        return tensor
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    host.copy_(tensor, non_blocking=True)
    return host


def auto_batch_size(pipe: Any, height: int, width: int) -> int:
    """Lanes per denoiser call: a fixed number on a CPU; on CUDA as many as fit in a share of the free memory,
    from the measured growth of the denoiser's peak memory between calls of 2 and 4 rows (made of an empty
    prompt's real encoder outputs, so every family's input shapes are its own)."""
    import torch

    device = pipe._execution_device
    family = adapter_for_pipeline(pipe)
    if device.type != "cuda":  # a guided lane takes two rows, an unguided one (FLUX.1's distilled guidance) one
        return max(1, CPU_ROWS_PER_CALL // family.rows_per_lane) if CPU_ROWS_PER_CALL else CPU_LANES
    compiled = family.denoiser(pipe)
    family.set_denoiser(pipe, getattr(compiled, "_orig_mod", compiled))  # a compiled one would compile both sizes
    try:
        peaks = []
        for rows in (2, 4):
            inputs = probe_inputs(pipe, rows, height, width)
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            with torch.inference_mode():
                family.denoise(pipe, *inputs)
            torch.cuda.synchronize(device)
            peaks.append(torch.cuda.max_memory_allocated(device) - base)
    finally:
        family.set_denoiser(pipe, compiled)
    per_row = max((peaks[1] - peaks[0]) / 2, 1.0)
    free, _total = torch.cuda.mem_get_info(device)
    lanes = int(free * MEMORY_SHARE / per_row) // family.rows_per_lane  # two rows per lane with CFG
    return max(1, min(lanes, MAX_AUTO_LANES))


def probe_inputs(pipe: Any, rows: int, height: int, width: int, cfg: float = 3.5) -> tuple[Any, ...]:
    """Seeded denoiser inputs for `rows` rows at `height` x `width`: noise, timesteps spread over the schedule,
    an empty prompt's encoder outputs, guidance rows where the family takes them, the size's fixed inputs; in the
    order FamilyAdapter.denoise takes them after the pipeline."""
    import torch

    family = adapter_for_pipeline(pipe)
    device = pipe._execution_device
    with torch.inference_mode():
        cond, _ = family.encode(pipe, "", "", False)
    dtype = cond.rows["encoder_hidden_states"].dtype
    generator = torch.Generator("cpu").manual_seed(0)
    scheduler = pipe.scheduler
    sample = torch.cat([family.initial_latents(pipe, scheduler, width, height, generator, dtype)
                        for _ in range(rows)]).to(device)
    times = family.timestep_rows(torch.linspace(999, 1, rows), dtype).to(device)
    guidance = family.guidance_row(pipe, cfg, dtype)
    guidance = None if guidance is None else torch.cat([guidance] * rows).to(device)
    return (sample, times, Conditioning.cat([cond] * rows), guidance,
            family.size_inputs(pipe, height, width, dtype, device))
