"""The backbone alone first (`intr train --backbone-epochs N`): before INTR's epochs, the backbone
learns as a plain classifier, its feature map pooled (mean and max over the image's cells) into
one linear layer that is dropped afterwards.

Why (issue 27, benchmarks/RESULTS.md): on a look-alike collection where every INTR run stalled
at the level of the look-alike groups (tune draw 111: 0.73-0.79 with twice the epochs, images,
width, learning rate, or a pooled read-out trained beside the decoder), the tiny backbone alone
found the trait (0.94-0.98 in 12 epochs at a peak rate of 1e-3), and INTR started from that
backbone reached 1.00. Inside INTR the backbone learns only through the cells the class
queries already attend to; the pooled classifier gives every cell a gradient.

The stage has its own optimizer (AdamW, DETR's weight decay) and one-cycle schedule (10 %
warm-up, cosine decay), reads the run's training loader (its flips and padding), and reports one
line per epoch with the pooled classifier's validation accuracy. It runs before the first INTR
epoch of a new run only: a resumed run has it in its saved weights.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from napari_intr.distributed import sum_over_ranks
from napari_intr.recipes import WEIGHT_DECAY

from .engine import StepOptions, autocast, to_device

WARMUP_SHARE = 0.1  # of the stage's steps, the one-cycle schedule's warm-up


class PooledClassifier(nn.Module):
    """The backbone, its cells pooled (mean and max, padding left out), one linear layer."""

    def __init__(self, backbone: nn.Module, channels: int, classes: int, generator: torch.Generator):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(2 * channels, classes)
        with torch.no_grad():  # nn.Linear's own initialisation, from the run's seed (not the global RNG)
            bound = 1 / (2 * channels) ** 0.5
            self.head.weight.copy_(torch.rand(self.head.weight.shape, generator=generator) * 2 * bound - bound)
            self.head.bias.copy_(torch.rand(self.head.bias.shape, generator=generator) * 2 * bound - bound)

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W], mask [B, H, W] (True on padding) -> logits [B, classes]."""
        features, feature_mask = self.backbone(images, mask)  # [B, C, h, w], [B, h, w]
        cells = features.float().flatten(2)
        kept = (~feature_mask.flatten(1)).unsqueeze(1)  # [B, 1, hw]
        mean = (cells * kept).sum(-1) / kept.sum(-1).clamp_min(1)
        peak = cells.masked_fill(~kept, float("-inf")).amax(-1)
        return self.head(torch.cat((mean, peak), 1))


def train_backbone_alone(backbone: nn.Module, channels: int, classes: int, train_loader, val_loader,
                         epochs: int, lr: float, options: StepOptions, generator: torch.Generator,
                         distributed: bool = False, before_epoch: Callable[[int], None] | None = None,
                         on_epoch: Callable[..., None] | None = None) -> None:
    """Train `backbone` (in place) for `epochs` as a pooled classifier; on_epoch(epoch=, epochs=,
    loss=, train_acc=, val_acc=, seconds=) after each epoch; before_epoch(epoch) seeds the loader."""
    model = PooledClassifier(backbone, channels, classes, generator).to(options.device)
    wrapped = DistributedDataParallel(model) if distributed else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=WEIGHT_DECAY)
    total = max(1, epochs * len(train_loader))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=total, pct_start=WARMUP_SHARE)
    for epoch in range(1, epochs + 1):
        started = time.monotonic()
        if before_epoch is not None:
            before_epoch(epoch)
        model.train()
        loss_sum, correct, count = 0.0, 0, 0
        for batch in train_loader:
            if not len(batch.labels):
                continue
            images, mask, labels = to_device(batch, options)
            with autocast(options):
                logits = wrapped(images, mask)
            loss = F.cross_entropy(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if schedule.last_epoch < total:  # OneCycleLR refuses a step past its total
                schedule.step()
            loss_sum += loss.item() * len(labels)
            correct += int((logits.argmax(1) == labels).sum())
            count += len(labels)
        loss_sum, correct, count = sum_over_ranks(torch.tensor([loss_sum, correct, count], dtype=torch.float64)).tolist()
        val_acc = accuracy(model, val_loader, options)
        if on_epoch is not None:
            on_epoch(epoch=epoch, epochs=epochs, loss=loss_sum / max(count, 1), train_acc=correct / max(count, 1),
                     val_acc=val_acc, seconds=round(time.monotonic() - started, 3))


def accuracy(model: PooledClassifier, loader, options: StepOptions) -> float | None:
    if loader is None:
        return None
    model.eval()
    correct, count = 0, 0
    with torch.no_grad():
        for batch in loader:
            if len(batch.labels):
                images, mask, labels = to_device(batch, options)
                with autocast(options):
                    correct += int((model(images, mask).argmax(1) == labels).sum())
                count += len(labels)
    correct, count = sum_over_ranks(torch.tensor([correct, count], dtype=torch.float64)).tolist()
    return correct / count if count else None
