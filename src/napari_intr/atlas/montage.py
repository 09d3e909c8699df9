"""Patches cut from the original images, and PNG montages of them (rows: heads; columns: top images)."""
from __future__ import annotations

import io
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from napari_intr.image_files import read_image
from napari_intr.preprocess import TYPE_RANGES, to_float_rgb

from .geometry import crop
from .statistics import Exemplar, TopN
from .summarise import unpack

PATCH = 96
CAPTION = 14
GAP = 4
LABEL_BAND = 14  # above every patch: its file's name, between the patch and the row above's captions
ROW = LABEL_BAND + PATCH + CAPTION + GAP
LABEL_WIDTH = 150
BACKGROUND = (255, 255, 255)


class PatchCache:
    """Patches cut while the summarising pass holds each image, so the report reads again only the
    images it lacks (summarised by an earlier run or another process, or beyond the cap).

    For every gallery a record can enter (a class's head; a side of a pair's head) it keeps the
    running top N as the aggregation ranks them (peak, then key), and the JPEG patches of the
    entries still in one; the cutting runs on the caller's worker thread. At most `limit`
    patches are held. pairs=False: the class galleries only (with the default pairs, a gallery per
    class and likely partner, most of them never shown: cutting for them all cost more than the
    report's reads for the few shown)."""
    LIMIT = 20000  # ~4 KB each

    def __init__(self, per_head: int, worker, limit: int | None = None, pairs: bool = True):
        self.per_head, self.worker, self.pairs = per_head, worker, pairs
        self.limit = self.LIMIT if limit is None else limit
        self._tops: dict[tuple, TopN] = {}  # ranked by TopN, as the aggregation ranks them
        self._held: dict[tuple, list] = {}  # (key, box) -> [galleries holding it, future of {box: bytes}]

    def offer(self, key: str, record: dict, image: np.ndarray) -> None:
        """Push one record's heads into the galleries; cut the patches that entered one."""
        if "error" in record or self.limit == 0:  # limit 0 (ranks other than 0): nothing is ever held
            return
        name = record["class"]
        entering = []
        for head, found in enumerate(unpack(record["true"])):
            entering += self._push((name, head), key, found)
        for partner, decoded in unpack(record.get("pairs", "{}") if self.pairs else "{}").items():
            for head, found in enumerate(decoded["a"]):
                entering += self._push((name, partner, head, "a"), key, found)
            for head, found in enumerate(decoded["b"]):
                entering += self._push((partner, name, head, "b"), key, found)
        boxes = sorted(set(entering))
        if boxes:
            cut = self.worker.submit(lambda: {box: jpeg_bytes(_patch(image, box, PATCH)) for box in boxes})
            for box in boxes:
                if (key, box) in self._held:
                    self._held[(key, box)][1] = cut

    def _push(self, gallery: tuple, key: str, found: dict) -> list[tuple]:
        top = self._tops.get(gallery)
        if top is None:
            top = self._tops[gallery] = TopN(self.per_head)
        box = tuple(found["box"])
        entered, dropped = top.push(key, found["peak"], box)
        if dropped is not None:
            self._release(dropped)
        if not entered:
            return []
        held = self._held.get((key, box))
        if held is not None:
            held[0] += 1
            return []
        if len(self._held) >= self.limit:
            return []
        self._held[(key, box)] = [1, None]
        return [box]

    def _release(self, entry: tuple) -> None:
        held = self._held.get(entry)
        if held is not None:
            held[0] -= 1
            if held[0] == 0:
                del self._held[entry]

    def patches(self) -> dict[tuple, bytes]:
        """(key, box) -> JPEG bytes of every patch still held (waits for the last cuts)."""
        return {(key, box): cut.result()[box] for (key, box), (_, cut) in self._held.items() if cut is not None}


def patches_for(data_root: Path, exemplars: list[Exemplar], size: int = PATCH, workers: int = 2,
                known: dict[tuple, bytes] | None = None) -> dict[tuple, bytes]:
    """(key, box) -> the size×size patch as JPEG bytes, encoded once for both the page and the
    montages. Each image is read once however many patches (of any gallery) it gives; the encoded
    patches are ~4 KB, so even a 200-class atlas holds them all in tens of MB. `workers` threads
    read and encode (decoding and JPEG encoding release the GIL); `known`: patches already cut
    (a PatchCache's), not cut again."""
    known = known or {}
    by_key: dict[str, set] = {}
    for exemplar in exemplars:
        if (exemplar.key, tuple(exemplar.box)) not in known:
            by_key.setdefault(exemplar.key, set()).add(tuple(exemplar.box))
    keys = sorted(by_key)
    with ThreadPoolExecutor(workers, thread_name_prefix="atlas-patches") as pool:
        cut = pool.map(lambda key: _image_patches(data_root / key, by_key[key], size), keys)
        return {**known, **{(key, box): patch for key, patches in zip(keys, cut) for box, patch in patches.items()}}


def _image_patches(path: Path, boxes: set, size: int) -> dict[tuple, bytes]:
    try:
        image = read_image(path)
    except (ValueError, OSError):
        image = None  # the image went away or changed since it was summarised: a grey tile
    return {box: jpeg_bytes(_patch(image, box, size)) for box in boxes}


def _patch(image: np.ndarray | None, box, size: int) -> np.ndarray:
    if image is None:
        return np.full((size, size, 3), 128, np.uint8)
    if image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3:
        # 8-bit RGB maps onto [0, 1] and back to itself (x / 255 · 255 rounds to x): the crop is the patch.
        return crop(image, box, size, fill=127)
    if image.dtype in TYPE_RANGES:
        # uint8, uint16 and bool map to [0, 1] by their type's range: crop first (mid-grey fill),
        # convert only the patch.
        patch = to_float_rgb(crop(image, box, size, fill=int(TYPE_RANGES[image.dtype]) // 2))
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
    """Top-left pixel of a patch in a montage (a wider gap after column `gap_after`). A row is, from
    the top: the label band, the patch, its caption (the peak weight), a gap."""
    x = LABEL_WIDTH + col * (PATCH + GAP) + (3 * GAP if gap_after is not None and col > gap_after else 0)
    return GAP + LABEL_BAND + row * ROW, x


def draw_montage(rows: list[tuple[str, list[tuple[MontageCell, bytes]]]], columns: int,
                 gap_after: int | None = None) -> Image.Image:
    """rows: (label, [(cell, encoded patch)]) -> one RGB image; each patch has its file's name just above it
    and its peak weight just below it, inside its own row (the napari gallery shows this image)."""
    width = cell_origin(0, columns - 1, gap_after)[1] + PATCH + GAP
    height = GAP + len(rows) * ROW
    montage = Image.new("RGB", (max(width, LABEL_WIDTH + PATCH), max(height, PATCH)), BACKGROUND)
    draw = ImageDraw.Draw(montage)
    for row, (label, cells) in enumerate(rows):
        top = cell_origin(row, 0)[0]
        draw.multiline_text((6, top + 4), label, fill=(20, 20, 20), spacing=2)
        for cell, patch in cells:
            y, x = cell_origin(cell.row, cell.col, gap_after)
            with Image.open(io.BytesIO(patch)) as decoded:
                montage.paste(decoded, (x, y))
            draw.text((x + 1, y - LABEL_BAND + 1), patch_label(draw, cell.key), fill=(20, 40, 120))
            draw.text((x + 2, y + PATCH + 1), f"{cell.peak:.3f}", fill=(60, 60, 60))
    return montage


def patch_label(draw: ImageDraw.ImageDraw, key: str, room: float = PATCH - 4) -> str:
    """A file's name as it fits over a patch: its end, where numbered files differ."""
    stem = Path(key).stem
    if draw.textlength(stem) <= room:
        return stem
    # Measure characters once each (a montage measures hundreds of names); the sum of their
    # advances is the name's width up to kerning, which the 2 px left of the room absorbs.
    room -= draw.textlength("…")
    kept = 0
    for char in reversed(stem):
        room -= _advance(draw, char)
        if room < 0:
            break
        kept += 1
    return "…" + stem[len(stem) - kept:]


_ADVANCES: dict[tuple[int, str], float] = {}


def _advance(draw: ImageDraw.ImageDraw, char: str) -> float:
    key = (id(draw.getfont()), char)
    if key not in _ADVANCES:
        _ADVANCES[key] = draw.textlength(char)
    return _ADVANCES[key]


def png_bytes(image: Image.Image | np.ndarray) -> bytes:
    """An 8-bit RGB PNG, every row filtered by "Up" (its difference to the row above) and deflated
    at level 1. Pillow's encoder tries all five PNG filters on every row, which made the montages
    the largest fixed cost of a small atlas (2-4x the deflate itself); montages are rewritten on
    every run, and "Up" suits them (rows of patches) as well as the adaptive choice (files within
    a few %)."""
    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.uint8)
    height, width = rgb.shape[:2]
    rows = np.ascontiguousarray(rgb).reshape(height, width * 3)
    filtered = np.empty((height, width * 3 + 1), np.uint8)
    filtered[:, 0] = 2  # filter type Up
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # modulo 256, as PNG defines it
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, RGB, deflate, no interlace
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(filtered.tobytes(), 1)) + _png_chunk(b"IEND", b""))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def jpeg_bytes(patch: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(patch).save(buffer, format="JPEG", quality=88)
    return buffer.getvalue()
