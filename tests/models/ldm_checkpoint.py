"""Write a diffusers Stable Diffusion 1.x pipeline as one original (LDM/CompVis layout) checkpoint.

Tests need a real single-file checkpoint of the tiny model, and diffusers' `from_single_file` reads only
the original layout. The key layout follows diffusers' scripts/convert_diffusers_to_original_stable_diffusion.py
(Apache-2.0, (c) The HuggingFace Team), which hard-codes SD 1.x's four blocks of two layers; this is a
rewrite for any `layers_per_block` and block count, the exact inverse of diffusers' own
`convert_ldm_unet_checkpoint` / `convert_ldm_vae_checkpoint` / `convert_ldm_clip_checkpoint`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

# Resnet sub-layer names: diffusers -> LDM.
_UNET_RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
                ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection")]
_UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
_VAE_ATTENTION = [("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."),
                  ("to_out.0.", "proj_out.")]


def unet_to_ldm(state: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Rename a diffusers UNet2DConditionModel state dict to the LDM `model.diffusion_model.` layout."""
    per = config["layers_per_block"]
    attention_up = ["CrossAttn" in t for t in config["up_block_types"]]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        module, _, leaf = key.rpartition(".")
        if module in _UNET_TOP:
            new = f"{_UNET_TOP[module]}.{leaf}"
        elif parts[0] == "down_blocks":
            block, kind = int(parts[1]), parts[2]
            if kind == "downsamplers":  # down_blocks.b.downsamplers.0.conv.X -> input_blocks.i.0.op.X
                new = f"input_blocks.{1 + block * (per + 1) + per}.0.op." + ".".join(parts[5:])
            else:
                index = 1 + block * (per + 1) + int(parts[3])
                new = f"input_blocks.{index}.{0 if kind == 'resnets' else 1}." + ".".join(parts[4:])
                new = _resnet(new) if kind == "resnets" else new
        elif parts[0] == "up_blocks":
            block, kind = int(parts[1]), parts[2]
            if kind == "upsamplers":  # after the block's attention, if it has one
                slot = 2 if attention_up[block] else 1
                new = f"output_blocks.{block * (per + 1) + per}.{slot}." + ".".join(parts[4:])
            else:
                index = block * (per + 1) + int(parts[3])
                new = f"output_blocks.{index}.{0 if kind == 'resnets' else 1}." + ".".join(parts[4:])
                new = _resnet(new) if kind == "resnets" else new
        elif parts[0] == "mid_block":
            slot = 1 if parts[1] == "attentions" else 2 * int(parts[2])
            new = f"middle_block.{slot}." + ".".join(parts[3:])
            new = _resnet(new) if parts[1] == "resnets" else new
        else:
            raise KeyError(f"no LDM name for UNet key {key}")
        out["model.diffusion_model." + new] = value
    return out


def vae_to_ldm(state: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Rename a diffusers AutoencoderKL state dict to the LDM `first_stage_model.` layout."""
    blocks = len(config["up_block_types"])
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = key.replace("conv_norm_out", "norm_out")
        parts = new.split(".")
        if parts[1] == "down_blocks":
            if parts[3] == "downsamplers":
                new = f"{parts[0]}.down.{parts[2]}.downsample." + ".".join(parts[5:])
            else:
                new = f"{parts[0]}.down.{parts[2]}.block.{parts[4]}." + ".".join(parts[5:])
        elif parts[1] == "up_blocks":
            ldm_block = blocks - 1 - int(parts[2])  # LDM numbers the decoder's blocks the other way round
            if parts[3] == "upsamplers":
                new = f"{parts[0]}.up.{ldm_block}.upsample." + ".".join(parts[5:])
            else:
                new = f"{parts[0]}.up.{ldm_block}.block.{parts[4]}." + ".".join(parts[5:])
        elif parts[1] == "mid_block" and parts[2] == "resnets":
            new = f"{parts[0]}.mid.block_{int(parts[3]) + 1}." + ".".join(parts[4:])
        elif parts[1] == "mid_block" and parts[2] == "attentions":
            rest = ".".join(parts[4:])
            for old, ldm in _VAE_ATTENTION:
                if rest.startswith(old):
                    rest = ldm + rest[len(old):]
            new = f"{parts[0]}.mid.attn_1.{rest}"
            if value.ndim == 2:  # LDM's attention projections are 1x1 convolutions
                value = value.reshape(*value.shape, 1, 1)
        new = new.replace("conv_shortcut", "nin_shortcut")
        out["first_stage_model." + new] = value
    return out


def text_encoder_to_ldm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Prefix a transformers CLIPTextModel state dict as the LDM `cond_stage_model.transformer.` layout."""
    # transformers >= 5.6 flattened CLIPTextModel (no `text_model.` level); the LDM layout keeps it.
    return {"cond_stage_model.transformer." + (k if k.startswith("text_model.") else "text_model." + k): v
            for k, v in state.items()}


def pipeline_to_ldm(pipe: Any) -> dict[str, torch.Tensor]:
    """The whole pipeline's weights as one LDM-layout state dict."""
    return {**unet_to_ldm(pipe.unet.state_dict(), dict(pipe.unet.config)),
            **vae_to_ldm(pipe.vae.state_dict(), dict(pipe.vae.config)),
            **text_encoder_to_ldm(pipe.text_encoder.state_dict())}


def save_checkpoint(pipe: Any, path: Path) -> Path:
    """Write `pipe` as `.safetensors` or, for `.ckpt`, as torch.save({"state_dict": ...})."""
    state = {k: v.detach().contiguous().clone() for k, v in pipeline_to_ldm(pipe).items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)
    return path


def _resnet(key: str) -> str:
    for diffusers_name, ldm_name in _UNET_RESNET:
        key = key.replace(f".{diffusers_name}.", f".{ldm_name}.")
    return key
