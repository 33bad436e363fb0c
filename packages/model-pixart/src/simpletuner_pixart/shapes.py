"""PixArt Sigma's architecture as numbers for the memory plan (torch-free): every Linear of diffusers'
``PixArtTransformer2DModel`` (``ada_norm_single`` blocks) by module name, and what a block keeps for backward.

Published widths: PixArt-Σ XL/2 (28 blocks, 16 heads × 72, T5 context 4096, 300 tokens, SDXL's 4-channel VAE);
the 900M fine-tune stacks 14 more blocks (42). The tiny flavour reads :mod:`simpletuner_pixart.tiny`'s config.
"""

from __future__ import annotations

from typing import Any

from simpletuner_core.memory.arch import (
    Architecture,
    Component,
    Linear,
    Saved,
    autoencoder_kl_params,
    t5_encoder_params,
)

SIGMA_600M = {"num_attention_heads": 16, "attention_head_dim": 72, "in_channels": 4, "out_channels": 8,
              "num_layers": 28, "cross_attention_dim": 1152, "patch_size": 2, "caption_channels": 4096,
              "use_additional_conditions": False}
SIGMA_900M = {**SIGMA_600M, "num_layers": 42}
T5_XXL = {"vocab": 32128, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "layers": 24, "heads": 64, "buckets": 32}
SDXL_VAE = {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "latent_channels": 4}
PUBLISHED = {"900M-1024-v0.6": SIGMA_900M, "600M-1024": SIGMA_600M, "600M-512": SIGMA_600M}
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
QUANTIZE_EXCLUDE = ("proj_out", "pos_embed*", "caption_projection*", "adaln_single*")


def _configs(flavour: str) -> tuple[dict[str, Any], dict[str, int], dict[str, Any], int]:
    if flavour in PUBLISHED:
        return PUBLISHED[flavour], T5_XXL, SDXL_VAE, 300
    from simpletuner_core.training.tiny_parts import T5_TINY, VAE_TINY, t5_vocab_size
    from simpletuner_pixart import tiny

    return tiny.TRANSFORMER, {"vocab": t5_vocab_size(tiny.WORDS), **T5_TINY}, VAE_TINY, tiny.TEXT_TOKENS


def architecture(flavour: str, config: Any = None) -> Architecture:
    tc, t5, vae, text_tokens = _configs(flavour)
    heads = tc["num_attention_heads"]
    h = heads * tc["attention_head_dim"]
    mlp, patch, cross = 4 * h, tc["patch_size"], tc["cross_attention_dim"]
    lin: list[Linear] = [
        Linear("adaln_single.emb.timestep_embedder.linear_1", 256, h, stream="sample", group="t1"),
        Linear("adaln_single.emb.timestep_embedder.linear_2", h, h, stream="sample", group="t2"),
        Linear("adaln_single.linear", h, 6 * h, stream="sample", group="t3"),
        Linear("caption_projection.linear_1", tc["caption_channels"], h, stream="text", group="cap1"),
        Linear("caption_projection.linear_2", h, h, stream="text", group="cap2"),
    ]
    if tc["use_additional_conditions"]:
        for name in ("resolution_embedder", "aspect_ratio_embedder"):
            lin += [Linear(f"adaln_single.emb.{name}.linear_1", 256, h // 3, stream="sample", group=name),
                    Linear(f"adaln_single.emb.{name}.linear_2", h // 3, h // 3, stream="sample", group=name + "2")]
    others = {"pos_embed.proj.weight": tc["in_channels"] * h * patch * patch, "pos_embed.proj.bias": h,
              "scale_shift_table": 2 * h}
    saved: list[Saved] = []
    owner = "BasicTransformerBlock"
    for i in range(tc["num_layers"]):
        p = f"transformer_blocks.{i}"
        others[f"{p}.scale_shift_table"] = 6 * h
        lin += [Linear(f"{p}.attn1.to_{x}", h, h, group="attn1_in", block=i, owner=owner) for x in "qkv"]
        lin.append(Linear(f"{p}.attn1.to_out.0", h, h, group="attn1_out", block=i, owner=owner, free_input=True))
        lin.append(Linear(f"{p}.attn2.to_q", h, h, group="attn2_q", block=i, owner=owner))
        lin += [Linear(f"{p}.attn2.to_{x}", cross, h, stream="text", group="context", block=i, owner=owner,
                       shared_input=True) for x in "kv"]
        lin.append(Linear(f"{p}.attn2.to_out.0", h, h, group="attn2_out", block=i, owner=owner, free_input=True))
        lin += [Linear(f"{p}.ff.net.0.proj", h, mlp, group="ff_in", block=i, owner=owner),
                Linear(f"{p}.ff.net.2", mlp, h, group="ff_out", block=i, owner=owner)]
        saved += [Saved("image", h, "input", i, fp32=True, what="norm1 input"),
                  Saved("image", 2, "input", i, fp32=True, what="norm1 stats"),
                  Saved("image", h, "full", i, what="norm1 output"),
                  Saved("image", 4 * h, "grad", i, what="self-attention q, k, v, out"),
                  Saved("image", heads, "grad", i, fp32=True, what="self-attention logsumexp"),
                  Saved("image", h, "full", i, what="attention output under the gate"),
                  Saved("image", 2 * h, "grad", i, what="cross-attention q, out"),
                  Saved("text", 2 * h, "grad", i, what="cross-attention k, v"),
                  Saved("image", heads, "grad", i, fp32=True, what="cross-attention logsumexp"),
                  Saved("image", h, "grad", i, fp32=True, what="norm2 input"),
                  Saved("image", 2, "grad", i, fp32=True, what="norm2 stats"),
                  Saved("image", h, "full", i, what="norm2 output"),
                  Saved("image", mlp, "grad", i, what="gelu input"),
                  Saved("image", h, "full", i, what="feed-forward output under the gate")]
    out_ch = tc["out_channels"] * patch * patch
    lin.append(Linear("proj_out", h, out_ch, group="final"))
    saved += [Saved("image", h, "grad", fp32=True, what="norm_out input"),
              Saved("image", 2, "grad", fp32=True, what="norm_out stats"),
              Saved("image", h, "full", what="norm_out output"),
              Saved("image", tc["in_channels"] * patch * patch, "full", what="patch embedding input"),
              Saved("target", out_ch, "grad", fp32=True, what="loss prediction and target")]
    t5_params, t5_wo = t5_encoder_params(t5["vocab"], t5["d_model"], t5["d_kv"], t5["d_ff"], t5["layers"],
                                         t5["heads"], t5["buckets"])
    components = (Component("text_encoder (T5 encoder)", t5_params, t5_wo),
                  Component("vae", autoencoder_kl_params(vae["block_out_channels"], vae["layers_per_block"],
                                                         vae["latent_channels"])))
    return Architecture(
        name=f"pixart_sigma {flavour}", linears=lin, others=others, saved=saved, blocks=tc["num_layers"],
        block_owners=[owner] * tc["num_layers"], block_inputs=(("image", h),), pixels_per_token=8 * patch,
        text_tokens=text_tokens, components=components, model_class="PixArtTransformer2DModel",
        quantize_exclude=QUANTIZE_EXCLUDE, hidden=h, heads=heads, lora_targets=LORA_TARGETS)
