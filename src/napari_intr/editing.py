"""Paint manipulation (the paper's §4): edit a painted region, re-explain, compare before vs after.

Edits are frozen values with `apply(image, mask) -> new image`: only pixels inside the painted
mask change, the dtype and channel layout are kept, alpha is never touched, and the input array
is never written to. Colours and intensities are exchanged between images as 0–1 fractions of
each image's intensity range (`preprocess.intensity_range`, the one preprocessing uses), so a
colour sampled from a uint16 scan can paint a uint8 photo.

`EditSession` stacks edits with undo and reset; `compare_explanations` measures an edit's effect
on the prediction and the attention; `export` writes the edited image and a JSON + CSV report.
"""
from __future__ import annotations

import json
import math
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.ndimage import distance_transform_edt
from skimage.filters import gaussian
from skimage.restoration import inpaint_biharmonic

from .comparison import symmetric_limits
from .csv_output import write_csv
from .explanation import Explanation, head_number, layer_number
from .filenames import as_text
from .preprocess import fractions, intensity_range, is_colour, layout_problem

# rgb2gray's weights: an RGB colour painted into a grey image becomes its luminance.
LUMINANCE = np.array([0.2125, 0.7154, 0.0721])
# Biharmonic inpainting's stencil reaches 2 px: a crop this much larger than the region
# solves exactly the same system as the whole image, at a fraction of the cost.
ERASE_MARGIN = 3
PILLOW_DTYPES = {"uint8": (2, 3, 4), "uint16": (2,)}  # dtype -> ndim/channels Pillow can write


def check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    problem = layout_problem(image.shape, min_size=1)
    if problem:
        raise ValueError(problem)
    if image.dtype == bool or not np.issubdtype(image.dtype, np.number):
        raise ValueError(f"cannot edit an image of type {image.dtype}; convert it to uint8 or float first")
    return image


def check_region(mask: np.ndarray, image_shape: tuple[int, ...]) -> np.ndarray:
    """A painted mask (bool, or napari labels where any non-zero label counts) -> bool H×W."""
    mask = np.asarray(mask)
    shape = tuple(image_shape[:2])
    if mask.shape != shape:
        raise ValueError(f"the painted mask is {'×'.join(map(str, mask.shape))} but the image is "
                         f"{'×'.join(map(str, shape))}; paint on a labels layer of the image's size")
    region = mask != 0
    if not region.any():
        raise ValueError("the painted region is empty; paint the region to edit first")
    if region.all():
        raise ValueError("the painted region covers the whole image; an edit needs unpainted "
                         "surroundings (and the comparison needs a region to compare), paint part of it")
    return region


def sample_colour(image: np.ndarray, point: tuple[int, int]) -> tuple[float, float, float]:
    """The RGB colour (0–1 fractions of the image's range) at (row, column); grey repeats."""
    image = check_image(image)
    row, column = (int(round(v)) for v in point)
    if not (0 <= row < image.shape[0] and 0 <= column < image.shape[1]):
        raise ValueError(f"point ({row}, {column}) lies outside the {image.shape[0]}×{image.shape[1]} image")
    low, high = intensity_range(image)
    values = fractions(_colour(image)[row, column], low, high)
    return tuple(float(v) for v in np.broadcast_to(values, 3))


class Edit(ABC):
    """Base of the edits: crops the region's neighbourhood, converts it to 0–1 fractions, lets
    the edit paint it, and writes back only the painted pixels."""
    margin = 0  # pixels of surroundings an edit reads around the region

    def apply(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        image = check_image(image)
        region = check_region(mask, image.shape)
        window = _window(region, self.margin)
        low, high = intensity_range(image)
        crop = fractions(_colour(image)[window], low, high)
        painted = self._paint(crop, region[window], window, image.shape)
        edited = image.copy()
        target, inside = _colour(edited)[window], region[window]
        values = low + painted[inside] * (high - low)
        if np.issubdtype(image.dtype, np.integer):
            limits = np.iinfo(image.dtype)
            values = np.clip(np.round(values), limits.min, limits.max)
        target[inside] = values.astype(image.dtype)
        return edited

    @abstractmethod
    def describe(self) -> str:
        """A human description for the list of edits."""

    @abstractmethod
    def _paint(self, crop, region, window, shape) -> np.ndarray:
        """crop: [h, w, k] fractions around the region -> the same with the region edited."""


@dataclass(frozen=True)
class Recolour(Edit):
    """Fill the region with one flat colour: RGB (or one grey value) as 0–1 fractions of the
    image's range, e.g. (1, 1, 1) is white for uint8, uint16 and float images alike."""
    colour: tuple[float, ...]

    def __post_init__(self):
        colour = tuple(float(v) for v in np.atleast_1d(self.colour))
        if len(colour) not in (1, 3) or not all(0 <= v <= 1 for v in colour):
            raise ValueError(f"give the colour as 1 (grey) or 3 (RGB) values between 0 and 1, got "
                             f"{self.colour!r}; divide 0–255 values by 255 (or use sample_colour)")
        object.__setattr__(self, "colour", colour)

    def describe(self) -> str:
        rgb = np.broadcast_to(self.colour, 3)
        return "recolour to #" + "".join(f"{round(v * 255):02x}" for v in rgb)

    def _paint(self, crop, region, window, shape):
        return np.broadcast_to(_channels(np.array(self.colour), crop.shape[-1]), crop.shape)


@dataclass(frozen=True)
class Erase(Edit):
    """Fill the region from its surroundings (biharmonic inpainting on a crop around it)."""
    margin = ERASE_MARGIN

    def describe(self) -> str:
        return "erase (inpaint from the surroundings)"

    def _paint(self, crop, region, window, shape):
        return inpaint_biharmonic(crop, region, channel_axis=-1)


@dataclass(frozen=True)
class Blur(Edit):
    """Gaussian blur inside the region. The edge is feathered inwards (full blur `feather` px
    inside the edge, fading to ~none at it) so pixels outside the region stay untouched."""
    sigma: float = 2.0
    feather: float | None = None  # default: sigma

    def __post_init__(self):
        if not self.sigma > 0 or (self.feather is not None and not self.feather > 0):
            raise ValueError(f"sigma and feather must be positive pixel distances, got "
                             f"sigma={self.sigma!r}, feather={self.feather!r}")

    @property
    def margin(self) -> int:
        return math.ceil(4 * self.sigma) + 1  # the Gaussian's reach (truncate=4) and one edge pixel

    def describe(self) -> str:
        return f"blur (Gaussian σ = {self.sigma:g} px)"

    def _paint(self, crop, region, window, shape):
        blurred = gaussian(crop, sigma=self.sigma, channel_axis=-1, mode="nearest", preserve_range=True)
        weight = np.clip(distance_transform_edt(region) / (self.feather or self.sigma), 0, 1)[..., None]
        return weight * blurred + (1 - weight) * crop


@dataclass(frozen=True, eq=False)  # holds an array
class Transplant(Edit):
    """Copy the region from `source`, an image of the same height and width: the pixel at
    (y, x) in the region takes the source's pixel at (y + dy, x + dx)."""
    source: np.ndarray
    offset: tuple[int, int] = (0, 0)
    source_name: str = "another image"

    def __post_init__(self):
        source = check_image(self.source).copy()  # later changes to the caller's array don't leak in
        source.flags.writeable = False
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "offset", tuple(int(v) for v in self.offset))
        if len(self.offset) != 2:
            raise ValueError(f"offset must be (dy, dx) in pixels, got {self.offset!r}")

    def describe(self) -> str:
        shift = f" shifted by ({self.offset[0]}, {self.offset[1]}) px" if any(self.offset) else ""
        return f"transplant from {self.source_name}{shift}"

    def _paint(self, crop, region, window, shape):
        if self.source.shape[:2] != tuple(shape[:2]):
            raise ValueError(f"the transplant source is {self.source.shape[0]}×{self.source.shape[1]} "
                             f"but the image is {shape[0]}×{shape[1]}; give a source of the same size")
        (dy, dx), (rows, columns) = self.offset, window
        rows_in, columns_in = np.nonzero(region)
        ys, xs = rows_in + rows.start + dy, columns_in + columns.start + dx
        if ys.min() < 0 or xs.min() < 0 or ys.max() >= shape[0] or xs.max() >= shape[1]:
            raise ValueError(f"offset ({dy}, {dx}) moves the painted region outside the source image; "
                             "use a smaller offset or paint further from the edge")
        low, high = intensity_range(self.source)
        pixels = fractions(_colour(self.source)[ys, xs], low, high)
        painted = crop.copy()
        painted[region] = _channels(pixels, crop.shape[-1])
        return painted


@dataclass(frozen=True, eq=False)
class Step:
    """One edit of a session; `before`/`after` are the explanations of the image before and after
    it, when the caller explained them (the Edit dock does), with `explained_by` their model."""
    edit: Edit
    region: np.ndarray  # bool H×W, read-only
    image: np.ndarray   # the image after this edit, read-only
    before: Explanation | None = None
    after: Explanation | None = None
    explained_by: object = None

    @property
    def description(self) -> str:
        return f"{self.edit.describe()} over {int(self.region.sum())} px"


class EditSession:
    """Edits stacked on one image. Images are kept read-only so no caller changes history."""

    def __init__(self, original: np.ndarray, name: str = "image"):
        self.original = _frozen(check_image(original))
        self.name = name
        self._steps: list[Step] = []

    @property
    def current(self) -> np.ndarray:
        return self._steps[-1].image if self._steps else self.original

    @property
    def history(self) -> tuple[Step, ...]:
        return tuple(self._steps)

    def descriptions(self) -> list[str]:
        return [f"{number}. {step.description}" for number, step in enumerate(self._steps, start=1)]

    def apply(self, edit: Edit, mask: np.ndarray) -> Step:
        return self.push(self.prepare(edit, mask))

    def prepare(self, edit: Edit, mask: np.ndarray) -> Step:
        """The next step, computed without changing the session (safe on a worker thread)."""
        region = check_region(mask, self.current.shape)
        return Step(edit, _frozen(region), _frozen(edit.apply(self.current, region)))

    def push(self, step: Step) -> Step:
        """Append a prepared step (on the thread that owns the session: the GUI's in napari)."""
        if step.image.shape != self.current.shape:
            raise ValueError("this step was prepared for another image of the session; prepare it again")
        self._steps.append(step)
        return step

    def undo(self) -> np.ndarray:
        if not self._steps:
            raise ValueError("nothing to undo: no edits have been applied")
        self._steps.pop()
        return self.current

    def reset(self) -> np.ndarray:
        self._steps.clear()
        return self.current

    def painted_region(self) -> np.ndarray:
        """Union of all edits' regions (for comparing the original with the current image)."""
        if not self._steps:
            raise ValueError("no edits have been applied, so nothing is painted")
        return np.logical_or.reduce([step.region for step in self._steps])


@dataclass(eq=False)  # holds arrays
class EditEffect:
    """Before vs after one edit (or several) for every class and, for one class, per head."""
    class_names: list[str]
    logits_before: np.ndarray         # [C']
    logits_after: np.ndarray
    probabilities_before: np.ndarray  # [C']
    probabilities_after: np.ndarray
    class_name: str                   # the class whose attention is compared
    layer: int
    difference: np.ndarray            # [heads, h, w] raw attention after − before
    limits: np.ndarray                # [heads] symmetric colour limits (-l, l) for `difference`
    region_on_grid: np.ndarray        # [h, w] painted fraction of each attention cell
    mass_before: np.ndarray           # [heads] share of attention inside the painted region
    mass_after: np.ndarray

    @property
    def top1_before(self) -> str:
        return self.class_names[int(np.argmax(self.probabilities_before))]

    @property
    def top1_after(self) -> str:
        return self.class_names[int(np.argmax(self.probabilities_after))]

    @property
    def top1_changed(self) -> bool:
        return self.top1_before != self.top1_after

    def table(self) -> list[dict]:
        """Every class, most probable after the edit first, with its changes."""
        order = np.argsort(-self.probabilities_after, kind="stable")
        return [{"name": self.class_names[c],
                 "probability_before": float(self.probabilities_before[c]),
                 "probability_after": float(self.probabilities_after[c]),
                 "probability_change": float(self.probabilities_after[c] - self.probabilities_before[c]),
                 "logit_before": float(self.logits_before[c]), "logit_after": float(self.logits_after[c]),
                 "logit_change": float(self.logits_after[c] - self.logits_before[c])} for c in order]

    def head_table(self) -> list[dict]:
        return [{"head": head_number(head), "mass_before": float(before), "mass_after": float(after),
                 "mass_change": float(after - before)}
                for head, (before, after) in enumerate(zip(self.mass_before, self.mass_after))]

    def to_dict(self) -> dict:
        return {"class_name": self.class_name, "layer": layer_number(self.layer), "top1_before": self.top1_before,
                "top1_after": self.top1_after, "top1_changed": self.top1_changed,
                "classes": self.table(), "heads": self.head_table()}


def region_on_grid(region: np.ndarray, explanation: Explanation) -> np.ndarray:
    """[h, w] fraction of each attention cell's area (within the image) that is painted.

    Attention mass is measured on the model's own grid: the region is downsampled (exact area
    overlap, the cell geometry of `Explanation.grid_to_image`), the maps are never interpolated.
    """
    region = check_region(region, explanation.image_shape)
    cells = explanation.attention.shape[-2:]
    rows, columns = (_overlap(size, count, cell) for size, count, cell
                     in zip(explanation.image_shape, cells, explanation.cell_size()))
    painted = np.zeros(cells)
    for cell_row in range(cells[0]):  # a band of image rows at a time: no full-size float copy
        pixel_rows = np.nonzero(rows[:, cell_row])[0]
        if pixel_rows.size:
            band = region[pixel_rows[0]: pixel_rows[-1] + 1]
            painted[cell_row] = rows[pixel_rows[0]: pixel_rows[-1] + 1, cell_row] @ band @ columns
    area = np.outer(rows.sum(axis=0), columns.sum(axis=0))
    return np.divide(painted, area, out=np.zeros_like(painted), where=area > 0)


def compare_explanations(before: Explanation, after: Explanation, region: np.ndarray,
                         class_name: str, layer: int = -1) -> EditEffect:
    """The effect of an edit: every class's probability and logit change; for `class_name` at
    `layer`, per head the attention difference (after − before) and the share of attention mass
    inside the painted region before and after."""
    if before.class_names != after.class_names or before.attention.shape != after.attention.shape:
        raise ValueError("before and after must explain the same classes of images of the same size; "
                         "decode both with the same candidates")
    weights_before = before.head_maps(class_name, layer, normalization="none")
    weights_after = after.head_maps(class_name, layer, normalization="none")
    coverage = region_on_grid(region, after)
    difference = weights_after - weights_before
    return EditEffect(
        class_names=list(after.class_names),
        logits_before=before.logits.copy(), logits_after=after.logits.copy(),
        probabilities_before=before.probabilities.copy(), probabilities_after=after.probabilities.copy(),
        class_name=class_name, layer=after.layer_index(layer), difference=difference,
        limits=symmetric_limits(difference), region_on_grid=coverage,
        mass_before=(weights_before * coverage).sum(axis=(-2, -1)),
        mass_after=(weights_after * coverage).sum(axis=(-2, -1)))


def export(session: EditSession, effects: Sequence[EditEffect | None], image_path: str | os.PathLike,
           report_stem: str | os.PathLike) -> dict[str, Path]:
    """Write the current image (same dtype and channels; .tif/.tiff via tifffile, else Pillow)
    and the report <stem>.json and <stem>.csv. effects[i] is the effect of history[i] (None
    where an edit was not explained); pass [] to report the edits only."""
    steps = session.history
    if effects and len(effects) != len(steps):
        raise ValueError(f"got {len(effects)} effects for {len(steps)} edits; give one per edit "
                         "(None where an edit was not explained) or none at all")
    effects = list(effects) or [None] * len(steps)
    image_path, stem = Path(image_path), Path(report_stem)
    write_image(session.current, image_path)
    edits = []
    for number, (step, effect) in enumerate(zip(steps, effects), start=1):
        edits.append({"step": number, "edit": type(step.edit).__name__, "description": step.description,
                      "painted_pixels": int(step.region.sum()),
                      "effect": None if effect is None else effect.to_dict()})
    # names as text any writer takes (an undecodable file name's bytes escaped)
    report = {"image": as_text(session.name), "edited_image": as_text(str(image_path)), "shape": list(session.current.shape),
              "dtype": str(session.current.dtype), "edits": edits}
    paths = {"image": image_path, "json": stem.with_name(stem.name + ".json"),
             "csv": stem.with_name(stem.name + ".csv")}
    paths["json"].write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    write_csv(paths["csv"], ["step", "edit", "quantity", "item", "before", "after", "change"],
              _report_rows(edits, effects))
    return paths


def _report_rows(edits: list[dict], effects: Sequence[EditEffect | None]):
    for entry, effect in zip(edits, effects):
        if effect is None:
            yield [entry["step"], entry["description"], None, None, None, None, None]
            continue
        for row in effect.table():
            for quantity in ("probability", "logit"):
                yield [entry["step"], entry["description"], quantity, row["name"],
                       row[f"{quantity}_before"], row[f"{quantity}_after"], row[f"{quantity}_change"]]
        for row in effect.head_table():
            yield [entry["step"], entry["description"],
                   f"attention mass in region ({effect.class_name}, L{layer_number(effect.layer)})",
                   f"H{row['head']}", row["mass_before"], row["mass_after"], row["mass_change"]]


def pillow_can_write(image: np.ndarray) -> bool:
    """PNG/JPEG/BMP hold this image unchanged (its dtype and channel layout)."""
    layout = image.ndim if image.ndim == 2 else image.shape[-1]
    return layout in PILLOW_DTYPES.get(str(image.dtype), ())


def write_image(image: np.ndarray, path: Path) -> None:
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile
        tifffile.imwrite(path, image, photometric="rgb" if is_colour(image) else "minisblack")
        return
    if not pillow_can_write(image):
        raise ValueError(f"{path.suffix or 'this format'} cannot hold a {image.dtype} image of shape "
                         f"{image.shape} unchanged; save it as .tif")
    from PIL import Image
    Image.fromarray(np.ascontiguousarray(image)).save(path)


def _colour(image: np.ndarray) -> np.ndarray:
    """A writable view [H, W, k] of the colour channels (k = 1 grey or 3 RGB; alpha left out)."""
    return image[..., None] if image.ndim == 2 else image[..., :3]


def _channels(values: np.ndarray, count: int) -> np.ndarray:
    """[..., 1 or 3] -> [..., count]: grey is repeated, RGB becomes its luminance."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape[-1] == count:
        return values
    return np.repeat(values, 3, axis=-1) if count == 3 else (values @ LUMINANCE)[..., None]


def _window(region: np.ndarray, margin: int) -> tuple[slice, slice]:
    """Bounding box of the region grown by `margin`, clipped to the image."""
    rows, columns = np.nonzero(region.any(axis=1))[0], np.nonzero(region.any(axis=0))[0]
    return (slice(max(rows[0] - margin, 0), rows[-1] + margin + 1),
            slice(max(columns[0] - margin, 0), columns[-1] + margin + 1))


def _overlap(size: int, cells: int, cell: float) -> np.ndarray:
    """[size, cells] length of pixel [y, y + 1) inside cell [i·cell, (i + 1)·cell)."""
    pixels, edges = np.arange(size)[:, None], np.arange(cells + 1) * cell
    return np.clip(np.minimum(pixels + 1, edges[1:]) - np.maximum(pixels, edges[:-1]), 0, None)


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.array(array, copy=True)
    array.flags.writeable = False
    return array
