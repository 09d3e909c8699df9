"""Reading images from disk, one place for the CLI, batch explain and training.

Every file is first sized from its header (`read_header`): an image whose decoded pixels would
not fit the decode budget or the memory available now is refused before a byte of it is
decoded (a 6 MB PNG can hold 46 000 × 46 000 px), with a message that says why. TIFF axes come
from tifffile's metadata, so an ImageJ stack (ZYX) is not mistaken for an RGB image.
"""
from __future__ import annotations

import os
import shlex
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import environment
from .provenance import EarlierOutputs, earlier_outputs, earlier_outputs_note

TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", *TIFF_SUFFIXES)
# Pillow refuses images over ~179 M pixels as a guard against decompression bombs; specimen
# scans can legitimately be 20 000 px on a side, so we allow up to 2^31 pixels...
MAX_PIXELS = 2**31
# ...as long as their decoded pixels fit this budget (INTR_MAX_DECODE_BYTES overrides it) and
# the memory available at the time. Decoding holds the decoder's buffers (Pillow keeps RGB at 4
# bytes a pixel) and our array at once: measured 3.3 times the array for a 12000×9000 JPEG.
# Read when used (napari_intr.environment); tests may set a budget here instead.
DECODE_BUDGET_BYTES: int | None = None
DECODE_COPIES = 4
_PILLOW_MODES_KEPT = ("1", "L", "RGB", "RGBA", "I;16", "I;16B", "I;16L", "I", "F")
_CHANNEL_AXES = "SC"  # tifffile: S = samples of a pixel (RGB), C = channels (ImageJ)
_AXIS_NAMES = {"Z": "depth (Z)", "T": "time (T)", "Q": "an unnamed axis", "I": "a page sequence"}


class TooLargeError(ValueError):
    """An image refused for its size before decoding (the message says why and what to do)."""


@dataclass(frozen=True)
class ImageHeader:
    """What a file's header says about its pixels, before decoding them."""
    height: int
    width: int
    channels: int
    bytes_per_sample: int

    @property
    def decoded_bytes(self) -> int:
        return self.height * self.width * self.channels * self.bytes_per_sample


def read_image(path: str | os.PathLike, allow_mapped: bool = False) -> np.ndarray:
    """An image file -> H×W or H×W×C numpy array (channels last), ValueError if it can't be read.

    allow_mapped: an uncompressed TIFF too large to decode in memory comes back memory-mapped
    (read from disk strip by strip as it is indexed), for callers that only ever read it in
    bands, as Explainer does when it block-averages a huge image."""
    path = Path(path)
    if not path.is_file():
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a folder, not an image file")
        raise FileNotFoundError(f"no image file at {path}")
    header = read_header(path)  # damaged files and stacks are refused whatever the size
    try:
        check_decodable(path, header)
    except TooLargeError:
        mapped = mapped_tiff(path) if allow_mapped and path.suffix.lower() in TIFF_SUFFIXES else None
        if mapped is None:
            raise
        return mapped
    try:
        image = _read_tiff(path) if path.suffix.lower() in TIFF_SUFFIXES else _read_with_pillow(path)
    except FileNotFoundError:
        raise
    except MemoryError as error:
        raise MemoryError(f"not enough memory to decode {path.name}; close other programs or "
                          "downscale the image") from error
    except Exception as error:  # readers raise many types for damaged files; all mean "unreadable"
        raise ValueError(f"cannot read {path.name}: {reason(error)}") from error
    if image.ndim not in (2, 3):
        raise ValueError(f"{path.name} holds an array of shape {image.shape}, not one 2-D image; "
                         "save a single plane (grey, RGB or RGBA)")
    return image


def read_header(path: Path) -> ImageHeader:
    """Size, channels and sample size from the header; ValueError naming the file if unreadable."""
    if path.stat().st_size == 0:
        raise ValueError(f"{path.name} is an empty file (0 bytes), not an image; copy or export it again")
    try:
        return _tiff_header(path) if path.suffix.lower() in TIFF_SUFFIXES else _pillow_header(path)
    except ValueError as error:
        if path.name in str(error):
            raise
        raise ValueError(f"cannot read {path.name}: {error}") from error
    except Exception as error:  # damaged headers raise many types
        raise ValueError(f"cannot read {path.name}: {reason(error)}") from error


def check_decodable(path: Path, header: ImageHeader) -> None:
    """Refuse, before decoding, an image whose pixels would not fit the budget or free memory."""
    size = f"{path.name} is {header.height}×{header.width} px"
    pixels = header.height * header.width
    if pixels > MAX_PIXELS:
        raise TooLargeError(f"{size} ({pixels / 1e6:.0f} M pixels), more than the {MAX_PIXELS / 1e6:.0f} M "
                         "pixels napari-intr reads; downscale or crop it first")
    needed = header.decoded_bytes * DECODE_COPIES
    limit, what = decode_limit()
    if needed > limit:
        raise TooLargeError(f"{size} ({header.channels} × {8 * header.bytes_per_sample}-bit); decoding it needs "
                            f"about {byte_size(needed)}, more than {what}, {byte_size(limit)}. Downscale or crop it "
                            "(the model sees it at most a few hundred px wide anyway) or free memory; "
                            f"{_reduced_read_advice(path)}")


def _reduced_read_advice(path: Path) -> str:
    suffix = path.suffix.lower()
    unreadable = png_row_by_row_problem(*_png_ihdr(path)) if suffix == ".png" else None
    if suffix in (*TIFF_SUFFIXES, ".jpg", ".jpeg", ".png") and unreadable is None:
        return "intr explain and the Explorer's batch read it reduced, piece by piece"
    but = f", but not {unreadable} PNGs" if unreadable else ""
    return (f"intr explain and the Explorer's batch read TIFF, JPEG and PNG files this large reduced, piece by "
            f"piece{but}: convert it with libvips, which streams: {vips_advice(path)}")


def png_row_by_row_problem(bit_depth: int, colour_type: int, interlaced: bool) -> str | None:
    """Why a PNG with these IHDR fields cannot be read row by row (napari_intr.large_images), e.g.
    "interlaced (Adam7)"; None when it can."""
    if interlaced:
        return "interlaced (Adam7)"
    if bit_depth == 16 and colour_type in (2, 6):  # RGB or RGBA: more than 4 bytes a pixel
        return "16-bit colour"
    return None


def _png_ihdr(path: Path) -> tuple[int, int, bool]:
    """(bit depth, colour type, interlaced) from a PNG's IHDR; (8, 2, False) if it has none."""
    with open(path, "rb") as file:
        head = file.read(33)
    if len(head) < 29 or head[12:16] != b"IHDR":
        return 8, 2, False  # not a PNG inside: read_header decided how to read it
    return head[24], head[25], bool(head[28])


def vips_advice(path: Path, reduce: bool = False) -> str:
    """A libvips command (it streams, so it converts images of any size) that writes a tiled TIFF
    of `path`, or with `reduce` a JPEG a tenth of its size."""
    if reduce:
        return f"vips resize {shlex.quote(path.name)} {shlex.quote(path.stem + '_small.jpg')} 0.1"
    return f"vips tiffsave {shlex.quote(path.name)} {shlex.quote(path.stem + '_tiled.tif')} --tile --compression deflate --bigtiff"


def decode_limit() -> tuple[int, str]:
    """The bytes a decode may use now, and what sets that limit: the decode budget or, when
    less, the memory available now."""
    budget = DECODE_BUDGET_BYTES or environment.value("INTR_MAX_DECODE_BYTES")
    available = available_memory()
    if available < budget:
        return available, "the memory available now"
    return budget, "the decode budget (INTR_MAX_DECODE_BYTES)"


def available_memory() -> int:
    """Bytes this process can still allocate: free RAM, its cgroup's limit and its address-space
    limit (ulimit -v), whichever is smallest."""
    import psutil  # free RAM on every platform (/proc/meminfo is Linux's only)
    limits = [psutil.virtual_memory().available]
    cgroup_max, cgroup_now = _read_proc("/sys/fs/cgroup/memory.max"), _read_proc("/sys/fs/cgroup/memory.current")
    if cgroup_max.strip().isdigit() and cgroup_now.strip().isdigit():
        limits.append(max(int(cgroup_max) - int(cgroup_now), 0))
    try:
        import resource
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        statm = _read_proc("/proc/self/statm").split()
        if soft != resource.RLIM_INFINITY and statm:
            limits.append(max(soft - int(statm[0]) * os.sysconf("SC_PAGE_SIZE"), 0))
    except (ImportError, OSError, ValueError):
        pass
    return min(limits)


# How torch (CUDA, MPS, the CPU allocator) and Python word running out of memory.
OUT_OF_MEMORY_WORDS = ("out of memory", "can't allocate memory", "cannot allocate memory", "not enough memory")
GPU_WORDS = ("cuda", "mps", "gpu")


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` is running out of memory: Python's MemoryError, torch's OutOfMemoryError, or
    an error worded so (the one rule; the CLI, training and the plugin word it each for their user)."""
    text = str(error).lower()
    return (isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError"
            or any(words in text for words in OUT_OF_MEMORY_WORDS))


def is_out_of_gpu_memory(error: BaseException) -> bool:
    return is_out_of_memory(error) and any(words in str(error).lower() for words in GPU_WORDS)


def reason(error: BaseException) -> str:
    """An exception as a non-empty reason (MemoryError() and some OSErrors have no text)."""
    if is_out_of_memory(error):
        detail = f" ({error})" if str(error) else ""
        return f"out of memory{detail}; close other programs, or downscale the image"
    return str(error) or type(error).__name__


def byte_size(size: int) -> str:
    """A size in bytes as people read it."""
    if size >= 2**28:
        return f"{size / 2**30:.1f} GiB"
    return f"{size / 2**20:.0f} MiB" if size >= 2**20 else f"{size / 2**10:.0f} KiB"


def _read_proc(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


# Pillow formats whose extra frames are a stack (an animation); an MPO JPEG's are previews of its first
ANIMATED_FORMATS = ("GIF", "PNG", "WEBP")


def stack_error(name: str, length: int, along: str, detail: str, how: str) -> ValueError:
    """The one rule for files that hold several images (multi-page TIFF, animated GIF/WebP/APNG):
    refused, never explained from the first plane alone."""
    return ValueError(f"{name} holds a stack of {length} planes along {along} ({detail}), not one 2-D image; "
                      f"explain one plane at a time ({how})")


def _tiff_plan(axes: str, shape: tuple[int, ...], name: str) -> tuple[int, int, int]:
    """(height, width, channels) of a TIFF series from its axes; ValueError for stacks."""
    kept = [(axis, length) for axis, length in zip(axes, shape) if length > 1 or axis in "YX"]
    planes = [(axis, length) for axis, length in kept if axis not in "YX" + _CHANNEL_AXES]
    sizes = dict(kept)
    if planes or "Y" not in sizes or "X" not in sizes:
        axis, length = planes[0] if planes else (axes[0], shape[0])
        raise stack_error(name, length, _AXIS_NAMES.get(axis, axis), f"axes {axes}, shape {tuple(shape)}",
                          "save it as its own TIFF, e.g. from Fiji: Image > Duplicate")
    channels = [length for axis, length in kept if axis in _CHANNEL_AXES]
    if len(channels) > 1 or (channels and channels[0] not in (3, 4)):
        raise ValueError(f"{name} has {' × '.join(map(str, channels))} channels (axes {axes}); INTR takes grey, "
                         "RGB or RGBA images: keep one channel or three")
    return sizes["Y"], sizes["X"], channels[0] if channels else 1


def _tiff_header(path: Path) -> ImageHeader:
    import tifffile
    with tifffile.TiffFile(path) as tiff:
        series = tiff.series[0]
        height, width, channels = _tiff_plan(series.axes, series.shape, path.name)
        return ImageHeader(height, width, channels, np.dtype(series.dtype).itemsize)


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile
    with tifffile.TiffFile(path) as tiff:
        series = tiff.series[0]
        _tiff_plan(series.axes, series.shape, path.name)
        image = series.asarray()
        axes = series.axes
    return _channels_last(image, axes)


def mapped_tiff(path: Path) -> np.ndarray | None:
    """The pixels of an uncompressed, contiguous TIFF as a read-only memory map; None otherwise."""
    import tifffile
    try:
        with tifffile.TiffFile(path) as tiff:
            axes = tiff.series[0].axes
        image = tifffile.memmap(path, mode="r")
    except (ValueError, OSError):  # compressed, tiled or scattered strips: not mappable
        return None
    return _channels_last(image, axes)


def _channels_last(image: np.ndarray, axes: str) -> np.ndarray:
    """Drop length-1 axes and put a channel axis last (views only: a memory map stays one)."""
    keep = [i for i, (axis, length) in enumerate(zip(axes, image.shape)) if length > 1 or axis in "YX"]
    image = image.reshape([image.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    channel = next((i for i, axis in enumerate(axes) if axis in _CHANNEL_AXES), None)
    if channel is not None:  # planar RGB (ImageJ, many microscopes): channels last
        image = np.moveaxis(image, channel, -1)
    return image


def animation_frames(path: str | os.PathLike) -> tuple[int, str]:
    """(frames, format) of an animated GIF, WebP or APNG; (1, "") for any other or unreadable file.
    napari's reader opens some animations (WebP) as their first frame alone: the docks ask here."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as opened:
            if opened.format not in ANIMATED_FORMATS:
                return 1, ""
            return getattr(opened, "n_frames", 1), "APNG" if opened.format == "PNG" else opened.format
    except (OSError, UnidentifiedImageError, ValueError):
        return 1, ""


def _pillow_header(path: Path) -> ImageHeader:
    from PIL import Image
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # sized here, checked by check_decodable
    try:
        with Image.open(path) as opened:
            mode, (width, height) = opened.mode, opened.size
            transparent = "transparency" in opened.info
            frames = getattr(opened, "n_frames", 1) if opened.format in ANIMATED_FORMATS else 1
            if frames > 1:
                raise stack_error(path.name, frames, "time (the frames of an animated "
                                  f"{'APNG' if opened.format == 'PNG' else opened.format})", f"{width}×{height} px",
                                  "save the frame you want as a PNG, e.g. from Fiji: Image > Duplicate")
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    if mode not in _PILLOW_MODES_KEPT:
        mode = "RGBA" if "A" in mode or transparent else "RGB"
    sample = 2 if mode.startswith("I;16") else 4 if mode in ("I", "F") else 1
    return ImageHeader(height, width, Image.getmodebands(mode), sample)


def _read_with_pillow(path: Path) -> np.ndarray:
    from PIL import Image
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, MAX_PIXELS
    try:
        with Image.open(path) as image:
            return pillow_pixels(image)
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def pillow_pixels(image) -> np.ndarray:
    """An opened Pillow image -> its pixels, upright (EXIF rotation applied), in a kept mode."""
    from PIL import ImageOps
    image.load()
    ImageOps.exif_transpose(image, in_place=True)  # camera photos store rotation in EXIF
    if image.mode not in _PILLOW_MODES_KEPT:
        image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
    pixels = np.asarray(image)
    return pixels.astype(pixels.dtype.newbyteorder("="), copy=False)  # I;16B is big-endian


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
            images = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                            and not any(part.startswith(".") for part in p.relative_to(path).parts))
            kept, earlier = earlier_outputs(images, [path])  # an earlier batch's maps, an atlas's montages
            if earlier:
                warnings.warn(earlier_outputs_note(len(images) - len(kept), earlier), EarlierOutputs, stacklevel=2)
            found.extend(kept)
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
