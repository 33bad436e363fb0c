"""``flux_lora_target``: named LoRA target sets over diffusers' Flux module names (torch-free).

Names are peft ``target_modules`` entries: a module is wrapped when its full name equals the entry or ends with
``.`` + entry. So the sets need no model (the resume check computes them from the config alone), and each is
the same on the tiny model and on FLUX.1 [dev]. Dual-stream blocks (``transformer_blocks.*``) hold
``attn.{to_q,to_k,to_v,to_out.0}`` for image tokens, ``attn.{add_q_proj,add_k_proj,add_v_proj,to_add_out}`` for
text tokens, feed-forwards ``ff.net.{0.proj,2}`` / ``ff_context.net.{0.proj,2}`` and modulation ``norm1.linear`` /
``norm1_context.linear``; single-stream blocks hold ``attn.{to_q,to_k,to_v}``, ``proj_mlp``, ``proj_out`` and
``norm.linear``. A bare ``proj_out`` would also match the model's final output layer, so presets name it only
where that is meant.
"""

from __future__ import annotations

ATTENTION = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")
CONTEXT = ("add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")
CONTEXT_FF = ("ff_context.net.0.proj", "ff_context.net.2")
FEED_FORWARD = ("ff.net.0.proj", "ff.net.2", *CONTEXT_FF, "proj_mlp")
MODULATION = ("norm1.linear", "norm1_context.linear", "norm.linear")

#: Preset name → target list. ``all`` is SimpleTuner's default and this plugin's ``LORA_TARGETS``.
PRESETS: dict[str, tuple[str, ...]] = {
    "all": ATTENTION,
    # Every Flux attention is MM-DiT joint attention and single-stream blocks have no separate output
    # projection, so the joint-attention projections are the same set as ``all``.
    "mmdit": ATTENTION,
    "context": CONTEXT,
    "context+ffs": (*CONTEXT, *CONTEXT_FF),
    "all+ffs": (*ATTENTION, *FEED_FORWARD),
    "all+ffs+embedder": (*ATTENTION, *FEED_FORWARD, "x_embedder", "context_embedder"),
    # Every Linear inside the blocks (attention, feed-forwards, modulation, the single blocks' fused output)
    # plus the final output layer: the broad set other Flux LoRA trainers use.
    "ai-toolkit": (*ATTENTION, *FEED_FORWARD, *MODULATION, "proj_out"),
    "tiny": ("to_v", "add_v_proj", "to_out.0", "to_add_out"),
    "nano": ("to_out.0", "to_add_out"),
}


#: Named LyCORIS presets (``"apply_preset": "<name>"`` in ``--lycoris_config``); ``default`` when none is given.
LYCORIS_PRESETS: dict[str, dict[str, object]] = {
    "default": {"target_module": ["FluxTransformerBlock", "FluxSingleTransformerBlock"]},
    "attention": {"target_module": [], "target_name": [f"*{t}" for t in ATTENTION], "use_fnmatch": True},
    "full": {"target_module": ["FluxTransformer2DModel"]},
}


def preset_targets(name: str) -> list[str]:
    return list(PRESETS[name])
