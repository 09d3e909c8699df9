"""Exports Fiji and spreadsheets read: ImageJ hyperstacks with named slices and a physical scale,
OME-TIFF, pixel sizes read from the input, the PNG overlay (checked with tifffile and Pillow)."""
import json
from xml.etree import ElementTree

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from napari_intr.explanation import Explainer
from napari_intr.export import (
    attention_stack,
    read_attention_tiff,
    write_attention_tiff,
    write_overlay_png,
)
from napari_intr.image_files import PixelSize, read_pixel_size
from napari_intr.model import IntrConfig, build_model

LABELS = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]


@pytest.fixture(scope="module")
def explanation():
    torch.manual_seed(0)
    model = build_model(IntrConfig.tiny(3), ["Black-footed Albatross", "Laysan Albatross", "Sooty Albatross"])
    model.class_labels = LABELS
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    return Explainer(model.eval(), "tiny").explain(image, "bird")


def test_imagej_hyperstack_names_every_slice_and_carries_the_scale(explanation, tmp_path):
    classes = ["Laysan Albatross", "Sooty Albatross"]
    stack, labels = attention_stack(explanation, classes, [0, -1])
    heads, (h, w) = explanation.num_heads, explanation.attention.shape[-2:]
    assert stack.shape == (2, 2, heads, h, w) and stack.dtype == np.float32
    assert labels[0] == "002.Laysan_Albatross · L1 · H1" and labels[-1] == f"003.Sooty_Albatross · L2 · H{heads}"
    image_pixel = PixelSize(0.02, 0.025, "mm")
    cell_y, cell_x = explanation.cell_size()
    path = write_attention_tiff(tmp_path / "maps.tif", stack, labels, {"image": "bird", "classes": classes},
                                image_pixel.scaled(cell_y, cell_x))
    with tifffile.TiffFile(path) as tiff:
        assert tiff.is_imagej
        series = tiff.series[0]
        assert series.axes == "TZCYX" and series.shape == stack.shape
        meta = tiff.imagej_metadata
        assert meta["hyperstack"] and meta["frames"] == 2 and meta["slices"] == 2 and meta["channels"] == heads
        assert meta["Labels"] == labels and meta["unit"] == "mm" and meta["mode"] == "grayscale"
        assert json.loads(meta["Info"]) == {"image": "bird", "classes": classes}
        page = tiff.pages[0]
        x_per_mm = page.tags["XResolution"].value[0] / page.tags["XResolution"].value[1]
        y_per_mm = page.tags["YResolution"].value[0] / page.tags["YResolution"].value[1]
        assert 1 / x_per_mm == pytest.approx(0.025 * cell_x, rel=1e-5)
        assert 1 / y_per_mm == pytest.approx(0.02 * cell_y, rel=1e-5)
        np.testing.assert_array_equal(series.asarray(), stack)
    np.testing.assert_allclose(stack[1, 1], explanation.head_maps("Sooty Albatross", -1, "none"))
    maps, metadata, read_labels = read_attention_tiff(path)
    assert maps.shape == stack.shape and metadata["image"] == "bird" and read_labels == labels


def test_ome_tiff_option(explanation, tmp_path):
    stack, labels = attention_stack(explanation, ["Black-footed Albatross"], [-1])
    path = write_attention_tiff(tmp_path / "maps.ome.tif", stack, labels, {"image": "bird"},
                                PixelSize(0.5, 0.5, "µm"), file_format="ome")
    with tifffile.TiffFile(path) as tiff:
        assert tiff.is_ome
        root = ElementTree.fromstring(tiff.ome_metadata)
        pixels = next(element for element in root.iter() if element.tag.endswith("Pixels"))
        assert pixels.get("DimensionOrder") and pixels.get("PhysicalSizeX") == "0.5"
        assert pixels.get("PhysicalSizeXUnit") == "µm" and pixels.get("Type") == "float"
        channels = [element.get("Name") for element in root.iter() if element.tag.endswith("Channel")]
        assert channels == [f"H{k}" for k in range(1, explanation.num_heads + 1)]
    maps, metadata, _ = read_attention_tiff(path)
    np.testing.assert_array_equal(np.squeeze(maps), np.squeeze(stack))
    assert metadata == {"image": "bird"}
    with pytest.raises(ValueError, match="unknown TIFF format 'png'"):
        write_attention_tiff(tmp_path / "x.tif", stack, labels, {}, file_format="png")
    with pytest.raises(ValueError, match="plane labels"):
        write_attention_tiff(tmp_path / "x.tif", stack, labels[:1], {})


def test_pixel_sizes_read_from_the_input(tmp_path):
    grey = np.zeros((40, 50), np.uint8)
    tifffile.imwrite(tmp_path / "imagej.tif", grey, imagej=True, resolution=(1 / 0.25, 1 / 0.5),
                     metadata={"unit": "micron"})
    assert read_pixel_size(tmp_path / "imagej.tif") == PixelSize(0.5, 0.25, "µm")
    tifffile.imwrite(tmp_path / "scan.tif", grey, resolution=(600, 600), resolutionunit="INCH")
    inch_600 = pytest.approx(25.4 / 600)
    assert read_pixel_size(tmp_path / "scan.tif") == PixelSize(inch_600, inch_600, "mm")
    tifffile.imwrite(tmp_path / "camera.tif", grey, resolution=(72, 72), resolutionunit="INCH")
    tifffile.imwrite(tmp_path / "plain.tif", grey)
    assert read_pixel_size(tmp_path / "camera.tif") is None and read_pixel_size(tmp_path / "plain.tif") is None
    Image.fromarray(grey).save(tmp_path / "scan.png", dpi=(1200, 1200))
    Image.fromarray(grey).save(tmp_path / "screen.png", dpi=(96, 96))
    assert read_pixel_size(tmp_path / "scan.png").x == pytest.approx(25.4 / 1200, rel=1e-3)
    assert read_pixel_size(tmp_path / "screen.png") is None
    (tmp_path / "broken.png").write_bytes(b"not an image")
    assert read_pixel_size(tmp_path / "broken.png") is None


def test_overlay_png_leaves_unattended_pixels_as_they_were(tmp_path):
    image = np.random.default_rng(1).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    heat = np.zeros((40, 60), np.float32)
    heat[10:20, 30:40] = 1
    path = write_overlay_png(tmp_path / "overlay.png", image, heat, colour_bar=False)
    written = np.asarray(Image.open(path))
    assert written.shape == (40, 60, 3) and written.dtype == np.uint8
    np.testing.assert_array_equal(written[heat == 0], image[heat == 0])
    assert not np.array_equal(written[heat == 1], image[heat == 1])
    with pytest.raises(ValueError, match="heat map is"):
        write_overlay_png(tmp_path / "x.png", image, heat[:10])


def test_overlay_png_shows_weak_attention_visibly_with_a_colour_bar(tmp_path):
    """Attention is peaked: a pixel at a quarter of the peak must still show (it used to be blended
    at an eighth, about 14 grey levels on grey), and a colour bar says which colour is the peak."""
    from matplotlib import colormaps
    image = np.full((64, 96, 3), 128, np.uint8)
    heat = np.zeros((64, 96), np.float32)
    heat[:, 48:] = 0.25
    heat[30:34, 60:64] = 1.0  # the peak, a few pixels
    written = np.asarray(Image.open(write_overlay_png(tmp_path / "overlay.png", image, heat)))
    assert written.shape[0] == 64 and written.shape[1] > 96
    quarter = np.abs(written[:, 48:56].astype(int) - 128).max(axis=-1)
    assert quarter.min() >= 25
    np.testing.assert_array_equal(written[:, :48], image[:, :48])
    bar = written[:, 96:].reshape(-1, 3)
    peak_colour = np.round(np.asarray(colormaps["inferno"](1.0)[:3]) * 255)
    assert np.abs(bar - peak_colour).max(axis=1).min() <= 2  # the bar holds the colour of the peak


def test_save_explanation_writes_maps_table_image_and_overlay(explanation, tmp_path):
    import csv

    from napari_intr.export import save_explanation
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    shown = explanation.top_class()
    written = save_explanation(tmp_path / "saved", "bird", explanation, image, shown, layer=-1,
                               pixel_size=PixelSize(0.1, 0.1, "mm"))
    assert [p.name for p in written] == ["bird_attention.tif", "bird_classes.csv", "bird_image.tif",
                                         "bird_overlay.png"]
    maps, metadata, labels = read_attention_tiff(written[0])
    assert maps.shape == (explanation.num_layers, explanation.num_heads, *explanation.attention.shape[-2:])
    assert metadata["class"] == shown and metadata["label"] in LABELS and labels[0].endswith("L1 · H1")
    with open(written[1], newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert rows[0]["class"] == shown and rows[0]["label"] == metadata["label"]
    assert sorted(row["label"] for row in rows) == LABELS
    with tifffile.TiffFile(written[2]) as tiff:
        np.testing.assert_array_equal(tiff.asarray(), image)
        x_resolution = tiff.pages[0].tags["XResolution"].value
        assert x_resolution[0] / x_resolution[1] == pytest.approx(100)  # 0.1 mm pixels: 100 per cm
    overlay = np.asarray(Image.open(written[3]))
    assert overlay.shape[0] == 96 and overlay.shape[1] > 128 and overlay.shape[2] == 3  # with its colour bar
