"""Trait atlas core without a model: patches on the original image, consistency with parts, heaps."""
import numpy as np
import pytest

from napari_intr.atlas.geometry import Footprint, crop, look, mass_radius
from napari_intr.atlas.parts import ATTRIBUTE, ImageParts, PartSource
from napari_intr.atlas.statistics import HeadStats, Moments, TopN, effect_size
from napari_intr.atlas.summarise import head_record
from napari_intr.preprocess import resized_shape

STRIDE = 8


def footprint_for(height: int, width: int) -> Footprint:
    """The grid the tiny backbone gives for an image of this size (short side 128, long side <= 224)."""
    input_shape = resized_shape(height, width, 128, 224)
    grid = tuple(-(-side // STRIDE) for side in input_shape)
    return Footprint.of(grid, (height, width), input_shape, STRIDE)


def blob(grid, row, col, sigma=1.0):
    y, x = np.mgrid[:grid[0], :grid[1]]
    weights = np.exp(-((y - row) ** 2 + (x - col) ** 2) / (2 * sigma ** 2)) + 1e-4
    return weights / weights.sum()


@pytest.mark.parametrize("shape", [(128, 128), (100, 300), (517, 211), (64, 40), (333, 999)])
def test_patch_is_centred_on_the_peak_in_original_image_coordinates(shape):
    height, width = shape
    footprint = footprint_for(height, width)
    input_height, input_width = resized_shape(height, width, 128, 224)
    rng = np.random.default_rng(height * width)
    # An image whose pixels hold their own (row, column): what a patch shows says where it came from.
    rows, cols = np.mgrid[:height, :width].astype(np.float32)
    image = np.stack([rows, cols, np.ones_like(rows)], axis=-1)  # channel 2: 1 inside, 0.5 outside
    for _ in range(5):
        row, col = (int(rng.integers(g)) for g in footprint.grid)
        found = look(blob(footprint.grid, row, col), footprint)
        assert found.cell == (row, col)
        # The peak cell's centre, by an independent route: the centre of its 8×8 block of model-input
        # pixels, scaled back by the resize (input pixel i covers original [i·H/H', (i+1)·H/H')).
        expected = ((row * STRIDE + STRIDE / 2) * height / input_height,
                    (col * STRIDE + STRIDE / 2) * width / input_width)
        assert found.centre == pytest.approx(expected, abs=1e-6)
        _, _, side, other_side = found.box
        assert side == other_side and side >= 0.125 * min(height, width)
        patch = crop(image, found.box, size=64)
        # The patch's centre pixel comes from the original pixel under the peak's centre.
        # (The last row or column of cells may reach past the image: the model pads to a whole cell.)
        centre = patch[31:33, 31:33].reshape(-1, 3)
        inside = centre[:, 2] == 1
        if expected[0] < height and expected[1] < width:
            assert inside.all()
            assert np.abs(centre[:, :2] + 0.5 - np.array(expected)).max() <= side / 64 + 1


def test_patch_outside_the_image_is_grey_and_keeps_its_centre():
    footprint = footprint_for(128, 128)
    found = look(blob(footprint.grid, 0, 0), footprint)  # a corner peak: the box pokes out
    assert found.box[0] < 0 and found.box[1] < 0
    patch = crop(np.ones((128, 128, 3), np.float32), found.box, size=32)
    assert patch[0, 0, 0] == pytest.approx(0.5) and patch[-1, -1, 0] == 1
    from napari_intr.atlas.montage import _patch
    white = np.full((128, 128, 3), 255, np.uint8)
    tile = _patch(white, found.box, 32)  # uint8 images are cropped before conversion
    assert tile.dtype == np.uint8 and tile[0, 0, 0] == 127 and tile[-1, -1, 0] == 255


def test_an_8_bit_rgb_patch_is_the_converted_patch():
    """8-bit RGB patches skip the float round trip: every value, and the grey outside, as converted."""
    from napari_intr.atlas.montage import _patch
    from napari_intr.preprocess import to_float_rgb
    image = np.random.default_rng(0).integers(0, 256, (90, 140, 3), dtype=np.uint8)
    for box in [(-20.0, -30.0, 70.0, 70.0), (10.5, 60.25, 33.0, 33.0), (50.0, 100.0, 80.0, 80.0)]:
        converted = (np.clip(to_float_rgb(crop(image, box, 48, fill=127)), 0, 1) * 255).round().astype(np.uint8)
        assert np.array_equal(_patch(image, box, 48), converted)


def test_spread_follows_the_mass():
    grid = (16, 16)
    footprint = Footprint.of(grid, (128, 128), (128, 128), STRIDE)
    narrow, wide = look(blob(grid, 8, 8, 0.5), footprint), look(blob(grid, 8, 8, 3.0), footprint)
    assert narrow.radius == 0 and wide.radius >= 2 and narrow.spread < wide.spread
    assert narrow.box[2] < wide.box[2]
    flat = np.full(grid, 1 / 256)
    assert mass_radius(flat, 8, 8) == 6  # 11×11 cells hold 121/256 < 50 %, 13×13 hold 169/256


def test_consistency_is_one_for_a_head_on_the_masked_part_and_falls_for_one_that_wanders():
    rng = np.random.default_rng(0)
    footprint = Footprint.of((16, 16), (128, 128), (128, 128), STRIDE)
    faithful, wandering = HeadStats(top=3), HeadStats(top=3)
    for index in range(12):
        row, col = (int(v) for v in rng.integers(2, 14, 2))
        mask = np.zeros((128, 128), bool)  # the attribute: a small disc inside cell (row, col)
        y, x = np.mgrid[:128, :128]
        mask[(y - (row * 8 + 4)) ** 2 + (x - (col * 8 + 4)) ** 2 < 9] = True
        parts = ImageParts(masks={ATTRIBUTE: mask})
        on_part = look(blob((16, 16), row, col), footprint)
        elsewhere = look(blob((16, 16), (row + 5 + index % 3) % 16, (col + 7) % 16), footprint)
        faithful.add(f"{index}", head_record(on_part, footprint, parts))
        wandering.add(f"{index}", head_record(elsewhere if index % 2 else on_part, footprint, parts))
    assert faithful.consistency() == (1.0, ATTRIBUTE, "parts")
    score, part, method = wandering.consistency()
    assert method == "parts" and part == ATTRIBUTE and score == pytest.approx(0.5)


def test_consistency_without_parts_is_the_mean_pairwise_cosine_of_the_features():
    footprint = Footprint.of((4, 4), (32, 32), (32, 32), STRIDE)
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(6, 16))
    stats = HeadStats(top=2)
    from napari_intr.atlas.summarise import encode_vector
    units = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for index, unit in enumerate(units):
        record = head_record(look(blob((4, 4), 1, 1), footprint), footprint, ImageParts())
        record["feature"] = encode_vector(unit)
        stats.add(str(index), record)
    cosines = units @ units.T
    expected = (cosines.sum() - np.trace(cosines)) / (6 * 5)
    score, part, method = stats.consistency()
    assert method == "feature cosine" and part is None and score == pytest.approx(expected, abs=2e-3)


def test_cub_parts_name_the_keypoint_under_the_peak(tmp_path):
    root = tmp_path / "CUB_200_2011"
    (root / "parts").mkdir(parents=True)
    (root / "images.txt").write_text("1 001.Black_footed_Albatross/a.jpg\n2 002.Laysan_Albatross/b.jpg\n")
    (root / "parts" / "parts.txt").write_text("1 beak\n2 tail\n")
    (root / "parts" / "part_locs.txt").write_text(
        "1 1 20.0 30.0 1\n1 2 100.0 100.0 1\n2 1 5.0 5.0 0\n2 2 60.0 60.0 1\n")
    (root / "bounding_boxes.txt").write_text("1 10.0 10.0 50.0 40.0\n")
    source = PartSource(root / "parts" / "part_locs.txt")
    parts = source.for_image(tmp_path / "images" / "001.Black_footed_Albatross" / "a.jpg")
    assert parts.points == {"beak": (30.0, 20.0), "tail": (100.0, 100.0)}
    footprint = Footprint.of((16, 16), (128, 128), (128, 128), STRIDE)
    on_beak = look(blob((16, 16), 3, 2), footprint)  # cell centre (28, 20): the beak is 2 px away
    assert parts.part_at(on_beak, footprint) == "beak" and parts.on_specimen(on_beak, footprint) is True
    far = look(blob((16, 16), 8, 15), footprint)
    assert parts.part_at(far, footprint) is None and parts.on_specimen(far, footprint) is False
    hidden = source.for_image(tmp_path / "images" / "002.Laysan_Albatross" / "b.jpg")
    assert list(hidden.points) == ["tail"] and hidden.specimen_box is None  # invisible beak left out
    (root / "parts" / "part_locs.txt").write_text("9 1 5.0 5.0 1\n")
    with pytest.raises(ValueError, match="image id 9 is not in"):
        PartSource(root / "parts" / "part_locs.txt")
    with pytest.raises(FileNotFoundError, match="part_locs.txt"):
        PartSource(root / "missing.txt")


def test_top_n_keeps_the_highest_peaks_whatever_the_order():
    entries = [(f"img{i:02d}", float(p)) for i, p in enumerate([0.1, 0.5, 0.3, 0.5, 0.9, 0.2, 0.5])]
    results = []
    for order in (entries, entries[::-1], sorted(entries, key=lambda e: e[1])):
        top = TopN(3)
        for key, peak in order:
            top.push(key, peak, (0, 0, 1, 1))
        assert len(top) == 3
        results.append([(e.key, e.peak) for e in top.best()])
    assert results[0] == results[1] == results[2] == [("img04", 0.9), ("img01", 0.5), ("img03", 0.5)]


def test_effect_size_is_cohens_d():
    a, b = Moments(), Moments()
    for value in (1.0, 2.0, 3.0):
        a.add(value)
    for value in (0.0, 1.0, 2.0):
        b.add(value)
    assert effect_size(a, b) == pytest.approx(1.0)  # means 2 and 1, pooled sd 1
    assert effect_size(b, a) == pytest.approx(-1.0)
    single = Moments()
    single.add(1.0)
    assert effect_size(a, single) is None


@pytest.mark.parametrize("shape", [(1, 1), (2, 5), (97, 131)])
def test_montage_png_reads_back_pixel_for_pixel(shape):
    import io

    from PIL import Image

    from napari_intr.atlas.montage import png_bytes
    rgb = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    rgb[:, : shape[1] // 2] = 255  # flat and noisy areas, rows that wrap modulo 256
    for image in (rgb, Image.fromarray(rgb)):
        with Image.open(io.BytesIO(png_bytes(image))) as read:
            assert read.format == "PNG" and read.mode == "RGB"
            np.testing.assert_array_equal(np.asarray(read), rgb)


@pytest.mark.parametrize("gap_after", [None, 1])
def test_montage_labels_sit_with_their_own_patch_in_every_row(gap_after):
    """Every patch's file label lies in the band just above it and its caption just below it, in
    its own column and row: no text reaches another row's patch, label or caption."""
    from napari_intr.atlas.montage import (
        CAPTION,
        LABEL_BAND,
        LABEL_WIDTH,
        PATCH,
        MontageCell,
        draw_montage,
        jpeg_bytes,
    )
    rows, cols = 3, 4
    grey = jpeg_bytes(np.full((PATCH, PATCH, 3), 200, np.uint8))
    cells = [[MontageCell(r, c, f"Some_class/a_rather_long_specimen_name_{r}{c:03d}.png", r, (0, 0, 1, 1),
                          0.1 * r + 0.01 * c, "") for c in range(cols)] for r in range(rows)]
    montage = np.asarray(draw_montage([("", [(cell, grey) for cell in row]) for row in cells], cols, gap_after))
    ink = (montage < 150).all(axis=-1)  # text pixels (dark); background white, patches light grey
    own = np.zeros_like(ink)
    from napari_intr.atlas.montage import cell_origin
    for row in cells:
        for cell in row:
            y, x = cell_origin(cell.row, cell.col, gap_after)
            label, caption = ink[y - LABEL_BAND:y, x:x + PATCH], ink[y + PATCH:y + PATCH + CAPTION, x:x + PATCH]
            assert label.any() and caption.any(), (cell.row, cell.col)
            own[y - LABEL_BAND:y, x:x + PATCH] = True
            own[y + PATCH:y + PATCH + CAPTION, x:x + PATCH] = True
            if cell.row:  # the band lies below the previous row's caption
                assert y - LABEL_BAND >= cell_origin(cell.row - 1, cell.col, gap_after)[0] + PATCH + CAPTION
    assert not ink[:, LABEL_WIDTH:][~own[:, LABEL_WIDTH:]].any()  # no text outside its own patch's bands
