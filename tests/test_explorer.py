"""The INTR Explorer dock widget in a real napari viewer, with the bundled model.

As in real use the viewer (and its OpenGL) exists before torch: nothing here imports torch or
napari_intr.model at module level; model code is imported inside the tests, after the viewer."""
import csv
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

TIMEOUT_MS = 30_000


@pytest.fixture
def explorer(make_napari_viewer, qtbot, messages):
    """A viewer with the spotted specimen, the Explorer docked through the manifest, the
    bundled model loaded by the widget itself."""
    viewer = make_napari_viewer()
    viewer.open_sample("napari-intr", "heliconia-alba")
    from napari_intr.widgets.state import shared_state
    shared_state(viewer).model = None  # each test starts from an Explorer that loads the sample
    _, widget = viewer.window.add_plugin_dock_widget("napari-intr", "INTR Explorer")
    qtbot.waitUntil(lambda: widget.state.model is not None and not widget.model_source.task.busy,
                    timeout=TIMEOUT_MS)
    return viewer, widget


def explain(qtbot, widget, layer_name=None):
    if layer_name is not None:
        widget.explain_box.image.choose(layer_name)
    widget.explain()
    qtbot.waitUntil(lambda: not widget.explain_box.task.busy, timeout=TIMEOUT_MS)
    assert widget.explain_box.explain_button.isEnabled()


def reference(image, name="image"):
    """The model's explanation as the Explorer decodes it: the maps of the layer shown (the last),
    the other layers run fused (under bf16 their rounding differs from an all-layer decode's)."""
    from napari_intr import load_model
    from napari_intr.explanation import Explainer
    return Explainer(load_model("sample"), "sample").explain(image, name, layers=[-1])


def attention_layers(viewer, live_only=True):
    return [layer for layer in viewer.layers if "napari_intr_attention" in layer.metadata
            and not (live_only and "(kept" in layer.name)]


def assert_aligned(viewer, image_layer, layers, explanation):
    cell = max(explanation.cell_size()) * max(image_layer.scale[-2:])
    image_extent = np.asarray(image_layer.extent.world)[:, -2:]
    for layer in layers:
        assert np.allclose(np.asarray(layer.extent.world)[:, -2:], image_extent, atol=cell), layer.name


def test_explain_shows_one_layer_per_head_plus_mean(explorer, qtbot):
    viewer, widget = explorer
    image = viewer.layers[0]
    pixels_before = np.array(image.data, copy=True)
    explain(qtbot, widget)
    explanation = widget.state.explanation
    expected = reference(np.asarray(image.data), image.name)
    # the table is the model's own answer on the same image: same order, same probabilities
    rows = widget.results.rows()
    assert [row[1] for row in rows] == [entry["name"] for entry in expected.table()]
    assert np.allclose([float(row[2]) for row in rows],
                       [entry["probability"] for entry in expected.table()], atol=1e-4)
    assert np.allclose(explanation.probabilities, expected.probabilities, atol=1e-5)
    assert rows[0][0].startswith("★")
    top = expected.top_class()
    layers = attention_layers(viewer)
    heads, decoder_layers = widget.state.model.config.nheads, widget.state.model.config.dec_layers
    assert len(layers) == heads + 1
    from napari_intr.explanation import layer_name
    assert {layer.name for layer in layers} == {
        layer_name(image.name, top, decoder_layers, head) for head in [None, *range(1, heads + 1)]}
    assert_aligned(viewer, image, layers, explanation)
    assert all(layer.blending == "additive" and layer.opacity == 0.5 for layer in layers)
    # heads in the layer list are in Explanation.head_order (by evidence), strongest first (under the mean)
    head_layers = [layer for layer in reversed(list(viewer.layers)) if layer in layers][1:]
    assert [layer.metadata["head"] - 1 for layer in head_layers] == explanation.head_order(top)
    assert widget.attention.ranking.count() == heads
    assert "Yes" in widget.results.answer.full_text
    # the input layer is never modified or hidden
    assert np.array_equal(image.data, pixels_before) and image.visible and image.opacity == 1


def test_class_and_layer_switches_update_layers_in_place(explorer, qtbot):
    viewer, widget = explorer
    explain(qtbot, widget)
    layers = attention_layers(viewer)
    count = len(viewer.layers)
    before = [(layer.name, np.array(layer.data)) for layer in layers]
    second = widget.results.rows()[1][1]
    widget.results.select_class(second)
    assert attention_layers(viewer) == layers and len(viewer.layers) == count
    from napari_intr.explanation import short_class_name
    assert all(f"◂ query {short_class_name(second)} ·" in layer.name for layer in layers)
    assert all(layer.name != name for layer, (name, _) in zip(layers, before))
    assert any(not np.array_equal(layer.data, data) for layer, (_, data) in zip(layers, before))
    shown = [layer for layer in layers if layer.visible]
    assert shown and all(np.array_equal(layer._data_view, layer.data) for layer in shown)  # re-sliced
    for layer in layers:  # a hidden head shows its current map once ticked
        layer.visible = True
        assert np.array_equal(layer._data_view, layer.data)
    assert "No: rank 2" in widget.results.answer.full_text
    before = [(layer.name, np.array(layer.data)) for layer in layers]
    explanation = widget.state.explanation
    last = explanation.num_layers - 1
    assert {layer for layer, _ in explanation.evidence} == {last}  # the heads' evidence of the layer shown only
    widget.attention.decoder_layer.value = 1  # not decoded yet: decoded on a worker, then shown
    qtbot.waitUntil(lambda: not widget.attention.task.busy, timeout=TIMEOUT_MS)
    assert attention_layers(viewer) == layers and len(viewer.layers) == count
    assert all(" · L1 " in layer.name for layer in layers)
    assert any(not np.array_equal(layer.data, data) for layer, (_, data) in zip(layers, before))
    every = explanation.every_layer()
    assert {layer for layer, _ in every.evidence} == set()  # the second class is ranked by peak weight
    widget.results.select_class(explanation.top_class())  # the top class at L1: its evidence measured now
    qtbot.waitUntil(lambda: not widget.attention.task.busy, timeout=TIMEOUT_MS)
    assert {layer for layer, _ in every.evidence} == {0} and {layer for layer, _ in explanation.evidence} == {last}
    assert "evidence" in widget.attention.ranking.item(0).text()


def test_a_layer_switch_decodes_every_layer_once_on_a_worker(explorer, qtbot, monkeypatch, tmp_path):
    """Explain decodes the maps of the layer shown only; a switch to another layer decodes every
    layer once, off the GUI thread, and shows exactly an all-layer decode's maps; switching back
    or on decodes nothing; Save writes the files it wrote from an all-layer decode, byte for byte;
    a new class set (a shortlist) is a new explanation that decodes its own layers."""
    import threading
    from pathlib import Path

    from napari_intr.explanation import Explainer
    from napari_intr.widgets.layers import layer_views
    viewer, widget = explorer
    explain(qtbot, widget)
    state, attention = widget.state, widget.attention
    explanation, model = state.explanation, state.model
    last = explanation.num_layers - 1
    assert explanation.computed_layers() == [last] and explanation.holding(0) is None
    reference = Explainer(model, state.model_name).decode(state.encoded, evidence_layers=[-1])  # every layer
    decodes = []  # decoder calls with maps (the heads' evidence runs the decoder without them)
    decode = model.decode

    def counted(*args, **kwargs):
        if kwargs.get("return_attention", True):
            decodes.append(threading.current_thread())
        return decode(*args, **kwargs)
    monkeypatch.setattr(model, "decode", counted)

    def shown_as(expected, layer):
        views = layer_views(expected, state.source, attention.class_name, layer, attention.options())
        live = attention.layers.live_layers(state.source.name)
        return ([layer.name for layer in live] == [view.name for view in views]
                and all(np.array_equal(layer.data, view.data) for layer, view in zip(live, views)))

    assert shown_as(explanation, last) and last >= 1
    attention.decoder_layer.value = 1
    assert attention.task.busy  # the switch returned at once: the decode runs on a worker
    qtbot.waitUntil(lambda: not attention.task.busy, timeout=TIMEOUT_MS)
    assert len(decodes) == 1 and decodes[0] is not threading.main_thread()
    every = explanation.holding(0)
    assert every is explanation.every_layer() and every.computed_layers() == list(range(last + 1))
    assert np.array_equal(every.attention, reference.attention) and np.array_equal(every.logits, reference.logits)
    assert shown_as(reference, 0)
    attention.decoder_layer.value = last + 1  # back: the maps Explain decoded, nothing decoded
    assert not attention.task.busy and shown_as(explanation, last)
    attention.decoder_layer.value = 1  # and again: kept
    assert not attention.task.busy and shown_as(reference, 0) and len(decodes) == 1

    import napari_intr.export as export
    written, save = [], export.save_explanation
    monkeypatch.setattr(export, "save_explanation", lambda *args: written.append(args) or save(*args))

    def saved_as(expected, folder):
        widget.save_box.folder.path = str(folder)
        widget.save_box.save()
        qtbot.waitUntil(lambda: not widget.save_box.task.busy, timeout=TIMEOUT_MS)
        _, stem, explained, *rest = written.pop()
        assert explained.computed_layers() == list(range(last + 1))  # the file holds every layer
        files = save(tmp_path / "reference", stem, expected, *rest)
        return all((folder / Path(path).name).read_bytes() == Path(path).read_bytes() for path in files)

    assert saved_as(reference, tmp_path / "saved") and len(decodes) == 1  # the switch's layers are written

    widget.explain_box.shortlist.setValue(3)  # a new class set: a new explanation, its own layers
    explain(qtbot, widget)
    shortlisted = state.explanation
    assert len(shortlisted.class_names) == 3 and shortlisted.holding(0) is None and len(decodes) == 2
    assert attention.decoder_layer.value == last + 1
    with monkeypatch.context() as uncounted:  # the test's own all-layer decode is not the dock's
        uncounted.setattr(model, "decode", decode)
        reference = Explainer(model, state.model_name).decode(state.encoded, shortlist=3, evidence_layers=[-1])
    assert saved_as(reference, tmp_path / "shortlisted") and len(decodes) == 3  # decoded for the file, on the worker
    assert threading.main_thread() not in decodes
    attention.decoder_layer.value = 1  # decoded already for the file: shown without a decode
    qtbot.waitUntil(lambda: not attention.task.busy, timeout=TIMEOUT_MS)  # (its heads' evidence: a worker)
    assert len(decodes) == 3 and shown_as(reference, 0)


def test_keep_freezes_the_set_and_the_next_switch_makes_new_layers(explorer, qtbot, messages):
    viewer, widget = explorer
    explain(qtbot, widget)
    live = attention_layers(viewer)
    kept_data = [np.array(layer.data) for layer in live]
    widget.attention.keep()
    assert all(layer.name.endswith(" (kept 1)") for layer in live)
    widget.results.select_class(widget.results.rows()[1][1])
    # a new set is added one layer per turn of the event loop (LiveLayerSet, gui_turns)
    qtbot.waitUntil(lambda: not widget.attention.layers.building(), timeout=TIMEOUT_MS)
    new = attention_layers(viewer)
    assert len(new) == len(live) and not set(map(id, new)) & set(map(id, live))
    assert all(np.array_equal(layer.data, data) for layer, data in zip(live, kept_data))
    assert len(viewer.layers) == 1 + 2 * len(live)
    # explaining again updates the live set, the kept one stays
    explain(qtbot, widget)
    assert attention_layers(viewer) == new and len(viewer.layers) == 1 + 2 * len(live)


def test_filter_upsampling_and_shared_normalisation(explorer, qtbot):
    viewer, widget = explorer
    explain(qtbot, widget)
    widget.results.filter.setText("morphoides")
    visible = widget.results.visible_classes()
    assert visible and all("morphoides" in name.lower() for name in visible)
    widget.attention.placement.value = True  # upsampled to the image grid
    image = viewer.layers[0]
    for layer in attention_layers(viewer):
        assert layer.data.shape == image.data.shape[:2]
        assert np.allclose(np.asarray(layer.extent.world), np.asarray(image.extent.world))
    # Shared normalisation on the feature grid (upsampling smooths peaks): the strongest head
    # reaches 1, weaker heads stay below it, unlike per-map normalisation where every head does.
    widget.attention.placement.value = False
    widget.attention.normalization.value = "shared"  # shared across heads
    heads = [layer for layer in attention_layers(viewer) if layer.metadata["head"] != "mean"]
    peaks = sorted(float(layer.data.max()) for layer in heads)
    assert np.isclose(peaks[-1], 1.0) and peaks[0] < 1.0


def test_stack_explains_the_current_slice(explorer, qtbot, messages):
    viewer, widget = explorer
    rng = np.random.default_rng(0)
    stack = (rng.random((4, 64, 80)) * 60000).astype(np.uint16)
    layer = viewer.add_image(stack, name="stack")
    viewer.dims.set_current_step(0, 2)
    explain(qtbot, widget, "stack")
    assert widget.state.source.name == "stack [2]"
    assert np.allclose(widget.state.explanation.probabilities, reference(stack[2]).probabilities, atol=1e-5)
    assert any("current slice" in text for _, text in messages)
    assert_aligned(viewer, layer, attention_layers(viewer), widget.state.explanation)


def test_channel_first_stack_is_read_as_rgb(explorer, qtbot, messages):
    viewer, widget = explorer
    rgb = np.asarray(viewer.layers[0].data)
    viewer.add_image(np.moveaxis(rgb, -1, 0), name="channels first")
    explain(qtbot, widget, "channels first")
    assert any("channel-first" in text for _, text in messages)
    assert np.allclose(widget.state.explanation.probabilities, reference(rgb).probabilities, atol=1e-5)


def test_very_long_image_is_downscaled_with_a_note(explorer, qtbot, messages):
    viewer, widget = explorer
    long_image = np.tile(np.linspace(0, 255, 1500, dtype=np.uint8), (9000, 1))
    layer = viewer.add_image(long_image, name="long")
    explain(qtbot, widget, "long")
    assert widget.state.explanation is not None and widget.state.source.name == "long"
    assert any("block-averaged" in text for _, text in messages)
    assert_aligned(viewer, layer, attention_layers(viewer), widget.state.explanation)
    # a strip too long for the model's limits (7:1 for the bundled one) is refused: crop it
    viewer.add_image(np.tile(np.linspace(0, 255, 200, dtype=np.uint8), (20000, 1)), name="strip")
    explain(qtbot, widget, "strip")
    assert any(level == "error" and "20000×200 px" in text and "crop" in text for level, text in messages)
    assert widget.state.source.name == "long"  # the previous explanation stays


def test_first_click_explain_waits_for_the_bundled_model(make_napari_viewer, qtbot, messages):
    """A newcomer opens the Explorer (through the manifest) and presses Explain at once, while
    the preselected bundled model is still loading: the explanation comes without a second click."""
    viewer = make_napari_viewer()
    viewer.open_sample("napari-intr", "heliconia-alba")
    from napari_intr.widgets.state import shared_state
    shared_state(viewer).model = None
    _, widget = viewer.window.add_plugin_dock_widget("napari-intr", "INTR Explorer")
    assert widget.model_source.task.busy and widget.state.model is None  # the load has only begun
    widget.explain_box.explain_button.click()
    assert "Waiting for the model to load" in widget.explain_box.notes.full_text
    qtbot.waitUntil(lambda: widget.state.explanation is not None, timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: not widget.explain_box.task.busy, timeout=TIMEOUT_MS)
    assert widget.state.source.name == viewer.layers[0].name and attention_layers(viewer)
    assert not any("No model loaded" in text for _, text in messages)
    assert "Waiting" not in widget.explain_box.notes.full_text
    import gc
    assert gc.get_freeze_count() > 100_000  # napari, torch and the model: out of full collections


def test_explain_without_a_model_starts_the_load_and_says_when_it_fails(explorer, qtbot, messages, tmp_path):
    viewer, widget = explorer
    widget.state.model = None  # e.g. after a failed load
    widget.explain_box.explain_button.click()
    assert widget.model_source.task.busy  # Explain started the load itself
    qtbot.waitUntil(lambda: widget.state.explanation is not None, timeout=TIMEOUT_MS)
    # the explanation is published before its task ends; a click before that finds the button disabled
    qtbot.waitUntil(lambda: not widget.explain_box.task.busy, timeout=TIMEOUT_MS)
    widget.state.model = None
    names = tmp_path / "names.txt"
    names.write_text("a\nb\n")  # the wrong number of classes: the load fails
    widget.model_source.class_names.path = names
    widget.explain_box.explain_button.click()
    assert widget.model_source.task.busy
    qtbot.waitUntil(lambda: not widget.model_source.task.busy, timeout=TIMEOUT_MS)
    assert "did not load" in widget.explain_box.notes.full_text
    assert not widget.explain_box.waiting_for_model and widget.explain_box.explain_button.isEnabled()


@pytest.mark.parametrize("size", [1, 10])
def test_tiny_images_are_refused(explorer, qtbot, messages, size):
    viewer, widget = explorer
    viewer.add_image(np.zeros((size, size), np.uint8), name="tiny")
    widget.explain_box.image.choose("tiny")
    widget.explain()
    assert ("warning", f"'tiny' is {size}×{size} px; INTR needs at least 32 px on each side: "
            "choose a larger image") in messages
    assert widget.explain_box.explain_button.isEnabled() and widget.state.explanation is None


def test_nan_image_reports_and_stays_usable(explorer, qtbot, messages):
    viewer, widget = explorer
    bad = np.ones((64, 64), np.float32)
    bad[5, 5] = np.nan
    viewer.add_image(bad, name="nan")
    explain(qtbot, widget, "nan")
    assert any(level == "error" and "NaN" in text for level, text in messages)
    assert widget.state.explanation is None
    explain(qtbot, widget, viewer.layers[0].name)  # still usable
    assert widget.state.explanation is not None


def test_non_image_layers_are_refused(make_napari_viewer, qtbot, messages):
    viewer = make_napari_viewer()
    from napari_intr.widgets.state import shared_state
    shared_state(viewer).model = None
    _, widget = viewer.window.add_plugin_dock_widget("napari-intr", "INTR Explorer")
    qtbot.waitUntil(lambda: not widget.model_source.task.busy, timeout=TIMEOUT_MS)
    widget.explain()
    assert any(level == "warning" and "no image layer" in text for level, text in messages)
    viewer.add_labels(np.zeros((64, 64), np.int32), name="cells")
    widget.explain()
    assert any("'cells' is a Labels layer" in text for _, text in messages), messages
    viewer.add_points([[1, 1]], name="spots")
    widget.explain()
    assert any("'spots' is a Points layer" in text for _, text in messages)
    assert widget.explain_box.explain_button.isEnabled()


def test_cancel_leaves_no_result_and_reenables(explorer, qtbot, messages):
    viewer, widget = explorer
    widget.explain()
    widget.explain_box.task.cancel()
    qtbot.waitUntil(lambda: not widget.explain_box.task.busy, timeout=TIMEOUT_MS)
    assert widget.state.explanation is None and not attention_layers(viewer)
    assert widget.explain_box.explain_button.isEnabled()
    assert "cancelled" in widget.explain_box.task.status.full_text


def test_wrong_class_names_file_is_reported(explorer, qtbot, messages, tmp_path):
    viewer, widget = explorer
    model = widget.state.model
    names = tmp_path / "names.txt"
    names.write_text("a\nb\nc\n")
    widget.model_source.class_names.path = names
    widget.model_source.load()
    qtbot.waitUntil(lambda: not widget.model_source.task.busy, timeout=TIMEOUT_MS)
    errors = [text for level, text in messages if level == "error"]
    assert errors and "names.txt" in errors[-1]
    assert re.search(r"\b3\b", errors[-1]) and re.search(rf"\b{len(model.class_names)}\b", errors[-1])
    assert widget.state.model is model and widget.model_source.load_button.isEnabled()


def test_offline_zoo_download_names_url_and_path(explorer, qtbot, messages, tmp_path, monkeypatch):
    viewer, widget = explorer
    from napari_intr import zoo
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path))
    url = "http://127.0.0.1:9/intr_checkpoint_cub_detr_r50.pth"  # nothing listens on port 9
    monkeypatch.setitem(zoo.ZOO, "intr-cub", zoo.ZooEntry(zoo.ZOO["intr-cub"].filename, url, 200, "intr"))
    box = widget.model_source
    box.picker.source.setCurrentIndex(box.picker.source.findData("intr-cub"))
    box.load()
    qtbot.waitUntil(lambda: not box.task.busy, timeout=TIMEOUT_MS)
    error = [text for level, text in messages if level == "error"][-1]
    assert url in error and str(zoo.cached_path("intr-cub")) in error
    assert box.load_button.isEnabled()


def test_image_picker_follows_the_layer_list(explorer):
    viewer, widget = explorer
    picker = widget.explain_box.image

    def names():
        return [layer.name for layer in picker.choices]

    layer = viewer.add_image(np.zeros((64, 64), np.uint8), name="added")
    viewer.add_labels(np.zeros((64, 64), np.uint8), name="mask")
    assert "added" in names() and "mask" not in names()
    layer.name = "renamed"
    assert "renamed" in names() and "added" not in names()
    viewer.layers.selection.active = viewer.layers[0]  # choosing in napari's layer list chooses here
    assert picker.layer() is viewer.layers[0]
    viewer.layers.remove(layer)
    assert "renamed" not in names()


def test_each_viewer_has_its_own_state(make_napari_viewer):
    first, second = make_napari_viewer(), make_napari_viewer()
    from napari.utils._proxies import PublicOnlyProxy

    from napari_intr import load_model
    from napari_intr.widgets.state import publish_model, shared_state
    publish_model(first, load_model("sample"), "sample")
    assert shared_state(first).model_name == "sample" and shared_state(second).model is None
    assert shared_state(PublicOnlyProxy(first)) is shared_state(first)  # what napari hands docks


def test_model_published_by_another_widget_is_used(explorer, qtbot):
    viewer, widget = explorer
    explain(qtbot, widget)
    from napari_intr import load_model
    from napari_intr.widgets.state import publish_model
    publish_model(viewer, load_model("sample"), "fine-tuned")
    assert widget.state.explanation is None and "fine-tuned" in widget.model_source.loaded.full_text
    explain(qtbot, widget)
    assert widget.state.explanation.model_name == "fine-tuned"


def test_batch_panel_writes_readable_results(explorer, qtbot, messages, tmp_path):
    viewer, widget = explorer
    import tifffile

    from napari_intr.widgets.samples import specimens_dir
    images = tmp_path / "images"
    images.mkdir()
    for path in sorted(specimens_dir().glob("*.png"))[:3]:
        (images / path.name).write_bytes(path.read_bytes())
    batch = widget.batch
    batch.inputs.path = images
    batch.output.path = "  "  # empty is "none chosen" (magicgui's FileEdit alone says Path('.'))
    assert batch.output.value is None and batch.output.path == ""
    batch.run()
    assert any("Choose an output folder" in text for _, text in messages)
    batch.output.path = tmp_path / "out"
    batch.run()
    qtbot.waitUntil(lambda: not batch.task.busy, timeout=TIMEOUT_MS)
    assert "Explained 3 of 3" in batch.summary.full_text
    with open(tmp_path / "out" / "predictions.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 3
    model = widget.state.model
    for row in rows:
        maps = tifffile.imread(tmp_path / "out" / row["attention_file"])
        grid = reference(np.asarray(viewer.layers[0].data)).attention.shape[-2:]  # same 160 px size
        assert maps.shape == (model.config.nheads, *grid)
        assert row["top1_class"] in model.class_names
    batch.run()  # the same output folder again: refused, nothing overwritten
    assert any("earlier run" in text for _, text in messages)


def test_batch_panel_says_which_images_were_read_reduced(explorer, qtbot, messages, tmp_path, monkeypatch):
    """An image past the decode budget is explained from a reduced read: the panel says so."""
    viewer, widget = explorer
    import tifffile

    from napari_intr import image_files
    images = tmp_path / "scans"
    images.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (600, 800, 3), dtype=np.uint8)
    tifffile.imwrite(images / "drawer.tif", pixels, compression="zlib", tile=(64, 64))
    monkeypatch.setattr(image_files, "DECODE_BUDGET_BYTES", 1_000_000)  # as if it were a 50 000 px scan
    batch = widget.batch
    batch.inputs.path = images
    batch.output.path = tmp_path / "out"
    batch.run()
    qtbot.waitUntil(lambda: not batch.task.busy, timeout=TIMEOUT_MS)
    text = batch.summary.full_text
    assert "Explained 1 of 1" in text and "1 too large to decode whole, explained from a reduced image" in text
    assert re.search(r"drawer.tif is 600×800 px, .*read reduced \d+×", text)


def test_image_read_reduced_is_shown_on_the_files_grid_and_named_so(explorer, qtbot, messages, tmp_path,
                                                                      monkeypatch):
    """intr demo --image on a file too large to decode whole: the layer is the reduced image, named
    so, placed on the file's pixel grid; a warning says so; the maps land on the image."""
    viewer, widget = explorer
    import tifffile

    from napari_intr import image_files
    from napari_intr.large_images import read_within_budget
    from napari_intr.widgets.explorer.demo import add_reduced
    path = tmp_path / "drawer.tif"
    tifffile.imwrite(path, np.random.default_rng(0).integers(0, 256, (600, 800, 3), dtype=np.uint8))
    monkeypatch.setattr(image_files, "DECODE_BUDGET_BYTES", 1_000_000)
    assert isinstance(read_within_budget(path).pixels, np.memmap)  # for Explainer, which reads it in bands
    read = read_within_budget(path, allow_mapped=False)  # what intr demo shows: uncompressed, read reduced
    layer = add_reduced(viewer, path, read)
    factor = read.factor
    assert layer.name == f"drawer (read reduced {factor}×)" and tuple(layer.scale) == (factor, factor)
    assert any("read reduced" in text and level == "warning" for level, text in messages)
    # the reduced layer covers the file's 600×800 px (to within one reduced pixel)
    extent = np.asarray(layer.extent.world)
    assert np.allclose(extent[1] - extent[0], (600, 800), atol=factor)
    explain(qtbot, widget, layer.name)
    assert_aligned(viewer, layer, attention_layers(viewer), widget.state.explanation)


def test_viewer_first_then_torch_does_not_crash(tmp_path):
    """A fresh process: GL first (a shown viewer with an image), then the plugin and torch."""
    script = textwrap.dedent("""
        import numpy as np, napari
        viewer = napari.Viewer()
        viewer.add_image(np.zeros((64, 64), np.uint8))
        viewer.window._qt_window.repaint()
        import napari_intr.widgets
        from napari_intr import load_model
        from napari_intr.explanation import Explainer
        explanation = Explainer(load_model("sample")).explain(np.zeros((64, 64), np.uint8))
        print("explained", explanation.top_class())
        viewer.close()
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, env={**os.environ})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "explained" in result.stdout
