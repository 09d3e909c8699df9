"""Manipulation flip rate on look-alike pairs (synthetic data only: it re-renders specimens).

For a pair (A, B) of one mimicry ring, A and B are drawn in the same pose. Painting B's
attribute region (its mask dilated 3 px) into A's image should turn a correct "A" into "B" if
the model decides by the attribute; painting a background disc of the same area with the
attribute's colour is the control, which should rarely flip it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.ndimage import binary_dilation, distance_transform_edt

from napari_intr.editing import Recolour, Transplant
from napari_intr.model import INTR
from napari_intr.preprocess import TYPE_RANGES

from .. import synth

DILATION = 3  # px: the render's blur spreads an attribute edit ~3 px beyond its mask


@dataclass
class FlipCounts:
    edited: int = 0            # specimens the model named correctly before the edit
    attribute_flips: int = 0   # ... that became the other species after the attribute transplant
    background_flips: int = 0  # ... that became the other species after the background disc
    notes: list[str] = field(default_factory=list)

    def rates(self) -> tuple[float, float]:
        if not self.edited:
            return float("nan"), float("nan")
        return self.attribute_flips / self.edited, self.background_flips / self.edited


def background_disc(specimen: np.ndarray, area: int) -> np.ndarray:
    """A disc of `area` px, inside the image, centred as far from the specimen as possible."""
    height, width = specimen.shape
    radius = max(1.0, float(np.sqrt(area / np.pi)))
    distance = distance_transform_edt(~specimen)
    margin = int(np.ceil(radius))
    inner = distance[margin: height - margin, margin: width - margin]
    if inner.size == 0:
        raise ValueError(f"a disc of {area} px does not fit in a {height}×{width} image")
    row, column = np.unravel_index(int(np.argmax(inner)), inner.shape)
    yy, xx = np.mgrid[:height, :width]
    return np.hypot(yy - row - margin, xx - column - margin) <= radius


def predicted(model: INTR, images: list[np.ndarray]) -> list[int]:
    with torch.inference_mode():
        batch = torch.cat([model.preprocess(image) for image in images])
        return model(batch, return_attention=False).logits.argmax(-1).tolist()


def flip_counts(model: INTR, pairs: list[tuple[str, str]], poses: int, size: int, seed: int,
                progress=None) -> FlipCounts:
    """Both directions of every pair the model knows, `poses` specimens each."""
    counts = FlipCounts()
    known = [(a, b) for a, b in pairs if a in model.class_names and b in model.class_names]
    if len(known) < len(pairs):
        counts.notes.append(f"flip rate: {len(pairs) - len(known)} look-alike pairs name species the model "
                            "does not know; left out")
    for a, b in known:
        for source, target in ((a, b), (b, a)):
            for index in range(poses):
                pose = synth.sample_pose(np.random.default_rng([seed, 7919, index]), size)
                image, mask, coverage = synth.render_with_coverage(source, pose, size)
                other, _ = synth.render(target, pose, size)
                region = binary_dilation(mask, iterations=DILATION)
                colour = tuple(float(v) for v in other[mask].mean(axis=0) / TYPE_RANGES[other.dtype])
                specimen = coverage > 0
                disc = background_disc(specimen | region, int(region.sum()))
                before, attribute, background = predicted(model, [
                    image, Transplant(other).apply(image, region), Recolour(colour).apply(image, disc)])
                if progress is not None:
                    progress()
                if before != model.class_names.index(source):
                    continue
                goal = model.class_names.index(target)
                counts.edited += 1
                counts.attribute_flips += attribute == goal
                counts.background_flips += background == goal
    return counts
