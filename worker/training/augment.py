"""Light augmentation of uint8 batches: random crop after 4-px zero padding, horizontal flip.

The random draws come from a private generator seeded by (seed, epoch), one draw per sample
position of the epoch, so they never touch the global RNG and a resumed run sees the same
augmented images as a straight one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

Augment = Literal["none", "crop", "flip", "crop_flip"]
PAD = 4


@dataclass(frozen=True)
class EpochDraws:
    """Per-position crop offsets [N, 2] in 0..2*PAD and flip flags [N] of one epoch."""

    offsets: torch.Tensor | None
    flips: torch.Tensor | None


def epoch_draws(augment: Augment, n: int, *, seed: int, epoch: int) -> EpochDraws:
    if augment == "none":
        return EpochDraws(None, None)
    if augment not in ("crop", "flip", "crop_flip"):
        raise ValueError(f"unknown augmentation {augment!r}")
    digest = hashlib.blake2b(f"augment:{seed}:{epoch}".encode(), digest_size=8).digest()
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int.from_bytes(digest, "big") & (2**63 - 1))
    offsets = torch.randint(0, 2 * PAD + 1, (n, 2), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    return EpochDraws(
        offsets if augment in ("crop", "crop_flip") else None,
        flips if augment in ("flip", "crop_flip") else None,
    )


def apply(
    images_u8: torch.Tensor, offsets: torch.Tensor | None, flips: torch.Tensor | None
) -> torch.Tensor:
    """Augment a batch [B, C, H, W]; ``offsets``/``flips`` are the batch's rows of the draws."""
    out = images_u8
    if offsets is not None:
        b, _, h, w = out.shape
        padded = F.pad(out, (PAD, PAD, PAD, PAD))
        rows = offsets[:, 0, None] + torch.arange(h, device=out.device)  # [B, H]
        cols = offsets[:, 1, None] + torch.arange(w, device=out.device)  # [B, W]
        batch = torch.arange(b, device=out.device)[:, None, None]
        # Advanced indexing gives [B, H, W, C]; back to channels-first.
        out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
        out = out.permute(0, 3, 1, 2).contiguous()
    if flips is not None:
        out = torch.where(flips[:, None, None, None], out.flip(3), out)
    return out
