"""The batched executor: every cell is a lane with its own scheduler, and all lanes share UNet calls.

Each tick gathers the input of every active lane (the CFG pair of each in the same batch, one timestep
per sample) into one UNet call, then hands each lane its slice: CFG combine and `scheduler.step` with
the lane's own generator, exactly as `StableDiffusionPipeline.__call__` does for a batch of one. Lanes
end at different ticks (steps and calls per step differ), so waiting lanes are admitted as others
finish and the batch stays full. Finished lanes are decoded together and streamed out at once, so
memory stays flat however large the study.

On CUDA nothing in a tick waits for the GPU, so the host queues the next UNet call while this one
computes: every scheduler keeps its state on the CPU, and every copy from host to device, the noise
that ancestral samplers draw from their CPU generators included, goes through pinned memory without
waiting (`_PinnedUploads`). `bench/sync_check.py` counts the calls that still synchronise, per sampler.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from torch.overrides import TorchFunctionMode

from reportgen.errors import RenderError
from reportgen.models.sources import ModelInfo
from reportgen.render.outputs import CellOutput, finish
from reportgen.render.plan import Cell
from reportgen.samplers import get_sampler

CPU_LANES = 16  # lanes per UNet call on a CPU: enough to amortise per-call overhead; not tuned (docs/performance.md)
MAX_AUTO_LANES = 256  # cap of the automatic choice on GPUs; a study's own parallelism is usually lower
MEMORY_SHARE = 0.6  # of the free GPU memory the UNet's activations may use; the rest is VAE decode and slack
DECODE_BATCH = 8  # finished lanes decoded per VAE call


@dataclass(eq=False)
class Lane:
    """One cell in flight: its scheduler, generator, latents and how far along its timesteps it is."""

    cell: Cell
    scheduler: Any
    timesteps: Any  # the scheduler's own timestep tensor: step() and scale_model_input() get its items
    times: Any  # the same timesteps as float32 on the device: rows of the UNet's per-sample timestep tensor
    generator: Any
    latents: Any
    step_kwargs: dict[str, Any]
    cfg: bool
    prompt_key: tuple[str, str, bool]
    index: int = 0
    nfe: int = 0
    seconds: float = 0.0
    cond: Any = None  # guidance-scale embedding row, for UNets with time_cond_proj_dim

    @property
    def done(self) -> bool:
        """Whether every timestep has been taken."""
        return self.index >= len(self.times)


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
    """Render all cells in shared UNet batches of at most `batch_size` lanes (automatic when None).

    With `compile`, the UNet runs under `torch.compile` with static shapes and every call is padded to
    the same number of rows, so one graph serves the whole render."""
    import torch

    if batch_size is not None and batch_size < 1:
        raise RenderError(f"--batch-size must be at least 1, got {batch_size}")
    if compile:
        compile_unet(pipe)
    groups: dict[tuple[int, int], list[Cell]] = {}
    for cell in cells:  # lanes of different sizes cannot share a UNet call
        groups.setdefault((cell.height, cell.width), []).append(cell)
    with torch.inference_mode():
        for group in groups.values():
            yield from _BatchedRun(pipe, model, group, batch_size, decode_batch, pad=compile).run()


def compile_unet(pipe: Any) -> None:
    """Put the pipeline's UNet under `torch.compile` (inductor, default mode) with static shapes, once.

    A static graph is specialised to one batch size, so the executor pads every call to one size. The
    first call compiles (about 40 s for an SD 1.5 UNet on an H200; docs/performance.md)."""
    import torch

    if not hasattr(pipe.unet, "_orig_mod"):  # not compiled yet by an earlier size group or render
        pipe.unet = torch.compile(pipe.unet, dynamic=False)


def lane_scheduler(cell: Cell, model: ModelInfo) -> Any:
    """A lane's scheduler with its timesteps set, as retrieve_timesteps sets them, but with all its state
    on the CPU: its step() then reads sigmas and timesteps without waiting for the GPU (DDIM and PNDM
    index with the timestep; the others look up their step index with nonzero())."""
    scheduler = get_sampler(cell.sampler).make_scheduler(model.scheduler_config)
    scheduler.set_timesteps(cell.steps, device="cpu")
    return scheduler


def step_kwargs(scheduler: Any, generator: Any) -> dict[str, Any]:
    """The extra arguments the pipeline passes to `scheduler.step`: eta 0 and the lane's generator."""
    parameters = set(inspect.signature(scheduler.step).parameters)
    kwargs: dict[str, Any] = {}
    if "eta" in parameters:
        kwargs["eta"] = 0.0  # the pipeline's default
    if "generator" in parameters:
        kwargs["generator"] = generator
    return kwargs


def auto_lanes(pipe: Any, cells: list[Cell]) -> int:
    """The automatic lane count for one size group: what memory allows, and no more than the cells can fill."""
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
        self.device = pipe._execution_device
        self.unet = pipe.unet
        self.embeds: dict[tuple[str, str, bool], tuple[Any, Any]] = {}
        self.decode_batch = max(1, decode_batch)
        # Longest lanes first: the batch then drains on short lanes, so the last ticks are not half empty.
        ordered = sorted(cells, key=lambda c: -c.nfe)
        self.waiting: deque[Cell] = deque(ordered)
        self.lanes = batch_size or auto_lanes(pipe, cells)
        self.max_rows: int | None = None  # lowered if a UNet call runs out of memory
        self.pad_rows = 2 * self.lanes if pad else None  # every UNet call gets this many rows (one static graph)
        self._rows_key: tuple[Any, ...] = ()
        self._rows_embeds: Any = None

    def run(self) -> Iterator[CellOutput]:
        """Tick until every lane is finished, yielding each cell as soon as it is decoded.

        A cell's seconds are its share, by rows, of each tick it took part in (admissions and waits for the
        GPU included), plus its share of the decode it was part of; so the cells' seconds add up to the
        render's time, less the store's."""
        active: list[Lane] = []
        pending: list[_Pending] = []
        while self.waiting or active:
            start = time.perf_counter()
            while self.waiting and len(active) < self.lanes:
                active.append(self._admit(self.waiting.popleft()))
            self._tick(active)
            # Outputs of the previous tick are read back only now, after this tick's work was queued,
            # so a GPU keeps computing while the store encodes and writes PNGs.
            for item in pending:
                item.wait()  # what a GPU still had to do of the previous tick: counted as this tick's time
            rows = sum(2 if lane.cfg else 1 for lane in active)
            elapsed = time.perf_counter() - start
            for lane in active:
                lane.seconds += elapsed * (2 if lane.cfg else 1) / rows
            for item in pending:
                yield from self._deliver(item)
            finished = [lane for lane in active if lane.done]
            active = [lane for lane in active if not lane.done]
            pending = [self._decode(finished[i:i + self.decode_batch])
                       for i in range(0, len(finished), self.decode_batch)]
        for item in pending:
            start = time.perf_counter()
            item.wait()  # the last tick's work too: these are its lanes
            item.seconds += time.perf_counter() - start
            yield from self._deliver(item)

    def _admit(self, cell: Cell) -> Lane:
        """Start a lane as the pipeline starts a call: scheduler, timesteps, initial noise, step kwargs."""
        from diffusers.utils.torch_utils import randn_tensor

        torch, pipe = self.torch, self.pipe
        scheduler = lane_scheduler(cell, self.model)
        timesteps = scheduler.timesteps
        # The pipeline's do_classifier_free_guidance: guidance > 1 and no guidance-embedding UNet.
        cfg = cell.cfg > 1 and self.unet.config.time_cond_proj_dim is None
        key = (cell.text, cell.negative, cfg)
        positive, _ = self._embeddings(key)
        generator = torch.Generator("cpu").manual_seed(cell.seed)
        shape = (1, self.unet.config.in_channels, cell.height // pipe.vae_scale_factor,
                 cell.width // pipe.vae_scale_factor)
        # drawn on the CPU, as randn_tensor does for a CPU generator; copied to the device via pinned memory
        latents = _to_device(randn_tensor(shape, generator=generator, dtype=positive.dtype), self.device)
        latents = latents * scheduler.init_noise_sigma
        cond = None
        if self.unet.config.time_cond_proj_dim is not None:
            cond = pipe.get_guidance_scale_embedding(
                torch.tensor([cell.cfg - 1.0]), embedding_dim=self.unet.config.time_cond_proj_dim,
            ).to(device=self.device, dtype=latents.dtype)
        # float32 as the UNet's time projection casts them; on the device, so that gathering a tick's
        # timesteps is one kernel and not a host-to-device copy
        times = _to_device(timesteps.to(torch.float32), self.device)
        return Lane(cell, scheduler, timesteps, times, generator, latents, step_kwargs(scheduler, generator), cfg, key,
                    cond=cond)

    def _embeddings(self, key: tuple[str, str, bool]) -> tuple[Any, Any]:
        """Text embeddings (positive, negative or None), encoded once per distinct prompt."""
        if key not in self.embeds:
            text, negative, cfg = key
            self.embeds[key] = self.pipe.encode_prompt(text, self.device, 1, cfg, negative or None)
        return self.embeds[key]

    def _tick(self, active: list[Lane]) -> None:
        """One shared UNet call for every active lane, then each lane's own scheduler step."""
        torch = self.torch
        guided = [lane for lane in active if lane.cfg]
        inputs = [lane.scheduler.scale_model_input(lane.latents, lane.timesteps[lane.index]) for lane in active]
        rows = [inputs[i] for i, lane in enumerate(active) if lane.cfg] + inputs  # unconditional rows, then all
        row_lanes = guided + active
        sample = torch.cat(rows)
        timestep = torch.stack([lane.times[lane.index] for lane in row_lanes])
        cond = torch.cat([lane.cond for lane in row_lanes]) if active[0].cond is not None else None
        noise = self._unet(sample, timestep, self._row_embeddings(guided, active), cond)
        uncond_row = {id(lane): i for i, lane in enumerate(guided)}
        uploads = _PinnedUploads() if self.device.type == "cuda" else contextlib.nullcontext()
        with uploads:
            self._step_lanes(active, guided, uncond_row, noise)

    def _step_lanes(self, active: list[Lane], guided: list[Lane], uncond_row: dict[int, int], noise: Any) -> None:
        """Each lane's CFG combine and `scheduler.step` on its slice of the UNet's output."""
        for j, lane in enumerate(active):
            noise_pred = noise[len(guided) + j:len(guided) + j + 1]
            if lane.cfg:
                u = uncond_row[id(lane)]
                noise_uncond = noise[u:u + 1]
                noise_pred = noise_uncond + lane.cell.cfg * (noise_pred - noise_uncond)
            t = lane.timesteps[lane.index]
            lane.latents = lane.scheduler.step(noise_pred, t, lane.latents, **lane.step_kwargs, return_dict=False)[0]
            lane.index += 1
            lane.nfe += 1  # a CFG pair is one model evaluation, as Sampler.nfe counts it

    def _row_embeddings(self, guided: list[Lane], active: list[Lane]) -> Any:
        """The encoder states for the rows [unconditional of guided lanes, conditional of all], reused while
        the lanes do not change."""
        key = tuple(lane.prompt_key for lane in guided) + (None,) + tuple(lane.prompt_key for lane in active)
        if key != self._rows_key:
            states = [self.embeds[lane.prompt_key][1] for lane in guided]
            states += [self.embeds[lane.prompt_key][0] for lane in active]
            self._rows_key, self._rows_embeds = key, self.torch.cat(states)
        return self._rows_embeds

    def _unet(self, sample: Any, timestep: Any, states: Any, cond: Any) -> Any:
        """The UNet on all rows; on running out of GPU memory, in halves, and remember the smaller size."""
        torch = self.torch
        total = sample.shape[0]
        while True:
            size = self.max_rows or self.pad_rows or total
            rows = -(-total // size) * size if self.pad_rows else total  # padded to whole calls of `size` rows
            sample_, timestep_, states_, cond_ = (_pad(x, rows) for x in (sample, timestep, states, cond))
            try:
                parts = [
                    self.unet(sample_[i:i + size], timestep_[i:i + size], encoder_hidden_states=states_[i:i + size],
                              timestep_cond=None if cond_ is None else cond_[i:i + size], return_dict=False)[0]
                    for i in range(0, rows, size)
                ]
                return (parts[0] if len(parts) == 1 else torch.cat(parts))[:total]
            except torch.cuda.OutOfMemoryError:
                if size == 1:
                    raise
                size = max(1, size // 2)
                self.max_rows = size  # when padding, each new size compiles one more graph
                self.lanes = max(1, min(self.lanes, size))  # admit no more lanes than fit in one call
                torch.cuda.empty_cache()

    def _decode(self, lanes: list[Lane]) -> _Pending:
        """VAE-decode finished lanes together and start copying the results to host memory."""
        start = time.perf_counter()
        pipe = self.pipe
        latents = self.torch.cat([lane.latents for lane in lanes])
        vae = pipe.vae
        images = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
        images = pipe.image_processor.postprocess(images, output_type="pt", do_denormalize=[True] * len(lanes))
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
            yield finish(lane.cell, image, latents, lane.nfe, lane.seconds + share)


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


def _pad(tensor: Any, rows: int) -> Any:
    """`tensor` with rows of zeros appended up to `rows` (None stays None)."""
    if tensor is None or tensor.shape[0] == rows:
        return tensor
    import torch

    return torch.cat([tensor, tensor.new_zeros((rows - tensor.shape[0], *tensor.shape[1:]))])


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
    """Lanes per UNet call: a fixed number on a CPU; on CUDA as many as fit in a share of the free memory,
    from the measured growth of the UNet's peak memory between batches of 2 and 4 rows."""
    import torch

    device = pipe._execution_device
    if device.type != "cuda":
        return CPU_LANES
    unet = getattr(pipe.unet, "_orig_mod", pipe.unet)  # a compiled UNet would compile these two sizes too
    shape = (unet.config.in_channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)
    dim = unet.config.cross_attention_dim
    peaks = []
    for rows in (2, 4):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        with torch.inference_mode():
            unet(torch.zeros((rows, *shape), device=device, dtype=unet.dtype),
                 torch.full((rows,), 500.0, device=device),
                 encoder_hidden_states=torch.zeros((rows, 77, dim), device=device, dtype=unet.dtype), return_dict=False)
        torch.cuda.synchronize(device)
        peaks.append(torch.cuda.max_memory_allocated(device) - base)
    per_row = max((peaks[1] - peaks[0]) / 2, 1.0)
    free, _total = torch.cuda.mem_get_info(device)
    lanes = int(free * MEMORY_SHARE / per_row) // 2  # two rows per lane with CFG
    return max(1, min(lanes, MAX_AUTO_LANES))
