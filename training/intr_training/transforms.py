"""Training and evaluation transforms (INTR/DETR): random flip, multi-scale short-side resize
capped at a max side, ImageNet normalisation. Evaluation resizes exactly as `model.preprocess`
does, so validation accuracy is the accuracy a user of the plugin gets."""
from __future__ import annotations

import math

import numpy as np
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from napari_intr.model import IntrConfig
from napari_intr.preprocess import IMAGENET_MEAN, IMAGENET_STD, resized_shape

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
    return v2.Compose([
        ToTensor(),
        ResizeShortSide([config.short_side], config.max_side),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
