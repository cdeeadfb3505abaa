"""Train the demo model on procedural pictures and save it as a diffusers folder (issue 6).

    python -m reportgen.train_demo --device cpu --minutes 40 --out reportgen/assets/demo-model

Two phases inside one time box, from one seed: a small AutoencoderKL (64x64 pixels -> 4x16x16 latents)
learns to reconstruct the pictures; then a small UNet2DConditionModel and a small CLIP text encoder learn
jointly to predict the noise (epsilon) under Stable Diffusion 1.x's schedule (scaled-linear betas
0.00085..0.012, 1000 steps), so every sampler of the guide applies unchanged. Captions are dropped 10%
of the time so classifier-free guidance works. The saved UNet and text encoder are exponential moving
averages of the trained weights.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from reportgen.demo_data import WORDS, sample_batch, training_scenes
from reportgen.models import DEMO_DIR, SD1_SCHEDULER, byte_tokenizer

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


class _Clock:
    """Prints progress every `every` seconds and says when a phase's share of the time box is spent."""

    def __init__(self, seconds: float, every: float = 30.0) -> None:
        self.start, self.seconds, self.every, self.last = time.time(), seconds, every, time.time()

    def done(self) -> bool:
        return time.time() - self.start >= self.seconds

    def fraction(self) -> float:
        return min(1.0, (time.time() - self.start) / self.seconds)

    def tick(self, message: str) -> None:
        if time.time() - self.last >= self.every:
            self.last = time.time()
            print(f"  {time.time() - self.start:6.0f}s  {message}", flush=True)


def train_vae(vae: Any, images: Any, seconds: float, batch: int, device: str, autocast: Any) -> int:
    """Fit the autoencoder to reconstruct `images` for `seconds`; return the steps taken."""
    import torch

    optimizer = torch.optim.AdamW(vae.parameters(), lr=2e-3, weight_decay=0.0)
    clock, step, running = _Clock(seconds), 0, 0.0
    generator = torch.Generator(device="cpu").manual_seed(1)
    vae.train()
    while not clock.done():
        index = torch.randint(0, len(images), (batch,), generator=generator)
        # random 32x32 crops: the autoencoder is convolutional, and crops cost a quarter of whole pictures
        top, left = (int(v) for v in torch.randint(0, images.shape[-1] - 31, (2,), generator=generator))
        x = images[index, :, top:top + 32, left:left + 32].to(device)
        with autocast():
            posterior = vae.encode(x).latent_dist
            recon = vae.decode(posterior.sample()).sample
        # a weak KL term keeps the latents smooth enough to diffuse; reconstruction dominates
        loss = torch.nn.functional.mse_loss(recon.float(), x) + 1e-5 * posterior.kl().mean() / x[0].numel()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for group in optimizer.param_groups:  # decay the rate over the last half so the decoder settles
            group["lr"] = 2e-3 * min(1.0, 2.0 * (1.0 - clock.fraction()) + 0.05)
        optimizer.step()
        step += 1
        running = 0.98 * running + 0.02 * loss.item() if step > 1 else loss.item()
        clock.tick(f"vae step {step}  loss {running:.5f}")
    vae.eval()
    return step


def train_unet(parts: dict[str, Any], latents: Any, token_ids: Any, seconds: float, batch: int, device: str,
               autocast: Any) -> int:
    """Fit the UNet and text encoder to predict the noise for `seconds`; return the steps taken."""
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
    clock, step, running = _Clock(seconds), 0, 0.0
    generator = torch.Generator(device="cpu").manual_seed(2)
    unet.train()
    text_encoder.train()
    while not clock.done():
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
        loss = torch.nn.functional.mse_loss(prediction.float(), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        warm = min(1.0, (step + 1) / 200)
        cool = min(1.0, 4.0 * (1.0 - clock.fraction()) + 0.05)  # linear decay over the last quarter
        for group in optimizer.param_groups:
            group["lr"] = 1e-3 * warm * cool
        optimizer.step()
        step += 1
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for average, model in zip(ema, (unet, text_encoder), strict=True):
                torch._foreach_lerp_(list(average.parameters()), list(model.parameters()), 1 - decay)
        running = 0.98 * running + 0.02 * loss.item() if step > 1 else loss.item()
        clock.tick(f"unet step {step}  loss {running:.4f}")
    parts["unet"], parts["text_encoder"] = ema
    return step


def train(device: str, minutes: float, out: Path, seed: int = 0, batch: int = 64, count: int = 4096,
          vae_share: float = 0.2, threads: int = 0) -> dict[str, Any]:
    """Train within `minutes` on `device` from `seed` and save the pipeline to `out`; return a summary."""
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
    pixels, captions = sample_batch(training_scenes(), count, seed)
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    print(f"data: {count} pictures of {len(set(captions))} captions ({time.time() - started:.0f}s)", flush=True)
    if device.startswith("cuda"):
        images = images.to(device)  # 1.6 GB at the default count: saves a copy per step
    budget = minutes * 60 - (time.time() - started)
    vae = parts["vae"].to(device)
    vae_steps = train_vae(vae, images, budget * vae_share, max(8, batch // 4), device, autocast)
    with torch.no_grad():
        latents = torch.cat([vae.encode(images[i:i + 256].to(device)).latent_dist.mean.float().cpu()
                             for i in range(0, count, 256)])
    scale = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scale)  # SD's 0.18215 plays this role: unit-variance latents
    latents = latents * scale
    token_ids = parts["tokenizer"](captions, padding="max_length", max_length=MAX_TOKENS, truncation=True,
                                   return_tensors="pt").input_ids
    parts["unet"].to(device)
    parts["text_encoder"].to(device)
    remaining = minutes * 60 - (time.time() - started) - 5  # keep a few seconds to save
    print(f"vae: {vae_steps} steps, latent scale {scale:.4f}; unet for {remaining:.0f}s", flush=True)
    unet_steps = train_unet(parts, latents, token_ids, remaining, batch, device, autocast)
    pipe: Any = StableDiffusionPipeline(  # Any: diffusers' stubs hide save_pretrained from mypy
        vae=vae.cpu().float(), text_encoder=parts["text_encoder"].cpu().float(), unet=parts["unet"].cpu().float(),
        tokenizer=parts["tokenizer"], scheduler=PNDMScheduler.from_config(SD1_SCHEDULER),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out, safe_serialization=True)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    summary = {"device": device, "seconds": round(time.time() - started), "vae_steps": vae_steps,
               "unet_steps": unet_steps, "batch": batch, "seed": seed, "megabytes": round(size / 1e6, 2),
               "parameters_m": {k: round(sum(p.numel() for p in parts[k].parameters()) / 1e6, 2)
                                for k in ("unet", "text_encoder")} | {"vae": round(sum(
                                    p.numel() for p in vae.parameters()) / 1e6, 2)}}
    print(f"saved {out} ({summary})", flush=True)
    return summary


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and train."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--minutes", type=float, default=40.0, help="the whole time box, both phases")
    parser.add_argument("--out", type=Path, default=DEMO_DIR, help="folder for the diffusers pipeline")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=None, help="UNet batch (default 64 on cpu, 128 on cuda)")
    parser.add_argument("--count", type=int, default=None, help="training pictures (default 4096 cpu, 32768 cuda)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: its default)")
    parser.add_argument("--vae-share", type=float, default=0.2, help="share of the time box for the VAE")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or not 0 < args.vae_share < 1:
        parser.error("--minutes must be positive and --vae-share in (0, 1)")
    gpu = args.device.startswith("cuda")
    batch = args.batch or (128 if gpu else 64)
    count = args.count or (32768 if gpu else 4096)
    train(args.device, args.minutes, args.out, args.seed, batch, count, args.vae_share, args.threads)


if __name__ == "__main__":
    main()
