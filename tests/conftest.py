"""Fixtures shared by the napari tests. Nothing here imports torch or the model at module
level: as in real use, the viewer exists before the plugin imports torch."""
import pytest

MODEL_TIMEOUT_MS = 30_000


@pytest.fixture
def messages(monkeypatch):
    """Every notification the plugin shows, as (level, text)."""
    from napari.utils import notifications
    shown = []
    for level in ("info", "warning", "error"):
        monkeypatch.setattr(notifications, f"show_{level}",
                            lambda text, level=level: shown.append((level, str(text))))
    return shown


@pytest.fixture
def pair_with_explorer(make_napari_viewer, qtbot, messages):
    """A viewer with the bundled look-alike pair and the Explorer, which loads the bundled model."""
    viewer = make_napari_viewer()
    viewer.open_sample("napari-intr", "look-alike-pair")
    import torch
    torch.set_num_threads(1)
    from napari_intr.widgets.state import shared_state
    shared_state(viewer).model = None
    _, explorer = viewer.window.add_plugin_dock_widget("napari-intr", "INTR Explorer")
    qtbot.waitUntil(lambda: explorer.state.model is not None and not explorer.model_source.task.busy,
                    timeout=MODEL_TIMEOUT_MS)
    return viewer, explorer


@pytest.fixture(scope="module")
def sample_model():
    """The bundled model, loaded once per test module (imported here, after any viewer exists)."""
    from napari_intr.loading import load_model
    return load_model("sample", device="cpu")
