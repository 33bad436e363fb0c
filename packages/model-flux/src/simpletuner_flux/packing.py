"""Flux's token layout: latents are cut into 2×2 patches, each patch one token of ``4 × channels`` features.

Matches ``FluxPipeline._pack_latents`` / ``_unpack_latents`` and ``_prepare_latent_image_ids``, so what trains is
what the pipelines render.
"""

from __future__ import annotations

import torch


def pack(latents: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` → ``(B, H/2·W/2, 4C)``."""
    b, c, h, w = latents.shape
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`pack` for a latent grid of ``height × width``."""
    b, _, features = tokens.shape
    x = tokens.view(b, height // 2, width // 2, features // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, features // 4, height, width)


def latent_ids(rows: int, cols: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``(rows·cols, 3)`` position ids: axis 0 free (0 for targets, >0 marks context), then row, column."""
    ids = torch.zeros(rows, cols, 3, device=device)
    ids[..., 1] = torch.arange(rows, device=device)[:, None]
    ids[..., 2] = torch.arange(cols, device=device)[None, :]
    return ids.reshape(rows * cols, 3)
