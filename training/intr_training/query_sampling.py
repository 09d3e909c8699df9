"""Sampled-query training: each step decodes K of the C class queries, so its time and memory do
not grow with C.

The K classes of a step: the batch's true classes, then hard negatives (the classes the first
pass, model/shortlist.py, scores highest for the batch's images, i.e. what a shortlist would
decode), then uniformly drawn random negatives up to K. The loss is the cross-entropy over the
K decoded classes with the logQ correction of sampled softmax: a random negative, included with
probability q = n / R (n drawn from the R remaining classes), has log q subtracted from its
logit, so it stands for the R / n classes it was drawn among; true classes and hard negatives
are included for certain (q = 1, no correction). With K = C every class is included for
certain, nothing is corrected, and the loss is the full loss exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .train_settings import check_ranges

HARD_FRACTION = 0.5  # of the negatives; the rest are random


@dataclass
class SampledSet:
    classes: list[int]  # decoded classes, ascending (so that K = C is the full decode, in its order)
    log_q: Tensor       # [K] log inclusion probability of each class (0 for certain ones)


class QuerySampler:
    """Chooses the classes one step decodes; called by INTR.forward with the encoder memory
    (inside the DDP wrapper's forward). Keeps the set it chose for the loss."""

    def __init__(self, num_queries: int, num_classes: int, generator: torch.Generator,
                 hard_fraction: float = HARD_FRACTION):
        check_ranges({"sampled_queries": num_queries})
        self.num_queries, self.num_classes = min(num_queries, num_classes), num_classes
        self.generator, self.hard_fraction = generator, hard_fraction
        self.labels: Tensor | None = None
        self.chosen: SampledSet | None = None

    def __call__(self, model, encoded) -> list[int]:
        if self.labels is None:
            raise RuntimeError("QuerySampler: set .labels to the batch's labels before the forward pass")
        self.chosen = self.sample(model, encoded, self.labels)
        return self.chosen.classes

    def sample(self, model, encoded, labels: Tensor) -> SampledSet:
        positives = sorted(set(labels.tolist()))
        if len(positives) > self.num_queries:
            raise ValueError(f"--sampled-queries {self.num_queries} is smaller than the {len(positives)} classes "
                             "of one batch: raise --sampled-queries or lower --batch-size")
        chosen = set(positives)
        negatives = self.num_queries - len(chosen)
        hard_wanted = round(negatives * self.hard_fraction) if self.num_queries < self.num_classes else 0
        if hard_wanted:
            with torch.no_grad():
                scores = model.first_pass(encoded).float()
            scores[:, positives] = float("-inf")
            # Round-robin over the images' rankings, so every image contributes its hardest ones.
            ranking = scores.argsort(dim=-1, descending=True).cpu()
            for rank in range(ranking.shape[1]):
                for cls in ranking[:, rank].tolist():
                    if len(chosen) - len(positives) >= hard_wanted:
                        break
                    chosen.add(cls)
                if len(chosen) - len(positives) >= hard_wanted:
                    break
        certain = set(chosen)
        remaining = [c for c in range(self.num_classes) if c not in certain]
        draws = self.num_queries - len(certain)
        if draws:
            picked = torch.randperm(len(remaining), generator=self.generator)[:draws].tolist()
            chosen.update(remaining[i] for i in picked)
        classes = sorted(chosen)
        log_q_random = math.log(draws / len(remaining)) if draws else 0.0
        log_q = torch.tensor([0.0 if c in certain else log_q_random for c in classes])
        return SampledSet(classes, log_q)


def sampled_cross_entropy(logits: Tensor, labels: Tensor, sampled: SampledSet, reduction: str = "mean") -> Tensor:
    """Cross-entropy over the sampled classes with the logQ correction; `labels` are class indices."""
    position = {c: i for i, c in enumerate(sampled.classes)}
    targets = torch.as_tensor([position[int(c)] for c in labels.tolist()], device=logits.device)
    return F.cross_entropy(logits - sampled.log_q.to(logits.device), targets, reduction=reduction)
