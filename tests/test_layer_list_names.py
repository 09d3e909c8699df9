"""Map layers stay apart in napari's layer list as it is drawn at the desk (1550×980, all five docks
open): the list's delegate elides names in the middle to the width it has, so the test reads the
text as the delegate draws it, not the layer's name. Each map must show which image, whose query,
which decoder layer and which head, and no two maps may read the same, for the look-alike pair's
queries (alba, rubra) on the pair's images (alba, rubra), and the Compare dock's maps of one
query with all classes, with the candidates only, and their difference, and the Edit dock's
after − before maps.

As in real use the viewer exists before torch: model code is imported inside the test."""
import re

from qtpy.QtWidgets import QApplication

from desk_support import TIMEOUT_MS, WINDOW, open_desk

PAIR = ("Heliconia synthetica-alba", "Heliconia synthetica-rubra")


def distinguishing_word(name: str) -> str:
    """'alba' for 'Heliconia synthetica-alba' and 'Heliconia synthetica-alba (synthetic)'."""
    return next(word for word in ("alba", "rubra") if word in name)


def map_rows(viewer, view, key: str):
    """(list text, metadata, image part, query part, what) of every layer-list row whose layer's
    metadata has `key`; the text split at the " ◂ query " marker (asserted present)."""
    from napari_intr.widgets.qt_helpers import layer_list_text
    for row in range(view.model().rowCount()):
        name, text = layer_list_text(view, row)
        metadata = viewer.layers[name].metadata
        if key not in metadata:
            continue
        what = f"{text!r} (of {name!r})"
        image_part, marker, query_part = text.partition(" ◂ query ")
        assert marker, f"the list shows {what}: the query marker is cut off"
        yield text, metadata, image_part, query_part, what


def test_image_tags_keep_the_part_that_differs():
    from napari_intr.explanation import image_tags
    assert image_tags([f"{PAIR[0]} (synthetic)", f"{PAIR[1]} (synthetic)"]) == {
        f"{PAIR[0]} (synthetic)": "alba", f"{PAIR[1]} (synthetic)": "rubra"}
    stems = ["heliconia-synthetica-alba_0004", "heliconia-synthetica-alba_0005", "heliconia-synthetica-rubra_0002"]
    assert list(image_tags(stems).values()) == ["alba_0004", "alba_0005", "rubra_0002"]
    # an unrelated image keeps its name and does not lengthen the others'
    assert image_tags([*stems, "drawer"])["heliconia-synthetica-rubra_0002"] == "rubra_0002"
    assert image_tags([*stems, "drawer"])["drawer"] == "drawer"
    # an edited copy: the original's part and what was added
    edited = image_tags([f"{PAIR[0]} (synthetic)", f"{PAIR[1]} (synthetic)", f"{PAIR[1]} (synthetic) (edited)"])
    assert edited[f"{PAIR[1]} (synthetic) (edited)"] == "rubra (edited)"
    # alone, or only extended by another ("x", "x copy"), or the same words: the whole name
    assert image_tags(["IMG_1"]) == {"IMG_1": "IMG_1"}
    assert image_tags(["x", "x copy"]) == {"x": "x", "x copy": "x copy"}
    assert image_tags(["a b", "a-b"]) == {"a b": "a b", "a-b": "a-b"}


def test_map_layers_of_look_alikes_read_apart_in_the_layer_list(make_napari_viewer, qtbot):
    viewer, widgets = open_desk(make_napari_viewer, qtbot)
    window = viewer.window._qt_window
    explorer = widgets["INTR Explorer"]
    view = viewer.window._qt_viewer.layers
    shown: dict[tuple, str] = {}  # (image, query, decoder layer, head) -> the list's text
    for image in PAIR:
        explorer.explain_box.image.choose(f"{image} (synthetic)")
        explorer.explain()
        qtbot.waitUntil(lambda image=image: explorer.state.explanation is not None
                        and explorer.state.source.name == f"{image} (synthetic)"
                        and not explorer.explain_box.task.busy, timeout=TIMEOUT_MS)
        for query in PAIR:
            explorer.results.select_class(query)
            qtbot.waitUntil(lambda image=image, query=query: any(
                layer.metadata.get("image") == f"{image} (synthetic)" and layer.metadata.get("class") == query
                for layer in viewer.layers), timeout=TIMEOUT_MS)
            QApplication.processEvents()
            assert window.width() <= WINDOW[0] + 1
            for text, metadata, image_part, query_part, what in map_rows(viewer, view, "class"):  # not the specimens
                head = metadata["head"]
                key = (metadata["image"], metadata["class"], metadata["decoder_layer"], head)
                assert distinguishing_word(metadata["image"]) in image_part, f"{what} does not say which image"
                assert distinguishing_word(metadata["class"]) in query_part, f"{what} does not say whose query"
                suffix = f"L{metadata['decoder_layer']} {'mean' if head == 'mean' else f'H{head}'}"
                assert re.search(rf"· {suffix}$", query_part), f"{what} does not end in '· {suffix}'"
                shown[key] = text
    assert {(image, query) for image, query, *_ in shown} == {(i, q) for i in (f"{p} (synthetic)" for p in PAIR)
                                                             for q in PAIR}
    repeated = {text for text in shown.values() if list(shown.values()).count(text) > 1}
    assert not repeated, f"maps of different images, queries or heads read the same: {sorted(repeated)}"
    # the full names are kept with each layer
    assert all(len(key[0]) > len(text.partition(" ◂ ")[0]) for key, text in shown.items())

    # Compare on the image explained last (rubra), alba's query: which decode each map shows
    compare = widgets["INTR Compare"]
    compare.selected.setCurrentText(PAIR[0])
    compare.k.setValue(2)
    compare.tick_most_confused()
    compare.compare()
    qtbot.waitUntil(lambda: not compare.task.busy and compare.comparison is not None, timeout=TIMEOUT_MS)
    QApplication.processEvents()
    compared = {}
    for text, metadata, image_part, query_part, what in map_rows(viewer, view, "decoded"):
        assert distinguishing_word(metadata["image"]) in image_part, what
        assert distinguishing_word(metadata["selected"]) in query_part, what
        assert f" · L{metadata['decoder_layer']} H{metadata['head']} · " in query_part, what
        assert query_part.endswith(f" · {metadata['decoded']}"), what
        compared[(metadata["head"], metadata["decoded"])] = text
    assert len(compared) == 3 * len({head for head, _ in compared}) >= 3
    assert len(set(compared.values())) == len(compared)

    # Edit: alba's spot region transplanted onto rubra; the effect's maps name the edited image
    edit = widgets["INTR Edit"]
    edit.image.choose(f"{PAIR[1]} (synthetic)")
    edit.start()
    region = edit.region_layer.data.copy()
    region[20:50, 20:50] = 1
    edit.region_layer.data = region
    edit.options.operation.value = "transplant"
    edit.options.source.choose(f"{PAIR[0]} (synthetic)")
    edit.apply()
    qtbot.waitUntil(lambda: not edit.task.busy and edit.report.effect is not None, timeout=TIMEOUT_MS)
    QApplication.processEvents()
    effects = []
    for text, metadata, image_part, query_part, what in map_rows(viewer, view, "difference"):
        assert "rubra" in image_part, what
        assert distinguishing_word(metadata["class"]) in query_part, what
        assert query_part.endswith(f" · L{metadata['decoder_layer']} H{metadata['head']} · after − before"), what
        effects.append(text)
    assert effects and len(set(effects)) == len(effects)
