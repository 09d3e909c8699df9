"""Where each class query's decoder output z_out (Eq. 6's input) lies on images of that class:
a mean per class and one shared precision matrix (Lee et al., NeurIPS 2018, "A simple unified
framework for detecting out-of-distribution samples"), fitted on calibration images.

Why: an unseen look-alike shares everything with its known relatives except a small trait, so
the presence scores (the logits) stay confident; what changes is what the predicted class's
query found, z_out itself. The squared Mahalanobis distance of that output to the class's mean
measures how unlike the class's usual images the query's finding is.

The shared covariance is the pooled within-class covariance, shrunk towards a multiple of the
identity by the Ledoit-Wolf rule (Ledoit & Wolf, 2004): a few hundred calibration images do not
determine a 128 x 128 or 256 x 256 covariance, and the shrunk one is always invertible.
Stored as float32 (the arrays travel in the checkpoint metadata as base64); the distances the
threshold is chosen on are computed from the stored, rounded arrays.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass

import numpy as np


class FeatureStatisticsError(ValueError):
    """Statistics that cannot be fitted or read; the message says why and what to do."""


def ledoit_wolf(centered: np.ndarray) -> tuple[np.ndarray, float]:
    """The Ledoit-Wolf shrunk covariance of [N, D] centred rows, and its shrinkage in [0, 1]."""
    n, d = centered.shape
    sample = centered.T @ centered / n
    target = np.trace(sample) / d
    distance = ((sample - target * np.eye(d)) ** 2).sum()
    squared_norms = (centered ** 2).sum(1)
    # mean over rows of ||x x^T - S||_F^2, expanded: ||x||^4 - 2 x^T S x + ||S||_F^2
    spread = ((squared_norms ** 2).sum() - 2 * np.einsum("ni,ij,nj->", centered, sample, centered)
              + n * (sample ** 2).sum()) / n ** 2
    shrinkage = 1.0 if distance <= 0 else float(np.clip(spread / distance, 0.0, 1.0))
    return shrinkage * target * np.eye(d) + (1 - shrinkage) * sample, shrinkage


def _encode(array: np.ndarray) -> dict:
    array = np.ascontiguousarray(array, dtype="<f4")
    return {"shape": list(array.shape), "float32": base64.b64encode(array.tobytes()).decode("ascii")}


def _decode(entry: dict) -> np.ndarray:
    shape = [int(s) for s in entry["shape"]]
    array = np.frombuffer(base64.b64decode(entry["float32"], validate=True), dtype="<f4")
    return array.reshape(shape).astype(np.float32)


@dataclass(frozen=True, eq=False)
class ClassFeatures:
    means: np.ndarray      # [C, D] float32: each class query's mean output on images of its class
    precision: np.ndarray  # [D, D] float32: the inverse of the shared (shrunk) covariance
    images: tuple[int, ...]  # calibration images per class (a class without any gets the pooled mean)
    shrinkage: float

    def distance(self, features: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """[N] squared Mahalanobis distances of [N, D] outputs to the means of their [N] classes."""
        features = np.asarray(features, dtype=np.float64)
        classes = np.asarray(classes, dtype=np.int64)
        if features.ndim != 2 or features.shape[1] != self.means.shape[1] or len(classes) != len(features):
            raise FeatureStatisticsError(f"decoder outputs of shape {features.shape} do not fit statistics of "
                                         f"hidden size {self.means.shape[1]} (one row per image, one class each)")
        offset = features - self.means.astype(np.float64)[classes]
        return np.einsum("ni,ij,nj->n", offset, self.precision.astype(np.float64), offset)

    def __eq__(self, other) -> bool:
        return isinstance(other, ClassFeatures) and self.to_dict() == other.to_dict()

    def to_dict(self) -> dict:
        return {"means": _encode(self.means), "precision": _encode(self.precision), "images": list(self.images),
                "shrinkage": self.shrinkage}

    @classmethod
    def from_dict(cls, values: dict) -> ClassFeatures:
        try:
            means, precision = _decode(values["means"]), _decode(values["precision"])
            images, shrinkage = tuple(int(n) for n in values["images"]), float(values["shrinkage"])
        except (KeyError, TypeError, ValueError) as error:
            raise FeatureStatisticsError(f"damaged class-feature statistics ({error})") from error
        if means.ndim != 2 or precision.shape != (means.shape[1],) * 2 or len(images) != len(means):
            raise FeatureStatisticsError(f"damaged class-feature statistics (means {means.shape}, precision "
                                         f"{precision.shape}, {len(images)} counts)")
        return cls(means, precision, images, shrinkage)


def fit(features: np.ndarray, labels: np.ndarray, classes: int) -> ClassFeatures:
    """Statistics of [N, D] decoder outputs of each image's TRUE class query, labels [N] in 0..classes-1."""
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if features.ndim != 2 or len(features) != len(labels) or len(labels) < 2:
        raise FeatureStatisticsError(f"{len(labels)} decoder outputs of shape {features.shape} are too few to fit "
                                     "class-feature statistics: give at least two calibration images")
    if not np.isfinite(features).all():
        raise FeatureStatisticsError("some decoder outputs are not finite: calibrate with every class decoded "
                                     "(no shortlist)")
    counts = np.bincount(labels, minlength=classes)
    pooled = features.mean(0)
    means = np.stack([features[labels == c].mean(0) if counts[c] else pooled for c in range(classes)])
    covariance, shrinkage = ledoit_wolf(features - means[labels])
    precision = np.linalg.inv(covariance)
    return ClassFeatures(means.astype(np.float32), ((precision + precision.T) / 2).astype(np.float32),
                         tuple(int(n) for n in counts), shrinkage)
