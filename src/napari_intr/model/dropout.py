"""Dropout (DETR's, p = 0.1 in the paper's recipe) drawn faster on the CPU.

torch's CPU dropout draws every keep decision with a Bernoulli sampler: on one core about a
quarter of a cached resnet50 fine-tuning step at 512 px went there (benchmarks/RESULTS.md).
Here each decision compares 16 random bits from torch's generator with a threshold: the same
keep probability 1 - p (p rounded to a multiple of 1/65536), the same 1/(1 - p) scaling, seeded
and restored by --resume like every other draw. Training only: evaluation never drops.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LEVELS = 2 ** 16  # a keep decision uses 16 random bits


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """`F.dropout(x, p, training)`; on the CPU with a faster draw (above)."""
    dropped = round(p * LEVELS)
    if not training or dropped == 0:
        return x
    if x.device.type != "cpu" or dropped >= LEVELS:
        return F.dropout(x, p, True)
    # 64 random bits per 4 elements, read as 16-bit integers uniform on [-2^15, 2^15)
    words = torch.empty((x.numel() + 3) // 4, dtype=torch.int64).random_(-2 ** 63, None)
    bits = words.view(torch.int16)[:x.numel()].view(x.shape)
    keep = bits >= dropped - LEVELS // 2
    # x times a scaled mask of x's dtype: x * keep, or keep.to(dtype), ran ~8x slower on the CPU
    # than this same-dtype product and the uint8 view's conversion
    return x * keep.view(torch.uint8).to(x.dtype).mul_(LEVELS / (LEVELS - dropped))


class Dropout(nn.Dropout):
    """nn.Dropout through `dropout` (above)."""

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)
