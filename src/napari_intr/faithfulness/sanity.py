"""Model-randomisation sanity check (Adebayo et al. 2018), cascading from the top.

On a deep copy, the decoder (with the class queries and the presence vector) is re-initialised,
then also the encoder (with the input projection), then also the backbone. An explanation that
depends on what the model learned must change: its rank correlation with the trained model's
map should fall towards 0.

Models on the inference path (napari_intr.inference: batch norm folded into the convolutions)
keep their unfolded weights; the fold is a cached copy. The copy made here drops that cache,
so the randomised model is folded again from its randomised convolutions, the frozen batch-norm
statistics kept as before: the check means what it meant (tests/test_inference.py).
"""
from __future__ import annotations

import copy
from typing import Iterator

import torch
from torch import nn

from napari_intr.model import INTR

STAGES = ("decoder", "encoder", "backbone")


def _parts(model: INTR, stage: str) -> list[nn.Module]:
    return {"decoder": [model.transformer.decoder, model.query_embed, model.presence_vector],
            "encoder": [model.transformer.encoder, model.input_proj],
            "backbone": [model.backbone[0].body]}[stage]


@torch.no_grad()
def reinitialise(module: nn.Module, generator: torch.Generator) -> None:
    """Fresh initial weights: each layer's own reset, else a small normal draw (biases zero).
    Frozen batch-norm statistics are buffers, not weights, and stay."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):  # the caller's random state stays as it was
        torch.manual_seed(int(torch.randint(2**31, (1,), generator=generator)))
        _reinitialise(module)


def _reinitialise(module: nn.Module) -> None:
    covered = set()
    for part in module.modules():
        reset = getattr(part, "reset_parameters", None)
        if callable(reset):
            reset()
            covered.update(id(p) for p in part.parameters(recurse=False))
    for parameter in module.parameters():
        if id(parameter) in covered:
            continue
        if parameter.ndim > 1:
            nn.init.xavier_uniform_(parameter)
        else:
            nn.init.zeros_(parameter)


def cascade(model: INTR, seed: int = 0) -> Iterator[tuple[str, INTR]]:
    """(stage, model) with the decoder, then also the encoder, then also the backbone re-initialised.
    The caller's model is never changed; the same copy is randomised further at each stage."""
    randomised = copy.deepcopy(model).eval()
    generator = torch.Generator().manual_seed(seed)
    for stage in STAGES:
        for part in _parts(randomised, stage):
            reinitialise(part, generator)
        yield stage, randomised
