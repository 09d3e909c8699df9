"""Image -> model input: one resize policy for the plugin, the CLI and training."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MIN_IMAGE_SIZE = 32
# Intensity stretch of non-integer images: percentiles of a subsample of about this many pixels
# replace the extremes when the extremes span more than OUTLIER_RANGE_FACTOR times their range.
ROBUST_PERCENTILES = (0.1, 99.9)
ROBUST_SAMPLE_PIXELS = 1_000_000
OUTLIER_RANGE_FACTOR = 4


def resized_shape(height: int, width: int, short_side: int, max_side: int) -> tuple[int, int]:
    """DETR's rule: short side to `short_side` unless the long side would exceed `max_side`.

    Unlike DETR, the shrunken short side is rounded down so that the long side never exceeds
    `max_side`, and both limits hold on both sides: an image too elongated to keep its short side
    at MIN_IMAGE_SIZE within `max_side` (more than max_side/32 : 1) is refused, never stretched
    past the limit (a 40×20000 strip would otherwise make an encoder of 16 000 tokens).
    """
    short, long = min(height, width), max(height, width)
    size = short_side
    if long / short * size > max_side:
        size = int(max_side * short / long)
    if size < MIN_IMAGE_SIZE:
        raise ValueError(f"image is {height}×{width} px, {long / short:.0f} times longer than wide; this "
                         f"model takes at most {max_side / MIN_IMAGE_SIZE:.3g}:1 ({max_side} px long side, "
                         f"{MIN_IMAGE_SIZE} px short side): crop it into pieces closer to square")
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def to_float_rgb(image: np.ndarray, notes: list[str] | None = None) -> np.ndarray:
    """H×W / H×W×1 / H×W×3 / H×W×4 of any common dtype -> float32 H×W×3 in [0, 1].

    uint8/uint16/bool map by their type's range; other types are stretched between their
    minimum and maximum, or between robust percentiles where a few extreme values (no-data
    fill such as -3.4e38, hot pixels) would flatten the rest; `notes` then gets a sentence.
    """
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
    if not np.issubdtype(image.dtype, np.number) or np.issubdtype(image.dtype, np.complexfloating):
        raise ValueError(f"image has unsupported data type {image.dtype}")
    if not np.isfinite(image).all():
        raise ValueError("image contains NaN or infinite values; fill or crop them before explaining")
    low, high = float(image.min()), float(image.max())
    if low >= 0 and high <= 1:
        return image.astype(np.float32)
    low, high = _stretch_range(image, low, high, notes)
    # float64: (x - low) of float32 values near ±3.4e38 would overflow to inf
    stretched = (image.astype(np.float64) - low) / (high - low) if high > low else np.zeros(image.shape)
    return np.clip(stretched, 0, 1).astype(np.float32)


def _stretch_range(image: np.ndarray, low: float, high: float, notes: list[str] | None) -> tuple[float, float]:
    """Minimum and maximum, unless they lie far outside the bulk of the values (ROBUST_PERCENTILES)."""
    step = max(1, int(np.sqrt(image.shape[0] * image.shape[1] / ROBUST_SAMPLE_PIXELS)))
    sample = image[::step, ::step].astype(np.float64)
    robust_low, robust_high = (float(v) for v in np.percentile(sample, ROBUST_PERCENTILES))
    if (high - low) <= OUTLIER_RANGE_FACTOR * (robust_high - robust_low) or robust_high <= robust_low:
        return low, high
    if notes is not None:
        notes.append(f"intensities stretched between the {ROBUST_PERCENTILES[0]:g}th and "
                     f"{ROBUST_PERCENTILES[1]:g}th percentiles ({robust_low:.4g} to {robust_high:.4g}), "
                     f"not the extremes ({low:.4g} to {high:.4g}), which look like no-data or saturated "
                     "values; values outside were clipped")
    return robust_low, robust_high


def normalize(images: Tensor) -> Tensor:
    """[..., 3, H, W] in [0, 1] -> ImageNet-normalised."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=images.dtype, device=images.device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=images.dtype, device=images.device)[:, None, None]
    return (images - mean) / std


def to_model_input(image: np.ndarray, short_side: int, max_side: int, notes: list[str] | None = None) -> Tensor:
    """numpy image -> normalised float tensor [1, 3, H', W'] resized by the model's policy."""
    rgb = torch.from_numpy(np.ascontiguousarray(to_float_rgb(image, notes))).permute(2, 0, 1)[None]
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
