"""Faithfulness metrics on plain inputs: a `score(images) -> probabilities [B]` callable, an
image tensor [3, H, W] (normalised) and a saliency map [H, W] at the same size.

Insertion/deletion follow Petsiuk et al. (2018): pixels are ranked by the map; deletion sets
them to 0 (in normalised space: the mean colour), insertion pastes them onto a blurred copy;
the score curve over the fraction of pixels changed is summarised by its area (trapezoid rule
on [0, 1]). Two pointing games: TorchRay's (a hit when the map's maximum lies within a tolerance
of the mask: 15 px at 224 px, scaled with the input) and the strict one (a hit when the map's
peak feature cell, the unit an attention map resolves, overlaps the mask).
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt
from scipy.stats import spearmanr
from torch import Tensor

from .methods import Score, as_images

BLUR_KERNEL, BLUR_SIGMA = 11, 5.0
POINTING_TOLERANCE = 15  # px, TorchRay's, at ...
TORCHRAY_SIZE = 224     # ... its input size: other inputs scale it (15 px would be 12 % of a 128 px image)


def auc(curve) -> float:
    """Area under a curve sampled at evenly spaced points of [0, 1] (trapezoid rule)."""
    curve = np.asarray(curve, dtype=np.float64)
    if curve.ndim != 1 or len(curve) < 2:
        raise ValueError(f"a curve needs at least 2 points, got shape {curve.shape}")
    return float((curve[:-1] + curve[1:]).sum() / 2 / (len(curve) - 1))


def blurred(image: Tensor) -> Tensor:
    from torchvision.transforms.functional import gaussian_blur
    return gaussian_blur(image, [BLUR_KERNEL, BLUR_KERNEL], [BLUR_SIGMA, BLUR_SIGMA])


def _ranks(saliency, shape) -> Tensor:
    """[H, W] rank of each pixel, 0 for the most salient (ties: row-major order)."""
    saliency = np.asarray(saliency, dtype=np.float64)
    if saliency.shape != tuple(shape):
        raise ValueError(f"the saliency map is {saliency.shape} but the image is {tuple(shape)}; "
                         "upsample the map to the image size")
    if not np.isfinite(saliency).all():
        raise ValueError("the saliency map contains NaN or infinite values")
    order = np.argsort(-saliency.ravel(), kind="stable")
    ranks = np.empty(order.size, dtype=np.int64)
    ranks[order] = np.arange(order.size)
    return torch.from_numpy(ranks.reshape(shape))


def _curve(score: Score, start: Tensor, end: Tensor, saliency, steps: int, batch_size: int) -> np.ndarray:
    """Scores of the images that take the `k/steps` most salient pixels from `end`, rest from `start`."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    ranks = _ranks(saliency, start.shape[-2:]).to(start.device)
    counts = torch.round(torch.linspace(0, ranks.numel(), steps + 1)).long().to(start.device)
    scores = []
    for chunk in counts.split(batch_size):
        changed = (ranks[None] < chunk[:, None, None])[:, None]  # [b, 1, H, W]
        scores.append(torch.as_tensor(score(torch.where(changed, end[None], start[None]))).detach().float().cpu())
    return torch.cat(scores).numpy()


def deletion_curve(score: Score, image, saliency, steps: int = 50, batch_size: int = 32) -> np.ndarray:
    """[steps + 1] scores as the most salient pixels are set to 0 (low is faithful)."""
    image = as_images(image, score)[0]
    return _curve(score, image, torch.zeros_like(image), saliency, steps, batch_size)


def insertion_curve(score: Score, image, saliency, steps: int = 50, batch_size: int = 32) -> np.ndarray:
    """[steps + 1] scores as the most salient pixels are pasted onto a blurred copy (high is faithful)."""
    image = as_images(image, score)[0]
    return _curve(score, blurred(image), image, saliency, steps, batch_size)


def pointing_tolerance(shape) -> float:
    """TorchRay's tolerance for an input of `shape` (H, W): 15 px at a 224 px short side, in proportion."""
    return POINTING_TOLERANCE * min(shape) / TORCHRAY_SIZE


def _checked_mask(mask, shape, what: str) -> np.ndarray:
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2 or (shape is not None and mask.shape != tuple(shape)):
        raise ValueError(f"the {what} is {tuple(shape) if shape is not None else '?'} but the mask is {mask.shape}")
    if not mask.any():
        raise ValueError("the mask is empty: the pointing game needs a region to point at")
    return mask


def pointing_hit(saliency, mask, tolerance: float | None = None) -> bool:
    """Does the map's maximum (the first, row-major, if tied) lie within `tolerance` px of the
    mask? None: TorchRay's, scaled to the map's size (`pointing_tolerance`)."""
    saliency = np.asarray(saliency)
    mask = _checked_mask(mask, saliency.shape, "saliency map")
    tolerance = pointing_tolerance(saliency.shape) if tolerance is None else tolerance
    row, column = np.unravel_index(int(np.argmax(saliency)), saliency.shape)
    return bool(distance_transform_edt(~mask)[row, column] <= tolerance)


def peak_cell(grid_map) -> tuple[int, int]:
    """(row, col) of a map's highest cell (the first, row-major, if tied)."""
    grid_map = np.asarray(grid_map)
    if grid_map.ndim != 2 or not np.isfinite(grid_map).all():
        raise ValueError(f"a grid map must be a finite [h, w] array, got shape {grid_map.shape}")
    row, column = np.unravel_index(int(np.argmax(grid_map)), grid_map.shape)
    return int(row), int(column)


def cell_pixels(cell: tuple[int, int], stride: int, shape) -> tuple[slice, slice]:
    """The input pixels a feature cell covers: `stride` px per side, cut at the image's edge."""
    row, column = cell
    if not (0 <= row * stride < shape[0] and 0 <= column * stride < shape[1]):
        raise ValueError(f"cell {cell} at stride {stride} lies outside an image of {tuple(shape)} px")
    return slice(row * stride, (row + 1) * stride), slice(column * stride, (column + 1) * stride)


def strict_pointing_hit(grid_map, mask, stride: int) -> bool:
    """The strict pointing game: does the map's peak feature cell (`grid_map` [h, w], one value per
    cell of `stride` px) overlap the mask (input pixels)? No tolerance: a peak one cell beside
    the trait is a miss."""
    grid_map = np.asarray(grid_map)
    if stride < 1:
        raise ValueError(f"the feature stride must be at least 1 px, got {stride}")
    mask = _checked_mask(mask, None, "input")
    if -(-mask.shape[0] // stride) != grid_map.shape[0] or -(-mask.shape[1] // stride) != grid_map.shape[1]:
        raise ValueError(f"a {grid_map.shape} grid at stride {stride} does not cover a {mask.shape} mask")
    return bool(mask[cell_pixels(peak_cell(grid_map), stride, mask.shape)].any())


def on_grid(saliency, stride: int) -> np.ndarray:
    """A pixel map [H, W] averaged over feature cells of `stride` px -> [ceil(H/s), ceil(W/s)]
    (edge cells over their pixels inside the image): how post-hoc maps enter the strict game."""
    tensor = torch.as_tensor(np.ascontiguousarray(saliency, dtype=np.float32))[None, None]
    pooled = torch.nn.functional.avg_pool2d(tensor, stride, stride, ceil_mode=True, count_include_pad=False)
    return pooled[0, 0].numpy()


def rank_correlation(a, b) -> float:
    """Spearman's rank correlation of two maps; NaN when either is constant (no ranking)."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"maps of different sizes: {a.size} vs {b.size} values")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)
