"""The `tiny` model: a seeded Stable Diffusion 1.x pipeline built from configs in code, for tests."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from reportgen.models.sources import SD1_SCHEDULER


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
    import copy

    from diffusers import StableDiffusionPipeline

    parts = tiny_components()
    return StableDiffusionPipeline(
        vae=copy.deepcopy(parts["vae"]), text_encoder=copy.deepcopy(parts["text_encoder"]),
        unet=copy.deepcopy(parts["unet"]), tokenizer=parts["tokenizer"], scheduler=copy.deepcopy(parts["scheduler"]),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )



def byte_tokenizer(words: tuple[str, ...] = ()) -> Any:
    """A CLIP tokenizer whose vocabulary is generated: the 256 byte symbols, their end-of-word forms,
    optional whole `words`, and the two special tokens. Any text tokenizes; no file is needed."""
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
    return CLIPTokenizer(vocab=vocab, merges=unique_merges, model_max_length=77)
