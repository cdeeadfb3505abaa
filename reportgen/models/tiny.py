"""The tiny models: seeded pipelines of every family built from configs in code, for tests (no files, no network).

`tiny` is Stable Diffusion 1.x (its cache keys are pinned by tests/render/test_keys.py: leave it as it is);
`tiny-sd2-v`, `tiny-sdxl`, `tiny-sd3`, `tiny-flux` and `tiny-flux-schnell` follow their families' real
structure (text encoders, denoiser options, VAE channels, scaling and shift factors, the shipped scheduler
configs in models/configs.py) at widths of 16 to 64. Tokenizers are generated: CLIP's from the 256 byte
symbols, T5's from a Unigram vocabulary of single characters.
"""

from __future__ import annotations

import copy
from functools import cache, lru_cache
from typing import Any

from reportgen.models.configs import (
    FLUX_DEV_SCHEDULER,
    FLUX_SCHNELL_SCHEDULER,
    SD1_SCHEDULER,
    SD2_V_SCHEDULER,
    SD3_SCHEDULER,
    SDXL_SCHEDULER,
)


@lru_cache(maxsize=1)
def tiny_components() -> dict[str, Any]:
    """The tiny model's parts, built from configs with seeded weights (about 1M parameters)."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = byte_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        # diffusers' models are torch modules at run time, but its stubs hide nn.Module's methods (eval)
        unet: Any = UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8,
        )
        vae: Any = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, block_out_channels=(8, 16, 16, 16),
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            norm_num_groups=8, sample_size=64,
        )
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_attention_heads=4,
            num_hidden_layers=2, max_position_embeddings=77, projection_dim=32,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ))
    return {"unet": unet.eval(), "vae": vae.eval(), "text_encoder": text_encoder.eval(), "tokenizer": tokenizer,
            "scheduler": PNDMScheduler.from_config(SD1_SCHEDULER)}



def build_tiny_pipeline() -> Any:
    """A fresh StableDiffusionPipeline around copies of the tiny model's seeded parts."""
    from diffusers import StableDiffusionPipeline

    parts = tiny_components()
    return StableDiffusionPipeline(
        vae=copy.deepcopy(parts["vae"]), text_encoder=copy.deepcopy(parts["text_encoder"]),
        unet=copy.deepcopy(parts["unet"]), tokenizer=parts["tokenizer"], scheduler=copy.deepcopy(parts["scheduler"]),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )



def byte_tokenizer(words: tuple[str, ...] = (), pad_token: str | None = None) -> Any:
    """A CLIP tokenizer whose vocabulary is generated: the 256 byte symbols, their end-of-word forms,
    optional whole `words`, and the two special tokens. Any text tokenizes; no file is needed. SD 2.x's and
    SDXL's OpenCLIP tokenizers pad with "!" (`pad_token`); SD 1.x's with its end-of-text token."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    symbols = sorted(ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for token in [*symbols, *(s + "</w>" for s in symbols)]:
        vocab.setdefault(token, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in words:  # merge left to right so each listed word becomes one token
        pieces = list(word)
        pieces[-1] += "</w>"
        while len(pieces) > 1:
            merges.append((pieces[0], pieces[1]))
            pieces = [pieces[0] + pieces[1], *pieces[2:]]
            vocab.setdefault(pieces[0], len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    # tokenizers' BPE takes (a, b) pairs, as here; transformers annotates merges as "a b" lines
    unique_merges: Any = list(dict.fromkeys(merges))
    kwargs = {"pad_token": pad_token} if pad_token else {}
    return CLIPTokenizer(vocab=vocab, merges=unique_merges, model_max_length=77, **kwargs)


def t5_tokenizer() -> Any:
    """A T5 tokenizer whose vocabulary is generated: <pad>=0, </s>=1, <unk>=2, the word-start mark, then every
    printable ASCII character alone and after the mark (in transformers 5, T5Tokenizer is the `tokenizers`
    Unigram model that T5TokenizerFast was). Any text tokenizes (other characters become <unk>); no file is needed."""
    from transformers import T5Tokenizer

    chars = [chr(c) for c in range(33, 127)]
    vocab: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + c, -3.0) for c in chars] + [(c, -4.0) for c in chars]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=512)


def build_tiny(name: str) -> Any:
    """A fresh pipeline of the tiny model `name` (a key of models.configs.TINY_MODELS) around copies of its
    seeded parts, built once per process."""
    if name == "tiny":
        return build_tiny_pipeline()
    import diffusers

    parts = {k: v if k.startswith("tokenizer") else copy.deepcopy(v) for k, v in _family_components(name).items()}
    extra: dict[str, Any] = {}
    if name == "tiny-sd2-v":
        extra = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    elif name == "tiny-sdxl":
        extra = {"force_zeros_for_empty_prompt": True, "add_watermarker": False}  # as SDXL base ships
    pipe = getattr(diffusers, _PIPELINES[name])(**parts, **extra)
    pipe.set_progress_bar_config(disable=True)
    return pipe


_PIPELINES = {"tiny-sd2-v": "StableDiffusionPipeline", "tiny-sdxl": "StableDiffusionXLPipeline",
              "tiny-sd3": "StableDiffusion3Pipeline", "tiny-flux": "FluxPipeline",
              "tiny-flux-schnell": "FluxPipeline"}


@cache
def _family_components(name: str) -> dict[str, Any]:
    """The seeded parts of a tiny family model (each its own seed), built once per process."""
    import torch

    builders = {"tiny-sd2-v": _sd2_v, "tiny-sdxl": _sdxl, "tiny-sd3": _sd3, "tiny-flux": lambda: _flux(True),
                "tiny-flux-schnell": lambda: _flux(False)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(list(builders).index(name) + 1)
        parts = builders[name]()
    denoiser = parts.get("unet") or parts["transformer"]
    if "unet" in parts:
        _smooth_in_time(denoiser.time_embedding.linear_1, denoiser.time_proj)
    else:
        embedding = denoiser.time_text_embed
        _smooth_in_time(embedding.timestep_embedder.linear_1, embedding.time_proj)
    return parts


def _smooth_in_time(linear: Any, projection: Any, timesteps: int = 1000) -> None:
    """Make a random denoiser's output vary smoothly with the timestep, as a trained one's does: zero the weights
    that read the sinusoids of the timestep embedding faster than half a period over the whole schedule.

    With random weights every frequency counts alike, and the fastest sinusoids turn about 160 times between
    t = 0 and 1000: no solver then shows its order at usable step counts (flow Heun on tiny-sd3 fitted -0.7, as
    Euler's -1.0; with this, -2.1), and the convergence tests could not tell a second-order sampler from a
    first-order one."""
    import math

    import torch

    half = projection.num_channels // 2
    exponent = -math.log(10000) * torch.arange(half, dtype=torch.float64) / (half - projection.downscale_freq_shift)
    fast = torch.exp(exponent) * timesteps > math.pi
    with torch.no_grad():
        linear.weight[:, :half][:, fast] = 0.0  # the sine and the cosine of each fast frequency
        linear.weight[:, half:2 * half][:, fast] = 0.0


def _sd2_v() -> dict[str, Any]:
    """SD 2.x 768-v: OpenCLIP-style text encoder (gelu), linear projections, per-block head dims, upcast attention."""
    from diffusers import DDIMScheduler, UNet2DConditionModel

    tokenizer = byte_tokenizer(pad_token="!")
    unet: Any = UNet2DConditionModel(
        sample_size=96, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=(2, 4), use_linear_projection=True, upcast_attention=True,
        norm_num_groups=8,
    )
    return {"unet": unet.eval(), "vae": _vae(), "text_encoder": _clip(tokenizer, 32, act="gelu"),
            "tokenizer": tokenizer, "scheduler": DDIMScheduler.from_config(SD2_V_SCHEDULER)}


def _sdxl() -> dict[str, Any]:
    """SDXL base: CLIP-L and OpenCLIP-G (with projection: the pooled text), text_time added embedding."""
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel

    tokenizer, tokenizer_2 = byte_tokenizer(), byte_tokenizer(pad_token="!")
    # The two encoders' widths must differ, as the real ones do (768, 1280): diffusers' single-file loader picks
    # each one's converter by comparing position-embedding widths.
    unet: Any = UNet2DConditionModel(
        sample_size=128, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32 + 48, attention_head_dim=(2, 4), use_linear_projection=True,
        transformer_layers_per_block=(1, 1), addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 48, norm_num_groups=8,
    )
    return {"unet": unet.eval(), "vae": _vae(scaling_factor=0.13025), "text_encoder": _clip(tokenizer, 32),
            "tokenizer": tokenizer, "tokenizer_2": tokenizer_2,
            "text_encoder_2": _clip(tokenizer_2, 48, projection=True, act="gelu"),
            "scheduler": EulerDiscreteScheduler.from_config(SDXL_SCHEDULER)}


def _sd3() -> dict[str, Any]:
    """SD3: MMDiT (patch 2, 16 latent channels), CLIP-L with an identity projection (as SD3 ships it), CLIP-G, T5."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

    tokenizer, tokenizer_2, tokenizer_3 = byte_tokenizer(), byte_tokenizer(pad_token="!"), t5_tokenizer()
    clip_l = _clip(tokenizer, 16, projection=True)
    with torch.no_grad():
        clip_l.text_projection.weight.copy_(torch.eye(16))
    transformer: Any = SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=16, out_channels=16, num_layers=2, attention_head_dim=8,
        num_attention_heads=4, joint_attention_dim=64, caption_projection_dim=32, pooled_projection_dim=16 + 32,
        pos_embed_max_size=16,
    )
    return {"transformer": transformer.eval(), "text_encoder": clip_l, "tokenizer": tokenizer,
            "vae": _vae(16, scaling_factor=1.5305, shift_factor=0.0609, quant_conv=False),
            "text_encoder_2": _clip(tokenizer_2, 32, projection=True, act="gelu"), "tokenizer_2": tokenizer_2,
            "text_encoder_3": _t5(tokenizer_3, 64), "tokenizer_3": tokenizer_3,
            "scheduler": FlowMatchEulerDiscreteScheduler.from_config(SD3_SCHEDULER)}


def _flux(dev: bool) -> dict[str, Any]:
    """FLUX.1: packed 2x2 latents (in_channels 16 x 4), CLIP-L pooled + T5; dev with a guidance embedding."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    tokenizer, tokenizer_2 = byte_tokenizer(), t5_tokenizer()
    transformer: Any = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=dev,
        axes_dims_rope=(4, 6, 6),
    )
    config = FLUX_DEV_SCHEDULER if dev else FLUX_SCHNELL_SCHEDULER
    return {"transformer": transformer.eval(), "text_encoder": _clip(tokenizer, 32), "tokenizer": tokenizer,
            "text_encoder_2": _t5(tokenizer_2, 32), "tokenizer_2": tokenizer_2,
            "vae": _vae(16, scaling_factor=0.3611, shift_factor=0.1159, quant_conv=False),
            "scheduler": FlowMatchEulerDiscreteScheduler.from_config(config)}


def _clip(tokenizer: Any, hidden: int, projection: bool = False, act: str = "quick_gelu") -> Any:
    """A 2-layer CLIP text encoder `hidden` wide; with `projection`, the kind that also gives a pooled output."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=37, num_attention_heads=4,
        num_hidden_layers=2, max_position_embeddings=77, projection_dim=hidden, hidden_act=act,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return (CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)).eval()


def _t5(tokenizer: Any, width: int) -> Any:
    """A 1-layer T5 encoder, gated GELU as T5 v1.1 (the T5-XXL the real models use)."""
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(
        vocab_size=len(tokenizer), d_model=width, d_kv=8, d_ff=37, num_layers=1, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=16, feed_forward_proj="gated-gelu",
        pad_token_id=0, eos_token_id=1,
    )).eval()


def _vae(channels: int = 4, scaling_factor: float = 0.18215, shift_factor: float | None = None,
         quant_conv: bool = True) -> Any:
    """A 4-block VAE (8x down) with the family's latent channels and scaling (and shift) factors; SD3 and FLUX.1
    have no quant convs."""
    from diffusers import AutoencoderKL

    vae: Any = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=channels, layers_per_block=1,
        block_out_channels=(8, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=8, sample_size=64, scaling_factor=scaling_factor,
        use_quant_conv=quant_conv, use_post_quant_conv=quant_conv, force_upcast=True,
        **({} if shift_factor is None else {"shift_factor": shift_factor}),
    )
    return vae.eval()
