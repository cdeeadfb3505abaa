"""Train the demo model on procedural pictures and save it as a diffusers folder (issue 6).

    python -m reportgen.demo.train --device cpu --out reportgen/assets/demo-model

Two phases, a fixed number of steps each (RECIPES), from one seed: a small AutoencoderKL (64x64
pixels -> 4x16x16 latents) learns to reconstruct the pictures; then a small UNet2DConditionModel and a
small CLIP text encoder learn jointly to predict the noise (epsilon, Min-SNR weighted) under Stable
Diffusion 1.x's schedule (scaled-linear betas 0.00085..0.012, 1000 steps), so every sampler of the
guide applies unchanged. Captions are dropped 10% of the time so classifier-free guidance works. The
saved UNet and text encoder are exponential moving averages of the trained weights.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from reportgen.demo.data import WORDS, sample_batch, training_scenes
from reportgen.models.sources import DEMO_DIR, SD1_SCHEDULER
from reportgen.models.tiny import byte_tokenizer

MIN_SNR_GAMMA = 5.0  # the paper's value
MAX_TOKENS = 20  # the grammar's captions are at most 15 tokens; a short context keeps attention cheap


def build_parts(seed: int) -> dict[str, Any]:
    """The untrained VAE, UNet, text encoder and tokenizer, seeded."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    # longest words first, so that fewer merges of short words pre-empt the longer ones
    tokenizer = byte_tokenizer(words=tuple(sorted(WORDS, key=len, reverse=True)))
    tokenizer.model_max_length = MAX_TOKENS
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, block_out_channels=(16, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        norm_num_groups=16, sample_size=64,
    )
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64, attention_head_dim=8, norm_num_groups=16,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_attention_heads=4,
        num_hidden_layers=2, max_position_embeddings=MAX_TOKENS, projection_dim=64,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    return {"vae": vae, "unet": unet, "text_encoder": text_encoder, "tokenizer": tokenizer}


class _Progress:
    """Prints a phase's progress every `every` seconds: step, smoothed loss, elapsed and remaining time."""

    def __init__(self, name: str, steps: int, every: float = 30.0) -> None:
        self.name, self.steps, self.every = name, steps, every
        self.start = self.last = time.time()

    def tick(self, step: int, loss: float) -> None:
        now = time.time()
        if now - self.last >= self.every or step == self.steps:
            self.last = now
            left = (now - self.start) / step * (self.steps - step)
            print(f"  {self.name} step {step}/{self.steps}  loss {loss:.5f}  {now - self.start:.0f}s, "
                  f"about {left:.0f}s left", flush=True)


def train_vae(vae: Any, images: Any, crop_steps: int, full_steps: int, batch: int, device: str,
              autocast: Any) -> None:
    """Fit the autoencoder to reconstruct `images`: `crop_steps` on random 32x32 crops (a quarter of the
    cost), then `full_steps` on whole pictures at half the batch, since GroupNorm and the mid-block's
    attention see whole-picture statistics at inference. Measured: a crop-only VAE reconstructs whole
    pictures with 7x the error it makes on crops; 600 whole-picture steps close the gap
    (docs/demo-model.md)."""
    import torch

    optimizer = torch.optim.AdamW(vae.parameters(), lr=2e-3, weight_decay=0.0)
    generator = torch.Generator(device="cpu").manual_seed(1)
    progress, running, total = _Progress("vae", crop_steps + full_steps), 0.0, crop_steps + full_steps
    vae.train()
    for step in range(1, total + 1):
        crop = 32 if step <= crop_steps else images.shape[-1]
        index = torch.randint(0, len(images), (batch if crop == 32 else max(1, batch // 2),), generator=generator)
        top, left = (int(v) for v in torch.randint(0, images.shape[-1] - crop + 1, (2,), generator=generator))
        x = images[index, :, top:top + crop, left:left + crop].to(device)
        with autocast():
            posterior = vae.encode(x).latent_dist
            recon = vae.decode(posterior.sample()).sample
        # a weak KL term keeps the latents smooth enough to diffuse; reconstruction dominates
        loss = torch.nn.functional.mse_loss(recon.float(), x) + 1e-5 * posterior.kl().mean() / x[0].numel()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # crops: full rate, decaying over their last half; whole pictures: from a quarter of it down to 0
        if step <= crop_steps:
            rate = min(1.0, 2.0 * (1.0 - step / crop_steps) + 0.05)
        else:
            rate = 0.25 * (1.0 - (step - crop_steps - 1) / full_steps)
        for group in optimizer.param_groups:
            group["lr"] = 2e-3 * rate
        optimizer.step()
        running = 0.98 * running + 0.02 * loss.item() if step > 1 else loss.item()
        progress.tick(step, running)
    vae.eval()


def train_unet(parts: dict[str, Any], latents: Any, token_ids: Any, steps: int, batch: int, device: str,
               autocast: Any) -> float:
    """Fit the UNet and text encoder to predict the noise for `steps` steps; return the smoothed final loss."""
    import copy

    import torch
    from diffusers import DDPMScheduler

    unet, text_encoder = parts["unet"], parts["text_encoder"]
    ema = [copy.deepcopy(m).eval().requires_grad_(False) for m in (unet, text_encoder)]
    params = [*unet.parameters(), *text_encoder.parameters()]
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    noise_schedule = DDPMScheduler.from_config({**SD1_SCHEDULER, "_class_name": "DDPMScheduler"})
    alphas = noise_schedule.alphas_cumprod.to(device)
    empty = parts["tokenizer"]("", padding="max_length", max_length=MAX_TOKENS, return_tensors="pt").input_ids
    empty = empty.to(device)
    progress, running = _Progress("unet", steps), 0.0
    generator = torch.Generator(device="cpu").manual_seed(2)
    unet.train()
    text_encoder.train()
    for step in range(1, steps + 1):
        index = torch.randint(0, len(latents), (batch,), generator=generator)
        x0, ids = latents[index].to(device), token_ids[index].to(device)
        drop = (torch.rand(batch, generator=generator) < 0.1).to(device)
        ids = torch.where(drop[:, None], empty.expand_as(ids), ids)
        t = torch.randint(0, 1000, (batch,), generator=generator).to(device)
        noise = torch.randn(x0.shape, generator=generator).to(device)
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        with autocast():
            context = text_encoder(ids)[0]
            prediction = unet(noisy, t, context).sample
        # Min-SNR-gamma weighting (Hang et al. 2023, who report 3.4x faster convergence): the
        # low-noise steps, whose epsilon is easy to predict, no longer dominate the gradient
        snr = a.flatten() / (1 - a.flatten())
        weight = snr.clamp(max=MIN_SNR_GAMMA) / snr
        loss = (weight * (prediction.float() - noise).pow(2).mean(dim=(1, 2, 3))).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        warm = min(1.0, step / 200)
        cool = min(1.0, 4.0 * (1.0 - step / steps) + 0.05)  # linear decay over the last quarter
        for group in optimizer.param_groups:
            group["lr"] = 1e-3 * warm * cool
        optimizer.step()
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for average, model in zip(ema, (unet, text_encoder), strict=True):
                torch._foreach_lerp_(list(average.parameters()), list(model.parameters()), 1 - decay)
        running = 0.98 * running + 0.02 * loss.item() if step > 1 else loss.item()
        progress.tick(step, running)
    parts["unet"], parts["text_encoder"] = ema
    return running


@dataclass(frozen=True)
class Recipe:
    """How much training: steps of each phase, batch and pictures. Steps, not a time box, so that one
    command with one seed gives the same weights again however busy the machine is (across machines,
    float sums may still round differently)."""

    vae_crop_steps: int
    vae_full_steps: int
    unet_steps: int
    batch: int
    count: int


RECIPES = {  # measured times and quality: docs/demo-model.md
    "cpu": Recipe(vae_crop_steps=2500, vae_full_steps=600, unet_steps=7000, batch=64, count=16384),
    "cuda": Recipe(vae_crop_steps=2500, vae_full_steps=600, unet_steps=3000, batch=256, count=32768),
}


def train(device: str, recipe: Recipe, out: Path, seed: int = 0, threads: int = 0) -> dict[str, Any]:
    """Train by `recipe` on `device` from `seed` and save the pipeline to `out`; return a summary."""
    import contextlib

    import torch
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    started = time.time()
    if threads:
        # on a shared CPU, several intra-op threads wait on each other at every barrier: measured 10x
        # slower than one thread when the cores are busy with other work
        torch.set_num_threads(threads)

    def autocast() -> Any:
        if device.startswith("cuda"):
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    parts = build_parts(seed)
    pixels, captions = sample_batch(training_scenes(), recipe.count, seed)
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    print(f"data: {recipe.count} pictures of {len(set(captions))} captions ({time.time() - started:.0f}s)", flush=True)
    if device.startswith("cuda"):
        images = images.to(device)  # 1.6 GB at the default count: saves a copy per step
    vae = parts["vae"].to(device)
    train_vae(vae, images, recipe.vae_crop_steps, recipe.vae_full_steps, max(8, recipe.batch // 4), device, autocast)
    vae_seconds = time.time() - started
    with torch.no_grad():
        latents = torch.cat([vae.encode(images[i:i + 256].to(device)).latent_dist.mean.float().cpu()
                             for i in range(0, recipe.count, 256)])
    scale = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scale)  # SD's 0.18215 plays this role: unit-variance latents
    latents = latents * scale
    token_ids = parts["tokenizer"](captions, padding="max_length", max_length=MAX_TOKENS, truncation=True,
                                   return_tensors="pt").input_ids
    parts["unet"].to(device)
    parts["text_encoder"].to(device)
    print(f"vae: done in {vae_seconds:.0f}s, latent scale {scale:.4f}", flush=True)
    loss = train_unet(parts, latents, token_ids, recipe.unet_steps, recipe.batch, device, autocast)
    pipe: Any = StableDiffusionPipeline(  # Any: diffusers' stubs hide save_pretrained from mypy
        vae=vae.cpu().float(), text_encoder=parts["text_encoder"].cpu().float(), unet=parts["unet"].cpu().float(),
        tokenizer=parts["tokenizer"], scheduler=PNDMScheduler.from_config(SD1_SCHEDULER),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out, safe_serialization=True)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    summary = {"device": device, "seconds": round(time.time() - started), "vae_seconds": round(vae_seconds),
               **asdict(recipe), "seed": seed, "final_loss": round(loss, 5), "megabytes": round(size / 1e6, 2),
               "parameters_m": {k: round(sum(p.numel() for p in parts[k].parameters()) / 1e6, 2)
                                for k in ("unet", "text_encoder")} | {"vae": round(sum(
                                    p.numel() for p in vae.parameters()) / 1e6, 2)}}
    print(f"saved {out} ({summary})", flush=True)
    return summary


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and train."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda; picks the recipe (see RECIPES)")
    parser.add_argument("--out", type=Path, default=DEMO_DIR, help="folder for the diffusers pipeline")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--unet-steps", type=int, default=None, help="override the recipe's UNet steps")
    parser.add_argument("--vae-steps", type=int, nargs=2, default=None, metavar=("CROPS", "WHOLE"),
                        help="override the recipe's VAE steps on crops and on whole pictures")
    parser.add_argument("--batch", type=int, default=None, help="override the recipe's UNet batch")
    parser.add_argument("--count", type=int, default=None, help="override the recipe's number of training pictures")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: its default)")
    args = parser.parse_args(argv)
    recipe = RECIPES["cuda" if args.device.startswith("cuda") else "cpu"]
    changes = {"unet_steps": args.unet_steps, "batch": args.batch, "count": args.count}
    if args.vae_steps:
        changes |= {"vae_crop_steps": args.vae_steps[0], "vae_full_steps": args.vae_steps[1]}
    recipe = replace(recipe, **{k: v for k, v in changes.items() if v is not None})
    if min(asdict(recipe).values()) < 1:
        parser.error("steps, batch and count must be at least 1")
    train(args.device, recipe, args.out, args.seed, args.threads)


if __name__ == "__main__":
    main()
