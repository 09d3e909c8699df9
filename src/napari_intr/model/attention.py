"""Multi-head attention (Eq. 3-5, 8) that materialises its weights only when asked to."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .dropout import dropout


class MultiheadAttention(nn.Module):
    """Batch-first multi-head attention.

    Parameter names and shapes match `torch.nn.MultiheadAttention`, so DETR and INTR state
    dicts load unchanged. With `need_weights=False` it runs `scaled_dot_product_attention`
    and never returns the [B, heads, Nq, Nk] weight tensor (training; without dropout, or on a
    GPU, it never builds it either); with `need_weights=True` it returns the post-softmax
    weights per head (the explanation).
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def _heads(self, x: Tensor) -> Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, -1).transpose(1, 2)  # [B, heads, N, d]

    def project_key_value(self, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """key/value [B, Nk, D] -> per-head projections [B, heads, Nk, d]."""
        _, w_k, w_v = self.in_proj_weight.chunk(3)
        _, b_k, b_v = self.in_proj_bias.chunk(3)
        return self._heads(F.linear(key, w_k, b_k)), self._heads(F.linear(value, w_v, b_v))

    def forward(self, query: Tensor, key: Tensor, value: Tensor,
                key_padding_mask: Tensor | None = None, need_weights: bool = False,
                key_value: tuple[Tensor, Tensor] | None = None,
                attn_mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """query [B, Nq, D], key/value [B, Nk, D], key_padding_mask [B, Nk] (True = ignore).
        key_value: `project_key_value(key, value)` computed earlier, to reuse it.
        attn_mask: [Nq, Nk] bool, True where a query may not attend a key (local attention)."""
        w_q, b_q = self.in_proj_weight.chunk(3)[0], self.in_proj_bias.chunk(3)[0]
        q = self._heads(F.linear(query, w_q, b_q))
        k, v = key_value if key_value is not None else self.project_key_value(key, value)
        dropout_p = self.dropout if self.training else 0.0

        # On the CPU, scaled_dot_product_attention with dropout runs this same math, with torch's
        # slower dropout (dropout.py); without dropout it takes a fused kernel.
        explicit = need_weights or (dropout_p > 0 and q.device.type == "cpu")
        if explicit:
            scores = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5
            if key_padding_mask is not None:
                scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
            if attn_mask is not None:
                scores = scores.masked_fill(attn_mask, float("-inf"))
            if need_weights:  # the explanation in float32 even under bf16 autocast (CPU autocast keeps bf16)
                scores = scores.float()
            weights = scores.softmax(dim=-1)  # [B, heads, Nq, Nk]
            out = dropout(weights, dropout_p, self.training) @ v
            weights = weights if need_weights else None
        else:
            allowed = None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]
            if attn_mask is not None:
                allowed = ~attn_mask if allowed is None else allowed & ~attn_mask
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout_p)
            weights = None
        out = out.transpose(1, 2).flatten(2)  # [B, Nq, D]
        return self.out_proj(out), weights
