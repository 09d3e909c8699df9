"""Transformer encoder and decoder (Fig. 2, middle), post-norm as DETR.

INTR departs from DETR in the decoder's cross-attention: its keys get no positional
encoding (§4, "Model"), so class queries are not tied to grid locations.
"""
from __future__ import annotations

import copy
from collections.abc import Collection

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import MultiheadAttention
from .config import IntrConfig
from .dropout import Dropout


class TransformerEncoderLayer(nn.Module):
    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = Dropout(dropout)

    def forward(self, src: Tensor, padding_mask: Tensor, pos: Tensor, local_mask: Tensor | None = None) -> Tensor:
        q = k = src + pos
        src = self.norm1(src + self.dropout(self.self_attn(q, k, src, padding_mask, attn_mask=local_mask)[0]))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout(ffn))


class TransformerDecoderLayer(nn.Module):
    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, null_keys: int = 0):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout)
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout)
        # Learned tokens appended to the memory the classes look at (IntrConfig.null_keys): the same
        # in every image, so attention on them carries nothing from it. Registered only when used,
        # so the paper's state dicts load unchanged.
        self.null_memory = nn.Parameter(torch.empty(null_keys, d_model)) if null_keys else None  # Transformer initialises it
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = Dropout(dropout)

    def exchange(self, tgt: Tensor, query_pos: Tensor, context: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Class queries exchange context among themselves (query self-attention). context:
        (states, queries) of classes that are not decoded but still attended to as keys/values."""
        q = k = tgt + query_pos
        v = tgt
        if context is not None:
            k = torch.cat((k, context[0] + context[1]), dim=1)
            v = torch.cat((v, context[0]), dim=1)
        return self.norm1(tgt + self.dropout(self.self_attn(q, k, v)[0]))

    def with_null_keys(self, memory: Tensor, padding_mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """memory [B, hw, D] -> [B, hw + N, D] with the N null tokens last (never padding)."""
        if self.null_memory is None:
            return memory, padding_mask
        nulls = self.null_memory.to(memory.dtype).unsqueeze(0).expand(memory.shape[0], -1, -1)
        if padding_mask is not None:
            padding_mask = torch.cat((padding_mask, padding_mask.new_zeros(padding_mask.shape[0], len(nulls[0]))), 1)
        return torch.cat((memory, nulls), dim=1), padding_mask

    def cross_key_value(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """This layer's cross-attention keys and values of `memory` (and its null tokens)."""
        memory, _ = self.with_null_keys(memory, None)
        return self.multihead_attn.project_key_value(memory, memory)

    def look(self, tgt: Tensor, memory: Tensor, padding_mask: Tensor, query_pos: Tensor, need_weights: bool,
             key_value: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor | None]:
        """Each class looks for itself in the image (Eq. 5); keys without position. With null
        keys the weights' last axis holds the hw pixels, then the N null keys."""
        memory, padding_mask = self.with_null_keys(memory, padding_mask)
        found, weights = self.multihead_attn(tgt + query_pos, memory, memory, padding_mask, need_weights,
                                             key_value)
        return self.norm2(tgt + self.dropout(found)), weights

    def feed_forward(self, tgt: Tensor) -> Tensor:
        return self.norm3(tgt + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(tgt))))))

    def forward(self, tgt: Tensor, memory: Tensor, padding_mask: Tensor, query_pos: Tensor,
                need_weights: bool, key_value: tuple[Tensor, Tensor] | None = None,
                context: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor | None]:
        tgt, weights = self.look(self.exchange(tgt, query_pos, context), memory, padding_mask, query_pos,
                                 need_weights, key_value)
        return self.feed_forward(tgt), weights


def _clones(layer: nn.Module, n: int) -> nn.ModuleList:
    return nn.ModuleList(copy.deepcopy(layer) for _ in range(n))


class TransformerEncoder(nn.Module):
    def __init__(self, layer: TransformerEncoderLayer, num_layers: int):
        super().__init__()
        self.layers = _clones(layer, num_layers)

    def forward(self, src: Tensor, padding_mask: Tensor, pos: Tensor, local_mask: Tensor | None = None) -> Tensor:
        """local_mask [hw, hw]: True where a token may not attend another (local_attention.py)."""
        for layer in self.layers:
            src = layer(src, padding_mask, pos, local_mask)
        return src


class TransformerDecoder(nn.Module):
    def __init__(self, layer: TransformerDecoderLayer, num_layers: int, d_model: int):
        super().__init__()
        self.layers = _clones(layer, num_layers)
        self.norm = nn.LayerNorm(d_model)

    def cross_key_values(self, memory: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Each layer's cross-attention keys and values of `memory` (no positions: §4)."""
        return [layer.cross_key_value(memory) for layer in self.layers]

    def forward(self, query_pos: Tensor, memory: Tensor, padding_mask: Tensor, need_weights: bool,
                key_values: list[tuple[Tensor, Tensor]] | None = None,
                context: tuple[Tensor, Tensor] | None = None,
                weight_layers: Collection[int] | None = None) -> tuple[Tensor, Tensor | None]:
        """query_pos [B, Q, D] class queries, memory [B, hw, D] -> Z_out [B, Q, D], weights
        [layers, B, heads, Q, hw + null keys] (or None). key_values: cached `cross_key_values(memory)`.
        context: (layer-1 outputs [B, M, D], queries [B, M, D]) of M classes left out of the
        decode, attended to by layer 2's self-attention, whose full-decode inputs they are
        (shortlist decoding; later layers would need those classes' later states).
        weight_layers: with need_weights, the 0-based layers whose weights are materialised
        (in increasing order on the weights' first axis); the others run the fused attention
        without weights. None: every layer."""
        tgt = torch.zeros_like(query_pos)  # the decoder input starts at zero (DETR)
        all_weights = []
        for index, layer in enumerate(self.layers):
            key_value = None if key_values is None else key_values[index]
            wanted = need_weights and (weight_layers is None or index in weight_layers)
            # layer 1's self-attention sees zero values: the context would change nothing there
            tgt, weights = layer(tgt, memory, padding_mask, query_pos, wanted, key_value,
                                 context if index == 1 else None)
            if wanted:
                all_weights.append(weights)
        stacked = torch.stack(all_weights) if all_weights else None
        return self.norm(tgt), stacked


class Transformer(nn.Module):
    def __init__(self, config: IntrConfig):
        super().__init__()
        d, h, ff, p = config.hidden_dim, config.nheads, config.dim_feedforward, config.dropout
        self.encoder = TransformerEncoder(TransformerEncoderLayer(d, h, ff, p), config.enc_layers)
        self.decoder = TransformerDecoder(TransformerDecoderLayer(d, h, ff, p, config.null_keys), config.dec_layers, d)
        for parameter in self.parameters():
            if parameter.dim() > 1:
                nn.init.xavier_uniform_(parameter)
