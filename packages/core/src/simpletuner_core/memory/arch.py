"""What a memory plan needs to know about a model, as plain numbers: no torch, no weights.

A family describes its trainable transformer as the list of its ``Linear`` layers (full module names, so LoRA
target lists, LyCORIS presets and quantizer exclusions match them exactly as peft, LyCORIS and quanto match real
modules), the count of every other parameter, and the tensors its blocks keep for backward per token. The frozen
parts that stay on the accelerator (text encoders, VAE) are counted by :func:`t5_encoder_params`,
:func:`clip_text_params` and :func:`autoencoder_kl_params` from their configs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

#: Token streams: ``image`` (latent tokens, Kontext references included), ``text``, ``joint`` (both, as in a
#: Flux single-stream block), ``target`` (the image tokens the loss sees).
STREAMS = ("image", "text", "joint", "target")


@attrs.frozen
class Linear:
    """One ``nn.Linear`` of the trainable model.

    ``group`` names the input tensor it shares with other layers of the same block (``to_q``/``to_k``/``to_v``
    read one tensor: kept once for backward). ``free_input``: that input is already kept by another op (the
    attention output), so keeping it costs nothing more. ``block`` is the index of the enclosing block (None:
    outside the blocks); ``owner`` its class name, for LyCORIS ``target_module`` presets.
    """

    name: str
    in_features: int
    out_features: int
    bias: bool = True
    stream: str = "image"
    group: str = ""
    block: int | None = None
    owner: str = ""
    free_input: bool = False
    #: The input is one tensor shared by every block (PixArt's caption features): kept once per model.
    shared_input: bool = False

    @property
    def numel(self) -> int:
        return self.in_features * self.out_features + (self.out_features if self.bias else 0)


@attrs.frozen
class Saved:
    """A tensor a block (or the model around them) keeps for backward: ``width`` values per token of ``stream``.

    ``when``: ``grad`` whenever anything trains; ``full`` only when the base weights train (e.g. the normalised
    input a trainable scale multiplies); ``input``: only when the block's input needs a gradient (a full
    fine-tune, or any block after the first under an adapter). ``fp32``: kept in float32 whatever the compute
    dtype (rotary tables, normalisation statistics, the loss's upcast prediction).
    """

    stream: str
    width: int
    when: str = "grad"
    block: int | None = None
    fp32: bool = False
    what: str = ""


@attrs.frozen
class Component:
    """A frozen model that stays on the accelerator while training (a text encoder, the VAE)."""

    name: str
    params: int
    #: Parameters transformers keeps in float32 when loading in float16 (T5's ``wo``).
    fp32_under_fp16: int = 0


@attrs.frozen
class Architecture:
    """The trainable transformer and the frozen components of one flavour, at one set of published widths."""

    name: str
    linears: tuple[Linear, ...] = attrs.field(converter=tuple)
    #: Parameter tensors outside the Linear layers (norm weights, embeddings, convolutions): name → count.
    others: Mapping[str, int] = attrs.field(converter=dict)
    saved: tuple[Saved, ...] = attrs.field(converter=tuple)
    blocks: int
    #: Class name of each block, in call order (what gradient checkpointing wraps).
    block_owners: tuple[str, ...] = attrs.field(converter=tuple)
    #: What a checkpointed block keeps: (stream, width) per token (its hidden-state inputs).
    block_inputs: tuple[tuple[str, int], ...] = attrs.field(converter=tuple)
    #: Pixels per token edge (VAE downsampling × patch size) and text tokens per prompt.
    pixels_per_token: int = 16
    text_tokens: int = 512
    components: tuple[Component, ...] = attrs.field(default=(), converter=tuple)
    #: The transformer's class name (LyCORIS presets may target the whole model by it).
    model_class: str = ""
    #: Module names the family's quantizer keeps unquantized (fnmatch patterns over full names, like quanto).
    quantize_exclude: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    #: Hidden width and attention heads, for the FLOP count (MFU) and descriptions.
    hidden: int = 0
    heads: int = 0
    #: The LoRA targets the config picks (peft ``target_modules`` entries) and the family's LyCORIS presets.
    lora_targets: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    lycoris_presets: Mapping[str, Any] = attrs.field(factory=dict, converter=dict)

    @property
    def params(self) -> int:
        return sum(lin.numel for lin in self.linears) + sum(self.others.values())

    def block_of(self, index: int) -> list[Linear]:
        return [lin for lin in self.linears if lin.block == index]


# --- frozen components from their configs ------------------------------------------------------------------


def t5_encoder_params(vocab: int, d_model: int, d_kv: int, d_ff: int, layers: int, heads: int,
                      buckets: int = 32, gated: bool = True) -> tuple[int, int]:
    """(parameters, of which ``wo``) of a transformers ``T5EncoderModel`` (embeddings tied, no biases)."""
    inner = heads * d_kv
    attention = 4 * d_model * inner
    ff_in = (2 if gated else 1) * d_model * d_ff
    wo = d_ff * d_model
    per_layer = attention + ff_in + wo + 2 * d_model
    return vocab * d_model + layers * per_layer + buckets * heads + d_model, layers * wo


def clip_text_params(vocab: int, hidden: int, intermediate: int, layers: int, positions: int = 77) -> int:
    """Parameters of a transformers ``CLIPTextModel`` (no projection head)."""
    per_layer = 4 * (hidden * hidden + hidden) + 4 * hidden + hidden * intermediate + intermediate
    per_layer += intermediate * hidden + hidden
    return vocab * hidden + positions * hidden + layers * per_layer + 2 * hidden


def _conv(cin: int, cout: int, k: int = 3) -> int:
    return cin * cout * k * k + cout


def _resnet(cin: int, cout: int) -> int:
    shortcut = _conv(cin, cout, 1) if cin != cout else 0
    return 2 * cin + _conv(cin, cout) + 2 * cout + _conv(cout, cout) + shortcut


def _mid(c: int, attention: bool) -> int:
    return 2 * _resnet(c, c) + ((2 * c + 4 * (c * c + c)) if attention else 0)


def autoencoder_kl_params(block_out_channels: Sequence[int], layers_per_block: int, latent_channels: int,
                          in_channels: int = 3, out_channels: int = 3, mid_attention: bool = True,
                          quant_conv: bool = True) -> int:
    """Parameters of a diffusers ``AutoencoderKL`` with ``DownEncoderBlock2D``/``UpDecoderBlock2D`` blocks."""
    chans = list(block_out_channels)
    total = _conv(in_channels, chans[0])
    prev = chans[0]
    for i, ch in enumerate(chans):  # encoder
        for j in range(layers_per_block):
            total += _resnet(prev if j == 0 else ch, ch)
        prev = ch
        if i < len(chans) - 1:
            total += _conv(ch, ch)
    total += _mid(chans[-1], mid_attention) + 2 * chans[-1] + _conv(chans[-1], 2 * latent_channels)
    total += _conv(latent_channels, chans[-1]) + _mid(chans[-1], mid_attention)  # decoder
    rev = chans[::-1]
    prev = rev[0]
    for i, ch in enumerate(rev):
        for j in range(layers_per_block + 1):
            total += _resnet(prev if j == 0 else ch, ch)
        prev = ch
        if i < len(rev) - 1:
            total += _conv(ch, ch)
    total += 2 * chans[0] + _conv(chans[0], out_channels)
    if quant_conv:
        total += _conv(2 * latent_channels, 2 * latent_channels, 1) + _conv(latent_channels, latent_channels, 1)
    return total


def as_dict(arch: Architecture) -> dict[str, Any]:
    return {"name": arch.name, "params": arch.params, "blocks": arch.blocks, "hidden": arch.hidden,
            "heads": arch.heads, "components": {c.name: c.params for c in arch.components}}
