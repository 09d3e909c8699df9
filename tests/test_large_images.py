"""Images too large to decode whole (the decompression-bomb class of the hostile corpus): TIFFs of
every common layout and JPEGs are read reduced piece by piece within the decode budget, each
with a note naming the file, its size and the factor; the rest are refused with the way out.
The budget is set small here (a few hundred KiB), so the files stay small."""
import csv
import json
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_intr import image_files
from napari_intr.image_files import TooLargeError
from napari_intr.large_images import JPEG_SCALES, read_within_budget

BUDGET = 1_000_000  # bytes: less than one whole copy of every image below


@pytest.fixture
def budget(monkeypatch):
    monkeypatch.setattr(image_files, "DECODE_BUDGET_BYTES", BUDGET)
    return BUDGET


def smooth_specimen(height, width, channels=3, seed=0):
    """Gradients, rings and some noise: JPEG's scaled decode and a block mean agree on it."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:height, :width] / max(height, width)
    planes = [y, x, 0.5 + 0.5 * np.sin(25 * np.hypot(y - 0.4, x - 0.6)), 1 - y * x][:channels]
    image = np.stack(planes, -1) + rng.normal(0, 0.02, (height, width, channels))
    return np.clip(image, 0, 1)[..., 0] if channels == 1 else np.clip(image, 0, 1)


def block_means(image, factor):
    """The reference: every factor×factor block's mean, edge blocks over the pixels they hold."""
    image = np.asarray(image, np.float64)
    rows, columns = -(-image.shape[0] // factor), -(-image.shape[1] // factor)
    return np.array([[image[i * factor:(i + 1) * factor, j * factor:(j + 1) * factor].mean(axis=(0, 1))
                      for j in range(columns)] for i in range(rows)])


def peak_bytes(read, *args):
    """Peak Python/numpy allocations of read(*args) (tracemalloc), imports already done."""
    tracemalloc.start()
    try:
        result = read(*args)
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


TIFF_LAYOUTS = {
    # id: (dtype, channels, tifffile.imwrite options)
    "deflate-tiles-rgb-uint8": (np.uint8, 3, {"compression": "zlib", "tile": (64, 64)}),
    "lzw-strips-grey-uint16-predictor": (np.uint16, 1, {"compression": "lzw", "predictor": True,
                                                        "rowsperstrip": 24}),
    "zstd-tiles-grey-float32": (np.float32, 1, {"compression": "zstd", "tile": (48, 80)}),
    "deflate-planar-strips-rgb-uint8": (np.uint8, 3, {"compression": "zlib", "planarconfig": "separate",
                                                      "photometric": "rgb", "rowsperstrip": 32}),
    "jpeg-tiles-rgb-uint8": (np.uint8, 3, {"compression": "jpeg", "tile": (64, 64)}),
    "uncompressed-tiles-rgba-uint8": (np.uint8, 4, {"tile": (32, 32), "photometric": "rgb",
                                                    "extrasamples": ["unassalpha"]}),
}


def write_tiff(path, dtype, channels, options, height=700, width=950):
    unit = smooth_specimen(height, width, channels)
    if np.issubdtype(dtype, np.integer):
        pixels = np.round(unit * np.iinfo(dtype).max).astype(dtype)
    else:
        pixels = (unit * 5000 - 1200).astype(dtype)  # a float range preprocessing must stretch
    stored = np.moveaxis(pixels, -1, 0) if options.get("planarconfig") == "separate" else pixels
    tifffile.imwrite(path, stored, **options)
    return pixels


@pytest.mark.parametrize("layout", TIFF_LAYOUTS, ids=list(TIFF_LAYOUTS))
def test_tiff_over_the_budget_is_read_reduced_segment_by_segment_within_it(layout, tmp_path, budget):
    dtype, channels, options = TIFF_LAYOUTS[layout]
    path = tmp_path / f"{layout}.tif"
    pixels = write_tiff(path, dtype, channels, options)
    assert pixels.nbytes > budget  # one whole copy would not fit, let alone the 4 a decode makes
    with pytest.raises(TooLargeError, match="read it reduced"):
        image_files.read_image(path)
    read_within_budget(path)  # imports and caches out of the measurement
    read, peak = peak_bytes(read_within_budget, path)
    assert peak <= budget, f"{peak} bytes allocated at the peak, the budget is {budget}"
    factor = read.factor
    assert factor >= 2 and read.file_shape == (700, 950)
    assert read.pixels.shape == (-(-700 // factor), -(-950 // factor), *((channels,) if channels > 1 else ()))
    assert read.pixels.dtype == dtype  # uint8/uint16 rounded, floats kept: preprocessing treats it as the file
    full = tifffile.imread(path)  # small enough here to compare with the whole decode
    if options.get("planarconfig") == "separate":
        full = np.moveaxis(full, 0, -1)
    expected = block_means(full, factor)
    tolerance = 0.5 if np.issubdtype(dtype, np.integer) else 1e-3
    assert np.abs(read.pixels - expected.reshape(read.pixels.shape)).max() <= tolerance
    assert read.note.startswith(f"{layout}.tif is 700×950 px")
    assert f"read reduced {factor}×" in read.note and "decode budget" in read.note
    assert ("tile by tile" if "tiles" in layout else "strip by strip") in read.note


def test_float_tiff_read_reduced_gets_the_same_robust_stretch(tmp_path, budget):
    """A -3.4e38 no-data pixel in a float TIFF: the reduced image keeps raw means, so the model's
    preprocessing stretches it by robust percentiles (and says so), as it stretches the whole
    decode reduced by the same block means."""
    from napari_intr.preprocess import intensity_range
    pixels = write_tiff(tmp_path / "dem.tif", np.float32, 1, {})
    pixels[10, 10] = -3.4e38
    tifffile.imwrite(tmp_path / "dem.tif", pixels, compression="zlib", tile=(64, 64))
    read = read_within_budget(tmp_path / "dem.tif")
    notes, reference_notes = [], []
    low, high = intensity_range(read.pixels, notes)
    reference_low, reference_high = intensity_range(block_means(pixels, read.factor).astype(np.float32),
                                                    reference_notes)
    assert notes and "percentiles" in notes[0] and reference_notes
    assert low == pytest.approx(reference_low, rel=1e-5) and high == pytest.approx(reference_high, rel=1e-5)
    assert -1300 < low < high < 3900  # the no-data block is clipped, not the bottom of the range


def test_tiff_in_one_strip_too_large_to_read_piece_by_piece_is_refused_with_the_way_out(tmp_path, budget):
    path = tmp_path / "one strip.tif"
    write_tiff(path, np.uint8, 3, {"compression": "zlib", "rowsperstrip": 700})
    with pytest.raises(TooLargeError) as refused:
        read_within_budget(path)
    message = str(refused.value)
    assert "one strip.tif is stored in strips of 700 rows" in message and "decode budget" in message
    assert "vips tiffsave 'one strip.tif' 'one strip_tiled.tif' --tile" in message  # ready to paste


def test_huge_jpeg_is_decoded_at_a_reduced_scale(tmp_path, budget):
    path = tmp_path / "tray.jpg"
    pixels = np.round(smooth_specimen(1200, 1500) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=95)
    read_within_budget(path)
    read, peak = peak_bytes(read_within_budget, path)
    assert peak <= budget
    factor = read.factor
    assert factor in JPEG_SCALES and read.pixels.shape == (-(-1200 // factor), -(-1500 // factor), 3)
    difference = np.abs(read.pixels - block_means(pixels, factor))
    assert difference.mean() < 2 and difference.max() < 40  # libjpeg's scaled IDCT, not a box filter
    assert "tray.jpg is 1200×1500 px" in read.note and f"read reduced {factor}×" in read.note
    assert f"libjpeg at 1/{factor} scale" in read.note


def test_huge_jpeg_read_reduced_is_upright(tmp_path, budget):
    """The EXIF rotation of a camera photo is applied to the reduced image as to a whole one."""
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to view
    Image.fromarray(np.round(smooth_specimen(1000, 1400) * 255).astype(np.uint8)).save(path, exif=exif)
    read = read_within_budget(path)
    assert read.pixels.shape[:2] == (-(-1400 // read.factor), -(-1000 // read.factor))


def test_jpeg_too_large_even_at_an_eighth_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(image_files, "DECODE_BUDGET_BYTES", 20_000)
    path = tmp_path / "mural.jpg"
    Image.fromarray(np.zeros((1600, 1600, 3), np.uint8)).save(path)
    with pytest.raises(TooLargeError, match=r"mural.jpg is 1600×1600 px: even decoded at 1/8 scale .* "
                                            r"vips resize mural.jpg"):
        read_within_budget(path)


PNG_KINDS = {
    # id: the specimen as a Pillow image of that kind (the whole-image reader's result is the reference)
    "rgb-8": lambda unit: Image.fromarray(np.round(unit[..., :3] * 255).astype(np.uint8)),
    "rgba-8": lambda unit: Image.fromarray(np.round(unit * 255).astype(np.uint8)),
    "grey-8": lambda unit: Image.fromarray(np.round(unit[..., 2] * 255).astype(np.uint8)),
    "grey-16": lambda unit: Image.fromarray(np.round(unit[..., 2] * 65535).astype(np.uint16)),
    "grey-alpha-8": lambda unit: Image.fromarray(np.round(unit[..., 2] * 255).astype(np.uint8)).convert("LA"),
    "palette-8": lambda unit: Image.fromarray(np.round(unit[..., :3] * 255).astype(np.uint8)).quantize(64),
    "palette-4-bit": lambda unit: Image.fromarray(np.round(unit[..., :3] * 255).astype(np.uint8)).quantize(16),
    "bilevel": lambda unit: Image.fromarray(unit[..., 2] > 0.5),
}


@pytest.mark.parametrize("kind", PNG_KINDS, ids=list(PNG_KINDS))
def test_png_over_the_budget_is_read_reduced_row_by_row_within_it(kind, tmp_path, budget):
    """Every PNG colour type and bit depth Pillow writes, with its adaptive filters (Sub, Up,
    Average, Paeth): the reduced read equals the whole decode reduced by block means."""
    path = tmp_path / f"{kind}.png"
    PNG_KINDS[kind](smooth_specimen(700, 950, 4)).save(path, optimize=True, bits=4 if "4-bit" in kind else 8)
    whole = image_files._read_with_pillow(path)  # small enough here to compare with
    with pytest.raises(TooLargeError, match="read it reduced"):
        image_files.read_image(path)
    read_within_budget(path)
    read, peak = peak_bytes(read_within_budget, path)
    assert peak <= budget, f"{peak} bytes allocated at the peak, the budget is {budget}"
    factor = read.factor
    assert factor >= 2 and read.pixels.shape[:2] == (-(-700 // factor), -(-950 // factor))
    expected = block_means(whole, factor).reshape(read.pixels.shape)
    assert np.abs(read.pixels - expected).max() <= (1e-6 if whole.dtype == bool else 0.5)
    assert read.pixels.dtype == (np.float32 if whole.dtype == bool else whole.dtype)
    assert f"{kind}.png is 700×950 px" in read.note and f"read reduced {factor}× (row by row)" in read.note


@pytest.mark.parametrize("kind", ["interlaced", "16-bit colour"])
def test_png_that_cannot_be_read_row_by_row_is_refused_with_a_conversion(kind, tmp_path, budget):
    """Pillow writes neither: a header claiming one (and a few bytes of data) is enough."""
    from hostile_corpus import png_chunk
    path = tmp_path / "plate.png"
    depth, interlace = (8, 1) if kind == "interlaced" else (16, 0)
    header = struct.pack(">IIBBBBB", 950, 700, depth, 2, 0, 0, interlace)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(bytes(99)))
                     + png_chunk(b"IEND", b""))
    with pytest.raises(TooLargeError) as refused:
        read_within_budget(path)
    message = str(refused.value)
    assert "plate.png is 700×950 px" in message and "decode budget" in message
    assert kind in message and "PNG cannot be read row by row" in message
    assert "vips tiffsave plate.png plate_tiled.tif" in message
    with pytest.raises(TooLargeError) as whole:  # the whole-decode refusal does not promise a reduced read
        image_files.read_image(path)
    message = str(whole.value)
    assert "read it reduced" not in message and f"but not {kind}" in message
    assert "vips tiffsave plate.png plate_tiled.tif" in message


def test_truncated_png_read_row_by_row_says_where_it_ends(tmp_path, budget):
    path = tmp_path / "cut.png"
    Image.fromarray(np.round(smooth_specimen(700, 950) * 255).astype(np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cannot read cut.png: .*(ends|truncated)"):
        read_within_budget(path)


@pytest.mark.parametrize("suffix", [".bmp", ".webp"])
def test_other_formats_over_the_budget_are_refused_with_a_conversion(tmp_path, budget, suffix):
    path = tmp_path / f"scan{suffix}"
    Image.fromarray(np.zeros((700, 950, 3), np.uint8)).save(path)
    with pytest.raises(TooLargeError) as refused:
        read_within_budget(path)
    message = str(refused.value)
    assert f"scan{suffix} is 700×950 px" in message and "decode budget" in message
    assert f"vips tiffsave scan{suffix} scan_tiled.tif --tile" in message


def test_batch_explains_huge_images_reduced_on_the_files_pixel_grid(tmp_path, budget):
    """intr explain's batch: a compressed TIFF and a JPEG over the budget are explained (not
    skipped); boxes in the file's pixels crop the reduced image at the same place; the maps'
    placement and the notes are in the file's pixels."""
    import torch

    from napari_intr.collection.explain import explain_folder
    from napari_intr.model import IntrConfig, build_model
    from napari_intr.regions import Region
    folder = tmp_path / "scans"
    folder.mkdir()
    write_tiff(folder / "drawer.tif", np.uint8, 3, {"compression": "zlib", "tile": (64, 64)})
    Image.fromarray(np.round(smooth_specimen(1200, 1500) * 255).astype(np.uint8)).save(folder / "tray.jpg")
    torch.manual_seed(0)
    model = build_model(IntrConfig.tiny(3), ["a", "b", "c"]).eval()
    summary = explain_folder(model, [folder], tmp_path / "out", top_k=2)
    assert summary["done"] == 2 and not summary["skipped"]
    notes = {path.rsplit("/", 1)[-1]: note for path, note in summary["notes"] if "read reduced" in note}
    assert set(notes) == {"drawer.tif", "tray.jpg"}
    with tifffile.TiffFile(tmp_path / "out" / "drawer_attention.tif") as maps:
        metadata = json.loads(maps.imagej_metadata["Info"])
    assert metadata["image_shape"] == [700, 950]  # the file's, not the reduced image's
    assert any("read reduced" in note for note in metadata["notes"])

    boxes = {folder / "drawer.tif": [Region("left", 100, 200, 400, 500)]}
    summary = explain_folder(model, [], tmp_path / "regions", top_k=2, boxes=boxes)
    assert summary["done"] == 1
    with open(tmp_path / "regions" / "predictions.csv", newline="") as stream:
        [row] = list(csv.DictReader(stream))
    with tifffile.TiffFile(tmp_path / "regions" / row["attention_file"]) as maps:
        metadata = json.loads(maps.imagej_metadata["Info"])
        grid = maps.asarray().shape[-2:]
    (scale_y, scale_x), (top, left) = metadata["scale"], metadata["translate"]
    # the maps cover the box (300×300 file pixels) from its top-left corner, within one reduced pixel
    factor = int(notes["drawer.tif"].split("read reduced ")[1].split("×")[0])
    assert abs(top - (scale_y - 1) / 2 - 200) <= factor and abs(left - (scale_x - 1) / 2 - 100) <= factor
    assert abs(grid[0] * scale_y - 300) <= 2 * factor and abs(grid[1] * scale_x - 300) <= 2 * factor


def test_upright_turns_as_pillow_does():
    from PIL import ImageOps

    from napari_intr.large_images import upright
    pixels = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    for orientation in range(1, 9):
        image = Image.fromarray(pixels)
        exif = image.getexif()
        exif[0x0112] = orientation
        image.info["exif"] = exif.tobytes()
        expected = np.asarray(ImageOps.exif_transpose(image))
        assert np.array_equal(upright(pixels, orientation), expected), orientation


def test_png_read_reduced_is_upright(tmp_path, budget):
    """A PNG's EXIF orientation is applied to the reduced image, as the whole read applies it."""
    from napari_intr.large_images import upright
    stored = np.round(smooth_specimen(700, 950) * 255).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "turned.png", exif=exif)
    assert image_files._read_with_pillow(tmp_path / "turned.png").shape == (950, 700, 3)  # the whole read turns it
    read = read_within_budget(tmp_path / "turned.png")
    assert read.file_shape == (950, 700) and "turned.png is 950×700 px" in read.note
    expected = upright(block_means(stored, read.factor), 6)
    assert np.abs(read.pixels - expected).max() <= 0.5


def test_damaged_piece_of_a_huge_tiff_is_a_message_not_a_traceback(tmp_path, budget):
    path = tmp_path / "scratched.tif"
    write_tiff(path, np.uint8, 3, {"compression": "zlib", "tile": (64, 64)})
    with tifffile.TiffFile(path) as tiff:
        offset, count = tiff.pages[0].dataoffsets[40], tiff.pages[0].databytecounts[40]
    data = bytearray(path.read_bytes())
    data[offset: offset + count] = bytes(range(256)) * (count // 256) + bytes(count % 256)
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"^cannot read scratched.tif: "):
        read_within_budget(path)


def test_uncompressed_tiff_in_one_strip_is_read_reduced_band_by_band_for_a_viewer(tmp_path, budget):
    """Batch explain takes its memory map (Explainer reads it in bands); a viewer, which would read a
    map whole, gets it reduced band by band, within the budget, whatever its strips."""
    path = tmp_path / "scan.tif"
    pixels = write_tiff(path, np.uint16, 1, {})  # tifffile writes an uncompressed image as one strip
    assert isinstance(read_within_budget(path).pixels, np.memmap)
    read_within_budget(path, allow_mapped=False)
    read, peak = peak_bytes(read_within_budget, path, False)
    assert peak <= budget and read.factor >= 2 and not isinstance(read.pixels, np.memmap)
    assert np.abs(read.pixels - block_means(pixels, read.factor)).max() <= 0.5
    assert "scan.tif is 700×950 px" in read.note and "(band by band)" in read.note


def test_uncompressed_tiff_whose_rows_do_not_fit_the_budget_is_refused_by_name(tmp_path, monkeypatch):
    path = tmp_path / "scan.tif"
    write_tiff(path, np.uint16, 1, {})
    monkeypatch.setattr(image_files, "DECODE_BUDGET_BYTES", 4000)  # less than one row and its sums
    with pytest.raises(TooLargeError, match=r"^scan.tif is 700×950 px: its rows .* free memory"):
        read_within_budget(path, allow_mapped=False)
