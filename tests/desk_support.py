"""The desk as the tutorial sets it up (tests/test_desk.py, tests/test_layer_list_names.py): a
1550×980 window on the look-alike pair with all five docks open and the bundled model loaded.
Model code is imported only after the viewer exists, as in real use."""
TIMEOUT_MS = 60_000
WINDOW = (1550, 980)
DOCKS = ("INTR Explorer", "INTR Compare", "INTR Edit", "INTR Fine-tune", "INTR Traits")


def open_desk(make_napari_viewer, qtbot):
    """(viewer, {dock name: widget}) once the Explorer has loaded the bundled model."""
    viewer = make_napari_viewer()
    window = viewer.window._qt_window
    window.resize(*WINDOW)
    window.show()
    viewer.open_sample("napari-intr", "look-alike-pair")
    import torch
    torch.set_num_threads(1)
    from napari_intr.widgets.state import shared_state
    shared_state(viewer).model = None
    widgets = {name: viewer.window.add_plugin_dock_widget("napari-intr", name)[1] for name in DOCKS}
    explorer = widgets["INTR Explorer"]
    qtbot.waitUntil(lambda: explorer.state.model is not None and not explorer.model_source.task.busy,
                    timeout=TIMEOUT_MS)
    return viewer, widgets
