"""Part annotations: which part of the specimen a head's peak lands on (for consistency).

Two sources, as the consistency of Huang et al. (ICCV 2023) adapted from prototypes to heads:
- mask parts: `intr synth` writes each image's attribute mask in DATA/.masks/<class>/<file>; the
  peak lands on the part "attribute" when the mask covers any pixel of the peak's cell.
- point parts: CUB-200-2011's `parts/part_locs.txt` (image id, part id, x, y, visible) with
  `images.txt` (image id, relative path) two folders up and `parts/parts.txt` (part id, name); the
  peak lands on the visible keypoint nearest to its cell's centre inside the head's patch.
Optional specimen annotations say whether a peak lands on the specimen or the background:
CUB's `bounding_boxes.txt` (next to images.txt) or masks in DATA/.specimens/<class>/<file>.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import synth
from ..class_names import normal_name
from ..masks import read_mask
from .geometry import Footprint, HeadLook

ATTRIBUTE = "attribute"


@dataclass
class ImageParts:
    """One image's annotations: part masks, keypoints and the specimen's extent (any may be absent)."""
    masks: dict[str, np.ndarray] = field(default_factory=dict)      # part -> H×W bool
    points: dict[str, tuple[float, float]] = field(default_factory=dict)  # part -> (y, x), visible only
    specimen_mask: np.ndarray | None = None
    specimen_box: tuple[float, float, float, float] | None = None  # (top, left, height, width)

    def part_at(self, found: HeadLook, footprint: Footprint) -> str | None:
        """The part the head's peak lands on, or None (no annotated part there)."""
        top, left, height, width = footprint.cell_box(*found.cell)
        for name, mask in self.masks.items():
            region = mask[int(np.floor(top)): int(np.ceil(top + height)), int(np.floor(left)): int(np.ceil(left + width))]
            if region.any():
                return name
        if self.points:
            centre_y, centre_x = footprint.cell_centre(*found.cell)
            box_top, box_left, box_height, box_width = found.box
            inside = {name: (y, x) for name, (y, x) in self.points.items()
                      if box_top <= y < box_top + box_height and box_left <= x < box_left + box_width}
            if inside:
                return min(sorted(inside), key=lambda n: np.hypot(inside[n][0] - centre_y, inside[n][1] - centre_x))
        return None

    def covers(self, box: tuple[float, float, float, float]) -> bool:
        """Whether a patch box holds any annotated part (a mask pixel or a visible keypoint)."""
        top, left, height, width = box
        for mask in self.masks.values():
            rows = slice(max(int(np.floor(top)), 0), max(int(np.ceil(top + height)), 0))
            cols = slice(max(int(np.floor(left)), 0), max(int(np.ceil(left + width)), 0))
            if mask[rows, cols].any():
                return True
        return any(top <= y < top + height and left <= x < left + width for y, x in self.points.values())

    def on_specimen(self, found: HeadLook, footprint: Footprint) -> bool | None:
        """Whether the peak's cell centre lies on the specimen; None without a specimen annotation."""
        y, x = footprint.cell_centre(*found.cell)
        if self.specimen_mask is not None:
            row = min(int(y), self.specimen_mask.shape[0] - 1)
            col = min(int(x), self.specimen_mask.shape[1] - 1)
            return bool(self.specimen_mask[row, col])
        if self.specimen_box is not None:
            top, left, height, width = self.specimen_box
            return bool(top <= y < top + height and left <= x < left + width)
        return None

    @property
    def has_parts(self) -> bool:
        return bool(self.masks or self.points)


class PartSource:
    """Annotations for the images of one collection: synth masks by default, CUB files with --parts."""

    def __init__(self, parts_file: str | Path | None = None):
        self.parts_file = None if parts_file is None else Path(parts_file).expanduser()
        self._points: dict[str, dict[str, tuple[float, float]]] = {}
        self._boxes: dict[str, tuple[float, float, float, float]] = {}
        if self.parts_file is not None:
            self._read_cub(self.parts_file)

    @property
    def description(self) -> str:
        return f"CUB parts {self.parts_file}" if self.parts_file else "masks in DATA/.masks (if present)"

    def _read_cub(self, parts_file: Path) -> None:
        if not parts_file.is_file():
            raise FileNotFoundError(f"--parts {parts_file} does not exist; give CUB-200-2011's "
                                    "parts/part_locs.txt")
        root = parts_file.parent.parent
        images_txt = root / "images.txt"
        if not images_txt.is_file():
            raise FileNotFoundError(f"--parts {parts_file}: {images_txt} is missing; the CUB layout keeps "
                                    "images.txt two folders above parts/part_locs.txt")
        paths = _cub_image_paths(images_txt)
        names = _cub_part_names(parts_file.parent / "parts.txt")
        for number, line in enumerate(parts_file.read_text(encoding="utf-8").splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            try:
                image_id, part_id, x, y, visible = fields[0], fields[1], float(fields[2]), float(fields[3]), fields[4]
            except (IndexError, ValueError):
                raise ValueError(f"{parts_file} line {number}: expected '<image id> <part id> <x> <y> "
                                 f"<visible>', got {line!r}") from None
            if image_id not in paths:
                raise ValueError(f"{parts_file} line {number}: image id {image_id} is not in {images_txt}")
            if visible.strip() in ("1", "1.0"):
                self._points.setdefault(paths[image_id], {})[names.get(part_id, f"part {part_id}")] = (y, x)
        self._boxes.update(_cub_boxes(root / "bounding_boxes.txt", paths))

    def files_beside(self, image: Path) -> list[Path]:
        """The mask files an image's annotations come from (present or not): a summary of the
        image is current only while they are unchanged."""
        masks = [] if self.parts_file is not None else [synth.mask_path(image)]
        return [*masks, synth.specimen_mask_path(image)]

    def matching(self, images) -> int:
        """How many of `images` the --parts file has annotations for (0 without one)."""
        known = set(self._points) | set(self._boxes)
        return sum(_key_tail(Path(image).as_posix()) in known for image in images)

    def for_image(self, image: Path, shape: tuple[int, int] | None = None) -> ImageParts:
        """The annotations of `image` (shape: its H, W, which its masks must have)."""
        parts = ImageParts()
        if self.parts_file is not None:
            tail = _key_tail(image.as_posix())
            parts.points = dict(self._points.get(tail, {}))
            parts.specimen_box = self._boxes.get(tail)
        else:
            mask = read_mask(synth.mask_path(image), shape, "attribute mask")
            if mask is not None:
                parts.masks[ATTRIBUTE] = mask
        parts.specimen_mask = read_mask(synth.specimen_mask_path(image), shape, "specimen mask")
        return parts


def _key_tail(path: str) -> str:
    """The class folder and file name (NFC): how CUB's images.txt and our image keys meet."""
    pieces = Path(normal_name(path)).parts
    return "/".join(pieces[-2:])


def _cub_image_paths(images_txt: Path) -> dict[str, str]:
    """CUB's images.txt: image id -> the path's key tail."""
    paths = {}
    for number, line in enumerate(images_txt.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            fields = line.split(maxsplit=1)
            if len(fields) != 2:
                raise ValueError(f"{images_txt} line {number}: expected '<image id> <path>', got {line!r}")
            paths[fields[0]] = _key_tail(fields[1].strip())
    return paths


def _cub_part_names(names_file: Path) -> dict[str, str]:
    """CUB's parts/parts.txt (optional): part id -> name."""
    names = {}
    if names_file.is_file():
        for line in names_file.read_text(encoding="utf-8").splitlines():
            fields = line.split(maxsplit=1)
            if len(fields) == 2:
                names[fields[0]] = fields[1].strip()
    return names


def _cub_boxes(boxes_file: Path, paths: dict[str, str]) -> dict[str, tuple[float, float, float, float]]:
    """CUB's bounding_boxes.txt (optional): key tail -> (y, x, height, width)."""
    boxes = {}
    if boxes_file.is_file():
        for line in boxes_file.read_text(encoding="utf-8").splitlines():
            fields = line.split()
            if len(fields) == 5 and fields[0] in paths:
                x, y, width, height = (float(v) for v in fields[1:])
                boxes[paths[fields[0]]] = (y, x, height, width)
    return boxes
