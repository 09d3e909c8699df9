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


# Integer types whose full range is the image's range; other types are stretched (intensity_range).
TYPE_RANGES = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0, np.dtype(bool): 1.0}


def layout_problem(shape, what: str = "image", min_size: int = MIN_IMAGE_SIZE) -> str | None:
    """Why an array of `shape` is not one 2-D image (grey H×W or H×W×1, RGB H×W×3 or RGBA
    H×W×4, channels last, at least `min_size` px on each side); None when it is one."""
    shape = tuple(shape)
    if len(shape) == 3 and shape[0] in (1, 3, 4) and shape[-1] not in (1, 3, 4):
        return f"{what} of shape {shape} looks channel-first; put channels last (numpy.moveaxis(image, 0, -1))"
    if not (len(shape) == 2 or (len(shape) == 3 and shape[-1] in (1, 3, 4))):
        return f"expected a 2-D grey, RGB or RGBA image, got shape {shape}"
    height, width = shape[:2]
    if min(height, width) < min_size:
        return f"{what} is {height}×{width} px; INTR needs at least {min_size} px on each side"
    return None


def is_colour(image: np.ndarray) -> bool:
    """RGB or RGBA (channels last), as opposed to grey: how the image is shown and written."""
    return image.ndim == 3 and image.shape[-1] in (3, 4)


def dtype_problem(dtype) -> str | None:
    """Why an image of this data type cannot be explained (not a number, or complex); None when it can."""
    dtype = np.dtype(dtype)
    if dtype != bool and (not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating)):
        return f"image has unsupported data type {dtype}"
    return None


def intensity_range(image: np.ndarray, notes: list[str] | None = None) -> tuple[float, float]:
    """The intensities that mean 0 and 1: the type's range for uint8/uint16/bool, [0, 1] for
    values already inside it, otherwise the minimum and maximum, or robust percentiles where a
    few extreme values (no-data fill such as -3.4e38, hot pixels) would flatten the rest (`notes`
    then gets a sentence). Always high > low."""
    if image.dtype in TYPE_RANGES:
        return 0.0, TYPE_RANGES[image.dtype]
    low, high = float(image.min()), float(image.max())
    if low >= 0 and high <= 1:
        return 0.0, 1.0
    low, high = _stretch_range(image, low, high, notes)
    return (low, high) if high > low else (low, low + 1.0)


def fractions(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Intensities as fractions of (low, high), an intensity_range: float64, not clipped (float64:
    x - low of float32 values near ±3.4e38 would overflow to inf)."""
    return (np.asarray(values).astype(np.float64) - low) / (high - low)


def to_unit_range(image: np.ndarray, notes: list[str] | None = None) -> np.ndarray:
    """Any numeric image -> float32 in [0, 1] by its intensity_range (values outside are clipped)."""
    if image.dtype in TYPE_RANGES:
        return image.astype(np.float32) / np.float32(TYPE_RANGES[image.dtype])
    low, high = intensity_range(image, notes)
    if (low, high) == (0.0, 1.0):
        return np.clip(image.astype(np.float32), 0, 1)
    return np.clip(fractions(image, low, high), 0, 1).astype(np.float32)


def to_float_rgb(image: np.ndarray, notes: list[str] | None = None) -> np.ndarray:
    """H×W / H×W×1 / H×W×3 / H×W×4 of any common dtype -> float32 H×W×3 in [0, 1]
    (see intensity_range; `notes` gets a sentence when a robust stretch was used)."""
    image = np.asarray(image)
    problem = layout_problem(image.shape)
    if problem:
        raise ValueError(problem)
    if image.ndim == 3:
        image = image[..., 0] if image.shape[-1] == 1 else image[..., :3]  # alpha only says where the specimen was cut out
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    problem = dtype_problem(image.dtype)
    if problem:
        raise ValueError(problem)
    if image.dtype not in TYPE_RANGES and not np.isfinite(image).all():
        raise ValueError("image contains NaN or infinite values; fill or crop them before explaining")
    return to_unit_range(image, notes)


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
