"""Where a head looks, in original-image pixels: its peak, its spread and the patch around the peak.

Attention maps live on the feature grid (h×w cells). A cell covers `stride · H / H'` original
pixels per axis (H the original height, H' the model input's): the model resizes the whole image,
so this holds for every size and aspect ratio. Coordinates here are continuous pixel coordinates
with pixel edges at integers (pixel i spans [i, i + 1)); a box is (top, left, height, width).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MASS_FRACTION = 0.5  # the patch is the peak-centred box holding this share of the map's mass
MIN_PATCH_CELLS = 2.0  # ... but never smaller than this many cells
MIN_PATCH_FRACTION = 0.125  # ... nor than this fraction of the image's short side


@dataclass(frozen=True)
class Footprint:
    """How a feature grid lies on the original image."""
    grid: tuple[int, int]          # (h, w) cells
    cell: tuple[float, float]      # original pixels per cell, per axis
    image_shape: tuple[int, int]   # (H, W) of the original image

    @classmethod
    def of(cls, grid, image_shape, input_shape, stride: int) -> Footprint:
        (height, width), (input_height, input_width) = image_shape, input_shape
        return cls(tuple(int(g) for g in grid), (stride * height / input_height, stride * width / input_width),
                   (int(height), int(width)))

    def cell_centre(self, row: int, col: int) -> tuple[float, float]:
        return (row + 0.5) * self.cell[0], (col + 0.5) * self.cell[1]

    def cell_box(self, row: int, col: int) -> tuple[float, float, float, float]:
        return row * self.cell[0], col * self.cell[1], self.cell[0], self.cell[1]


@dataclass(frozen=True)
class HeadLook:
    """One head's map on one image, summarised: what the atlas keeps of it."""
    peak: float                    # highest raw attention weight (maps sum to 1)
    cell: tuple[int, int]          # (row, col) of the peak cell
    radius: int                    # half-size, in cells, of the peak-centred box holding half the mass
    spread: float                  # that box's share of the image area (0..1]
    box: tuple[float, float, float, float]  # the patch: (top, left, height, width), original pixels

    @property
    def centre(self) -> tuple[float, float]:
        top, left, height, width = self.box
        return top + height / 2, left + width / 2


def mass_radius(weights: np.ndarray, row: int, col: int, fraction: float = MASS_FRACTION) -> int:
    """Smallest k such that the (2k+1)² cells around (row, col), cut at the grid's edges, hold
    `fraction` of the map's mass."""
    weights = np.asarray(weights, dtype=np.float64)
    return int(_mass_radii(weights[None], np.array([row]), np.array([col]), fraction)[0])


def _mass_radii(maps: np.ndarray, rows_at: np.ndarray, cols_at: np.ndarray, fraction: float) -> np.ndarray:
    """`mass_radius` of every map of a stack [n, h, w] around its own cell, every radius at once."""
    count, rows, cols = maps.shape
    # Summed-area tables give each box's mass in O(1).
    summed = np.zeros((count, rows + 1, cols + 1), dtype=np.float64)
    summed[:, 1:, 1:] = np.cumsum(np.cumsum(maps, axis=1, dtype=np.float64), axis=2)
    radii = np.arange(max(rows, cols))
    top = np.maximum(rows_at[:, None] - radii, 0)
    bottom = np.minimum(rows_at[:, None] + radii + 1, rows)
    left = np.maximum(cols_at[:, None] - radii, 0)
    right = np.minimum(cols_at[:, None] + radii + 1, cols)
    which = np.arange(count)[:, None]
    mass = (summed[which, bottom, right] - summed[which, top, right] - summed[which, bottom, left]
            + summed[which, top, left])
    total = maps.reshape(count, -1).sum(axis=1)
    enough = mass >= fraction * total[:, None] - 1e-12
    radius = np.where(enough.any(axis=1), enough.argmax(axis=1), max(rows, cols))
    return np.where(total > 0, radius, 0)


def look(weights: np.ndarray, footprint: Footprint) -> HeadLook:
    """Summarise one head's [h, w] map: peak, spread, and the square patch centred on the peak."""
    return looks(np.asarray(weights)[None], footprint)[0]


def looks(maps: np.ndarray, footprint: Footprint) -> list[HeadLook]:
    """`look` for a stack of maps [n, h, w] (an image's heads) in one pass."""
    maps = np.asarray(maps, dtype=np.float64)
    count, rows, cols = maps.shape
    peak_rows, peak_cols = np.divmod(maps.reshape(count, -1).argmax(axis=1), cols)
    radii = _mass_radii(maps, peak_rows, peak_cols, MASS_FRACTION)
    covered = ((np.minimum(peak_rows + radii + 1, rows) - np.maximum(peak_rows - radii, 0))
               * (np.minimum(peak_cols + radii + 1, cols) - np.maximum(peak_cols - radii, 0)))
    short_side, cell = min(footprint.image_shape), max(footprint.cell)
    found = []
    for index in range(count):
        row, col, radius = int(peak_rows[index]), int(peak_cols[index]), int(radii[index])
        side = max((2 * radius + 1) * cell, MIN_PATCH_CELLS * cell, MIN_PATCH_FRACTION * short_side)
        side = min(side, max(footprint.image_shape))
        centre_y, centre_x = footprint.cell_centre(row, col)
        box = (centre_y - side / 2, centre_x - side / 2, side, side)
        found.append(HeadLook(float(maps[index, row, col]), (row, col), radius, float(covered[index] / (rows * cols)),
                              tuple(float(v) for v in box)))
    return found


def masked_cells(grid: tuple[int, int], cell: tuple[int, int], radius: int) -> np.ndarray:
    """[h·w] bool, True on the cells of the peak-centred box (the region a masking test removes)."""
    mask = np.zeros(grid, dtype=bool)
    row, col = cell
    mask[max(row - radius, 0): row + radius + 1, max(col - radius, 0): col + radius + 1] = True
    return mask.reshape(-1)


def crop(image: np.ndarray, box: tuple[float, float, float, float], size: int = 96,
         fill: float = 0.5) -> np.ndarray:
    """The box of an image (H×W or H×W×C, any dtype) resampled to size×size, nearest pixel centre
    (so the box's centre maps onto the patch's centre); outside the image is `fill` (in the image's
    dtype)."""
    top, left, height, width = box
    # Sample at the centres of size×size sub-cells of the box.
    rows = np.floor(top + (np.arange(size) + 0.5) * height / size).astype(int)
    cols = np.floor(left + (np.arange(size) + 0.5) * width / size).astype(int)
    inside = ((rows >= 0) & (rows < image.shape[0]))[:, None] & ((cols >= 0) & (cols < image.shape[1]))[None, :]
    # Rows, then columns: two 1-D gathers cost a fraction of one 2-D fancy index.
    patch = image.take(np.clip(rows, 0, image.shape[0] - 1), axis=0).take(np.clip(cols, 0, image.shape[1] - 1), axis=1)
    if not inside.all():  # take made a copy: the image is untouched
        patch[~inside] = fill  # in the image's own dtype
    return patch
