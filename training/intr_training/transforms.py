"""Training and evaluation transforms (INTR/DETR): random flip, multi-scale short-side resize
capped at a max side, ImageNet normalisation. Evaluation resizes exactly as `model.preprocess`
does, so validation accuracy is the accuracy a user of the plugin gets.

Fixed variants: instead of a random scale and flip per draw, a short list of (short side, flip)
variants, one picked per image and epoch by a seeded rule (`variant_index`). A frozen backbone
then sees each image in a few known forms, so its features can be computed once and cached
(feature_cache); the tiny recipe uses flips at the model's size and keeps the resized images.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from napari_intr.model import IntrConfig
from napari_intr.preprocess import IMAGENET_MEAN, IMAGENET_STD, resized_shape
from napari_intr.recipes import AUGMENTATIONS, FROZEN_SCALES

SMALLEST_SCALE = 0.75  # DETR trains at 480-800 px for an 800 px test size; we stay a bit closer


def training_sizes(short_side: int, stride: int) -> list[int]:
    """Short sides from 0.75x to 1x `short_side`, in steps of the backbone's stride
    (e.g. 608, 640, …, 800 for 800 px and stride 32)."""
    smallest = math.ceil(short_side * SMALLEST_SCALE / stride) * stride
    sizes = list(range(smallest, short_side + 1, stride))
    if not sizes or sizes[-1] != short_side:
        sizes.append(short_side)
    return sizes


class ToTensor(torch.nn.Module):
    """float32 H×W×3 numpy image in [0, 1] -> [3, H, W] tensor."""

    def forward(self, image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)


class ResizeShortSide(torch.nn.Module):
    """DETR's resize rule (`resized_shape`) with the short side drawn from `sizes`."""

    def __init__(self, sizes: list[int], max_side: int):
        super().__init__()
        self.sizes, self.max_side = list(sizes), max_side

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        # torch's generator, not Python's: DataLoader seeds it per worker and we restore it on resume.
        short = self.sizes[int(torch.randint(len(self.sizes), ()))] if len(self.sizes) > 1 else self.sizes[0]
        size = resized_shape(image.shape[-2], image.shape[-1], short, self.max_side)
        # Clamped as preprocess.to_model_input does: antialiased bilinear can overshoot [0, 1].
        return TF.resize(image, list(size), antialias=True).clamp(0, 1)


def train_transform(config: IntrConfig, stride: int) -> v2.Compose:
    return v2.Compose([
        ToTensor(),
        v2.RandomHorizontalFlip(),
        ResizeShortSide(training_sizes(config.short_side, stride), config.max_side),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def eval_transform(config: IntrConfig) -> v2.Compose:
    return fixed_size_transform(config.short_side, config.max_side)


def fixed_size_transform(short_side: int, max_side: int) -> v2.Compose:
    """float H×W×3 in [0, 1] -> normalised [3, h, w] at `short_side` (no randomness)."""
    return v2.Compose([
        ToTensor(),
        ResizeShortSide([short_side], max_side),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


@dataclass(frozen=True)
class Variant:
    short_side: int
    flip: bool


def fixed_variants(config: IntrConfig, stride: int, augment: str) -> list[Variant]:
    """The (short side, flip) forms in which training sees each image: --augment flip: the model's
    size, plain and mirrored; multiscale: FROZEN_SCALES of it (in steps of the stride), each both ways."""
    if augment not in AUGMENTATIONS:
        raise ValueError(f"--augment must be one of {', '.join(AUGMENTATIONS)}, got {augment!r}")
    if augment == "flip":
        sides = [config.short_side]
    else:
        sides = sorted({max(stride, round(config.short_side * scale / stride) * stride) for scale in FROZEN_SCALES}
                       | {config.short_side})
    return [Variant(side, flip) for side in sides for flip in (False, True)]


def variant_index(seed: int, epoch: int, index: int, count: int) -> int:
    """Which of `count` variants image `index` takes in `epoch`: seeded, independent of the order in
    which images are loaded, of workers and of the feature cache."""
    return int(np.random.default_rng([seed, epoch, index]).integers(count)) if count > 1 else 0


def resize_normalise(image: np.ndarray, short_side: int, max_side: int) -> torch.Tensor:
    """float H×W×3 in [0, 1] -> normalised [3, h, w] at `short_side` (as eval_transform)."""
    return fixed_size_transform(short_side, max_side)(image)


def apply_variant(resized: torch.Tensor, variant: Variant) -> torch.Tensor:
    """`resize_normalise` output at the variant's size -> the variant (mirrored if it says so)."""
    return resized.flip(-1) if variant.flip else resized
