"""Many specimens in one photograph: regions (boxes) cut from the full-resolution image, each
explained as its own specimen, and its maps placed back on the photograph (Qt-free).

Boxes are in pixels of the original image: x0, y0 is the top-left corner, x1, y1 the bottom-right
one (exclusive, as numpy slicing), x along columns and y along rows. A margin widens each box
(pixels, or a percentage of the box's longer side) before the crop; crops stop at the image edge.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .class_names import normal_name, read_text_file

BOX_COLUMNS = ("image", "x0", "y0", "x1", "y1")
ID_COLUMN = "id"
REGION_COLUMNS = ["region", "x0", "y0", "x1", "y1"]  # how tables name a region and its box


# Numbers are checked where they come in: no image we read is wider than 2^31 px (io.MAX_PIXELS),
# and a margin of 10 times the box is already all of any sensible photograph.
MAX_COORDINATE = float(2**31)
MAX_MARGIN_PERCENT = 1000.0


@dataclass(frozen=True)
class Region:
    id: str
    x0: float
    y0: float
    x1: float
    y1: float

    def crop_bounds(self, image_shape: tuple[int, int], margin: Margin | None = None) -> tuple[int, int, int, int]:
        """(row0, col0, row1, col1) of the crop in the image: the box widened by the margin,
        rounded outwards to whole pixels and clipped to the image."""
        pad = 0.0 if margin is None else margin.pixels(self.x1 - self.x0, self.y1 - self.y0)
        height, width = image_shape
        row0, col0 = max(0, math.floor(self.y0 - pad)), max(0, math.floor(self.x0 - pad))
        row1, col1 = min(height, math.ceil(self.y1 + pad)), min(width, math.ceil(self.x1 + pad))
        if row1 <= row0 or col1 <= col0:
            raise ValueError(f"region {self.id} ({self.describe()}) lies outside the image, which spans "
                             f"x 0–{width} and y 0–{height} ({width} px wide, {height} px tall)")
        return row0, col0, row1, col1

    def describe(self) -> str:
        return f"x {self.x0:g}–{self.x1:g}, y {self.y0:g}–{self.y1:g}"

    def off_image_note(self, image_shape: tuple[int, int]) -> str | None:
        """What the user must know when the box itself (not its margin) runs off the image: only
        its part on the image is explained. None when the box lies within the image."""
        height, width = image_shape[:2]
        if self.x0 >= 0 and self.y0 >= 0 and self.x1 <= width and self.y1 <= height:
            return None
        return (f"region {self.id} ({self.describe()}) runs off the image, which spans x 0–{width} and "
                f"y 0–{height}: only its part on the image was explained")


@dataclass(frozen=True)
class Margin:
    """Extra context around a box: `value` pixels, or `value` % of the box's longer side."""
    value: float = 0.0
    percent: bool = False

    @classmethod
    def parse(cls, text: str | float | None) -> Margin:
        """"12" (pixels), "10%" (of the longer side of each box), or a number of pixels."""
        if text is None or text == "":
            return cls()
        raw = str(text).strip()
        percent = raw.endswith("%")
        try:
            value = float((raw[:-1] if percent else raw).strip())
        except ValueError:
            raise ValueError(f"margin {text!r} is not a number: give pixels (e.g. 16) or a percentage "
                             "of each box's longer side (e.g. 10%)") from None
        highest = MAX_MARGIN_PERCENT if percent else MAX_COORDINATE
        if not math.isfinite(value) or not 0 <= value <= highest:
            raise ValueError(f"margin {text!r} must be zero or more and at most {highest:g}{'%' if percent else ' px'}")
        return cls(value, percent)

    def pixels(self, box_width: float, box_height: float) -> float:
        return self.value * max(box_width, box_height) / 100 if self.percent else self.value

    def __str__(self) -> str:
        return f"{self.value:g}%" if self.percent else f"{self.value:g} px"


@dataclass(eq=False)
class RegionCrop:
    """One region cut from a photograph: the pixels and where they came from."""
    region: Region
    pixels: np.ndarray
    offset: tuple[int, int]  # (row, column) of the crop's top-left pixel in the photograph


def crop_region(image: np.ndarray, region: Region, margin: Margin | None = None) -> RegionCrop:
    row0, col0, row1, col1 = region.crop_bounds(tuple(image.shape[:2]), margin)
    # slice first: a lazy (dask, zarr) or memory-mapped photo reads only the crop's pixels
    return RegionCrop(region, np.asarray(image[row0:row1, col0:col1]), (row0, col0))


def placement(explanation, offset: tuple[int, int]) -> tuple[tuple[float, float], tuple[float, float]]:
    """napari (scale, translate) of a region's [h, w] maps on the whole photograph."""
    scale, translate = explanation.grid_to_image()
    return scale, (translate[0] + offset[0], translate[1] + offset[1])


def read_boxes(path: str | os.PathLike) -> dict[Path, list[Region]]:
    """A boxes CSV -> {image file: its regions, in file order}.

    Columns image,x0,y0,x1,y1 and optionally id (default: the region's number within its image,
    from 1); any other columns are ignored. Relative image paths are taken from the CSV's folder."""
    from .csv_output import unescape_cell
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no boxes file at {path}")
    text = read_text_file(path, "boxes file")  # by its byte-order mark (Excel writes UTF-16 too)
    try:
        stream = io.StringIO(text, newline="")
        delimiter = _delimiter(stream.readline())
        stream.seek(0)
        reader = csv.DictReader(stream, delimiter=delimiter)
        header = [name.strip().lower() for name in (reader.fieldnames or [])]
        rows = list(reader)
    except csv.Error as error:
        raise ValueError(f"boxes file {path} is not a readable CSV ({error})") from None
    missing = [column for column in BOX_COLUMNS if column not in header]
    if missing:
        raise ValueError(f"boxes file {path} lacks the column(s) {', '.join(missing)}: its header must "
                         f"be {','.join(BOX_COLUMNS)}[,{ID_COLUMN}] (pixels of the original image)")
    boxes: dict[Path, list[Region]] = {}
    for line, raw in enumerate(rows, start=2):
        row = {(key or "").strip().lower(): unescape_cell((value or "").strip()) for key, value in raw.items()
               if isinstance(value, str) or value is None}
        if not any(row.values()):
            continue  # blank line
        where = f"boxes file {path}, line {line}"
        if not row["image"]:
            raise ValueError(f"{where}: the image column is empty")
        image = Path(row["image"]).expanduser()
        image = same_name_on_disk(image if image.is_absolute() else path.parent / image)
        try:
            x0, y0, x1, y1 = (_number(row[column], delimiter) for column in BOX_COLUMNS[1:])
        except ValueError:
            raise ValueError(f"{where}: x0, y0, x1, y1 must be numbers (pixels), got "
                             f"{', '.join(row[c] or '(empty)' for c in BOX_COLUMNS[1:])}") from None
        if not all(math.isfinite(v) and abs(v) <= MAX_COORDINATE for v in (x0, y0, x1, y1)):
            raise ValueError(f"{where}: x0, y0, x1, y1 must be pixel positions within ±{MAX_COORDINATE:g}, got "
                             f"{', '.join(row[c] for c in BOX_COLUMNS[1:])}")
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"{where}: a box needs x0 < x1 and y0 < y1 (top-left, then bottom-right "
                             f"corner), got x0={x0:g}, y0={y0:g}, x1={x1:g}, y1={y1:g}")
        regions = boxes.setdefault(image, [])
        region_id = row.get(ID_COLUMN) or str(len(regions) + 1)
        if any(region.id == region_id for region in regions):
            raise ValueError(f"{where}: region id {region_id!r} is used twice for {image.name}; "
                             "give every region of an image its own id")
        regions.append(Region(region_id, x0, y0, x1, y1))
    if not boxes:
        raise ValueError(f"boxes file {path} lists no boxes")
    return boxes


def same_name_on_disk(path: Path) -> Path:
    """`path`, or, when it does not exist, the file beside it whose name is the same after NFC
    (a CSV typed on one system naming a file written in NFD by another)."""
    if path.exists() or not path.parent.is_dir():
        return path
    wanted = normal_name(path.name)
    matches = [entry for entry in path.parent.iterdir() if normal_name(entry.name) == wanted]
    return matches[0] if len(matches) == 1 else path


def _delimiter(header: str) -> str:
    """Spreadsheets in many locales save "CSV" with semicolons (or tabs): the header line tells.
    The separator that yields the box columns wins (another column's name may hold a comma);
    failing that, the one found, so that the message names the columns missing."""
    for delimiter in (",", ";", "\t"):
        names = next(csv.reader([header], delimiter=delimiter), [])
        if set(BOX_COLUMNS) <= {name.strip().lower() for name in names}:
            return delimiter
    if "," not in header:
        for other in (";", "\t"):
            if other in header:
                return other
    return ","


def _number(text: str, delimiter: str) -> float:
    """A coordinate; semicolon-separated files come from locales that write 10,5 for 10.5."""
    return float(text.replace(",", ".") if delimiter == ";" else text)


def regions_from_labels(labels: np.ndarray) -> list[Region]:
    """One region per object of a label image (its bounding box), id = the label value."""
    from skimage.measure import regionprops
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"expected a 2-D integer label image, got {labels.dtype} of shape {labels.shape}")
    ids, compact = np.unique(labels, return_inverse=True)  # any integer type: uint64 ids ≥ 2^63 too
    if ids.size and ids[0] < 0:
        raise ValueError(f"the label image holds negative label ids (e.g. {ids[0]}); labels are 0 for "
                         "background and positive ids for objects")
    shift = 0 if ids.size and ids[0] == 0 else 1  # 0 stays background; without one, every id is an object
    compact = compact.reshape(labels.shape).astype(np.int64) + shift
    return [Region(str(ids[prop.label - shift]), prop.bbox[1], prop.bbox[0], prop.bbox[3], prop.bbox[2])
            for prop in regionprops(compact)]


def regions_from_rectangles(corners: list[np.ndarray], ids: list[str] | None = None) -> list[Region]:
    """Regions from shapes given as [k, 2] (row, column) vertex arrays in the image layer's data
    coordinates: each shape's bounding box. napari puts pixel k's centre at k (it spans k ± 0.5),
    while boxes count pixel edges from 0 (pixel k spans k to k + 1): hence the half pixel."""
    regions = []
    for number, vertices in enumerate(corners, start=1):
        vertices = np.asarray(vertices, dtype=float)[:, -2:] + 0.5
        (row0, col0), (row1, col1) = vertices.min(axis=0), vertices.max(axis=0)
        region_id = ids[number - 1] if ids is not None else str(number)
        regions.append(Region(region_id, col0, row0, col1, row1))
    return regions


@dataclass(eq=False)
class RegionResult:
    """One region's explanation and where its crop lies on the photograph."""
    region: Region
    offset: tuple[int, int]
    explanation: object  # napari_intr.explanation.Explanation of the crop

    def placement(self) -> tuple[tuple[float, float], tuple[float, float]]:
        return placement(self.explanation, self.offset)


def explain_regions(explainer, image: np.ndarray, regions: list[Region], margin: Margin | None = None,
                    classes=None, mode: str = "drop", name: str = "image",
                    progress=None, should_stop=None, shortlist: int | None = None
                    ) -> tuple[list[RegionResult], list[tuple[Region, str]]]:
    """Explain each region of `image` as its own specimen (cut from the full-resolution pixels).

    Returns (results, failures): a region that cannot be explained (outside the image, too small
    for the model) is reported with its reason instead of ending the others. progress(done, total)
    after each region; should_stop() is checked before each. shortlist K: decode each region's
    first-pass top K classes only (see INTR.decode)."""
    results, failures = [], []
    for number, region in enumerate(regions, start=1):
        if should_stop is not None and should_stop():
            break
        try:
            crop = crop_region(image, region, margin)
            # the heads' evidence waits until it is asked for (the saved layer's `top_heads`)
            explanation = explainer.explain(crop.pixels, f"{name} · {region.id}", classes, mode, shortlist,
                                            evidence_layers=())
        except ValueError as error:
            failures.append((region, str(error)))
        else:
            note = region.off_image_note(image.shape)
            if note is not None:
                explanation = dataclasses.replace(explanation, notes=[note, *explanation.notes])
            results.append(RegionResult(region, crop.offset, explanation))
        if progress is not None:
            progress(number, len(regions))
    return results, failures
