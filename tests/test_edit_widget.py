"""The INTR Edit dock widget in a real viewer with the bundled (trained) model and the look-alike
pair: painting the discriminating attribute flips the prediction, painting background does not,
undo restores the previous prediction exactly, and bad input gets a message.

The viewer exists before torch (model code is imported inside the tests), as in real use."""
import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

TIMEOUT_MS = 30_000
RUBRA, ALBA = "Heliconia synthetica-rubra", "Heliconia synthetica-alba"
RUBRA_LAYER, ALBA_LAYER = f"{RUBRA} (synthetic)", f"{ALBA} (synthetic)"
SIZE, POSE_SEED = 160, (20240501, 1)  # sample_data/make_specimens.py: the pair's shared pose


@pytest.fixture
def widgets(pair_with_explorer):
    """The pair, the Explorer (which loads the bundled model) and the Edit dock."""
    viewer, explorer = pair_with_explorer
    _, edit = viewer.window.add_plugin_dock_widget("napari-intr", "INTR Edit")
    return viewer, explorer, edit


@pytest.fixture(scope="module")
def attribute_mask():
    """Where alba's white spots are (and rubra has none): the pair's synth attribute mask."""
    from napari_intr import synth
    pose = synth.sample_pose(np.random.default_rng(POSE_SEED), SIZE)
    alba, mask = synth.render(ALBA, pose, SIZE)
    from napari_intr.widgets.samples import specimen_path
    bundled = np.asarray(Image.open(specimen_path(ALBA)).convert("RGB"))
    assert np.array_equal(alba, bundled)  # the pose is the bundled specimens' pose
    return mask


def apply(qtbot, edit):
    edit.apply()
    qtbot.waitUntil(lambda: not edit.task.busy, timeout=TIMEOUT_MS)
    assert edit.apply_button.isEnabled()


def paint(edit, mask):
    edit.region_layer.data = mask.astype(np.uint8)


def test_painting_the_attribute_flips_background_does_not_undo_restores(widgets, qtbot, messages,
                                                                        attribute_mask, tmp_path):
    viewer, explorer, edit = widgets
    rubra, alba = viewer.layers[RUBRA_LAYER], viewer.layers[ALBA_LAYER]
    original = np.array(rubra.data)
    edit.image.choose(RUBRA_LAYER)
    edit.start()
    assert edit.region_layer.data.shape == original.shape[:2] and edit.region_layer.mode == "paint"
    assert viewer.layers.selection.active.name == edit.region_layer.name
    # the recolour colour is sampled with a click on the other image layer (translated beside)
    ys, xs = np.nonzero(attribute_mask)
    brightest = np.argmax(np.asarray(alba.data)[ys, xs].sum(axis=-1))
    edit.options.sample_layer.choose(ALBA_LAYER)
    edit.options.pick_button.setChecked(True)
    assert edit.options._on_click in viewer.mouse_drag_callbacks
    world = np.asarray(alba.data_to_world((ys[brightest], xs[brightest])))
    edit.options._on_click(viewer, SimpleNamespace(position=tuple(world)))
    assert edit.options.colour == (1.0, 1.0, 1.0) and edit.options.colour_button.text() == "#ffffff"
    assert edit.options._on_click not in viewer.mouse_drag_callbacks  # one click, one sample

    # 1. the same colour over a background region of the same size (top left, away from the
    # wings): the prediction stays
    background = np.zeros_like(attribute_mask)
    background[5:25, 5:25] = True
    background.flat[np.flatnonzero(background)[attribute_mask.sum():]] = False
    assert background.sum() == attribute_mask.sum() and not (background & attribute_mask).any()
    paint(edit, background)
    apply(qtbot, edit)
    effect = edit.report.effect
    assert effect.top1_before == RUBRA and effect.top1_after == RUBRA and not effect.top1_changed
    assert edit.report.flag.full_text == f"Top-1 unchanged: '{RUBRA}'"
    edited = viewer.layers[f"{RUBRA_LAYER} (edited)"]
    assert np.array_equal(rubra.data, original)  # the original is never changed
    assert np.all(edited.data[background] == 255) and np.array_equal(edited.data[~background], original[~background])
    after_background = edit.current_prediction()

    # 2. the attribute painted in (stacked on the first edit): the prediction flips to alba
    calls = []
    handle = explorer.state.model.backbone.register_forward_hook(lambda *_: calls.append(1))
    paint(edit, attribute_mask)
    apply(qtbot, edit)
    effect = edit.report.effect
    assert effect.top1_before == RUBRA and effect.top1_after == ALBA
    assert edit.report.flag.full_text == f"TOP-1 CHANGED: '{RUBRA}' → '{ALBA}'"
    assert [edit.edits.item(row).text() for row in range(edit.edits.count())] == [
        f"1. recolour to #ffffff over {background.sum()} px", f"2. recolour to #ffffff over {attribute_mask.sum()} px"]
    assert edit.report.rows()[0][0] == ALBA and len(edit.report.rows()) == len(explorer.state.class_names)
    from napari_intr.explanation import Explainer
    fresh = Explainer(explorer.state.model, "sample").explain(np.asarray(edited.data))
    assert np.allclose(fresh.probabilities, edit.current_prediction().probabilities, atol=1e-5)
    # per head: the share of attention inside the painted region, and a diverging difference layer
    heads = explorer.state.model.config.nheads
    assert edit.report.heads.rowCount() == heads
    assert float(edit.report.heads.item(0, 1).text()) == pytest.approx(effect.mass_before[0], abs=1e-3)
    differences = [layer for layer in viewer.layers if layer.metadata.get("difference") == "after − before"]
    assert len(differences) == heads
    from napari_intr.explanation import short_class_name
    for layer in differences:
        low, high = layer.contrast_limits
        assert np.isclose(low, -high) and high > 0 and layer.colormap.name == "PiYG (clear at 0)"
        assert f"◂ query {short_class_name(RUBRA)} ·" in layer.name
        np.testing.assert_allclose(layer.data, effect.difference[layer.metadata["head"] - 1])
    calls.clear()  # the edit explained its image; switching the class must not
    edit.attention_class.setCurrentText(ALBA)
    handle.remove()
    assert calls == [] and edit.report.effect.class_name == ALBA
    assert all(f"◂ query {short_class_name(ALBA)} ·" in layer.name for layer in differences) and len(
        [layer for layer in viewer.layers if layer.metadata.get("difference")]) == heads

    # 3. undo restores the previous image and, exactly, its prediction
    edit.undo()
    prediction = edit.current_prediction()
    assert prediction is after_background and prediction.top_class() == RUBRA
    assert np.array_equal(edited.data[~background], original[~background])
    assert np.array_equal(edited.data, edit.session.current) and edit.edits.count() == 1
    again = Explainer(explorer.state.model, "sample").explain(np.asarray(edited.data))
    assert np.allclose(again.probabilities, prediction.probabilities, atol=1e-5)
    edit.reset()
    assert np.array_equal(edited.data, original) and edit.edits.item(0).text() == "(no edits yet)"
    assert "No edits" in edit.report.flag.full_text

    # 4. transplant alba's pixels over the (blur-grown) attribute region: flips too
    from scipy.ndimage import binary_dilation
    edit.options.operation.value = "transplant"
    edit.options.source.choose(ALBA_LAYER)
    paint(edit, binary_dilation(attribute_mask, iterations=3))
    apply(qtbot, edit)
    assert edit.report.effect.top1_changed and edit.report.effect.top1_after == ALBA
    assert np.array_equal(edited.data, np.asarray(alba.data))  # the pair differs only there

    # 5. export: the edited image in the input's format and the report
    edit.folder.path = tmp_path
    edit.export()
    image_path = tmp_path / f"{RUBRA_LAYER} (edited).png"
    assert np.array_equal(np.asarray(Image.open(image_path)), edit.session.current)
    report = json.loads((tmp_path / f"{RUBRA_LAYER} (edited) report.json").read_text())
    assert len(report["edits"]) == 1 and report["edits"][0]["edit"] == "Transplant"
    assert report["edits"][0]["effect"]["top1_changed"] and report["edits"][0]["effect"]["top1_after"] == ALBA
    with open(tmp_path / f"{RUBRA_LAYER} (edited) report.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert sum(row["quantity"].startswith("attention mass") for row in rows) == heads
    edit.export()  # again: refused, nothing overwritten
    assert any(level == "warning" and "earlier export" in text for level, text in messages)


def test_bad_input_is_refused_and_the_widget_stays_usable(widgets, qtbot, messages):
    viewer, explorer, edit = widgets

    def last_warning():
        return [text for level, text in messages if level == "warning"][-1]

    edit.apply()
    assert "press Edit first" in last_warning()
    viewer.add_image(np.zeros((3, 64, 64), np.uint8), name="stack", rgb=False)
    edit.image.choose("stack")
    edit.start()
    assert "edit a 2-D grey or RGB(A) image" in last_warning() and edit.session is None
    edit.image.choose(RUBRA_LAYER)
    edit.start()
    apply(qtbot, edit)  # nothing painted
    assert "the painted region is empty" in last_warning()
    paint(edit, np.ones((SIZE, SIZE), bool))
    apply(qtbot, edit)
    assert "covers the whole image" in last_warning()
    small = np.zeros((50, 50), np.uint8)
    small[10:20, 10:20] = 1
    viewer.add_labels(small, name="small mask")
    edit.mask.choose("small mask")
    apply(qtbot, edit)
    assert "the painted mask is 50×50 but the image is 160×160" in last_warning()
    edit.mask.choose(edit.region_layer.name)
    region = np.zeros((SIZE, SIZE), bool)
    region[60:80, 60:80] = True
    paint(edit, region)
    viewer.add_image(np.zeros((80, 80, 3), np.uint8), name="small source", rgb=True)
    edit.options.operation.value = "transplant"
    edit.options.source.choose("small source")
    apply(qtbot, edit)
    assert "the transplant source 'small source' is 80×80 but the edited image is 160×160" in last_warning()
    edit.undo()
    assert "nothing to undo" in last_warning()
    edit.export()
    assert "nothing to export" in last_warning()
    assert not edit.session.history and not any("(edited)" in layer.name for layer in viewer.layers)
    assert all(button.isEnabled() for button in (edit.apply_button, edit.undo_button, edit.start_button))
    # still usable: a valid blur applies and is explained
    edit.options.operation.value = "blur"
    apply(qtbot, edit)
    assert len(edit.session.history) == 1 and edit.report.effect is not None
    assert not any(level == "error" for level, _ in messages)
