"""Train one epoch, evaluate once (DETR's engine.py). INTR's loss is the cross-entropy of the
class logits (Eq. 6-7); training runs attention through scaled_dot_product_attention
(`return_attention=False`), in bf16 autocast and channels-last on CUDA."""
from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .data import Batch
from .distributed import sum_over_ranks

TOP_K = 5


@dataclass(frozen=True)
class StepOptions:
    device: torch.device
    amp: bool = False            # bf16 autocast (CUDA only)
    channels_last: bool = False  # CUDA convolutions prefer NHWC


def options_for(device: torch.device) -> StepOptions:
    on_cuda = device.type == "cuda"
    return StepOptions(device, amp=on_cuda, channels_last=on_cuda)


def autocast(options: StepOptions):
    return torch.autocast("cuda", dtype=torch.bfloat16) if options.amp else nullcontext()


def to_device(batch: Batch, options: StepOptions) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    images = batch.images.to(options.device, non_blocking=True)
    if options.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, batch.mask.to(options.device), batch.labels.to(options.device)


def train_step(model: nn.Module, batch: Batch, options: StepOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward one batch; returns the loss (not yet backpropagated) and the logits."""
    images, mask, labels = to_device(batch, options)
    with autocast(options):
        logits = model(images, mask, return_attention=False).logits
    logits = logits.float()
    return F.cross_entropy(logits, labels), logits


@dataclass
class EpochResult:
    loss: float
    accuracy: float
    images: int
    skipped: int  # images that failed to decode during the epoch


def train_one_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer, options: StepOptions, *,
                    epoch: int, accumulate: int = 1, max_norm: float = 0.1,
                    frozen: tuple[nn.Module, ...] = (),
                    on_step: Callable[[int, int, float, float], None] | None = None) -> EpochResult:
    """on_step(step, steps, running loss, running accuracy) after every batch."""
    model.train()
    for module in frozen:  # frozen parts keep batch-norm statistics and skip dropout
        module.eval()
    distributed = isinstance(model, DistributedDataParallel)
    parameters = [p for p in model.parameters() if p.requires_grad]
    steps = len(loader)
    loss_sum, correct, count, skipped = 0.0, 0, 0, 0
    optimizer.zero_grad(set_to_none=True)
    for step, batch in enumerate(loader, 1):
        skipped += batch.skipped
        update = step % accumulate == 0 or step == steps
        if len(batch.labels):
            # Gradients are averaged across ranks only on the micro-batch that updates.
            with nullcontext() if update or not distributed else model.no_sync():
                loss, logits = train_step(model, batch, options)
                if not math.isfinite(loss.item()):
                    raise RuntimeError(f"the loss became {loss.item()} at epoch {epoch}, step {step}: "
                                       "training diverged. Lower --lr (e.g. by 10x) and start again")
                (loss / accumulate).backward()
            loss_sum += loss.item() * len(batch.labels)
            correct += int((logits.argmax(-1).cpu() == batch.labels).sum())
            count += len(batch.labels)
        if update:
            if max_norm > 0:
                nn.utils.clip_grad_norm_(parameters, max_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if on_step is not None:
            on_step(step, steps, loss_sum / max(count, 1), correct / max(count, 1))
    totals = sum_over_ranks(torch.tensor([loss_sum, correct, count, skipped], dtype=torch.float64))
    loss_sum, correct, count, skipped = totals.tolist()
    return EpochResult(loss_sum / max(count, 1), correct / max(count, 1), int(count), int(skipped))


@dataclass
class Evaluation:
    confusion: torch.Tensor  # [C, C] image counts, rows: true class, columns: predicted class
    top5_correct: int
    loss_sum: float
    skipped: int

    @property
    def images(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float | None:
        return float(self.confusion.diagonal().sum()) / self.images if self.images else None

    @property
    def top5_accuracy(self) -> float | None:
        return self.top5_correct / self.images if self.images else None

    @property
    def loss(self) -> float | None:
        return self.loss_sum / self.images if self.images else None

    def per_class_accuracy(self) -> list[float | None]:
        """Recall of each class; None for a class without images."""
        totals = self.confusion.sum(1)
        return [float(self.confusion[i, i]) / float(total) if total else None
                for i, total in enumerate(totals.tolist())]


@torch.no_grad()
def evaluate(model: nn.Module, loader, options: StepOptions, num_classes: int) -> Evaluation:
    """Top-1/top-5 counts and the confusion matrix, summed over ranks. `model` must not be the
    DDP wrapper: ranks may see different numbers of batches."""
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    top5_correct, loss_sum, skipped = 0, 0.0, 0
    for batch in loader:
        skipped += batch.skipped
        if not len(batch.labels):
            continue
        images, mask, labels = to_device(batch, options)
        with autocast(options):
            logits = model(images, mask, return_attention=False).logits
        logits = logits.float().cpu()
        loss_sum += float(F.cross_entropy(logits, batch.labels, reduction="sum"))
        predicted = logits.argmax(-1)
        confusion.index_put_((batch.labels, predicted), torch.ones(len(predicted), dtype=torch.float64),
                             accumulate=True)
        top = logits.topk(min(TOP_K, num_classes), dim=-1).indices
        top5_correct += int((top == batch.labels[:, None]).any(-1).sum())
    confusion = sum_over_ranks(confusion)
    totals = sum_over_ranks(torch.tensor([top5_correct, loss_sum, skipped], dtype=torch.float64)).tolist()
    return Evaluation(confusion.long(), int(totals[0]), totals[1], int(totals[2]))
