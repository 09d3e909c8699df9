"""Train one epoch, evaluate once (DETR's engine.py). INTR's loss is the cross-entropy of the
class logits (Eq. 6-7); training runs attention through scaled_dot_product_attention
(`return_attention=False`), in bf16 autocast and channels-last for large steps (options_for)."""
from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from napari_intr.devices import PRECISIONS, native_bf16
from napari_intr.distributed import sum_over_ranks
from napari_intr.inference import resolve_precision
from napari_intr.recipes import AMP_MIN_IMAGES, AMP_MIN_SIDE

from .data import Batch
from .query_sampling import QuerySampler, sampled_cross_entropy

TOP_K = 5


@dataclass(frozen=True)
class StepOptions:
    device: torch.device
    amp: bool = False            # bf16 autocast
    channels_last: bool = False  # NHWC convolutions: faster on CUDA, and on the CPU in bf16


# bf16 autocast pays only for large steps: on the H200 it was slower than fp32 for tiny at
# 16 x 128^2 px (0.68x) and resnet50 at 2 x 384^2 px (0.86x) (benchmarks/RESULTS.md). Below this
# many pixels per step training runs in fp32 (TF32 matmuls); paper scale (8 x 800 x 1200) is above.
# On a CPU with native bf16 (AVX512-BF16) a resnet50 step of 8 x 512^2 px ran its transformer 1.9x
# and its backbone 2.0x (with channels-last) faster in bf16; smaller CPU steps (the tiny recipe's)
# keep the fp32 they were tuned in. (The threshold is recipes.py's, which `intr train --help` states.)
AMP_MIN_PIXELS = AMP_MIN_IMAGES * AMP_MIN_SIDE ** 2


def options_for(device: torch.device, pixels_per_step: int | None = None, precision: str = "auto") -> StepOptions:
    """Step options for `device`. precision "auto": bf16 for steps of at least AMP_MIN_PIXELS
    (pixels_per_step: batch x short side^2; unknown counts as large on CUDA, small on a CPU) where
    bf16 is native; "fp32" or "bf16" as said."""
    on_cuda = device.type == "cuda"
    if precision == "auto":
        large = pixels_per_step >= AMP_MIN_PIXELS if pixels_per_step is not None else on_cuda
        amp = large and native_bf16(device)
    elif precision in PRECISIONS:
        amp = precision == "bf16"
    else:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if on_cuda and not amp:
        torch.backends.cuda.matmul.allow_tf32 = True
    return StepOptions(device, amp=amp, channels_last=on_cuda or amp)


def feature_options(options: StepOptions, precision: str = "auto") -> StepOptions:
    """Options for a frozen backbone's forward (filling the feature cache, or each step without
    it). That forward is inference, one image at a time on a CPU, so "auto" follows explain's rule
    (`inference.resolve_precision`: bf16 wherever it is native), not the training step's size
    threshold: DINOv2 ViT-S/14 at 224 px extracted 1.3-1.8x faster in bf16 on this project's
    AVX512-BF16 CPU (benchmarks/RESULTS.md, issue 26)."""
    amp = resolve_precision(precision, options.device) == "bf16"
    return StepOptions(options.device, amp=amp, channels_last=options.device.type == "cuda" or amp)


def precision_name(options: StepOptions) -> str:
    """What a run reports and the feature cache records: "bf16" (autocast) or "fp32"."""
    return "bf16" if options.amp else "fp32"


def autocast(options: StepOptions):
    return torch.autocast(options.device.type, dtype=torch.bfloat16) if options.amp else nullcontext()


def device_images(images: torch.Tensor, options: StepOptions) -> torch.Tensor:
    """images (or cached features) [B, C, H, W] on the step's device, in its memory format."""
    images = images.to(options.device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if options.channels_last else images


def to_device(batch: Batch, options: StepOptions) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return device_images(batch.images, options), batch.mask.to(options.device), batch.labels.to(options.device)


def _unwrapped(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def train_step(model: nn.Module, batch: Batch, options: StepOptions, sampler: QuerySampler | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward one batch; returns the loss (not yet backpropagated) and the predicted classes.

    sampler: sampled-query training (query_sampling.py): the decoder sees the sampler's K classes and
    the loss is the corrected cross-entropy over them. A model with a shortlist head adds the
    head's cross-entropy over the same classes, which trains the first pass jointly."""
    images, mask, labels = to_device(batch, options)
    head = _unwrapped(model).shortlist_head is not None
    if sampler is not None:
        sampler.labels = labels
    with autocast(options):
        output = model(images, mask, return_attention=False, choose_classes=sampler, first_pass=head,
                       from_features=batch.features)
    logits = output.logits.float()
    if sampler is None:
        loss = F.cross_entropy(logits, labels)
        if head:
            loss = loss + F.cross_entropy(output.first_pass_logits.float(), labels)
    else:
        loss = sampled_cross_entropy(logits, labels, sampler.chosen)
        if head:
            loss = loss + sampled_cross_entropy(output.first_pass_logits.float(), labels, sampler.chosen)
    classes = torch.as_tensor(output.classes)
    return loss, classes[logits.argmax(-1).cpu()]


@dataclass
class EpochResult:
    loss: float
    accuracy: float
    images: int
    skipped: int  # images that failed to decode during the epoch
    lr: float | None = None  # the (first group's) learning rate of the epoch's last update


def train_one_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer, options: StepOptions, *,
                    epoch: int, accumulate: int = 1, max_norm: float = 0.1,
                    frozen: tuple[nn.Module, ...] = (), sampler: QuerySampler | None = None, scheduler=None,
                    on_step: Callable[[int, int, float, float], None] | None = None) -> EpochResult:
    """on_step(step, steps, running loss, running accuracy) after every batch; the learning-rate
    `scheduler` steps after every optimizer update."""
    model.train()
    for module in frozen:  # frozen parts keep batch-norm statistics and skip dropout
        module.eval()
    distributed = isinstance(model, DistributedDataParallel)
    parameters = [p for p in model.parameters() if p.requires_grad]
    steps = len(loader)
    loss_sum, correct, count, skipped = 0.0, 0, 0, 0
    lr = optimizer.param_groups[0]["lr"]
    optimizer.zero_grad(set_to_none=True)
    for step, batch in enumerate(loader, 1):
        skipped += batch.skipped
        update = step % accumulate == 0 or step == steps
        if len(batch.labels):
            # Gradients are averaged across ranks only on the micro-batch that updates.
            with nullcontext() if update or not distributed else model.no_sync():
                loss, predicted = train_step(model, batch, options, sampler)
                value = loss.item()  # one device-to-host read per step
                if not math.isfinite(value):
                    raise RuntimeError(f"the loss became {value} at epoch {epoch}, step {step}: "
                                       "training diverged. Lower --lr (e.g. by 10x) and start again")
                (loss / accumulate).backward()
            loss_sum += value * len(batch.labels)
            correct += int((predicted == batch.labels).sum())
            count += len(batch.labels)
        if update:
            if max_norm > 0:
                nn.utils.clip_grad_norm_(parameters, max_norm)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if scheduler is not None:
                scheduler.step()
        if on_step is not None:
            on_step(step, steps, loss_sum / max(count, 1), correct / max(count, 1))
    totals = sum_over_ranks(torch.tensor([loss_sum, correct, count, skipped], dtype=torch.float64))
    loss_sum, correct, count, skipped = totals.tolist()
    return EpochResult(loss_sum / max(count, 1), correct / max(count, 1), int(count), int(skipped), lr)


@dataclass
class Evaluation:
    confusion: torch.Tensor  # [C, C] image counts, rows: true class, columns: predicted class
    top5_correct: int
    loss_sum: float | None  # None with a shortlist: undecoded classes have no logit
    skipped: int
    shortlist: ShortlistCheck | None = None

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
        return self.loss_sum / self.images if self.images and self.loss_sum is not None else None

    def per_class_accuracy(self) -> list[float | None]:
        """Recall of each class; None for a class without images."""
        totals = self.confusion.sum(1)
        return [float(self.confusion[i, i]) / float(total) if total else None
                for i, total in enumerate(totals.tolist())]


@dataclass
class ShortlistCheck:
    """A shortlist decode measured against the full decode of the same images."""
    size: int
    images: int = 0
    agree: int = 0           # shortlist top-1 == full top-1
    recalled: int = 0        # the full decode's top-1 is in the first pass's top K (recall@K)
    truth_recalled: int = 0  # the true class is in the first pass's top K
    full_correct: int = 0    # top-1 accuracy of the full decode

    def as_dict(self) -> dict:
        share = (lambda n: n / self.images if self.images else None)
        return {"shortlist": self.size, "images": self.images, "top1_agreement_with_full": share(self.agree),
                "recall_of_full_top1": share(self.recalled), "recall_of_true_class": share(self.truth_recalled),
                "full_top1": share(self.full_correct)}


def full_width(output, num_classes: int) -> torch.Tensor:
    """[B, C] logits of all classes from a decode of some of them: -inf where not decoded."""
    logits = output.logits.float().cpu()
    if output.classes == list(range(num_classes)):
        return logits
    full = torch.full((len(logits), num_classes), float("-inf"))
    full[:, torch.as_tensor(output.classes)] = logits
    return full


@torch.no_grad()
def evaluate(model: nn.Module, loader, options: StepOptions, num_classes: int, shortlist: int | None = None,
             compare_full: bool = False) -> Evaluation:
    """Top-1/top-5 counts and the confusion matrix, summed over ranks. `model` must not be the
    DDP wrapper: ranks may see different numbers of batches. shortlist K: decode each image's
    first-pass top K only; compare_full: also decode every class and count agreement and recall."""
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    top5_correct, loss_sum, skipped = 0, 0.0, 0
    check = ShortlistCheck(shortlist) if shortlist is not None and compare_full else None
    for batch in loader:
        skipped += batch.skipped
        if not len(batch.labels):
            continue
        images, mask, labels = to_device(batch, options)
        with autocast(options):
            encoded = model.encode_features(images, mask) if batch.features else model.encode(images, mask)
            output = model.decode(encoded, return_attention=False, shortlist=shortlist)
            reference = model.decode(encoded, return_attention=False) if check is not None else None
        logits = full_width(output, num_classes)
        if shortlist is None:
            loss_sum += float(F.cross_entropy(logits, batch.labels, reduction="sum"))
        predicted = logits.argmax(-1)
        confusion.index_put_((batch.labels, predicted), torch.ones(len(predicted), dtype=torch.float64),
                             accumulate=True)
        top = logits.topk(min(TOP_K, num_classes), dim=-1).indices
        top5_correct += int((top == batch.labels[:, None]).any(-1).sum())
        if check is not None:
            full_top1 = reference.logits.float().cpu().argmax(-1)
            with autocast(options):
                first = model.first_pass(encoded).float().cpu()
            listed = first.topk(min(shortlist, num_classes), dim=-1).indices
            check.images += len(predicted)
            check.agree += int((predicted == full_top1).sum())
            check.recalled += int((listed == full_top1[:, None]).any(-1).sum())
            check.truth_recalled += int((listed == batch.labels[:, None]).any(-1).sum())
            check.full_correct += int((full_top1 == batch.labels).sum())
    confusion = sum_over_ranks(confusion)
    totals = sum_over_ranks(torch.tensor([top5_correct, loss_sum, skipped], dtype=torch.float64)).tolist()
    if check is not None:
        counts = sum_over_ranks(torch.tensor([check.images, check.agree, check.recalled, check.truth_recalled,
                                              check.full_correct], dtype=torch.float64)).tolist()
        check = ShortlistCheck(shortlist, *(int(n) for n in counts))
    return Evaluation(confusion.long(), int(totals[0]), totals[1] if shortlist is None else None, int(totals[2]),
                      check)
