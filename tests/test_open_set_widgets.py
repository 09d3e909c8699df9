"""The Explorer's open-set answers in a real napari viewer: "none of the N species", the marked
prediction set, the batch panel and the regions box counting rejected images, an uncalibrated
model saying so. As in real use the viewer exists before torch (imports inside the tests)."""
import numpy as np
import pytest

TIMEOUT_MS = 30_000


@pytest.fixture
def explorer(make_napari_viewer, qtbot, messages):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-intr", "heliconia-alba")
    from napari_intr.widgets.state import shared_state
    shared_state(viewer).model = None  # a fresh bundled model, loaded by the widget
    _, widget = viewer.window.add_plugin_dock_widget("napari-intr", "INTR Explorer")
    qtbot.waitUntil(lambda: widget.state.model is not None and not widget.model_source.task.busy,
                    timeout=TIMEOUT_MS)
    return viewer, widget


def calibrate(model, threshold: float, quantile: float = 0.5):
    from napari_intr.calibration import Calibration
    model.calibration = Calibration(score="max_logit", threshold=threshold, keep=0.95, alpha=0.1,
                                    quantile=quantile, images=321, classes=len(model.class_names))


def explain(qtbot, widget):
    widget.explain()
    qtbot.waitUntil(lambda: not widget.explain_box.task.busy, timeout=TIMEOUT_MS)


def test_explorer_states_known_rejected_and_not_calibrated(explorer, qtbot, tmp_path):
    viewer, widget = explorer
    results = widget.results
    explain(qtbot, widget)  # the bundled model carries no calibration: said, and it names a species
    assert "Model not calibrated" in results.verdict.full_text
    assert results.rows()[0][0].startswith("★") and all(row[4] == "" for row in results.rows())

    model = widget.state.model
    calibrate(model, threshold=float("inf"))  # nothing clears it: "none of the 9 species"
    explain(qtbot, widget)
    explanation = widget.state.explanation
    assert explanation.rejected
    text = results.verdict.full_text
    assert text.startswith("⚠ None of the 9 species (max logit") and "calibrated on 321 images" in text
    assert not results.rows()[0][0].startswith("★")  # the nearest class, not a prediction
    assert "only the nearest class" in results.answer.full_text

    calibrate(model, threshold=float("-inf"), quantile=0.999)  # everything known, a wide set
    explain(qtbot, widget)
    verdict = widget.state.explanation.calibrated
    assert verdict.known and results.verdict.full_text.startswith("One of the 9 species")
    marked = [row[1] for row in results.rows() if row[4] == "✓"]
    assert marked and sorted(marked) == sorted(verdict.prediction_set)
    assert "Does" in results.answer.full_text and "Yes" in results.answer.full_text

    calibrate(model, threshold=float("-inf"), quantile=1e-9)  # no species probable enough: an empty set
    explain(qtbot, widget)
    assert widget.state.explanation.calibrated.prediction_set == []
    text = results.verdict.full_text
    assert "prediction set: empty: no species is as probable as the calibration asks" in text
    assert "treat the top name as a guess" in text and "Set column" not in text
    assert all(row[4] == "" for row in results.rows())


def test_batch_panel_and_regions_count_rejected_images(explorer, qtbot, tmp_path):
    viewer, widget = explorer
    from napari_intr.widgets.samples import specimens_dir
    images = tmp_path / "images"
    images.mkdir()
    for path in sorted(specimens_dir().glob("*.png"))[:3]:
        (images / path.name).write_bytes(path.read_bytes())
    calibrate(widget.state.model, threshold=float("inf"))
    batch = widget.batch
    batch.inputs.path, batch.output.path = images, tmp_path / "out"
    batch.run()
    qtbot.waitUntil(lambda: not batch.task.busy, timeout=TIMEOUT_MS)
    summary = batch.summary.full_text
    assert "none of the 9 species: 3 of 3 images" in summary
    assert all(path.name in summary for path in images.iterdir())

    height, width = np.asarray(viewer.layers[0].data).shape[:2]
    viewer.add_shapes([np.array([[0, 0], [0, width - 1], [height - 1, width - 1], [height - 1, 0]])],
                      shape_type="rectangle", name="specimens")
    widget.regions.regions_layer.choose("specimens")
    widget.regions.explain_regions()
    qtbot.waitUntil(lambda: not widget.regions.task.busy, timeout=TIMEOUT_MS)
    table = widget.regions.table
    assert table.item(0, table.columnCount() - 1).text() == "no"
    assert "None of the 9 species: 1 of 1 regions (region 1)" in widget.regions.summary.full_text
    assert widget.regions.outlines.properties["label"][0] == "1: none of the 9 species"
