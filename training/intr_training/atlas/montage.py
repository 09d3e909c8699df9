"""Patches cut from the original images, and PNG montages of them (rows: heads; columns: top images)."""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from napari_intr.io import read_image
from napari_intr.preprocess import to_float_rgb

from .geometry import crop
from .statistics import Exemplar

PATCH = 96
CAPTION = 14
GAP = 4
LABEL_WIDTH = 150
BACKGROUND = (255, 255, 255)


def patches_for(data_root: Path, exemplars: list[Exemplar], size: int = PATCH) -> dict[tuple, np.ndarray]:
    """(key, box) -> size×size×3 uint8 patch; each image is read once however many patches it gives."""
    by_key: dict[str, set] = {}
    for exemplar in exemplars:
        by_key.setdefault(exemplar.key, set()).add(tuple(exemplar.box))
    patches = {}
    for key in sorted(by_key):
        try:
            image = read_image(data_root / key)
        except (ValueError, OSError):
            image = None  # the image went away or changed since it was summarised: a grey tile
        for box in by_key[key]:
            patches[(key, box)] = _patch(image, box, size)
    return patches


def _patch(image: np.ndarray | None, box, size: int) -> np.ndarray:
    if image is None:
        return np.full((size, size, 3), 128, np.uint8)
    if image.dtype in (np.uint8, np.uint16, np.bool_):
        # Integer images map to [0, 1] by a fixed scale: crop first, convert only the patch.
        scale = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}.get(image.dtype, 1)
        patch = to_float_rgb(crop(image, box, size, fill=scale // 2))
    else:  # float images are stretched by their own range: convert the whole image
        patch = crop(to_float_rgb(image), box, size)
    return (np.clip(patch, 0, 1) * 255).round().astype(np.uint8)


@dataclass
class MontageCell:
    row: int
    col: int
    key: str
    head: int
    box: tuple
    peak: float
    side: str  # "" for a class montage, "a" or "b" in a pair montage


def cell_origin(row: int, col: int, gap_after: int | None = None) -> tuple[int, int]:
    """Top-left pixel of a patch in a montage (a wider gap after column `gap_after`)."""
    x = LABEL_WIDTH + col * (PATCH + GAP) + (3 * GAP if gap_after is not None and col > gap_after else 0)
    return GAP + row * (PATCH + CAPTION + GAP), x


def draw_montage(rows: list[tuple[str, list[tuple[MontageCell, np.ndarray]]]], columns: int,
                 gap_after: int | None = None) -> Image.Image:
    """rows: (label, [(cell, patch)]) -> one RGB image, each patch captioned with its peak weight."""
    width = cell_origin(0, columns - 1, gap_after)[1] + PATCH + GAP
    height = GAP + len(rows) * (PATCH + CAPTION + GAP)
    montage = Image.new("RGB", (max(width, LABEL_WIDTH + PATCH), max(height, PATCH)), BACKGROUND)
    draw = ImageDraw.Draw(montage)
    for row, (label, cells) in enumerate(rows):
        top = cell_origin(row, 0)[0]
        draw.multiline_text((6, top + 4), label, fill=(20, 20, 20), spacing=2)
        for cell, patch in cells:
            y, x = cell_origin(cell.row, cell.col, gap_after)
            montage.paste(Image.fromarray(patch), (x, y))
            draw.text((x + 2, y + PATCH + 1), f"{cell.peak:.3f}", fill=(60, 60, 60))
    return montage


def png_bytes(image: Image.Image | np.ndarray) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # fast: montages are rewritten on every run
    return buffer.getvalue()


def jpeg_bytes(patch: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(patch).save(buffer, format="JPEG", quality=88)
    return buffer.getvalue()
