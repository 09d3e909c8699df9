"""Local self-attention for the encoder: each token sees only its neighbourhood on the grid.

The paper's encoder attends globally, so after it every token can carry what it read anywhere in
the image, and a class query that attends one token may be reading the trait through it from
elsewhere (issue 21 measured it: hiding the trait's pixels changes encoder tokens far from the
trait four times as much as it changes the backbone's features there). With `encoder_window` k,
a token attends only to the tokens within k cells of it (a (2k+1)² square, cut at the grid's edge),
so what a token carries stays near where it sits, and the cross-attention map stays where the
evidence is. k = 0 keeps the paper's global attention.
"""
from __future__ import annotations

import torch
from torch import Tensor


def local_attention_mask(grid: tuple[int, int], window: int, device=None,
                         padding_mask: Tensor | None = None) -> Tensor | None:
    """True where a token may NOT attend another: farther than `window` cells (Chebyshev), or
    (with padding_mask [B, h·w], True on padding) a padded key. [h·w, h·w] without padding,
    [B, 1, h·w, h·w] with it; a token left with no key at all (padding beyond its window) attends
    itself, so no row is empty. None for window 0 (global attention)."""
    rows, cols = grid
    if window < 0:
        raise ValueError(f"the encoder window must be 0 (global) or more cells, got {window}")
    if window == 0:
        return None
    y, x = torch.meshgrid(torch.arange(rows, device=device), torch.arange(cols, device=device), indexing="ij")
    y, x = y.flatten(), x.flatten()
    far = ((y[:, None] - y[None, :]).abs() > window) | ((x[:, None] - x[None, :]).abs() > window)
    if padding_mask is None or not bool(padding_mask.any()):
        return far
    blocked = far[None] | padding_mask[:, None, :]
    empty = blocked.all(dim=-1)  # [B, h·w]
    diagonal = torch.eye(rows * cols, dtype=torch.bool, device=far.device)[None]
    return (blocked & ~(empty[..., None] & diagonal))[:, None]
