"""The INTR Compare dock widget in a real viewer with the bundled model and the look-alike pair.

The viewer exists before torch (model code is imported inside the tests), as in real use."""
import numpy as np
import pytest

TIMEOUT_MS = 30_000
RUBRA, ALBA = "Heliconia synthetica-rubra", "Heliconia synthetica-alba"


@pytest.fixture
def widgets(pair_with_explorer):
    """The pair, the Explorer (which loads the bundled model) and the Compare dock."""
    viewer, explorer = pair_with_explorer
    _, compare = viewer.window.add_plugin_dock_widget("napari-intr", "INTR Compare")
    return viewer, explorer, compare


def explain(qtbot, explorer, layer_name):
    explorer.explain_box.image.choose(layer_name)
    explorer.explain()
    qtbot.waitUntil(lambda: not explorer.explain_box.task.busy, timeout=TIMEOUT_MS)
    assert explorer.state.explanation is not None


def run_compare(qtbot, compare):
    compare.compare()
    qtbot.waitUntil(lambda: not compare.task.busy, timeout=TIMEOUT_MS)
    assert compare.compare_button.isEnabled()


def backbone_counter(model):
    calls = []
    handle = model.backbone.register_forward_hook(lambda *_: calls.append(1))
    return calls, handle


def compare_layers(viewer, kind):
    return [layer for layer in viewer.layers if layer.metadata.get("decoded") == kind
            or (kind == "candidates" and layer.metadata.get("axis 0") == "candidate")]


def test_pair_comparison_on_cached_memory(widgets, qtbot):
    viewer, explorer, compare = widgets
    rubra = f"{RUBRA} (synthetic)"
    explain(qtbot, explorer, rubra)
    model = explorer.state.model
    from napari_intr.comparison import compare as core_compare
    from napari_intr.explanation import Explainer
    explainer = Explainer(model, "sample")
    pair = [name for name in model.class_names if name in (RUBRA, ALBA)]
    reference = core_compare(explainer, explainer.encode(np.asarray(viewer.layers[rubra].data), rubra),
                             RUBRA, pair)
    calls, handle = backbone_counter(model)  # from here on, nothing may run the backbone
    from napari_intr.explanation import short_class_name
    try:
        assert "'drop' (the default)" in compare.mode_note.full_text
        compare.candidates.set_checked([RUBRA, ALBA])
        compare.selected.setCurrentText(RUBRA)
        run_compare(qtbot, compare)
        comparison = compare.comparison
        assert set(comparison.candidate_names) == {RUBRA, ALBA} and comparison.mode == "drop"
        # probabilities among the two sum to 1, in the table too
        assert np.isclose(comparison.candidates.probabilities.sum(), 1.0, atol=1e-5)
        shown = [float(compare.table.item(row, 1).text()) for row in range(2)]
        assert np.isclose(sum(shown), 1.0, atol=2e-4)
        assert {compare.table.item(row, 0).text() for row in range(2)} == {RUBRA, ALBA}
        # the same numbers as the core API on a fresh encoding of the same pixels
        assert comparison.candidate_names == reference.candidate_names  # the model's order
        assert np.allclose(comparison.candidates.probabilities, reference.candidates.probabilities, atol=1e-5)
        # restricting the decoder to the pair changes the selected class's attention
        difference = comparison.difference()
        assert np.abs(difference).max() > 1e-4
        heads = model.config.nheads
        candidates = compare_layers(viewer, "candidates")
        assert len(candidates) == heads
        assert all(layer.data.shape[0] == 2 and layer.ndim == 3 for layer in candidates)
        np.testing.assert_allclose(candidates[0].data, comparison.candidate_maps()[candidates[0].metadata["head"] - 1])
        differences = compare_layers(viewer, "candidates − all")
        assert len(differences) == heads and all(f"◂ query {short_class_name(RUBRA)} ·" in layer.name for layer in differences)
        for layer in differences:
            low, high = layer.contrast_limits
            assert np.isclose(low, -high) and high > 0 and layer.colormap.name == "PiYG (clear at 0)"
            np.testing.assert_allclose(layer.data, difference[layer.metadata["head"] - 1], atol=1e-7)
        assert len(compare_layers(viewer, "all classes")) == heads
        assert len(compare_layers(viewer, "candidates only")) == heads
        # the slider steps through the candidates and the widget names the class it points at
        for step, name in enumerate(comparison.candidate_names):
            viewer.dims.set_current_step(0, step)
            assert f"position {step}: '{name}'" in compare.slider_note.full_text
        # switching the selected class re-shows the cached comparison: same layers, updated
        count = len(viewer.layers)
        compare.selected.setCurrentText(ALBA)
        assert compare.comparison.selected == ALBA and len(viewer.layers) == count
        assert compare_layers(viewer, "candidates − all") == differences
        assert all(f"◂ query {short_class_name(ALBA)} ·" in layer.name for layer in differences)
        alba_difference = compare.comparison.difference()
        for layer in differences:
            np.testing.assert_allclose(layer.data, alba_difference[layer.metadata["head"] - 1], atol=1e-7)
        # the zero mode of the paper: every query enters, the others zeroed
        compare.mode.setCurrentIndex(1)
        run_compare(qtbot, compare)
        assert compare.comparison.mode == "zero" and "zero" in compare.mode_note.full_text
        assert np.isclose(compare.comparison.candidates.probabilities.sum(), 1.0, atol=1e-5)
        assert calls == []  # neither comparisons nor class switches ran the backbone
    finally:
        handle.remove()
    explain(qtbot, explorer, rubra)
    assert compare.comparison is None  # a new explanation drops the old comparison


def test_presets_and_bad_input(widgets, qtbot, messages):
    viewer, explorer, compare = widgets
    from napari_intr.model.config import DECODE_MODES
    assert [compare.mode.itemData(i) for i in range(compare.mode.count())] == list(DECODE_MODES)
    compare.compare()  # nothing explained yet
    assert any(level == "warning" and "explain an image" in text for level, text in messages)
    explain(qtbot, explorer, f"{ALBA} (synthetic)")
    explanation = explorer.state.explanation
    compare.k.setValue(3)
    compare.tick_top_k()
    top3 = [explanation.class_names[column] for column in explanation.order()[:3]]
    assert set(compare.candidates.checked()) == set(top3)
    selected = explanation.class_names[explanation.order()[4]]
    compare.selected.setCurrentText(selected)
    compare.tick_most_confused()
    checked = compare.candidates.checked()
    assert len(checked) == 3 and selected in checked
    logits = dict(zip(explanation.class_names, explanation.logits))
    others = sorted((name for name in explanation.class_names if name != selected),
                    key=lambda name: abs(logits[name] - logits[selected]))
    assert set(checked) == {selected, *others[:2]}
    # the search narrows the list without unticking anything
    compare.candidates.filter.setText("heliconia")
    assert set(compare.candidates.visible_names()) == {RUBRA, ALBA}
    assert compare.candidates.checked() == checked
    # a single candidate: refused with a clear message, nothing decoded, still usable
    compare.candidates.set_checked([selected])
    compare.compare()
    assert any(level == "warning" and "comparison needs two" in text for level, text in messages)
    assert compare.comparison is None and not compare.task.busy
    # the selected class must be among the candidates
    compare.candidates.set_checked([RUBRA, ALBA])
    compare.selected.setCurrentText(selected)
    compare.compare()
    assert any("is not among the ticked candidates" in text for _, text in messages)
    compare.selected.setCurrentText(ALBA)
    run_compare(qtbot, compare)
    assert compare.comparison is not None and compare.comparison.selected == ALBA
    # selecting a class that was not compared says so and keeps the comparison shown
    compare.selected.setCurrentText(selected)
    assert compare.comparison.selected == ALBA and "was not compared" in compare.summary.full_text
