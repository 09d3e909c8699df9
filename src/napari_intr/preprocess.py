"""Image -> model input: one resize policy for the plugin, the CLI and training."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MIN_IMAGE_SIZE = 32


def resized_shape(height: int, width: int, short_side: int, max_side: int) -> tuple[int, int]:
    """DETR's rule: short side to `short_side` unless the long side would exceed `max_side`.

    Unlike DETR, the shrunken short side is rounded down so that the long side never exceeds
    `max_side`; only the 32 px minimum of the short side can override that (extreme aspect ratios).
    """
    short, long = min(height, width), max(height, width)
    size = short_side
    if long / short * size > max_side:
        size = int(max_side * short / long)
    size = max(size, MIN_IMAGE_SIZE)
    if height <= width:
        return size, max(MIN_IMAGE_SIZE, int(size * width / height))
    return max(MIN_IMAGE_SIZE, int(size * height / width)), size


def to_float_rgb(image: np.ndarray) -> np.ndarray:
    """H×W / H×W×1 / H×W×3 / H×W×4 of any common dtype -> float32 H×W×3 in [0, 1]."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[0] in (1, 3, 4) and image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"image of shape {image.shape} looks channel-first; put channels last "
                         "(numpy.moveaxis(image, 0, -1))")
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]  # alpha only says where the specimen was cut out
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected a 2-D grey, RGB or RGBA image, got shape {image.shape}")
    height, width = image.shape[:2]
    if min(height, width) < MIN_IMAGE_SIZE:
        raise ValueError(f"image is {height}×{width} px; INTR needs at least "
                         f"{MIN_IMAGE_SIZE} px on each side")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255
    if image.dtype == np.uint16:
        return image.astype(np.float32) / 65535
    if image.dtype == bool:
        return image.astype(np.float32)
    if not np.issubdtype(image.dtype, np.number):
        raise ValueError(f"image has unsupported data type {image.dtype}")
    image = image.astype(np.float32)
    if not np.isfinite(image).all():
        raise ValueError("image contains NaN or infinite values; fill or crop them before explaining")
    low, high = float(image.min()), float(image.max())
    if low >= 0 and high <= 1:
        return image
    # Other ranges (e.g. int32 or float intensities) are stretched to [0, 1].
    return (image - low) / (high - low) if high > low else np.zeros_like(image)


def normalize(images: Tensor) -> Tensor:
    """[..., 3, H, W] in [0, 1] -> ImageNet-normalised."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=images.dtype, device=images.device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=images.dtype, device=images.device)[:, None, None]
    return (images - mean) / std


def to_model_input(image: np.ndarray, short_side: int, max_side: int) -> Tensor:
    """numpy image -> normalised float tensor [1, 3, H', W'] resized by the model's policy."""
    rgb = torch.from_numpy(np.ascontiguousarray(to_float_rgb(image))).permute(2, 0, 1)[None]
    size = resized_shape(rgb.shape[-2], rgb.shape[-1], short_side, max_side)
    resized = F.interpolate(rgb, size=size, mode="bilinear", antialias=True, align_corners=False)
    return normalize(resized.clamp(0, 1))


def pad_batch(images: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Images [3, H_i, W_i] of different sizes -> batch [B, 3, H, W] and mask [B, H, W] (True = padding)."""
    if not images:
        raise ValueError("pad_batch needs at least one image")
    shapes = [list(image.shape) for image in images]
    if any(len(shape) != 3 or shape[0] != 3 for shape in shapes):
        raise ValueError(f"pad_batch takes images of shape [3, H, W], got {shapes}")
    height = max(image.shape[-2] for image in images)
    width = max(image.shape[-1] for image in images)
    batch = images[0].new_zeros(len(images), 3, height, width)
    mask = torch.ones(len(images), height, width, dtype=torch.bool, device=images[0].device)
    for i, image in enumerate(images):
        batch[i, :, : image.shape[-2], : image.shape[-1]] = image
        mask[i, : image.shape[-2], : image.shape[-1]] = False
    return batch, mask
