"""The INTR Traits dock in a real napari viewer with the bundled model: build an atlas of a small
synthetic collection in the background, browse classes, heads and pairs as layers, open a patch's
specimen in the Explorer with its class, decoder layer and head, cancel a run.

As in real use the viewer exists before torch: nothing here imports torch-using code at module
level."""
from types import SimpleNamespace

import numpy as np
import pytest

TIMEOUT_MS = 120_000


@pytest.fixture
def traits(make_napari_viewer, qtbot, messages, tmp_path):
    viewer = make_napari_viewer()
    import torch
    torch.set_num_threads(1)
    from napari_intr import synth
    from napari_intr.widgets.state import shared_state
    shared_state(viewer).model = None
    synth.write_collection(tmp_path / "specimens", per_class=2, size=64, seed=3)
    _, widget = viewer.window.add_plugin_dock_widget("napari-intr", "INTR Traits")
    widget.model_source.load()
    qtbot.waitUntil(lambda: widget.state.model is not None and not widget.model_source.task.busy,
                    timeout=TIMEOUT_MS)
    widget.run_box.data.path = str(tmp_path / "specimens")
    return viewer, widget, tmp_path


def gallery(viewer):
    return [layer for layer in viewer.layers if "napari_intr_traits" in layer.metadata]


def test_build_browse_and_open_a_patch_in_the_explorer(traits, qtbot, messages):
    viewer, widget, tmp_path = traits
    from napari_intr import synth
    widget.run_box.pairs.value = f"{synth.SHOWCASE_PAIR[1]}:{synth.SHOWCASE_PAIR[0]}"
    widget.run_box.layer.value = 1  # not the last: the Explorer decodes that layer when the patch opens
    widget.run_box.run()
    assert widget.run_box.task.busy and not widget.run_box.run_button.isEnabled()
    qtbot.waitUntil(lambda: not widget.run_box.task.busy, timeout=TIMEOUT_MS)
    out = tmp_path / "specimens-atlas"
    assert (out / "atlas.html").is_file() and (out / "heads.csv").is_file()
    assert not [text for level, text in messages if level == "error"]

    browser = widget.browser
    assert browser.class_choice.count() == 9 and browser.pair_choice.count() == 1
    image, shapes = gallery(viewer)
    first_class = browser.class_choice.currentText()
    assert image.rgb and first_class in image.name and image.data.shape[0] > 4 * 96
    heads = widget.state.model.config.nheads
    assert browser.heads.rowCount() == heads and len(shapes.data) == 2 * heads  # 2 images per class
    keys = [cell["key"] for cell in browser._cells]
    assert list(shapes.features["file"]) == keys
    # The gallery is the montage, which labels each patch within its own row (file above, peak
    # below: tests/test_atlas_geometry.py); the frames lie on the patch grid, with no text of their own.
    from napari_intr.image_files import read_image
    layout = browser.atlas["montages"]["classes"][first_class]
    np.testing.assert_array_equal(np.asarray(image.data), read_image(out / layout["file"]))
    for frame, cell in zip(shapes.data, browser._cells):
        np.testing.assert_allclose(frame.min(axis=0), (cell["y"], cell["x"]))
        np.testing.assert_allclose(frame.max(axis=0), (cell["y"] + cell["size"], cell["x"] + cell["size"]))
    assert not shapes.text.visible or shapes.text.string.constant == ""

    browser.class_choice.setCurrentIndex(3)  # another class: the same image layer, new data
    assert gallery(viewer)[0] is image and browser.class_choice.currentText() in image.name
    browser.pair_choice.setCurrentIndex(0)
    browser.show_pair()
    assert "vs" in image.name and browser.pair_heads.rowCount() == heads
    pair_cells = browser._cells
    assert {cell["side"] for cell in pair_cells} == {"a", "b"}  # both sides, side by side
    assert min(c["x"] for c in pair_cells if c["side"] == "b") > max(c["x"] for c in pair_cells if c["side"] == "a")

    # A click on a patch (through the layer's mouse callback) opens its specimen in the Explorer.
    cell = next(c for c in pair_cells if c["side"] == "b")
    centre = (cell["y"] + cell["size"] / 2, cell["x"] + cell["size"] / 2)
    event = SimpleNamespace(type="mouse_press", position=image.data_to_world(centre))
    chosen = []
    browser.patch_chosen.connect(chosen.append)
    browser._on_click(image, event)
    (choice,) = chosen
    assert choice.path.name == cell["key"].split("/")[-1] and choice.head == cell["head"] + 1
    assert choice.class_name == synth.SHOWCASE_PAIR[1]  # the pair's A query, also on B's images
    qtbot.waitUntil(lambda: widget.explorer is not None and widget.state.explanation is not None
                    and not widget.explorer.explain_box.task.busy, timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: widget._pending is None, timeout=TIMEOUT_MS)
    # the Explorer decodes layer 1 on a worker, then the dock shows the patch's head
    qtbot.waitUntil(lambda: any("shown in the Explorer" in text for _, text in messages), timeout=TIMEOUT_MS)
    explorer = widget.explorer
    assert choice.layer == 1 and explorer.state.explanation.holding(0) is not None
    assert widget.state.source.name == choice.path.stem
    assert explorer.results.selected_class() == choice.class_name
    assert explorer.attention.decoder_layer.value == choice.layer
    shown = [layer.name for layer in viewer.layers if layer.visible and layer.metadata.get("head") not in
             (None, "mean") and layer.metadata.get("image") == choice.path.stem]
    from napari_intr.explanation import layer_name
    assert shown == [layer_name(choice.path.stem, choice.class_name, choice.layer, choice.head)]
    original = viewer.layers[choice.path.stem]
    assert original.data.shape[:2] == (64, 64)
    # the specimen opens beside the gallery, never over its patches, and the view moves onto it
    specimen, montage = np.asarray(original.extent.world)[:, -2:], np.asarray(image.extent.world)[:, -2:]
    assert specimen[0][1] > montage[1][1]
    from napari_intr.widgets.layers import camera_of
    centre = np.asarray(camera_of(viewer).center)[-2:]
    assert np.all(centre >= specimen[0] - 0.5) and np.all(centre <= specimen[1] + 0.5)


def test_cancel_keeps_what_was_summarised_and_open_reads_a_finished_atlas(traits, qtbot, messages):
    viewer, widget, tmp_path = traits
    from napari_intr.collection.run_lock import job_lock
    out = tmp_path / "specimens-atlas"
    with job_lock(out, "intr explain"):  # another run holds the folder: refused, saying so
        widget.run_box.output_folder()
        widget.run_box.run()
        qtbot.waitUntil(lambda: not widget.run_box.task.busy, timeout=TIMEOUT_MS)
    errors = [text for level, text in messages if level == "error"]
    assert any("another intr explain" in text and str(out) in text and "another output folder" in text
               for text in errors), errors
    assert not (out / ".intr-atlas").exists()
    messages.clear()
    widget.run_box.run()
    widget.run_box.task.cancel()
    qtbot.waitUntil(lambda: not widget.run_box.task.busy, timeout=TIMEOUT_MS)
    assert not (out / "atlas.html").exists()
    assert "Stopped" in widget.run_box.summary.full_text and not gallery(viewer)
    widget.run_box.open_existing()  # nothing to open yet: a warning, no traceback
    assert any("No atlas in" in text for level, text in messages if level == "warning")
    widget.run_box.run()  # continues, then shows the atlas
    qtbot.waitUntil(lambda: not widget.run_box.task.busy, timeout=TIMEOUT_MS)
    assert (out / "atlas.html").is_file() and len(gallery(viewer)) == 2
    assert "reused" in widget.run_box.summary.full_text
    assert np.asarray(gallery(viewer)[0].data).ndim == 3
