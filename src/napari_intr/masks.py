"""Masks that come with images (a synthetic collection's attribute and specimen masks): read
and checked in one place, so that a damaged or mis-sized mask is named as the mask, wherever it
is used (the trait atlas's consistency, the faithfulness pointing game)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def read_mask(path: str | Path, shape: tuple[int, int] | None = None, what: str = "mask") -> np.ndarray | None:
    """H×W bool (pixels above 127), or None when there is no file; a mask that cannot be read,
    or whose size is not `shape` (its image's H, W), is refused with its own path."""
    from PIL import Image, UnidentifiedImageError
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with Image.open(path) as opened:
            mask = np.asarray(opened if opened.mode == "L" else opened.convert("L")) > 127
    except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as error:
        raise ValueError(f"the {what} {path} cannot be read ({type(error).__name__}: {error}); replace or "
                         "remove it") from None
    if shape is not None and mask.shape != tuple(shape):
        raise ValueError(f"the {what} {path} is {mask.shape[1]}×{mask.shape[0]} px but its image is "
                         f"{shape[1]}×{shape[0]} px; a mask must have its image's size")
    return mask
