"""The plugin with a 10 000-class model: a class-names file of 10 000 lines, the Explorer's
shortlist (preset for big models), the results table and its filter, the Compare dock's candidate
search. The viewer exists before torch-using plugin code is imported, as in real use."""
import numpy as np

TIMEOUT_MS = 120_000
CLASSES = 10_000


def write_big_checkpoint(folder):
    """A 10 000-class tiny model on disk, and a class-names file of 10 000 lines for it.
    Called after the viewer exists: torch loads after napari's OpenGL, as in real use."""
    import torch

    from napari_intr.checkpoints import save_model
    from napari_intr.model import IntrConfig, build_model
    torch.manual_seed(0)
    model = build_model(IntrConfig.tiny(CLASSES, shortlist_head=True))
    path = save_model(model, folder / "big.safetensors")
    names = folder / "names.txt"
    names.write_text("".join(f"Genus{i // 50:03d} species-{i:05d}\n" for i in range(CLASSES)), encoding="utf-8")
    return path, names


def test_explorer_and_compare_with_10000_classes(make_napari_viewer, qtbot, messages, tmp_path):
    viewer = make_napari_viewer()
    path, names_file = write_big_checkpoint(tmp_path)
    rng = np.random.default_rng(0)
    viewer.add_image(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8), name="specimen", rgb=True)
    from napari_intr.widgets.model_source import CHECKPOINT_FILE
    from napari_intr.widgets.state import shared_state
    shared_state(viewer).model = None
    _, explorer = viewer.window.add_plugin_dock_widget("napari-intr", "INTR Explorer")
    _, compare = viewer.window.add_plugin_dock_widget("napari-intr", "INTR Compare")
    box = explorer.model_source
    qtbot.waitUntil(lambda: explorer.state.model is not None and not box.task.busy, timeout=TIMEOUT_MS)
    box.picker.source.setCurrentIndex(box.picker.source.findData(CHECKPOINT_FILE))
    box.picker.checkpoint.path = str(path)
    box.class_names.path = str(names_file)
    box.load()
    qtbot.waitUntil(lambda: not box.task.busy, timeout=TIMEOUT_MS)
    model = explorer.state.model
    assert len(model.class_names) == CLASSES and model.class_names[-1] == "Genus199 species-09999"

    # a big model starts with a shortlist
    assert explorer.explain_box.shortlist.value() == 64
    explorer.explain_box.shortlist.setValue(20)
    explorer.explain()
    qtbot.waitUntil(lambda: not explorer.explain_box.task.busy, timeout=TIMEOUT_MS)
    explanation = explorer.state.explanation
    assert explanation is not None and len(explanation.class_names) == 20 and explanation.candidates == CLASSES
    results = explorer.results
    assert len(results.rows()) == 20
    assert results.not_decoded.isVisibleTo(results) and "9,980 were not" in results.not_decoded.text()
    assert results.selected_class() == explanation.top_class()
    some = explanation.class_names[3]
    results.filter.setText(some.split()[1].upper())  # case-insensitive
    assert results.visible_classes() == [some]
    results.filter.setText("")
    results.select_class(some)
    assert results.selected_class() == some and "rank" in results.answer.text()

    # Compare: every one of the 10 000 classes is a candidate, searchable
    candidates = compare.candidates
    assert len(candidates.names()) == CLASSES
    candidates.filter.setText("genus007 ")
    assert candidates.visible_names() == [f"Genus007 species-{i:05d}" for i in range(350, 400)]
    candidates.set_checked(["Genus007 species-00351", "Genus199 species-09999"])
    assert candidates.checked() == ["Genus007 species-00351", "Genus199 species-09999"]
    candidates.filter.setText("")
    assert len(candidates.visible_names()) == CLASSES

    # "all classes" decodes every one of them (no shortlist)
    explorer.explain_box.shortlist.setValue(0)
    assert explorer.explain_box.shortlist.text() == "all classes"


def test_a_small_model_decodes_every_class_by_default(make_napari_viewer, qtbot, messages):
    viewer = make_napari_viewer()
    from napari_intr.widgets.state import shared_state
    shared_state(viewer).model = None
    _, explorer = viewer.window.add_plugin_dock_widget("napari-intr", "INTR Explorer")
    qtbot.waitUntil(lambda: explorer.state.model is not None and not explorer.model_source.task.busy,
                    timeout=TIMEOUT_MS)
    assert explorer.explain_box.shortlist.value() == 0
    explorer.results.show_explanation(None)
    assert not explorer.results.not_decoded.isVisibleTo(explorer.results)
