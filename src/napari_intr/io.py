"""Reading images from disk, one place for the CLI, batch explain and training."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", *TIFF_SUFFIXES)
# Pillow refuses images over ~179 M pixels as a guard against decompression bombs; specimen
# scans can legitimately be 20 000 px on a side, so we allow up to 2^31 pixels.
MAX_PIXELS = 2**31
_PILLOW_MODES_KEPT = ("1", "L", "RGB", "RGBA", "I;16", "I;16B", "I;16L", "I", "F")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file -> H×W or H×W×C numpy array (channels last), ValueError if it can't be read."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no image file at {path}")
    try:
        image = _read_tiff(path) if path.suffix.lower() in TIFF_SUFFIXES else _read_with_pillow(path)
    except (FileNotFoundError, MemoryError):
        raise
    except Exception as error:  # readers raise many types for damaged files; all mean "unreadable"
        raise ValueError(f"cannot read {path.name}: {error}") from error
    if image.ndim not in (2, 3):
        raise ValueError(f"{path.name} holds an array of shape {image.shape}, not one 2-D image; "
                         "save a single plane (grey, RGB or RGBA)")
    return image


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile
    image = np.squeeze(tifffile.imread(path))
    # ImageJ and many microscopes store RGB planar (3×H×W): put channels last.
    if image.ndim == 3 and image.shape[0] in (3, 4) and image.shape[-1] not in (3, 4):
        image = np.moveaxis(image, 0, -1)
    if image.ndim == 3 and image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"it holds a stack of {image.shape[0]} planes of {image.shape[1]}×{image.shape[2]} px; "
                         "explain one plane at a time")
    return image


def _read_with_pillow(path: Path) -> np.ndarray:
    from PIL import Image, ImageOps
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, MAX_PIXELS
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened)  # camera photos store rotation in EXIF
            if image.mode not in _PILLOW_MODES_KEPT:
                image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
            pixels = np.asarray(image)
            return pixels.astype(pixels.dtype.newbyteorder("="), copy=False)  # I;16B is big-endian
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def find_images(inputs: Iterable[str | os.PathLike] | str | os.PathLike) -> list[Path]:
    """Files and folders -> image files. Folders are searched recursively (class subfolders) for
    known image suffixes; files named explicitly are taken as they are."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    inputs = list(inputs)
    found: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file()
                                and p.suffix.lower() in IMAGE_SUFFIXES
                                and not any(part.startswith(".") for part in p.relative_to(path).parts)))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    if not found:
        raise ValueError(f"no images found in {', '.join(str(i) for i in inputs)}; "
                         f"looked for {', '.join(IMAGE_SUFFIXES)}")
    return list(dict.fromkeys(found))  # the same file named twice is explained once


# Cameras and screenshots write 72 or 96 dpi whatever they show; below this a resolution is no scale.
MIN_SCAN_DPI = 100
_UNIT_NAMES = {"micron": "µm", "um": "µm", "\u00b5m": "µm", "μm": "µm", "microns": "µm", "mm": "mm",
               "millimeter": "mm", "cm": "cm", "centimeter": "cm", "nm": "nm", "m": "m", "inch": "in"}


@dataclass(frozen=True)
class PixelSize:
    """Physical size of one image pixel (y and x), in `unit` ("mm", "µm", "cm", …)."""
    y: float
    x: float
    unit: str

    def scaled(self, factor_y: float, factor_x: float) -> PixelSize:
        return PixelSize(self.y * factor_y, self.x * factor_x, self.unit)


def read_pixel_size(path: str | os.PathLike) -> PixelSize | None:
    """The physical size of one pixel of an image file, or None without one.

    TIFF: ImageJ's calibration (unit + resolution), else a resolution in inches or centimetres;
    PNG and JPEG: their dots per inch. Resolutions under MIN_SCAN_DPI are camera defaults, not
    scales, and are ignored; so is anything unreadable (the image itself is read elsewhere)."""
    path = Path(path)
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            return _tiff_pixel_size(path)
        from PIL import Image
        with Image.open(path) as opened:
            dpi = opened.info.get("dpi")
    except Exception:  # noqa: BLE001 - no scale is a normal answer
        return None
    if not dpi or min(float(value) for value in dpi[:2]) < MIN_SCAN_DPI:
        return None
    return PixelSize(25.4 / float(dpi[1]), 25.4 / float(dpi[0]), "mm")


def _tiff_pixel_size(path: Path) -> PixelSize | None:
    import tifffile
    with tifffile.TiffFile(path) as tiff:
        page = tiff.pages[0]
        tags = page.tags
        if "XResolution" not in tags or "YResolution" not in tags:
            return None
        per_unit_x = _ratio(tags["XResolution"].value)
        per_unit_y = _ratio(tags["YResolution"].value)
        if not per_unit_x or not per_unit_y:
            return None
        imagej_unit = (tiff.imagej_metadata or {}).get("unit") if tiff.is_imagej else None
        if imagej_unit:
            unit = _UNIT_NAMES.get(str(imagej_unit).strip().lower(), str(imagej_unit))
            if unit.lower() in ("pixel", "pixels", ""):
                return None
            return PixelSize(1 / per_unit_y, 1 / per_unit_x, unit)
        unit = int(getattr(tags.get("ResolutionUnit"), "value", 2))
        if unit == 2:  # inch
            if min(per_unit_x, per_unit_y) < MIN_SCAN_DPI:
                return None
            return PixelSize(25.4 / per_unit_y, 25.4 / per_unit_x, "mm")
        if unit == 3:  # centimetre
            if min(per_unit_x, per_unit_y) * 2.54 < MIN_SCAN_DPI:
                return None
            return PixelSize(10 / per_unit_y, 10 / per_unit_x, "mm")
        return None


def _ratio(value) -> float:
    if isinstance(value, tuple):
        return value[0] / value[1] if value[1] else 0.0
    return float(value)
