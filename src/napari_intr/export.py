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
from .explanation import Explanation, head_number, min_max
from .filenames import as_text, fitting_name
from .image_files import PixelSize
from .preprocess import is_colour
from .regions import REGION_COLUMNS, RegionResult

FORMATS = ("imagej", "ome")
AXES = "TZCYX"  # T: class, Z: decoder layer, C: head (ImageJ's hyperstack order)
_IMAGEJ_UNITS = {"µm": "micron"}  # ImageJ writes micrometres as "micron"


# Whether a calibrated model finds one of its species (yes/no), its open-set score, and the
# conformal prediction set (napari_intr.calibration); empty cells for a model not calibrated.
OPEN_SET_COLUMNS = ("known", "open_set_score", "prediction_set")
SET_SEPARATOR = "; "


def prediction_columns(top_k: int) -> list[str]:
    """Table columns: the open-set verdict, then the top-k classes (as people read them, as their
    list writes them, probability). For a rejected image (known = no) the top-k are the nearest
    known species, not a prediction."""
    return [*OPEN_SET_COLUMNS,
            *(f"top{rank}_{what}" for rank in range(1, top_k + 1) for what in ("class", "label", "probability"))]


def prediction_cells(explanation: Explanation, top_k: int) -> dict:
    """The cells of `prediction_columns` for one explanation (probabilities to 6 significant digits)."""
    labels, cells = explanation.labels(), {}
    verdict = explanation.calibrated  # None: not calibrated (or a subset of classes), empty cells
    cells.update(known=None if verdict is None else "yes" if verdict.known else "no",
                 open_set_score=None if verdict is None else float(f"{verdict.score:.6g}"),
                 prediction_set=None if verdict is None else SET_SEPARATOR.join(verdict.prediction_set))
    for rank, entry in enumerate(explanation.table()[:top_k], start=1):
        cells[f"top{rank}_class"] = entry["name"]
        cells[f"top{rank}_label"] = labels[explanation.column(entry["name"])]
        cells[f"top{rank}_probability"] = float(f"{entry['probability']:.6g}")
    return cells


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
    numbers = [explanation.layer_number(layer) for layer in layers]
    labels = [plane_label(label, number, head_number(head)) for label in class_labels for number in numbers
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
    labels = [as_text(label) for label in labels]  # TIFF tags hold text: names that are not, escaped
    info = as_text(json.dumps(metadata, ensure_ascii=False, default=str))
    metadata = {**metadata, "image": as_text(str(metadata.get("image", "attention")))}

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


OVERLAY_OPACITY = 0.75   # the most opaque the heat map gets (at its peak)
OVERLAY_GAMMA = 0.5      # opacity grows as the square root: a quarter of the peak is half as opaque
OVERLAY_SATURATE = 99.0  # percentile of the attended pixels that gets the top colour


def write_overlay_png(path: str | os.PathLike, image: np.ndarray, heatmap: np.ndarray,
                      opacity: float = OVERLAY_OPACITY, colormap: str = "inferno", outlines: list | None = None,
                      colour_bar: bool = True) -> Path:
    """The image with a heat map (on the image's pixel grid, >= 0) blended over it, 8-bit RGB, and a
    colour bar on its right. Attention is peaked: drawn linearly, a map whose mass lies at a
    fifth of its peak showed almost nothing. So the map is scaled to its OVERLAY_SATURATE
    percentile (of the pixels it attends) and its opacity grows as heat ** OVERLAY_GAMMA; the
    colour stays linear in the heat, as the bar shows (0 at the bottom, the saturating value on top).

    outlines: [(region, (r, g, b) in [0, 1])] drawn as 2 px rectangles along the regions' boxes."""
    from matplotlib import colormaps
    from PIL import Image

    from .preprocess import to_float_rgb
    base = to_float_rgb(image)
    heat = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0, None)
    if heat.shape != base.shape[:2]:
        raise ValueError(f"the heat map is {heat.shape} but the image is {base.shape[:2]}")
    attended = heat[heat > 0]
    top = float(np.percentile(attended, OVERLAY_SATURATE)) if attended.size else 1.0
    heat = np.clip(heat / max(top, 1e-12), 0, 1)
    coloured = colormaps[colormap](heat)[..., :3]
    weight = opacity * heat[..., None] ** OVERLAY_GAMMA  # unattended pixels show the photograph as it is
    blended = (1 - weight) * base + weight * coloured
    height, width = heat.shape
    for region, colour in outlines or []:
        row0, col0 = max(0, int(region.y0)), max(0, int(region.x0))
        row1, col1 = min(height, int(np.ceil(region.y1))), min(width, int(np.ceil(region.x1)))
        for rows, cols in ((slice(row0, row0 + 2), slice(col0, col1)), (slice(row1 - 2, row1), slice(col0, col1)),
                           (slice(row0, row1), slice(col0, col0 + 2)), (slice(row0, row1), slice(col1 - 2, col1))):
            blended[rows, cols] = colour
    pixels = (np.clip(blended, 0, 1) * 255 + 0.5).astype(np.uint8)
    if colour_bar:
        pixels = _with_colour_bar(pixels, colormap)
    return atomic_write(path, lambda temporary: Image.fromarray(pixels).save(temporary, format="PNG"))


def _with_colour_bar(pixels: np.ndarray, colormap: str) -> np.ndarray:
    """`pixels` with a white margin on the right holding a vertical colour bar (peak on top, 0 at
    the bottom), labelled "peak" and "0" where the picture is tall enough for text."""
    from matplotlib import colormaps
    from PIL import Image, ImageDraw
    height, width = pixels.shape[:2]
    bar = max(8, min(24, width // 16))
    margin = max(4, bar // 2)
    labels = height >= 48
    canvas = np.full((height, width + margin + bar + (34 if labels else margin), 3), 255, np.uint8)
    canvas[:, :width] = pixels
    ramp = np.linspace(1, 0, height)[:, None].repeat(bar, axis=1)
    canvas[:, width + margin: width + margin + bar] = (colormaps[colormap](ramp)[..., :3] * 255 + 0.5).astype(np.uint8)
    if labels:
        picture = Image.fromarray(canvas)
        draw = ImageDraw.Draw(picture)
        left = width + margin + bar + 3
        draw.text((left, 0), "peak", fill=(0, 0, 0))
        draw.text((left, height - 12), "0", fill=(0, 0, 0))
        canvas = np.asarray(picture)
    return canvas


CLASS_TABLE_COLUMNS = ["rank", "class", "label", "probability", "logit", "index"]


def explanation_metadata(explanation: Explanation, class_name: str, layer: int, image_file: str | None = None,
                         offset: tuple[int, int] = (0, 0)) -> dict:
    """What an attention TIFF says about itself (Info property / OME description), as JSON."""
    column = explanation.column(class_name)
    scale, translate = explanation.grid_to_image()
    return {
        "image": explanation.image_name, "class": class_name, "label": explanation.labels()[column],
        "layer": explanation.layer_number(layer), "heads": explanation.num_heads,
        "top_heads": [head_number(h) for h in explanation.head_order(class_name, layer)],
        "top_heads_by": explanation.ranking_basis(class_name, layer),
        "flagged_heads": _flagged(explanation, class_name, layer),
        # per head (H1 first), the share on the model's null keys, which the maps leave out; None: no null keys
        "looks_at_nothing": _nothing(explanation, class_name, layer),
        "rank": explanation.rank_of(class_name), "probability": float(explanation.probabilities[column]),
        "model": explanation.model_name, "mode": explanation.mode, "candidates": explanation.class_names,
        "scored_by_first_pass_only": explanation.undecoded,  # shortlist decoding: classes not decoded
        "image_file": image_file, "image_shape": list(explanation.image_shape),
        # napari: Image layer(maps, scale=scale, translate=translate) lies on the original photograph
        "scale": list(scale), "translate": [t + o for t, o in zip(translate, offset, strict=True)],
        "notes": explanation.notes,
    }


def _nothing(explanation: Explanation, class_name: str, layer: int) -> list[float] | None:
    shares = explanation.nothing_share(class_name, layer)
    return None if shares is None else [round(float(share), 4) for share in shares]


def class_table_rows(explanation: Explanation) -> list[dict]:
    labels = explanation.labels()
    return [{"rank": entry["rank"], "class": entry["name"], "label": labels[explanation.column(entry["name"])],
             "probability": float(f"{entry['probability']:.6g}"), "logit": float(f"{entry['logit']:.6g}"),
             "index": entry["index"]} for entry in explanation.table()]


def write_image_tiff(path: str | os.PathLike, image: np.ndarray, pixel_size: PixelSize | None = None) -> Path:
    """The image itself beside its maps (RGB or grey as it is), with its physical scale if known."""
    import tifffile
    image = np.asarray(image)
    options = {"photometric": "rgb" if is_colour(image) else "minisblack"}
    per_cm = {"mm": 10.0, "µm": 1e4, "cm": 1.0, "nm": 1e7}.get(pixel_size.unit) if pixel_size else None
    if per_cm:
        options.update(resolution=(per_cm / pixel_size.x, per_cm / pixel_size.y), resolutionunit="CENTIMETER")

    def write(temporary: str) -> None:
        with open(temporary, "wb") as stream:
            tifffile.imwrite(stream, image, **options)

    return atomic_write(path, write)


def save_explanation(folder: str | os.PathLike, stem: str, explanation: Explanation, image: np.ndarray,
                     class_name: str, layer: int = -1, pixel_size: PixelSize | None = None,
                     file_format: str = "imagej", image_file: str | None = None) -> list[Path]:
    """The Explorer's "save explanation": the class's maps (every decoder layer, every head) as a
    hyperstack, the class table as CSV, the image as TIFF, and the class's head-mean map at `layer`
    over the image as PNG. Returns the files written."""
    from .csv_output import write_csv
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".ome.tif" if file_format == "ome" else ".tif"
    stack, labels = attention_stack(explanation, [class_name], list(range(explanation.num_layers)))
    metadata = explanation_metadata(explanation, class_name, layer, image_file)
    written = [
        write_attention_tiff(folder / fitting_name(f"{stem}_attention", suffix), stack, labels, metadata,
                             map_pixel_size(explanation, pixel_size), file_format),
        write_csv(folder / fitting_name(f"{stem}_classes", ".csv"), CLASS_TABLE_COLUMNS, class_table_rows(explanation)),
        write_image_tiff(folder / fitting_name(f"{stem}_image", ".tif"), image, pixel_size),
        write_overlay_png(folder / fitting_name(f"{stem}_overlay", ".png"), image, min_max(explanation.upsample(
            explanation.mean_map(class_name, layer)))),
    ]
    return written


def save_regions(folder: str | os.PathLike, stem: str, results: list, photo: np.ndarray, layer: int = -1,
                 pixel_size: PixelSize | None = None, file_format: str = "imagej", top_k: int = 3,
                 image_file: str | None = None) -> list[Path]:
    """"Save explanation" for a photo of many specimens: the regions table (CSV), each region's
    top-1 maps (every layer and head) placed by their metadata, the photo, and a PNG of the photo
    with every region's head-mean map and its outline in its top-1 class's colour."""
    from matplotlib import colormaps

    from .csv_output import write_csv
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".ome.tif" if file_format == "ome" else ".tif"
    written = [write_csv(folder / fitting_name(f"{stem}_regions", ".csv"), region_columns(top_k), region_rows(results, top_k))]
    heat = np.zeros(np.asarray(photo).shape[:2], np.float32)
    outlines = []
    for result in results:
        explanation, region = result.explanation, result.region
        top = explanation.top_class()
        stack, labels = attention_stack(explanation, [top], list(range(explanation.num_layers)))
        metadata = explanation_metadata(explanation, top, layer, image_file, result.offset)
        metadata["region"] = {"id": region.id, "box": [region.x0, region.y0, region.x1, region.y1],
                              "crop_offset": list(result.offset)}
        safe_id = ''.join(c if c.isalnum() or c in '-_.' else '-' for c in region.id)
        name = fitting_name(f"{stem}_{safe_id}_attention", suffix)
        written.append(write_attention_tiff(folder / name, stack, labels, metadata,
                                            map_pixel_size(explanation, pixel_size), file_format))
        row, column = result.offset
        height, width = explanation.image_shape
        placed = min_max(explanation.upsample(explanation.mean_map(top, layer)))
        heat[row: row + height, column: column + width] = np.maximum(heat[row: row + height, column: column + width],
                                                                      placed)
        colour = colormaps["tab10"](explanation.class_indices[explanation.column(top)] % 10)[:3]
        outlines.append((region, colour))
    written.append(write_image_tiff(folder / fitting_name(f"{stem}_image", ".tif"), photo, pixel_size))
    written.append(write_overlay_png(folder / fitting_name(f"{stem}_overlay", ".png"), photo, heat, outlines=outlines))
    return written


def region_rows(results: list[RegionResult], top_k: int = 3) -> list[dict]:
    """One table row per region: id, box, top classes (name, label) and probabilities."""
    return [{"region": result.region.id, "x0": result.region.x0, "y0": result.region.y0, "x1": result.region.x1,
             "y1": result.region.y1, **prediction_cells(result.explanation, top_k)} for result in results]


def region_columns(top_k: int = 3) -> list[str]:
    return [*REGION_COLUMNS, *prediction_columns(top_k)]


def _flagged(explanation: Explanation, class_name: str, layer: int) -> dict[str, str]:
    """1-based head -> why it is never shown first (head_evidence.py), where evidence was measured."""
    evidence = explanation.head_evidence(class_name, layer)
    if evidence is None:
        return {}
    return {str(head_number(head)): flag for head, flag in enumerate(evidence.flags) if flag is not None}
