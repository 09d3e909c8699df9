"""Images too large to decode whole, read reduced piece by piece within the decode budget.

`read_within_budget` reads an image whole when it fits napari_intr.image_files's decode budget (and the
memory available now). Past it, an uncompressed TIFF is memory-mapped (Explainer block-averages
it band by band), any other TIFF is decoded one strip or tile at a time, each area-averaged into
an accumulator of the reduced image, a JPEG is decoded by libjpeg at 1/2, 1/4 or 1/8 scale, and a
PNG row by row. The full-resolution pixels are never held. The reduction factor k is the
smallest that fits the limit; every reduced read comes with a note naming the file, its sizes and
k. Other formats (BMP, GIF, WebP; interlaced and 16-bit colour PNGs) are refused with a message
that says how to convert them.
"""
from __future__ import annotations

import io as bytes_io
import math
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import image_files
from .image_files import ImageHeader, TooLargeError, byte_size, vips_advice

# Bytes each sample of the reduced image costs: its float64 sum here, and the float32 copies the
# model's preprocessing makes of it (image_files.DECODE_COPIES, as for a whole decode).
REDUCED_SAMPLE_BYTES = 8 + 4 * image_files.DECODE_COPIES
JPEG_SCALES = (2, 4, 8)  # what libjpeg decodes natively (Pillow's Image.draft)
READ_REDUCED = "read reduced"  # in every note of a reduced read


@dataclass(frozen=True)
class BudgetedImage:
    """An image as read within the budget: `pixels` (H×W or H×W×C, channels last); `factor` k > 1
    when each pixel is the mean of k×k pixels of the file (`note` then says so)."""
    pixels: np.ndarray
    factor: int = 1
    note: str | None = None
    file_shape: tuple[int, int] | None = None  # (height, width) of the file's image


def read_within_budget(path: str | os.PathLike, allow_mapped: bool = True) -> BudgetedImage:
    """An image file, whole when it fits the decode budget, else reduced (see the module's doc);
    ValueError naming the file when it can be read neither way. allow_mapped=False: an
    uncompressed TIFF is read reduced too, not memory-mapped (for a viewer, which would read a
    map whole to show it)."""
    path = Path(path)
    try:
        pixels = image_files.read_image(path, allow_mapped=allow_mapped)
    except TooLargeError as refusal:
        try:
            return _read_reduced(path, refusal)
        except (ValueError, MemoryError):
            raise
        except Exception as error:  # codecs raise many types for damaged pieces; all mean "unreadable"
            raise ValueError(f"cannot read {path.name}: {image_files.reason(error)}") from error
    return BudgetedImage(pixels, file_shape=tuple(pixels.shape[:2]))


def _read_reduced(path: Path, refusal: TooLargeError) -> BudgetedImage:
    header = image_files.read_header(path)
    limit, what = image_files.decode_limit()
    orientation = 1  # TIFF: tifffile ignores the Orientation tag, whole or reduced
    if path.suffix.lower() in image_files.TIFF_SUFFIXES:
        mapped = image_files.mapped_tiff(path)  # uncompressed and contiguous: bands of rows, whatever its strips
        if mapped is None:
            pixels, factor, how = _reduced_tiff(path, header, limit, what)
        else:
            pixels, factor, how = _reduced_map(mapped, path.name, header, limit, what)
    else:
        kind, orientation = _pillow_kind(path)
        if kind == "JPEG":  # Pillow turns it upright
            pixels, factor, how = _reduced_jpeg(path, header, limit, what)
        elif kind == "PNG":
            pixels, factor, how = _reduced_png(path, header, limit, what)
            pixels = upright(pixels, orientation)
        else:
            raise refusal
    file_shape = (header.width, header.height) if orientation in (5, 6, 7, 8) else (header.height, header.width)
    note = (f"{path.name} is {file_shape[0]}×{file_shape[1]} px, about {byte_size(_whole_bytes(header))} "
            f"to decode whole, more than {what} ({byte_size(limit)}): {READ_REDUCED} {factor}× "
            f"({how}) to {pixels.shape[0]}×{pixels.shape[1]} px")
    return BudgetedImage(pixels, factor, note, file_shape)


def upright(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """An image as stored -> as it is meant to be viewed, by its EXIF orientation (1-8), as
    Pillow's ImageOps.exif_transpose does."""
    turns = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
             5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1),
             7: lambda a: a.swapaxes(0, 1)[::-1, ::-1], 8: lambda a: np.rot90(a, 1)}
    return np.ascontiguousarray(turns[orientation](pixels)) if orientation in turns else pixels


def _whole_bytes(header: ImageHeader) -> int:
    return header.decoded_bytes * image_files.DECODE_COPIES


def reduction_factor(header: ImageHeader, room: int) -> int | None:
    """The smallest k ≥ 2 whose k-fold reduced image fits `room` bytes; None if no k does."""
    samples = header.height * header.width * header.channels * REDUCED_SAMPLE_BYTES
    if room <= 0:
        return None
    factor = max(2, math.isqrt(samples // room))
    while _reduced_bytes(header, factor) > room:
        factor += 1
        if factor > max(header.height, header.width):
            return None
    return factor


def _reduced_bytes(header: ImageHeader, factor: int) -> int:
    return (-(-header.height // factor) * -(-header.width // factor) * header.channels * REDUCED_SAMPLE_BYTES)


# -- TIFF: one strip or tile at a time ------------------------------------------------------------

def _reduced_tiff(path: Path, header: ImageHeader, limit: int, what: str) -> tuple[np.ndarray, int, str]:
    import tifffile
    with tifffile.TiffFile(path) as tiff:
        layout = _page_channels(tiff.series[0], header, path.name)
        page = layout[0][0]
        dtype = np.dtype(page.dtype)
        segment_bytes = math.prod(page.chunks) * dtype.itemsize
        compressed = max(max(each.databytecounts) for each, _ in layout)
        # a decoded segment, its row sums (k ≥ 2: at most half its rows, plus one), and the
        # compressed bytes read for it (twice: the read buffer and the decoder's input)
        row_sums = (page.chunks[0] // 2 + 1) * (segment_bytes // page.chunks[0]) // dtype.itemsize
        working = segment_bytes + row_sums * _sum_dtype(dtype).itemsize + 2 * compressed
        factor = reduction_factor(header, limit - working)
        pieces = (f"tiles of {page.chunks[0]}×{page.chunks[1]} px" if page.is_tiled
                  else f"strips of {page.chunks[0]} rows")
        if factor is None:
            raise TooLargeError(f"{path.name} is stored in {pieces}, {byte_size(segment_bytes)} each decoded: too "
                                f"large to read piece by piece within {what} ({byte_size(limit)}). Free memory, "
                                f"or re-save it in small tiles, e.g. with libvips: {vips_advice(path)}")
        sums = np.zeros((-(-header.height // factor), -(-header.width // factor), header.channels), np.float64)
        for each, first_channel in layout:
            for segment, (sample, _, row, column, _), _ in each.segments(maxworkers=1, buffersize=compressed):
                if segment is None:  # an empty segment reads as zeros
                    continue
                rows, columns = min(segment.shape[1], header.height - row), min(segment.shape[2], header.width - column)
                channel = first_channel + sample
                add_block_sums(sums, segment[0, :rows, :columns], row, column, factor,
                               slice(channel, channel + segment.shape[3]))
    how = "tile by tile" if page.is_tiled else "strip by strip"
    return block_means(sums, header.height, header.width, factor, dtype), factor, how


def _reduced_map(mapped: np.ndarray, name: str, header: ImageHeader, limit: int,
                 what: str) -> tuple[np.ndarray, int, str]:
    """A memory-mapped image, reduced a band of rows at a time (only that band is read)."""
    row_bytes = mapped[0].nbytes * (1 + _sum_dtype(mapped.dtype).itemsize // mapped.dtype.itemsize)
    band_rows = max(1, min(header.height, limit // 4 // row_bytes))
    factor = reduction_factor(header, limit - band_rows * row_bytes)
    if factor is None:
        raise TooLargeError(f"{name} is {header.height}×{header.width} px: its rows are too long to read reduced "
                            f"within {what} ({byte_size(limit)}); free memory")
    band_rows = max(factor, band_rows // factor * factor)  # whole blocks per band
    sums = np.zeros((-(-header.height // factor), -(-header.width // factor), header.channels), np.float64)
    for row in range(0, header.height, band_rows):
        add_block_sums(sums, np.asarray(mapped[row: row + band_rows]), row, 0, factor, slice(0, header.channels))
    return block_means(sums, header.height, header.width, factor, mapped.dtype), factor, "band by band"


def _page_channels(series, header: ImageHeader, name: str) -> list[tuple]:
    """[(page, its first channel in the image)]: one page holding every channel (contiguous or
    planar), or one single-channel page per channel (ImageJ's CYX); ValueError otherwise."""
    pages = list(series.pages)
    if any(page is None or page.imagedepth > 1 for page in pages):
        raise TooLargeError(f"{name} is a volume (SGI image depth) or holds missing pages; it cannot be read "
                            f"reduced. Save the plane you want as a 2-D TIFF: {vips_advice(Path(name))}")
    if len(pages) == 1:
        return [(pages[0], 0)]
    if len(pages) == header.channels and all(page.samplesperpixel == 1 for page in pages):
        return [(page, channel) for channel, page in enumerate(pages)]
    raise TooLargeError(f"{name} stores its image in {len(pages)} pages of {pages[0].samplesperpixel} samples "
                        f"(axes {series.axes}); it cannot be read reduced. Save it as one RGB or grey page: "
                        f"{vips_advice(Path(name))}")


def add_block_sums(sums: np.ndarray, piece: np.ndarray, row: int, column: int, factor: int,
                   channels: slice) -> None:
    """Add the pixels of `piece` (rows × columns [× samples]), whose top-left pixel is (row, column)
    of the image, to the sums of the factor×factor blocks of the image they fall in."""
    if piece.ndim == 2:
        piece = piece[..., None]
    row_starts = _block_starts(row, piece.shape[0], factor)
    column_starts = _block_starts(column, piece.shape[1], factor)
    block_rows = np.add.reduceat(piece, row_starts, axis=0, dtype=_sum_dtype(piece.dtype))
    blocks = np.add.reduceat(block_rows, column_starts, axis=1, dtype=np.float64)
    top, left = row // factor, column // factor
    sums[top: top + blocks.shape[0], left: left + blocks.shape[1], channels] += blocks


def _sum_dtype(dtype: np.dtype) -> np.dtype:
    """Exact sums of a block's rows: uint32 for 8- and 16-bit pixels (65535 × 65536 rows fit),
    float64 otherwise (float32 sums overflow on extreme values such as a -3.4e38 no-data fill)."""
    return np.dtype(np.uint32) if dtype in (np.uint8, np.uint16, np.bool_) else np.dtype(np.float64)


def _block_starts(start: int, length: int, factor: int) -> np.ndarray:
    """Offsets in a run of `length` pixels from `start` where a new factor-sized block begins."""
    return np.unique(np.r_[0, np.arange((-start) % factor, length, factor)])


def block_means(sums: np.ndarray, height: int, width: int, factor: int, dtype: np.dtype) -> np.ndarray:
    """Block sums -> block means (edge blocks over the pixels they hold), in `dtype` for uint8 and
    uint16 (rounded) and floats, float32 otherwise; grey images come back 2-D."""
    block_heights = np.minimum(factor, height - factor * np.arange(sums.shape[0]))
    block_widths = np.minimum(factor, width - factor * np.arange(sums.shape[1]))
    sums /= (block_heights[:, None] * block_widths[None, :])[..., None]
    if dtype in (np.uint8, np.uint16):
        means = np.rint(sums).astype(dtype)
    else:
        means = sums.astype(dtype if np.issubdtype(dtype, np.floating) and dtype.itemsize >= 4 else np.float32)
    return means[..., 0] if means.shape[-1] == 1 else means


# -- JPEG: libjpeg's scaled decoding --------------------------------------------------------------

def _reduced_jpeg(path: Path, header: ImageHeader, limit: int, what: str) -> tuple[np.ndarray, int, str]:
    from PIL import Image
    scale = next((scale for scale in JPEG_SCALES
                  if _whole_bytes(_scaled_header(header, scale)) <= limit), None)
    if scale is None:
        raise TooLargeError(f"{path.name} is {header.height}×{header.width} px: even decoded at 1/{JPEG_SCALES[-1]} "
                            f"scale it needs about {byte_size(_whole_bytes(_scaled_header(header, JPEG_SCALES[-1])))}, "
                            f"more than {what} ({byte_size(limit)}). Free memory, or downscale it with libvips, "
                            f"which streams: {vips_advice(path, reduce=True)}")
    pixel_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # sized and checked above
    try:
        with Image.open(path) as opened:
            reduced = (-(-header.width // scale), -(-header.height // scale))  # libjpeg rounds up
            opened.draft(opened.mode, (max(1, header.width // scale), max(1, header.height // scale)))
            if opened.size != reduced:  # never decode it whole
                raise TooLargeError(f"{path.name}: the JPEG decoder did not reduce it (to {reduced[0]}×{reduced[1]} "
                                    f"px); downscale it with libvips: {vips_advice(path, reduce=True)}")
            pixels = image_files.pillow_pixels(opened)
    finally:
        Image.MAX_IMAGE_PIXELS = pixel_limit
    return pixels, scale, f"decoded by libjpeg at 1/{scale} scale"


def _scaled_header(header: ImageHeader, scale: int) -> ImageHeader:
    return ImageHeader(-(-header.height // scale), -(-header.width // scale), header.channels,
                       header.bytes_per_sample)


def _pillow_kind(path: Path) -> tuple[str | None, int]:
    """(Pillow's format, EXIF orientation 1-8) from the file's header; (None, 1) if Pillow cannot
    open it (read_header already read it; any doubt means "not a JPEG")."""
    from PIL import Image
    pixel_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # only the header is read
    try:
        with Image.open(path) as opened:
            try:
                orientation = int(opened.getexif().get(0x0112, 1))
            except Exception:  # noqa: BLE001 - unreadable EXIF: as stored, as Pillow's whole read does
                orientation = 1
            return opened.format, orientation
    except Exception:  # noqa: BLE001
        return None, 1
    finally:
        Image.MAX_IMAGE_PIXELS = pixel_limit



# -- PNG: row by row ------------------------------------------------------------------------------
# A PNG is one zlib stream of filtered rows; each row's filter may refer to the row above. Rows are
# inflated a band at a time (zlib's max_length bounds the output); Pillow unfilters each band as a
# small PNG of its own, whose first row is the previous band's last row, unfiltered. That row's raw
# bytes come from decoding the band once more as plain 8-bit pixels of the same bytes per pixel.

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
_PNG_BYTES_AS_PIXELS = {1: 0, 2: 4, 3: 2, 4: 6}  # bytes per pixel -> the 8-bit colour type with as many
_PNG_READ = 1 << 20  # compressed bytes read at a time
_PNG_BAND_PIXELS = 1 << 24  # well below Pillow's decompression-bomb warning, for the bands' PNGs


@dataclass(frozen=True)
class _PngLayout:
    width: int
    height: int
    bit_depth: int
    colour_type: int
    interlaced: bool
    palette_chunks: bytes  # PLTE and tRNS, as they are in the file

    @property
    def stride(self) -> int:  # bytes of one unfiltered row
        return -(-self.width * _PNG_CHANNELS[self.colour_type] * self.bit_depth // 8)

    @property
    def pixel_bytes(self) -> int:  # the "bpp" PNG's filters step by
        return max(1, _PNG_CHANNELS[self.colour_type] * self.bit_depth // 8)


def _reduced_png(path: Path, header: ImageHeader, limit: int, what: str) -> tuple[np.ndarray, int, str]:
    with open(path, "rb") as file:
        layout = _png_layout(file, path.name)
        kind = image_files.png_row_by_row_problem(layout.bit_depth, layout.colour_type, layout.interlaced)
        if kind is not None:
            raise TooLargeError(f"{path.name} is {header.height}×{header.width} px; decoding it whole needs about "
                                f"{byte_size(_whole_bytes(header))}, more than {what}, {byte_size(limit)}, and an "
                                f"{kind} PNG cannot be read row by row. Convert it with libvips, which streams: "
                                f"{vips_advice(path)}")
        # per row: the inflated, re-wrapped and decoded bytes, Pillow's 4-byte pixels twice, float64 sums
        row_bytes = 6 * (layout.stride + 1) + layout.width * (8 + 8 * header.channels)
        band_rows = min(layout.height, max(1, limit // 4 // row_bytes), max(1, _PNG_BAND_PIXELS // layout.width))
        factor = reduction_factor(header, limit - band_rows * row_bytes)
        if factor is None:
            raise TooLargeError(f"{path.name} is {header.height}×{header.width} px: its rows are too long to read "
                                f"one by one within {what} ({byte_size(limit)}); free memory, or convert it "
                                f"with libvips, which streams: {vips_advice(path)}")
        sums = np.zeros((-(-header.height // factor), -(-header.width // factor), header.channels), np.float64)
        previous, row = bytes(layout.stride), 0  # the row above the first is zeros
        for filtered in _png_bands(file, layout, band_rows, path.name):
            raw = _unfilter(layout, previous, filtered)
            previous = raw[-layout.stride:]
            pixels = _png_pixels(layout, raw)
            add_block_sums(sums, pixels, row, 0, factor, slice(0, header.channels))
            row += pixels.shape[0]
    return block_means(sums, header.height, header.width, factor, pixels.dtype), factor, "row by row"


def _png_layout(file, name: str) -> _PngLayout:
    """The header chunks of a PNG (the file is left at its first IDAT chunk)."""
    if file.read(8) != PNG_SIGNATURE:
        raise ValueError(f"cannot read {name}: not a PNG file")
    palette, fields = b"", None
    while True:
        length, kind = _chunk_head(file, name)
        if kind == b"IDAT":
            file.seek(-8, os.SEEK_CUR)
            break
        data = file.read(length + 4)[:length]
        if kind == b"IHDR":
            fields = struct.unpack(">IIBBBBB", data)
        elif kind in (b"PLTE", b"tRNS"):
            palette += struct.pack(">I", length) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    if fields is None or fields[3] not in _PNG_CHANNELS:
        raise ValueError(f"cannot read {name}: damaged PNG header")
    width, height, bit_depth, colour_type, _, _, interlace = fields
    return _PngLayout(width, height, bit_depth, colour_type, bool(interlace), palette)


def _chunk_head(file, name: str) -> tuple[int, bytes]:
    head = file.read(8)
    if len(head) < 8:
        raise ValueError(f"cannot read {name}: the PNG ends before its image data (truncated?)")
    return struct.unpack(">I", head[:4])[0], head[4:]


def _png_bands(file, layout: _PngLayout, band_rows: int, name: str) -> Iterator[bytes]:
    """The filtered rows (filter byte + stride bytes each), band_rows at a time, inflated from the
    IDAT chunks without ever holding more than one band of them."""
    inflater, band, band_bytes = zlib.decompressobj(), bytearray(), band_rows * (layout.stride + 1)
    total, expected = 0, layout.height * (layout.stride + 1)
    for compressed in _idat_pieces(file, name):
        while compressed and total + len(band) < expected:
            band += inflater.decompress(compressed, min(band_bytes, expected - total) - len(band))
            compressed = inflater.unconsumed_tail
            if len(band) == min(band_bytes, expected - total):
                total += len(band)
                yield bytes(band)
                band.clear()
        if total >= expected:
            return
    raise ValueError(f"cannot read {name}: its image data ends after {total // (layout.stride + 1)} of "
                     f"{layout.height} rows (truncated?)")


def _idat_pieces(file, name: str) -> Iterator[bytes]:
    while True:
        length, kind = _chunk_head(file, name)
        if kind == b"IEND":
            return
        if kind != b"IDAT":
            file.seek(length + 4, os.SEEK_CUR)
            continue
        while length > 0:
            piece = file.read(min(length, _PNG_READ))
            if not piece:
                raise ValueError(f"cannot read {name}: the file ends inside its image data (truncated?)")
            length -= len(piece)
            yield piece
        file.seek(4, os.SEEK_CUR)  # the chunk's CRC


def _unfilter(layout: _PngLayout, previous: bytes, filtered: bytes) -> bytes:
    """Raw rows from filtered ones (Pillow's PNG decoder undoes the filters): the band becomes a
    PNG of 8-bit pixels of the same bytes per pixel, after the previous raw row (filter None)."""
    width = layout.stride // layout.pixel_bytes
    rows = len(filtered) // (layout.stride + 1)
    band = _png_file(width, rows + 1, 8, _PNG_BYTES_AS_PIXELS[layout.pixel_bytes], b"\0" + previous + filtered)
    with _open_png(band) as image:
        return image.tobytes()[layout.stride:]


def _png_pixels(layout: _PngLayout, raw: bytes) -> np.ndarray:
    """Raw rows -> pixels as the whole-image reader gives them (Pillow's modes and palette)."""
    rows = len(raw) // layout.stride
    unfiltered = b"".join(b"\0" + raw[i * layout.stride:(i + 1) * layout.stride] for i in range(rows))
    band = _png_file(layout.width, rows, layout.bit_depth, layout.colour_type, unfiltered, layout.palette_chunks)
    with _open_png(band) as image:
        return image_files.pillow_pixels(image)


def _png_file(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes, chunks: bytes = b"") -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    head = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (PNG_SIGNATURE + chunk(b"IHDR", head) + chunks + chunk(b"IDAT", zlib.compress(rows, 0))
            + chunk(b"IEND", b""))


def _open_png(data: bytes):
    from PIL import Image
    return Image.open(bytes_io.BytesIO(data), formats=["PNG"])
