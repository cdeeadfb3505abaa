"""What an executor makes of a cell (`CellOutput`), checked for broken results, and the VAE decode they share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from reportgen.models.families import adapter_for_pipeline
from reportgen.render.plan import Cell

# Rows of every denoiser call of a batched render on a CPU (render/batched.py splits a tick's rows into calls
# of this size, the last padded): a fixed size makes each cell's numbers independent of its batch. Here and
# not in batched.py so that `reportgen info` can compare a record's `call_rows` with it without importing
# torch. 32 rows (16 guided lanes) cost per row clearly less than 8 on the demo model's UNet
# (bench/render_matrix.py --model demo --cpu-rows 8|32; docs/performance.md).
CPU_ROWS_PER_CALL: int | None = 32

@dataclass
class CellOutput:
    """What an executor made of one cell."""

    cell: Cell
    image: Any  # PIL.Image.Image
    latents: np.ndarray
    nfe: int
    seconds: float
    error: str | None = None
    call_rows: int | None = None  # the fixed rows of every denoiser call it took part in (batched, CPU)



def decode_latents(pipe: Any, latents: Any) -> list[Any]:
    """Spatial latents (B, C, h, w) to PIL images exactly as the model family's pipeline decodes them."""
    from diffusers.image_processor import VaeImageProcessor

    images = adapter_for_pipeline(pipe).decode(pipe, latents)
    return list(VaeImageProcessor.numpy_to_pil(VaeImageProcessor.pt_to_numpy(images)))



NONFINITE = "the model produced NaN or infinite latents"



BLACK = "the decoded image is all black (NaN or overflow in the VAE)"



def finish(cell: Cell, image: Any, latents: Any, nfe: int, seconds: float,
           call_rows: int | None = None) -> CellOutput:
    """Package an executor's result, flagging broken outputs (non-finite latents, an all-black image) so
    they are never stored. A NaN from the VAE becomes black once the image is converted to 8 bits."""
    array = latents.detach().float().cpu().numpy() if hasattr(latents, "detach") else np.asarray(latents, np.float32)
    error = None
    if not np.isfinite(array).all():
        error = NONFINITE
    elif not np.asarray(image).any():
        error = BLACK
    return CellOutput(cell, image, array, nfe, seconds, error, call_rows)



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
    return finish(output.cell, image, output.latents, output.nfe, output.seconds, output.call_rows)
