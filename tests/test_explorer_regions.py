"""The Explorer's Regions and Save boxes in a real napari viewer: a drawer photo of four bundled
specimens, rectangles (or labels) around them, Explain regions, and Save explanation.

As in real use the viewer exists before torch: model code is imported inside the tests."""
import csv

import numpy as np
import pytest

TIMEOUT_MS = 60_000
# top-left (row, column) of each 160 px specimen in the drawer photo, and the photo's pixel size
PLACES = {"heliconia-synthetica-alba": (20, 30), "heliconia-synthetica-rubra": (24, 236),
          "pseudotigris-artefacta-flava": (212, 18), "papilionella-simulata-coccinea": (230, 250)}
PIXEL = 0.5  # the image layer's scale: world units per pixel, as for a calibrated photo


def drawer_photo():
    from napari_intr.image_files import read_image
    from napari_intr.loading import sample_data_dir
    photo = np.full((420, 440, 3), (205, 196, 176), np.uint8)
    for stem, (row, column) in PLACES.items():
        photo[row: row + 160, column: column + 160] = read_image(
            sample_data_dir() / "specimens" / f"{stem}.png")[..., :3]
    return photo


@pytest.fixture
def drawer(make_napari_viewer, qtbot, messages):
    viewer = make_napari_viewer()
    viewer.add_image(drawer_photo(), name="drawer", rgb=True, scale=(PIXEL, PIXEL), translate=(10, -4))
    from napari_intr.widgets.state import shared_state
    shared_state(viewer).model = None
    _, widget = viewer.window.add_plugin_dock_widget("napari-intr", "INTR Explorer")
    qtbot.waitUntil(lambda: widget.state.model is not None and not widget.model_source.task.busy,
                    timeout=TIMEOUT_MS)
    widget.explain_box.image.choose("drawer")
    return viewer, widget


def explain_regions(qtbot, widget, layer_name):
    widget.regions.regions_layer.choose(layer_name)
    widget.regions.explain_regions()
    qtbot.waitUntil(lambda: not widget.regions.task.busy, timeout=TIMEOUT_MS)


def test_rectangles_choose_regions_explained_and_placed_on_the_photo(drawer, qtbot):
    viewer, widget = drawer
    # rectangles drawn in world coordinates over each specimen (corners on its edge pixels' centres)
    rectangles = []
    for row, column in PLACES.values():
        (top, left), (bottom, right) = (np.array([[row, column], [row + 159, column + 159]]) * PIXEL
                                        + np.array([10, -4]))
        rectangles.append(np.array([[top, left], [top, right], [bottom, right], [bottom, left]]))
    viewer.add_shapes(rectangles, shape_type="rectangle", name="specimens")
    widget.regions.margin.setCurrentText("0")
    explain_regions(qtbot, widget, "specimens")

    table = widget.regions.table
    assert table.rowCount() == 4
    names = widget.state.model.class_names
    expected = [next(n for n in names if n.lower().replace(" ", "-") == stem) for stem in PLACES]
    assert [table.item(row, 1).toolTip() for row in range(4)] == expected  # each region its own species
    assert [table.item(row, 1).text() for row in range(4)] == [name.split(" ", 1)[1] for name in expected]
    assert all(float(table.item(row, 2).text()) > 0.9 for row in range(4))

    photo_layer = viewer.layers["drawer"]
    maps = [layer for layer in viewer.layers if layer.metadata.get("region")]
    assert len(maps) == 4
    for layer, (row, column) in zip(maps, PLACES.values(), strict=True):
        # the map covers exactly its specimen's 160 px on the photo, in world coordinates
        extent = np.asarray(layer.extent.world)[:, -2:]  # corners of the first and last cell centres
        cell = np.asarray(layer.scale[-2:])
        first_edge, last_edge = extent[0] - cell / 2, extent[1] + cell / 2
        box = np.array([[row, column], [row + 160, column + 160]]) * PIXEL + np.asarray(photo_layer.translate) \
            - PIXEL / 2
        np.testing.assert_allclose(first_edge, box[0], atol=1e-6)
        np.testing.assert_allclose(last_edge, box[1], atol=1e-6)
    outlines = viewer.layers["drawer · regions (top-1)"]
    assert len(outlines.data) == 4 and len({tuple(colour) for colour in outlines.edge_color}) == 4
    # the labels name the epithet (look-alikes differ there) and never run into each other
    assert [label.split(": ")[1].split(" (")[0] for label in outlines.features["full"]] == [
        name.split(" ", 1)[1] for name in expected]
    from napari_intr.widgets.explorer.regions import CHARACTER_WIDTH, LINE_HEIGHT, label_text_size
    from napari_intr.widgets.layers import camera_of
    for zoom, all_full in ((0.2, False), (40.0, True)):
        camera_of(viewer).zoom = zoom
        labels, size = list(outlines.features["label"]), label_text_size(viewer)
        assert (labels == list(outlines.features["full"])) == all_full
        rects = [(np.min(shape[:, 0]) - LINE_HEIGHT * size, np.min(shape[:, 1]), np.min(shape[:, 0]),
                  np.min(shape[:, 1]) + CHARACTER_WIDTH * size * len(label))
                 for shape, label in zip(outlines.data, labels, strict=True) if label]
        assert rects and not any(a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
                                 for i, a in enumerate(rects) for b in rects[i + 1:])


def test_labels_objects_choose_regions_and_bad_choices_are_explained(drawer, qtbot, messages):
    viewer, widget = drawer
    labels = np.zeros((420, 440), np.int32)
    for value, (row, column) in zip((3, 9), list(PLACES.values())[:2], strict=True):
        labels[row + 10: row + 150, column + 10: column + 150] = value
    viewer.add_labels(labels, name="objects", scale=(PIXEL, PIXEL), translate=(10, -4))
    widget.regions.margin.setCurrentText("10%")
    explain_regions(qtbot, widget, "objects")
    assert [widget.regions.table.item(row, 0).text() for row in range(2)] == ["3", "9"]
    assert widget.regions.results[0].offset == (30 - 14, 40 - 14)  # 10 % of 140 px around the object

    viewer.add_shapes(name="empty")
    messages.clear()
    explain_regions(qtbot, widget, "empty")
    assert any("has no shapes" in text for level, text in messages if level == "warning")
    widget.regions.margin.setCurrentText("wide")
    explain_regions(qtbot, widget, "objects")
    assert any("margin 'wide' is not a number" in text for _, text in messages)


def saved(qtbot, widget, folder) -> list[str]:
    widget.save_box.folder.path = str(folder)
    widget.save_box.save()
    qtbot.waitUntil(lambda: not widget.save_box.task.busy, timeout=TIMEOUT_MS)
    return sorted(path.name for path in folder.iterdir())


def test_save_explanation_saves_the_current_result_under_its_images_name(drawer, qtbot, tmp_path):
    """Single and region explains in turn: each Save writes the last one's files, named after its
    image (regions after their photo), and region results go when an image is explained."""
    viewer, widget = drawer
    widget.explain()
    qtbot.waitUntil(lambda: not widget.explain_box.task.busy, timeout=TIMEOUT_MS)
    box = np.array([[20, 30], [20, 189], [179, 189], [179, 30]])
    viewer.add_shapes([box * PIXEL + [10, -4], (box + [204, 220]) * PIXEL + [10, -4]], shape_type="rectangle",
                      name="two")
    viewer.add_shapes([box * PIXEL + [10, -4]], shape_type="rectangle", name="one")
    explain_regions(qtbot, widget, "one")
    assert widget.state.explanation is None and "1 regions of 'drawer'" in widget.results.answer.full_text
    assert saved(qtbot, widget, tmp_path / "regions") == [
        "drawer_1_attention.tif", "drawer_image.tif", "drawer_overlay.png", "drawer_regions.csv"]
    with open(tmp_path / "regions" / "drawer_regions.csv", newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert rows[0]["region"] == "1" and rows[0]["top1_class"] == "Heliconia synthetica-alba"
    assert "Saved 4 files" in widget.save_box.summary.full_text

    viewer.add_image(drawer_photo()[20:180, 30:190], name="alba 0004", rgb=True)
    widget.explain_box.image.choose("alba 0004")
    widget.explain()
    qtbot.waitUntil(lambda: not widget.explain_box.task.busy, timeout=TIMEOUT_MS)
    assert widget.regions.results == [] and widget.regions.table.rowCount() == 0
    assert saved(qtbot, widget, tmp_path / "single") == [
        "alba_0004_attention.tif", "alba_0004_classes.csv", "alba_0004_image.tif", "alba_0004_overlay.png"]
    from napari_intr.export import read_attention_tiff
    maps, metadata, labels = read_attention_tiff(tmp_path / "single" / "alba_0004_attention.tif")
    assert metadata["class"] == widget.attention.class_name and len(labels) == maps.shape[0] * maps.shape[1]
    assert metadata["image"] == "alba 0004"

    widget.explain_box.image.choose("drawer")
    explain_regions(qtbot, widget, "two")
    assert saved(qtbot, widget, tmp_path / "regions again") == [
        "drawer_1_attention.tif", "drawer_2_attention.tif", "drawer_image.tif", "drawer_overlay.png",
        "drawer_regions.csv"]


def test_zoo_models_without_names_say_where_to_get_them(drawer, messages):
    _, widget = drawer
    box = widget.model_source
    box.picker.source.setCurrentIndex(box.picker.source.findData("intr-butterfly"))
    assert "needed for species names" in box.class_names.edit.placeholderText()
    assert "Cambridge butterfly" in box.class_names.tooltip
    box._publish(widget.state.model, "intr-butterfly")  # as after loading it without a names file
    assert any(level == "warning" and "classes are shown as numbers" in text for level, text in messages)
    box.picker.source.setCurrentIndex(box.picker.source.findData("intr-cub"))
    assert "ship with this model" in box.class_names.edit.placeholderText()


def test_saved_maps_carry_the_layers_physical_scale(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    viewer.add_image(drawer_photo()[:200, :200], name="calibrated", rgb=True, scale=(0.02, 0.02), units=("mm", "mm"))
    from napari_intr.widgets.state import shared_state
    shared_state(viewer).model = None
    _, widget = viewer.window.add_plugin_dock_widget("napari-intr", "INTR Explorer")
    qtbot.waitUntil(lambda: widget.state.model is not None and not widget.model_source.task.busy,
                    timeout=TIMEOUT_MS)
    widget.explain_box.image.choose("calibrated")
    widget.explain()
    qtbot.waitUntil(lambda: not widget.explain_box.task.busy, timeout=TIMEOUT_MS)
    widget.save_box.folder.path = str(tmp_path)
    widget.save_box.save()
    qtbot.waitUntil(lambda: not widget.save_box.task.busy, timeout=TIMEOUT_MS)
    import tifffile
    with tifffile.TiffFile(tmp_path / "calibrated_attention.tif") as tiff:
        assert tiff.imagej_metadata["unit"] == "mm"
        x_resolution = tiff.pages[0].tags["XResolution"].value
    cell = widget.state.explanation.cell_size()[1]
    assert x_resolution[1] / x_resolution[0] == pytest.approx(0.02 * cell, rel=1e-4)  # mm per map pixel


def test_the_label_width_the_placement_assumes_covers_the_drawn_text(make_napari_viewer):
    """Labels are kept apart by their estimated width (label_texts); the estimate must cover the
    text as napari draws it. Taking the size in points as pixels made it a quarter too narrow, and
    neighbouring labels ran together at fit-to-view zoom (the tutorial's drawer screenshot)."""
    from qtpy.QtWidgets import QApplication

    from napari_intr.widgets.explorer.regions import CHARACTER_WIDTH, LABEL_SIZE, label_text_size
    from napari_intr.widgets.layers import camera_of
    viewer = make_napari_viewer(show=True)
    text = "1: synthetica-alba (1.00)"
    viewer.add_shapes([np.array([[0, 0], [40, 400]])], shape_type="rectangle", edge_width=0,
                      face_color="transparent", edge_color="transparent", features={"label": [text]},
                      text={"string": "{label}", "anchor": "upper_left", "size": LABEL_SIZE, "color": "white"})
    camera_of(viewer).zoom = 1.0
    camera_of(viewer).center = (0, 200)
    for _ in range(5):  # the text is laid out on the canvas's first draws
        QApplication.processEvents()
    picture = np.asarray(viewer.screenshot(canvas_only=True, flash=False))
    columns = np.flatnonzero((picture[..., :3].min(axis=-1) > 128).any(axis=0))
    drawn = columns.max() - columns.min() + 1
    estimated = CHARACTER_WIDTH * label_text_size(viewer) * camera_of(viewer).zoom * len(text)
    assert 0.9 * drawn <= estimated <= 1.35 * drawn, (drawn, estimated)


def test_a_long_label_never_leaves_a_neighbour_unlabelled():
    """At the drawer's fit-to-view zoom region 1's full label reaches over region 2's corner:
    region 2 (and 4, beside 3) still gets its id, and no two labels overlap."""
    from napari_intr.widgets.explorer.regions import CHARACTER_WIDTH, LINE_HEIGHT, label_texts
    boxes = [np.array([[row, column], [row + 160, column + 160]]) for row, column in PLACES.values()]
    full = [f"{i}: {stem.split('-', 1)[1]} (1.00)" for i, stem in enumerate(PLACES, start=1)]
    ids = [str(i) for i in range(1, len(full) + 1)]
    size = 15.0  # world units: 13.9 px text at 0.9 px per photo pixel, as in the tutorial's picture
    shown = label_texts(boxes, full, ids, size)
    assert all(shown) and shown != ids and set(shown) <= set(full) | set(ids), shown
    rects = [(b[0][0] - LINE_HEIGHT * size, b[0][1], b[0][0], b[0][1] + CHARACTER_WIDTH * size * len(t))
             for b, t in zip(boxes, shown, strict=True)]
    assert not any(a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
                   for i, a in enumerate(rects) for b in rects[i + 1:])
