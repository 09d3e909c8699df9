"""Regions of a photograph (napari_intr.regions): boxes files, margins, crops, labels and shapes."""
import numpy as np
import pytest

from napari_intr.regions import (
    Margin,
    Region,
    crop_region,
    read_boxes,
    regions_from_labels,
    regions_from_rectangles,
)


def test_boxes_file_with_and_without_ids(tmp_path):
    (tmp_path / "trays").mkdir()
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("\ufeffImage,x0,y0,x1,y1,id,note\n"
                     "trays/a.jpg,10,20,110,220,moth-1,left\n"
                     "trays/a.jpg,120,20,200,90,moth-2,\n"
                     "\n"
                     f"{tmp_path / 'b.png'},0.5,1,30,40.5,,\n", encoding="utf-8")
    read = read_boxes(boxes)
    assert list(read) == [tmp_path / "trays" / "a.jpg", tmp_path / "b.png"]
    assert read[tmp_path / "trays" / "a.jpg"] == [Region("moth-1", 10, 20, 110, 220),
                                                  Region("moth-2", 120, 20, 200, 90)]
    assert read[tmp_path / "b.png"] == [Region("1", 0.5, 1, 30, 40.5)]  # numbered within its image


def test_boxes_files_saved_with_semicolons_or_tabs(tmp_path):
    """Spreadsheets in many locales save CSV with semicolons and decimal commas; tabs are read too."""
    for name, text in (("semicolons.csv", "\ufeffimage;x0;y0;x1;y1;id\na.png;10,5;20;110;220;moth 1\n"),
                       ("tabs.csv", "image\tx0\ty0\tx1\ty1\tid\na.png\t10.5\t20\t110\t220\tmoth 1\n")):
        (tmp_path / name).write_text(text, encoding="utf-8")
        assert read_boxes(tmp_path / name) == {tmp_path / "a.png": [Region("moth 1", 10.5, 20, 110, 220)]}


def test_boxes_separator_is_the_one_that_yields_the_box_columns(tmp_path):
    """An extra column's name may hold a comma in a semicolon or tab file, a semicolon in a CSV."""
    for name, text in (("semicolons.csv", "image;x0;y0;x1;y1;note, if any\na.png;10,5;20;110;220;left, torn\n"),
                       ("tabs.csv", "image\tx0\ty0\tx1\ty1\tnote, if any\na.png\t10.5\t20\t110\t220\tleft\n"),
                       ("commas.csv", 'image,x0,y0,x1,y1,"note; if any"\na.png,10.5,20,110,220,"left; torn"\n')):
        (tmp_path / name).write_text(text, encoding="utf-8")
        assert read_boxes(tmp_path / name) == {tmp_path / "a.png": [Region("1", 10.5, 20, 110, 220)]}, name


@pytest.mark.parametrize("text, message", [
    ("image,x0,y0,x1\na.png,1,2,3\n", r"lacks the column\(s\) y1: its header must be image,x0,y0,x1,y1\[,id\]"),
    ("image,x0,y0,x1,y1\na.png,1,2,three,4\n", r"line 2: x0, y0, x1, y1 must be numbers.*three"),
    ("image,x0,y0,x1,y1\na.png,10,2,5,4\n", r"line 2: a box needs x0 < x1 and y0 < y1"),
    ("image,x0,y0,x1,y1\n,1,2,3,4\n", r"line 2: the image column is empty"),
    ("image,x0,y0,x1,y1,id\na.png,1,2,3,4,x\na.png,5,6,7,8,x\n", r"line 3: region id 'x' is used twice for a.png"),
    ("image,x0,y0,x1,y1\n", r"lists no boxes"),
])
def test_boxes_files_that_cannot_be_used(tmp_path, text, message):
    boxes = tmp_path / "boxes.csv"
    boxes.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_boxes(boxes)


def test_missing_and_binary_boxes_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no boxes file"):
        read_boxes(tmp_path / "none.csv")
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00\x81image")
    with pytest.raises(ValueError, match="not UTF-8"):
        read_boxes(tmp_path / "binary.csv")


def test_margins_and_crops_stay_inside_the_image():
    image = np.arange(100 * 120).reshape(100, 120)
    region = Region("a", 10.2, 20, 50, 60.5)
    crop = crop_region(image, region)
    assert crop.offset == (20, 10) and crop.pixels.shape == (41, 40)
    np.testing.assert_array_equal(crop.pixels, image[20:61, 10:50])
    assert crop_region(image, region, Margin.parse("5")).offset == (15, 5)
    assert Margin.parse("10%").pixels(40, 20) == 4 and str(Margin.parse("10%")) == "10%"
    edge = crop_region(image, Region("b", 100, 80, 130, 110), Margin.parse("25%"))
    assert edge.offset == (72, 92) and edge.pixels.shape == (28, 28)
    with pytest.raises(ValueError, match=r"region c \(x 200–300, y 0–10\) lies outside the image, which spans "
                                         r"x 0–120 and y 0–100 \(120 px wide, 100 px tall\)"):
        crop_region(image, Region("c", 200, 0, 300, 10))
    for bad in ("-3", "ten", "nan%"):
        with pytest.raises(ValueError, match="margin"):
            Margin.parse(bad)


def test_regions_from_labels_and_rectangles():
    labels = np.zeros((50, 60), np.int32)
    labels[5:15, 10:30] = 3
    labels[20:40, 40:55] = 7
    assert regions_from_labels(labels) == [Region("3", 10, 5, 30, 15), Region("7", 40, 20, 55, 40)]
    with pytest.raises(ValueError, match="integer label image"):
        regions_from_labels(labels.astype(float))
    # a napari rectangle whose corner vertices sit on the centres of pixels 5..14 (rows), 10..29 (columns)
    rectangle = np.array([[5, 10], [5, 29], [14, 29], [14, 10]], float)
    (region,) = regions_from_rectangles([rectangle], ["r1"])
    assert region == Region("r1", 10.5, 5.5, 29.5, 14.5)
    crop = crop_region(labels, region)
    assert crop.offset == (5, 10) and crop.pixels.shape == (10, 20)  # the same pixels as label 3


def test_explain_regions_places_each_and_reports_what_fails(tmp_path):
    import torch

    from napari_intr.explanation import Explainer
    from napari_intr.export import read_attention_tiff, region_columns, region_rows, save_regions
    from napari_intr.model import IntrConfig, build_model
    from napari_intr.regions import explain_regions
    torch.manual_seed(0)
    explainer = Explainer(build_model(IntrConfig.tiny(3), ["a", "b", "c"]).eval())
    photo = np.random.default_rng(2).integers(0, 256, (200, 240, 3), dtype=np.uint8)
    regions = [Region("left", 10, 20, 90, 120), Region("tiny", 150, 150, 160, 158), Region("right", 120, 40, 230, 190)]
    seen = []
    results, failures = explain_regions(explainer, photo, regions, Margin.parse("4"),
                                        progress=lambda done, total: seen.append((done, total)))
    assert [r.region.id for r in results] == ["left", "right"] and seen[-1] == (3, 3)
    assert failures[0][0].id == "tiny" and "at least" in failures[0][1]  # too small for the model
    left = results[0]
    assert left.offset == (16, 6) and left.explanation.image_shape == (108, 88)
    _, translate = left.placement()
    assert translate == pytest.approx(np.add(left.explanation.grid_to_image()[1], (16, 6)))
    rows = region_rows(results, top_k=2)
    assert list(rows[0]) == region_columns(2) and rows[1]["region"] == "right"
    written = save_regions(tmp_path, "drawer", results, photo)
    assert [p.name for p in written] == ["drawer_regions.csv", "drawer_left_attention.tif",
                                         "drawer_right_attention.tif", "drawer_image.tif", "drawer_overlay.png"]
    metadata = read_attention_tiff(written[1])[1]
    assert metadata["region"]["crop_offset"] == [16, 6] and metadata["translate"] == pytest.approx(list(translate))


def test_a_box_that_runs_off_the_photo_is_explained_within_it_and_said(tmp_path):
    """Rule: nothing silently partial. A box partly outside the photo is cropped to it (its margin
    may always be), and the API, the folder run and the Explorer say so by the region's id."""
    import torch

    from napari_intr.explanation import Explainer
    from napari_intr.model import IntrConfig, build_model
    from napari_intr.regions import explain_regions
    assert Region("in", 0, 0, 240, 200).off_image_note((200, 240)) is None
    torch.manual_seed(0)
    explainer = Explainer(build_model(IntrConfig.tiny(3), ["a", "b", "c"]).eval())
    photo = np.random.default_rng(2).integers(0, 256, (200, 240, 3), dtype=np.uint8)
    regions = [Region("inside", 10, 20, 90, 120), Region("edge", 150, -30, 300, 120)]
    results, failures = explain_regions(explainer, photo, regions, Margin.parse("20"))
    assert not failures
    inside, edge = results
    assert not any("runs off" in note for note in inside.explanation.notes)  # only its margin is cut
    assert edge.explanation.notes[0] == ("region edge (x 150–300, y -30–120) runs off the image, which spans "
                                         "x 0–240 and y 0–200: only its part on the image was explained")
    assert edge.explanation.image_shape == (140, 110)  # rows 0-140 (120 + margin 20), columns 130-240


def test_a_folder_run_notes_a_box_that_runs_off_its_image(tmp_path, capsys):
    from PIL import Image

    from intr_training.cli import main
    photo = tmp_path / "drawer.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (160, 200, 3), dtype=np.uint8)).save(photo)
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("image,x0,y0,x1,y1,id\ndrawer.png,10,10,90,90,inside\ndrawer.png,120,60,260,150,edge\n")
    assert main(["explain", "--boxes", str(boxes), "--out", str(tmp_path / "out"), "--model", "sample"]) == 0
    printed = capsys.readouterr()
    text = printed.out + printed.err
    assert "region edge (x 120–260, y 60–150) runs off the image, which spans x 0–200 and y 0–160" in text
    assert "region inside" not in text
