"""Faithfulness metrics on plain inputs: a `score(images) -> probabilities [B]` callable, an
image tensor [3, H, W] (normalised) and a saliency map [H, W] at the same size.

Insertion/deletion follow Petsiuk et al. (2018): pixels are ranked by the map; deletion sets
them to 0 (in normalised space: the mean colour), insertion pastes them onto a blurred copy;
the score curve over the fraction of pixels changed is summarised by its area (trapezoid rule
on [0, 1]). The pointing game follows TorchRay's benchmark: a hit when the map's maximum lies
within `tolerance` pixels of the mask.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt
from scipy.stats import spearmanr
from torch import Tensor

from .methods import Score, as_images

BLUR_KERNEL, BLUR_SIGMA = 11, 5.0
POINTING_TOLERANCE = 15  # px at the model input resolution, as TorchRay


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


def pointing_hit(saliency, mask, tolerance: float = POINTING_TOLERANCE) -> bool:
    """Does the map's maximum (the first, row-major, if tied) lie within `tolerance` px of the mask?"""
    saliency, mask = np.asarray(saliency), np.asarray(mask, dtype=bool)
    if saliency.shape != mask.shape:
        raise ValueError(f"the saliency map is {saliency.shape} but the mask is {mask.shape}")
    if not mask.any():
        raise ValueError("the mask is empty: the pointing game needs a region to point at")
    row, column = np.unravel_index(int(np.argmax(saliency)), saliency.shape)
    return bool(distance_transform_edt(~mask)[row, column] <= tolerance)


def rank_correlation(a, b) -> float:
    """Spearman's rank correlation of two maps; NaN when either is constant (no ranking)."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"maps of different sizes: {a.size} vs {b.size} values")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)
