"""Explanations as files other programs open: attention maps as ImageJ hyperstacks (Fiji shows
one named slice per class, layer and head) or OME-TIFF, a PNG overlay, a predictions table.

Maps keep INTR's attention grid (one pixel per feature cell, raw post-softmax weights, float32);
where the input image had a physical pixel size, the maps carry it multiplied by the cell size,
so Fiji's and QuPath's measurements agree with the photograph's. Files are written aside and
renamed into place, so a crash never leaves half a file.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .explanation import Explanation
from .io import PixelSize

FORMATS = ("imagej", "ome")
AXES = "TZCYX"  # T: class, Z: decoder layer, C: head (ImageJ's hyperstack order)
_IMAGEJ_UNITS = {"µm": "micron"}  # ImageJ writes micrometres as "micron"


def plane_label(class_label: str, layer: int, head: int | None) -> str:
    """What Fiji shows for one slice; layer and head are 1-based as in the paper (None: head mean)."""
    return f"{class_label} · L{layer} · {'mean' if head is None else f'H{head}'}"


def attention_stack(explanation: Explanation, classes: Sequence[str], layers: Sequence[int],
                    class_labels: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """[classes, layers, heads, h, w] raw attention weights and one label per plane (TZC order).

    layers: Python indices (-1 = last). class_labels: how each class is written in the file
    (default: the explanation's labels, e.g. "001.Black_footed_Albatross")."""
    labels_of = dict(zip(explanation.class_names, explanation.labels(), strict=True))
    class_labels = list(class_labels) if class_labels is not None else [labels_of[name] for name in classes]
    stack = np.stack([np.stack([explanation.head_maps(name, layer, normalization="none") for layer in layers])
                      for name in classes]).astype(np.float32)
    numbers = [layer % explanation.num_layers + 1 for layer in layers]
    labels = [plane_label(label, number, head + 1) for label in class_labels for number in numbers
              for head in range(explanation.num_heads)]
    return stack, labels


def write_attention_tiff(path: str | os.PathLike, stack: np.ndarray, labels: Sequence[str], metadata: dict,
                         pixel_size: PixelSize | None = None, file_format: str = "imagej") -> Path:
    """Write a [classes, layers, heads, h, w] float32 stack.

    imagej: an ImageJ hyperstack (T = class, Z = layer, C = head, grey), per-slice labels, the
    metadata as JSON in the "Info" property (Fiji: Image ▸ Show Info). ome: an OME-TIFF with the
    same axes, plane labels as channel names of the first class and layer, and the metadata as
    JSON in the image description's annotation."""
    import tifffile
    if file_format not in FORMATS:
        raise ValueError(f"unknown TIFF format {file_format!r}: choose one of {', '.join(FORMATS)}")
    stack = np.ascontiguousarray(stack, dtype=np.float32)
    if stack.ndim != 5:
        raise ValueError(f"expected a [classes, layers, heads, h, w] stack, got shape {stack.shape}")
    if len(labels) != int(np.prod(stack.shape[:3])):
        raise ValueError(f"{len(labels)} plane labels for {int(np.prod(stack.shape[:3]))} planes")
    info = json.dumps(metadata, ensure_ascii=False, default=str)

    def write(temporary: str) -> None:
        if file_format == "imagej":
            options = {"imagej": True, "metadata": {
                "axes": AXES, "Labels": list(labels), "mode": "grayscale", "Info": info,
                "min": 0.0, "max": float(stack.max()) if stack.size else 1.0}}
            if pixel_size is not None:
                options["resolution"] = (1 / pixel_size.x, 1 / pixel_size.y)
                options["metadata"]["unit"] = _IMAGEJ_UNITS.get(pixel_size.unit, pixel_size.unit)
        else:
            ome = {"axes": AXES, "Name": metadata.get("image", "attention"), "Description": info,
                   "Channel": {"Name": [label.rsplit(" · ", 1)[-1] for label in labels[: stack.shape[2]]]}}
            if pixel_size is not None:
                ome.update(PhysicalSizeX=pixel_size.x, PhysicalSizeXUnit=pixel_size.unit,
                           PhysicalSizeY=pixel_size.y, PhysicalSizeYUnit=pixel_size.unit)
            options = {"ome": True, "photometric": "minisblack", "metadata": ome}
        with open(temporary, "wb") as stream:
            tifffile.imwrite(stream, stack, **options)

    return atomic_write(path, write)


def read_attention_tiff(path: str | os.PathLike) -> tuple[np.ndarray, dict, list[str]]:
    """(maps as stored, squeezed; the JSON metadata; the plane labels) of a file written above."""
    import tifffile
    with tifffile.TiffFile(path) as tiff:
        maps = tiff.asarray()
        if tiff.is_imagej:
            meta = tiff.imagej_metadata or {}
            return maps, json.loads(meta.get("Info", "{}")), list(meta.get("Labels", []))
        if tiff.is_ome:
            from xml.etree import ElementTree
            root = ElementTree.fromstring(tiff.ome_metadata)
            description = next((element.text for element in root.iter() if element.tag.endswith("Description")), "")
            return maps, json.loads(description or "{}"), []
    raise ValueError(f"{path} is neither an ImageJ hyperstack nor an OME-TIFF written by napari-intr")


def map_pixel_size(explanation: Explanation, image_pixel: PixelSize | None) -> PixelSize | None:
    """The physical size of one attention cell: the image's pixel size times the cell size."""
    if image_pixel is None:
        return None
    return image_pixel.scaled(*explanation.cell_size())


def write_overlay_png(path: str | os.PathLike, image: np.ndarray, heatmap: np.ndarray, opacity: float = 0.5,
                      colormap: str = "inferno") -> Path:
    """The image with a [0, 1] heat map (already on the image's pixel grid) blended over it, 8-bit RGB."""
    from matplotlib import colormaps
    from PIL import Image

    from .preprocess import to_float_rgb
    base = to_float_rgb(image)
    heat = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0, 1)
    if heat.shape != base.shape[:2]:
        raise ValueError(f"the heat map is {heat.shape} but the image is {base.shape[:2]}")
    coloured = colormaps[colormap](heat)[..., :3]
    weight = opacity * heat[..., None]  # unattended pixels show the photograph as it is
    blended = (1 - weight) * base + weight * coloured
    pixels = (np.clip(blended, 0, 1) * 255 + 0.5).astype(np.uint8)
    return atomic_write(path, lambda temporary: Image.fromarray(pixels).save(temporary, format="PNG"))
