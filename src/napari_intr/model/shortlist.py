"""The first pass of shortlist decoding: a cheap score for every class, from decoder layer 1 alone.

Why layer 1 can score classes one by one: the decoder input starts at zero, so in layer 1 the
query self-attention has zero values and returns out_proj(b_v) to every query, whatever the other
classes are. Layer 1 is therefore class-independent: running it on 10 000 classes in chunks
gives each class exactly what it gets in any decode, at the cost of one cross-attention per
class (no C² self-attention, no later layers). The score read from it is

- the shortlist head (`IntrConfig.shortlist_head`, trained jointly: a LayerNorm and a linear
  score on the cross-attention read-out, before the feed-forward), or
- for models without one (e.g. the released INTR checkpoints): the presence vector applied to
  layer 1's output through the decoder's final norm, an "early exit" of the decoder.

The full decoder then runs on the top-K classes only (drop mode), see `INTR.decode(shortlist=K)`;
its layer 2 also attends to the other classes' layer-1 outputs computed here, as in the full decode.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .transformer import TransformerDecoder

CHUNK = 2048  # classes per first-pass chunk: bounds the [B, heads, chunk, h*w] attention scores


class ShortlistHead(nn.Module):
    """Scores a class from its layer-1 read-out (a vector per class): LayerNorm, then w·z + b."""

    def __init__(self, hidden_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden_dim)
        self.score = nn.Linear(hidden_dim, 1)

    def forward(self, read_out: Tensor) -> Tensor:
        return self.score(self.norm(read_out)).squeeze(-1)


def first_pass_scores(decoder: TransformerDecoder, presence_vector: nn.Linear, head: ShortlistHead | None,
                      queries: Tensor, memory: Tensor, padding_mask: Tensor,
                      key_value: tuple[Tensor, Tensor] | None = None, chunk: int = CHUNK,
                      states: list | None = None) -> Tensor:
    """queries [Q, D] (the classes to score), memory [B, hw, D] -> scores [B, Q].

    key_value: layer 1's cached cross-attention keys and values of `memory`, if at hand.
    states: a list to receive layer 1's outputs [B, Q, D] (the decoder's own states of every
    class after layer 1, which shortlist decoding attends to as context)."""
    layer = decoder.layers[0]
    batch = memory.shape[0]
    # Layer 1's self-attention output is the same for every class (see the module doc): compute
    # it once, from one query, instead of over a chunk of them.
    one = queries[:1].unsqueeze(0).expand(batch, -1, -1)
    start = layer.exchange(one.new_zeros(one.shape), one)  # [B, 1, D]
    scores = []
    for offset in range(0, len(queries), chunk):
        query_pos = queries[offset: offset + chunk].unsqueeze(0).expand(batch, -1, -1)
        read_out, _ = layer.look(start.expand_as(query_pos), memory, padding_mask, query_pos, False, key_value)
        output = layer.feed_forward(read_out) if head is None or states is not None else None
        if states is not None:
            states.append(output)
        if head is not None:
            scores.append(head(read_out))
        else:
            scores.append(presence_vector(decoder.norm(output)).squeeze(-1))
    if states is not None and len(states) > 1:
        states[:] = [torch.cat(states, dim=1)]
    return scores[0] if len(scores) == 1 else torch.cat(scores, dim=-1)
