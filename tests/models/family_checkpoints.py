"""Write a tiny pipeline of any family as ONE checkpoint in its original (non-diffusers) key layout, as the common
single-file releases pack it, so that diffusers' own `from_single_file` can be tested on it.

The writers invert diffusers 0.42.1's converters in loaders/single_file_utils.py (each checked by a round trip
through them when it was written): UNet `convert_ldm_unet_checkpoint` (model.diffusion_model.), VAE
`convert_ldm_vae_checkpoint` (first_stage_model.), CLIP `convert_ldm_clip_checkpoint` (HF layout under a prefix),
OpenCLIP `convert_open_clip_checkpoint` (SD 2.x cond_stage_model.model., SDXL conditioner.embedders.1.model.),
MMDiT `convert_sd3_transformer_checkpoint_to_diffusers`, T5 `convert_sd3_t5_checkpoint_to_diffusers`, FLUX.1
`convert_flux_transformer_checkpoint_to_diffusers` (Black Forest Labs' layout: the transformer alone).
SD 1.x's writer is ldm_checkpoint.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

_RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"), ("conv2", "out_layers.3"),
           ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection")]


def unet_to_ldm(sd: dict[str, torch.Tensor], config: Any, prefix: str = "model.diffusion_model.") -> dict:
    """diffusers UNet2DConditionModel state dict -> LDM/SGM layout (SD 1.x/2.x/XL)."""
    per = config["layers_per_block"] + 1
    out: dict[str, torch.Tensor] = {}
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}
    up_has_attn = {i: "CrossAttn" in t for i, t in enumerate(config["up_block_types"])}
    for key, value in sd.items():
        head, _, leaf = key.rpartition(".")
        if head in fixed:
            new = f"{fixed[head]}.{leaf}"
        elif m := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            b, layer, rest = int(m[1]), int(m[2]), m[3]
            for a, o in _RESNET:
                rest = rest.replace(a, o)
            new = f"input_blocks.{1 + b * per + layer}.0.{rest}"
        elif m := re.match(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", key):
            new = f"input_blocks.{1 + int(m[1]) * per + int(m[2])}.1.{m[3]}"
        elif m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
            new = f"input_blocks.{1 + int(m[1]) * per + per - 1}.0.op.{m[2]}"
        elif m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key):
            rest = m[2]
            for a, o in _RESNET:
                rest = rest.replace(a, o)
            new = f"middle_block.{2 * int(m[1])}.{rest}"
        elif m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
            new = f"middle_block.1.{m[1]}"
        elif m := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            rest = m[3]
            for a, o in _RESNET:
                rest = rest.replace(a, o)
            new = f"output_blocks.{int(m[1]) * per + int(m[2])}.0.{rest}"
        elif m := re.match(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", key):
            new = f"output_blocks.{int(m[1]) * per + int(m[2])}.1.{m[3]}"
        elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
            b = int(m[1])
            new = f"output_blocks.{b * per + per - 1}.{2 if up_has_attn[b] else 1}.conv.{m[2]}"
        else:
            raise KeyError(f"unet key not mapped: {key}")
        out[prefix + new] = value
    return out


def vae_to_ldm(sd: dict[str, torch.Tensor], config: Any, prefix: str = "first_stage_model.") -> dict:
    n_up = len(config["up_block_types"])
    out: dict[str, torch.Tensor] = {}
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    for key, value in sd.items():
        new = key
        if m := re.match(r"(encoder|decoder)\.conv_norm_out\.(.*)", key):
            new = f"{m[1]}.norm_out.{m[2]}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            new = f"encoder.down.{m[1]}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
            new = f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            new = f"decoder.up.{n_up - 1 - int(m[1])}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
            new = f"decoder.up.{n_up - 1 - int(m[1])}.upsample.conv.{m[2]}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", key):
            new = f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)\.(weight|bias)", key):
            new = f"{m[1]}.mid.attn_1.{attn[m[2]]}.{m[3]}"
            if m[3] == "weight" and m[2] != "group_norm":
                value = value[:, :, None, None]  # LDM stores the attention projections as 1x1 convs
        out[prefix + new] = value
    return out


def clip_hf(sd: dict[str, torch.Tensor], prefix: str) -> dict:
    """HF CLIP keys under `prefix`, with the text_model. level that transformers <5.6 has (diffusers strips
    it again for the flattened CLIPTextModel of transformers 5.x)."""
    out = {}
    for key, value in sd.items():
        if key.startswith(("text_model.", "text_projection")):
            out[prefix + key] = value
        else:
            out[prefix + "text_model." + key] = value
    return out


def clip_to_openclip(sd: dict[str, torch.Tensor], prefix: str) -> dict:
    """HF CLIPTextModel(WithProjection) -> OpenCLIP text tower (SD 2.x / SDXL's second encoder)."""
    sd = {k.removeprefix("text_model."): v for k, v in sd.items()}
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        if key == "embeddings.position_embedding.weight":
            out[prefix + "positional_embedding"] = value
        elif key == "embeddings.token_embedding.weight":
            out[prefix + "token_embedding.weight"] = value
        elif key.startswith("final_layer_norm."):
            out[prefix + "ln_final." + key.split(".")[-1]] = value
        elif key == "text_projection.weight":
            out[prefix + "text_projection"] = value.T.contiguous()
        elif m := re.match(r"encoder\.layers\.(\d+)\.self_attn\.(q|k|v)_proj\.(weight|bias)", key):
            qkv.setdefault(f"{m[1]}.{m[3]}", {})[m[2]] = value
        elif m := re.match(r"encoder\.layers\.(\d+)\.(.*)", key):
            rest = (m[2].replace("layer_norm1", "ln_1").replace("layer_norm2", "ln_2")
                    .replace("mlp.fc1", "mlp.c_fc").replace("mlp.fc2", "mlp.c_proj")
                    .replace("self_attn.out_proj", "attn.out_proj"))
            out[f"{prefix}transformer.resblocks.{m[1]}.{rest}"] = value
        elif key == "embeddings.position_ids":
            continue
        else:
            raise KeyError(f"clip key not mapped: {key}")
    for name, parts in qkv.items():
        layer, kind = name.split(".")
        out[f"{prefix}transformer.resblocks.{layer}.attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"],
                                                                                       parts["v"]])
    return out


def _swap(weight: torch.Tensor) -> torch.Tensor:
    a, b = weight.chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


def sd3_to_original(sd: dict[str, torch.Tensor], config: Any, prefix: str = "model.diffusion_model.") -> dict:
    """diffusers SD3Transformer2DModel -> the MMDiT layout of sd3_medium.safetensors."""
    n = config["num_layers"]
    o: dict[str, torch.Tensor] = {}
    o["pos_embed"] = sd["pos_embed.pos_embed"]
    for a, b in [("pos_embed.proj", "x_embedder.proj"),
                 ("time_text_embed.timestep_embedder.linear_1", "t_embedder.mlp.0"),
                 ("time_text_embed.timestep_embedder.linear_2", "t_embedder.mlp.2"),
                 ("time_text_embed.text_embedder.linear_1", "y_embedder.mlp.0"),
                 ("time_text_embed.text_embedder.linear_2", "y_embedder.mlp.2"),
                 ("context_embedder", "context_embedder"), ("proj_out", "final_layer.linear")]:
        for leaf in ("weight", "bias"):
            o[f"{b}.{leaf}"] = sd[f"{a}.{leaf}"]
    for leaf in ("weight", "bias"):
        o[f"final_layer.adaLN_modulation.1.{leaf}"] = _swap(sd[f"norm_out.linear.{leaf}"])
    for i in range(n):
        d, j = f"transformer_blocks.{i}.", f"joint_blocks.{i}."
        last = i == n - 1
        for leaf in ("weight", "bias"):
            o[f"{j}x_block.attn.qkv.{leaf}"] = torch.cat([sd[f"{d}attn.to_{x}.{leaf}"] for x in "qkv"])
            o[f"{j}context_block.attn.qkv.{leaf}"] = torch.cat([sd[f"{d}attn.add_{x}_proj.{leaf}"] for x in "qkv"])
            o[f"{j}x_block.attn.proj.{leaf}"] = sd[f"{d}attn.to_out.0.{leaf}"]
            o[f"{j}x_block.adaLN_modulation.1.{leaf}"] = sd[f"{d}norm1.linear.{leaf}"]
            ctx = sd[f"{d}norm1_context.linear.{leaf}"]
            o[f"{j}context_block.adaLN_modulation.1.{leaf}"] = _swap(ctx) if last else ctx
            o[f"{j}x_block.mlp.fc1.{leaf}"] = sd[f"{d}ff.net.0.proj.{leaf}"]
            o[f"{j}x_block.mlp.fc2.{leaf}"] = sd[f"{d}ff.net.2.{leaf}"]
            if not last:
                o[f"{j}context_block.attn.proj.{leaf}"] = sd[f"{d}attn.to_add_out.{leaf}"]
                o[f"{j}context_block.mlp.fc1.{leaf}"] = sd[f"{d}ff_context.net.0.proj.{leaf}"]
                o[f"{j}context_block.mlp.fc2.{leaf}"] = sd[f"{d}ff_context.net.2.{leaf}"]
        if f"{d}attn.norm_q.weight" in sd:  # SD3.5: qk RMSNorm
            o[f"{j}x_block.attn.ln_q.weight"] = sd[f"{d}attn.norm_q.weight"]
            o[f"{j}x_block.attn.ln_k.weight"] = sd[f"{d}attn.norm_k.weight"]
            o[f"{j}context_block.attn.ln_q.weight"] = sd[f"{d}attn.norm_added_q.weight"]
            o[f"{j}context_block.attn.ln_k.weight"] = sd[f"{d}attn.norm_added_k.weight"]
    return {prefix + k: v for k, v in o.items()}


def flux_to_original(sd: dict[str, torch.Tensor], config: Any) -> dict:
    """diffusers FluxTransformer2DModel -> the BFL layout of flux1-dev.safetensors (no prefix)."""
    o: dict[str, torch.Tensor] = {}
    simple = [("time_text_embed.timestep_embedder.linear_1", "time_in.in_layer"),
              ("time_text_embed.timestep_embedder.linear_2", "time_in.out_layer"),
              ("time_text_embed.text_embedder.linear_1", "vector_in.in_layer"),
              ("time_text_embed.text_embedder.linear_2", "vector_in.out_layer"),
              ("time_text_embed.guidance_embedder.linear_1", "guidance_in.in_layer"),
              ("time_text_embed.guidance_embedder.linear_2", "guidance_in.out_layer"),
              ("context_embedder", "txt_in"), ("x_embedder", "img_in"), ("proj_out", "final_layer.linear")]
    for a, b in simple:
        for leaf in ("weight", "bias"):
            if f"{a}.{leaf}" in sd:
                o[f"{b}.{leaf}"] = sd[f"{a}.{leaf}"]
    for leaf in ("weight", "bias"):
        o[f"final_layer.adaLN_modulation.1.{leaf}"] = _swap(sd[f"norm_out.linear.{leaf}"])
    for i in range(config["num_layers"]):
        d, j = f"transformer_blocks.{i}.", f"double_blocks.{i}."
        for leaf in ("weight", "bias"):
            o[f"{j}img_mod.lin.{leaf}"] = sd[f"{d}norm1.linear.{leaf}"]
            o[f"{j}txt_mod.lin.{leaf}"] = sd[f"{d}norm1_context.linear.{leaf}"]
            o[f"{j}img_attn.qkv.{leaf}"] = torch.cat([sd[f"{d}attn.to_{x}.{leaf}"] for x in "qkv"])
            o[f"{j}txt_attn.qkv.{leaf}"] = torch.cat([sd[f"{d}attn.add_{x}_proj.{leaf}"] for x in "qkv"])
            o[f"{j}img_mlp.0.{leaf}"] = sd[f"{d}ff.net.0.proj.{leaf}"]
            o[f"{j}img_mlp.2.{leaf}"] = sd[f"{d}ff.net.2.{leaf}"]
            o[f"{j}txt_mlp.0.{leaf}"] = sd[f"{d}ff_context.net.0.proj.{leaf}"]
            o[f"{j}txt_mlp.2.{leaf}"] = sd[f"{d}ff_context.net.2.{leaf}"]
            o[f"{j}img_attn.proj.{leaf}"] = sd[f"{d}attn.to_out.0.{leaf}"]
            o[f"{j}txt_attn.proj.{leaf}"] = sd[f"{d}attn.to_add_out.{leaf}"]
        o[f"{j}img_attn.norm.query_norm.scale"] = sd[f"{d}attn.norm_q.weight"]
        o[f"{j}img_attn.norm.key_norm.scale"] = sd[f"{d}attn.norm_k.weight"]
        o[f"{j}txt_attn.norm.query_norm.scale"] = sd[f"{d}attn.norm_added_q.weight"]
        o[f"{j}txt_attn.norm.key_norm.scale"] = sd[f"{d}attn.norm_added_k.weight"]
    for i in range(config["num_single_layers"]):
        d, j = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
        for leaf in ("weight", "bias"):
            o[f"{j}modulation.lin.{leaf}"] = sd[f"{d}norm.linear.{leaf}"]
            o[f"{j}linear1.{leaf}"] = torch.cat([sd[f"{d}attn.to_{x}.{leaf}"] for x in "qkv"]
                                                + [sd[f"{d}proj_mlp.{leaf}"]])
            o[f"{j}linear2.{leaf}"] = sd[f"{d}proj_out.{leaf}"]
        o[f"{j}norm.query_norm.scale"] = sd[f"{d}attn.norm_q.weight"]
        o[f"{j}norm.key_norm.scale"] = sd[f"{d}attn.norm_k.weight"]
    return o


def pipeline_to_checkpoint(pipe: Any, family: str, include_t5: bool = True) -> dict[str, torch.Tensor]:
    """The whole pipeline as one original-layout state dict, as the common single-file releases pack it."""
    sd: dict[str, torch.Tensor] = {}
    if family == "flux":  # as Black Forest Labs ship it: the transformer alone
        sd = flux_to_original(pipe.transformer.state_dict(), pipe.transformer.config)
        return {k: v.detach().contiguous().clone() for k, v in sd.items()}
    sd.update(vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config))
    if family == "sd":
        sd.update(unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config))
        sd.update(clip_to_openclip(pipe.text_encoder.state_dict(), "cond_stage_model.model."))
    elif family == "sdxl":
        sd.update(unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config))
        sd.update(clip_hf(pipe.text_encoder.state_dict(), "conditioner.embedders.0.transformer."))
        sd.update(clip_to_openclip(pipe.text_encoder_2.state_dict(), "conditioner.embedders.1.model."))
    elif family == "sd3":
        sd.update(sd3_to_original(pipe.transformer.state_dict(), pipe.transformer.config))
        sd.update(clip_hf(pipe.text_encoder.state_dict(), "text_encoders.clip_l.transformer."))
        sd.update(clip_hf(pipe.text_encoder_2.state_dict(), "text_encoders.clip_g.transformer."))
        if include_t5:
            sd.update({"text_encoders.t5xxl.transformer." + k: v for k, v in pipe.text_encoder_3.state_dict().items()})
    else:
        raise ValueError(family)
    return {k: v.detach().contiguous().clone() for k, v in sd.items()}


def save_family_checkpoint(pipe: Any, family: str, path: Path, include_t5: bool = True) -> Path:
    """Write `pipe` (of family sd with an OpenCLIP text encoder, as SD 2.x, sdxl, sd3 or flux) as one
    .safetensors file; SD3 optionally without its T5, as sd3_medium_incl_clips ships."""
    from safetensors.torch import save_file

    save_file(pipeline_to_checkpoint(pipe, family, include_t5), str(path))
    return path


def flux_converter_reading_widths(checkpoint: dict[str, torch.Tensor], **kwargs: Any) -> dict[str, torch.Tensor]:
    """diffusers' convert_flux_transformer_checkpoint_to_diffusers with its two hard-coded FLUX.1 sizes
    (inner_dim = 3072, mlp_ratio = 4.0) read from the checkpoint instead (img_in.weight, img_mlp.0.weight), so that
    a tiny FLUX.1 file converts; everything else is diffusers' own code. Test use only."""
    import inspect
    import textwrap

    from diffusers.loaders import single_file_utils as sfu

    src = textwrap.dedent(inspect.getsource(sfu.convert_flux_transformer_checkpoint_to_diffusers))
    assert "    inner_dim = 3072\n" in src and "    mlp_ratio = 4.0\n" in src
    src = src.replace("    mlp_ratio = 4.0\n", "    mlp_ratio = checkpoint['double_blocks.0.img_mlp.0.weight'].shape[0]"
                      " / checkpoint['img_in.weight'].shape[0]\n")
    src = src.replace("    inner_dim = 3072\n", "    inner_dim = checkpoint['img_in.weight'].shape[0]\n")
    namespace = dict(vars(sfu))
    exec(compile(src, "<patched flux converter>", "exec"), namespace)  # noqa: S102
    return namespace["convert_flux_transformer_checkpoint_to_diffusers"](dict(checkpoint), **kwargs)
