"""Flux's architecture as numbers for the memory plan (torch-free): every Linear of diffusers'
``FluxTransformer2DModel`` by its module name, and what each block keeps for backward per token.

Published widths are the FLUX.1 transformer config (19 dual-stream + 38 single-stream blocks, 24 heads × 128,
T5 context 4096, pooled CLIP 768); schnell has no guidance embedder. The frozen encoders are T5 v1.1 XXL's
encoder, CLIP ViT-L/14's text model and the 16-channel VAE. The tiny flavours use :mod:`simpletuner_flux.tiny`'s
own constants, so the plan and the built model cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from simpletuner_core.memory.arch import (
    Architecture,
    Component,
    Linear,
    Saved,
    autoencoder_kl_params,
    clip_text_params,
    t5_encoder_params,
)
from simpletuner_flux.lora_targets import LYCORIS_PRESETS, preset_targets

#: FLUX.1 [dev] transformer config (diffusers' FluxTransformer2DModel arguments).
DEV = {"patch_size": 1, "in_channels": 64, "out_channels": None, "num_layers": 19, "num_single_layers": 38,
       "attention_head_dim": 128, "num_attention_heads": 24, "joint_attention_dim": 4096,
       "pooled_projection_dim": 768, "guidance_embeds": True, "axes_dims_rope": (16, 56, 56)}
SCHNELL = {**DEV, "guidance_embeds": False}
T5_XXL = {"vocab": 32128, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "layers": 24, "heads": 64, "buckets": 32}
CLIP_L = {"vocab": 49408, "hidden": 768, "intermediate": 3072, "layers": 12}
VAE = {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "latent_channels": 16,
       "quant_conv": False}
PUBLISHED = {"dev": DEV, "krea": DEV, "kontext": DEV, "schnell": SCHNELL}
QUANTIZE_EXCLUDE = ("proj_out", "x_embedder", "context_embedder", "norm_out*", "time_text_embed*")


def _configs(flavour: str) -> tuple[dict[str, Any], dict[str, int], dict[str, int], dict[str, Any], int]:
    if flavour in PUBLISHED:
        return PUBLISHED[flavour], T5_XXL, CLIP_L, VAE, 512
    from simpletuner_flux import tiny

    return (tiny.TRANSFORMER, tiny.t5_config(), tiny.clip_config(), tiny.vae_config(), tiny.T5_MAX_LENGTH)


def _attention(prefix: str, block: int, owner: str, h: int, inner: int, stream: str, added: bool,
               out: bool) -> list[Linear]:
    lin = [Linear(f"{prefix}.attn.to_{x}", h, inner, stream=stream, group="attn_in", block=block, owner=owner)
           for x in "qkv"]
    if out:
        lin.append(Linear(f"{prefix}.attn.to_out.0", inner, h, stream=stream, group="attn_out", block=block,
                          owner=owner, free_input=True))
    if added:
        lin += [Linear(f"{prefix}.attn.add_{x}_proj", h, inner, stream="text", group="add_in", block=block,
                       owner=owner) for x in "qkv"]
        lin.append(Linear(f"{prefix}.attn.to_add_out", inner, h, stream="text", group="add_out", block=block,
                          owner=owner, free_input=True))
    return lin


def _norm_saved(stream: str, h: int, block: int) -> list[Saved]:
    """A LayerNorm without affine weights: its input and the per-token mean and rstd (kept in fp32)."""
    return [Saved(stream, h, "grad", block, fp32=True, what="layernorm input"),
            Saved(stream, 2, "grad", block, fp32=True, what="layernorm stats")]


def _qk_saved(stream: str, h: int, heads: int, block: int) -> list[Saved]:
    """RMSNorm on q and k: the upcast input and rstd per head; the normalised value when its weight trains."""
    out = []
    for _ in range(2):
        out += [Saved(stream, h, "grad", block, fp32=True, what="rmsnorm input"),
                Saved(stream, heads, "grad", block, fp32=True, what="rmsnorm rstd"),
                Saved(stream, h, "full", block, what="rmsnorm output")]
    return out


def _sdpa_saved(h: int, heads: int, block: int) -> list[Saved]:
    """Fused attention keeps q, k, v, its output and the log-sum-exp (no sequence² matrix)."""
    return [Saved("joint", 4 * h, "grad", block, what="attention q, k, v, out"),
            Saved("joint", heads, "grad", block, fp32=True, what="attention logsumexp")]


def architecture(flavour: str, config: Any = None) -> Architecture:
    return from_configs(*_configs(flavour), name=f"flux {flavour}", config=config)


def from_configs(tc: dict[str, Any], t5: dict[str, int], clip: dict[str, int], vae: dict[str, Any],
                 text_tokens: int, name: str = "flux", config: Any = None) -> Architecture:
    """The architecture of any ``FluxTransformer2DModel`` config (the benchmark and GPU tests use other widths)."""
    heads, head_dim = tc["num_attention_heads"], tc["attention_head_dim"]
    h = heads * head_dim
    mlp = 4 * h
    out_ch = (tc["out_channels"] or tc["in_channels"]) * tc["patch_size"] ** 2
    lin: list[Linear] = [Linear("x_embedder", tc["in_channels"], h, group="x"),
                         Linear("context_embedder", tc["joint_attention_dim"], h, stream="text", group="ctx")]
    embedders = ["timestep_embedder", *(["guidance_embedder"] if tc["guidance_embeds"] else [])]
    for name in embedders:
        lin += [Linear(f"time_text_embed.{name}.linear_1", 256, h, stream="sample", group=f"{name}1"),
                Linear(f"time_text_embed.{name}.linear_2", h, h, stream="sample", group=f"{name}2")]
    lin += [Linear("time_text_embed.text_embedder.linear_1", tc["pooled_projection_dim"], h, stream="sample",
                   group="pooled"),
            Linear("time_text_embed.text_embedder.linear_2", h, h, stream="sample", group="pooled2")]
    saved: list[Saved] = []
    others: dict[str, int] = {}
    owners: list[str] = []
    double, single = tc["num_layers"], tc["num_single_layers"]
    for i in range(double):
        p, owner = f"transformer_blocks.{i}", "FluxTransformerBlock"
        owners.append(owner)
        lin += [Linear(f"{p}.norm1.linear", h, 6 * h, stream="sample", group="temb", block=i, owner=owner),
                Linear(f"{p}.norm1_context.linear", h, 6 * h, stream="sample", group="temb_c", block=i,
                       owner=owner)]
        lin += _attention(p, i, owner, h, h, "image", added=True, out=True)
        for ff, stream in (("ff", "image"), ("ff_context", "text")):
            lin += [Linear(f"{p}.{ff}.net.0.proj", h, mlp, stream=stream, group=f"{ff}_in", block=i, owner=owner),
                    Linear(f"{p}.{ff}.net.2", mlp, h, stream=stream, group=f"{ff}_out", block=i, owner=owner)]
        others.update({f"{p}.attn.{n}.weight": head_dim for n in ("norm_q", "norm_k", "norm_added_q",
                                                                    "norm_added_k")})
        for stream in ("image", "text"):
            saved += [Saved(stream, h, "input", i, fp32=True, what="norm1 input"),
                      Saved(stream, 2, "input", i, fp32=True, what="norm1 stats"),
                      Saved(stream, h, "full", i, what="norm1 output"),
                      *_qk_saved(stream, h, heads, i),
                      Saved(stream, h, "full", i, what="attention output under the gate"),
                      *_norm_saved(stream, h, i),
                      Saved(stream, h, "full", i, what="norm2 output"),
                      Saved(stream, mlp, "grad", i, what="gelu input"),
                      Saved(stream, h, "full", i, what="feed-forward output under the gate")]
        saved += _sdpa_saved(h, heads, i)
    for j in range(single):
        i, p, owner = double + j, f"single_transformer_blocks.{j}", "FluxSingleTransformerBlock"
        owners.append(owner)
        lin.append(Linear(f"{p}.norm.linear", h, 3 * h, stream="sample", group="temb", block=i, owner=owner))
        lin += _attention(p, i, owner, h, h, "joint", added=False, out=False)
        lin += [Linear(f"{p}.proj_mlp", h, mlp, stream="joint", group="attn_in", block=i, owner=owner),
                Linear(f"{p}.proj_out", h + mlp, h, stream="joint", group="cat", block=i, owner=owner)]
        others.update({f"{p}.attn.{n}.weight": head_dim for n in ("norm_q", "norm_k")})
        saved += [Saved("joint", h, "input", i, fp32=True, what="norm input"),
                  Saved("joint", 2, "input", i, fp32=True, what="norm stats"),
                  Saved("joint", h, "full", i, what="norm output"),
                  Saved("joint", mlp, "grad", i, what="gelu input"),
                  *_qk_saved("joint", h, heads, i), *_sdpa_saved(h, heads, i),
                  Saved("joint", h, "full", i, what="output under the gate")]
    lin += [Linear("norm_out.linear", h, 2 * h, stream="sample", group="temb_out"),
            Linear("proj_out", h, out_ch, group="final")]
    saved += [Saved("joint", 2 * head_dim, "grad", fp32=True, what="rotary cos/sin"),
              Saved("joint", h, "grad", fp32=True, what="norm_out input"),
              Saved("image", 2, "grad", fp32=True, what="norm_out stats"),
              Saved("image", h, "full", what="norm_out output"),
              Saved("target", 2 * out_ch, "grad", fp32=True, what="loss prediction and target")]
    t5_params, t5_wo = t5_encoder_params(t5["vocab"], t5["d_model"], t5["d_kv"], t5["d_ff"], t5["layers"],
                                         t5["heads"], t5["buckets"])
    components = (Component("text_encoder_2 (T5 encoder)", t5_params, t5_wo),
                  Component("text_encoder (CLIP text)", clip_text_params(**clip)),
                  Component("vae", autoencoder_kl_params(vae["block_out_channels"], vae["layers_per_block"],
                                                         vae["latent_channels"], quant_conv=vae["quant_conv"])))
    return Architecture(
        name=name, linears=lin, others=others, saved=saved, blocks=double + single,
        block_owners=owners, block_inputs=(("image", h), ("text", h)), pixels_per_token=16 * tc["patch_size"],
        text_tokens=text_tokens, components=components, model_class="FluxTransformer2DModel",
        quantize_exclude=QUANTIZE_EXCLUDE, hidden=h, heads=heads,
        lora_targets=preset_targets(getattr(config, "flux_lora_target", None) or "all"),
        lycoris_presets=LYCORIS_PRESETS)
