"""The demo: napari on a bundled specimen, the INTR Explorer docked, the bundled model's
explanation shown; or headless (a screenshot, the top classes printed). The Explorer is driven
from code: load, then explain, then wait. The `intr demo` command is intr_training/demo_cli.py."""
from __future__ import annotations

import warnings
from pathlib import Path

from qtpy.QtCore import QEventLoop, QTimer
from qtpy.QtWidgets import QApplication

DEFAULT_SAMPLE = "heliconia-alba"  # the spotted half of the look-alike pair
WINDOW_SIZE = (1500, 950)


def run_demo(image: str | None = None, screenshot: str | None = None, show: bool = True,
             timeout: float = 120.0) -> int:
    """Open the demo. Without `show`, or with `screenshot` (a PNG path), explain, print the top
    classes (and save the screenshot), then close."""
    headless = not show or screenshot
    reduced = _read_if_too_large(Path(image)) if image else None
    if screenshot:  # keep napari's Qt-binding notice out of the picture
        warnings.filterwarnings("ignore", message=".*PyQt5 backend is deprecated.*")
    import napari
    viewer = napari.Viewer(title="INTR demo", show=show)
    # The plugin comes after the viewer, as when napari loads it (see widgets/__init__.py).
    if reduced is not None:
        image_layer = add_reduced(viewer, Path(image), reduced)
    elif image:
        layers = viewer.open(image)
        image_layer = layers[0]
    else:
        viewer.open_sample("napari-intr", DEFAULT_SAMPLE)
        image_layer = viewer.layers[-1]
    _, explorer = viewer.window.add_plugin_dock_widget("napari-intr", "INTR Explorer")
    explorer.explain_box.image.choose(image_layer.name)
    if not headless:
        explain_when_ready(explorer)
        viewer.window.resize(*WINDOW_SIZE)
        napari.run()
        return 0
    try:
        explanation = wait_for_explanation(explorer, timeout)
        if explanation is None:
            raise RuntimeError(explorer.explain_box.task.status.text()
                               or explorer.model_source.task.status.text()
                               or f"no explanation within {timeout:.0f} s")
        for entry in explanation.table()[:3]:
            print(f"{entry['rank']}. {entry['name']}  p = {entry['probability']:.3f}")
        if screenshot:
            viewer.window.resize(*WINDOW_SIZE)
            viewer.reset_view()
            target = Path(screenshot)
            target.parent.mkdir(parents=True, exist_ok=True)
            viewer.screenshot(str(target), canvas_only=False)
            print(f"screenshot: {target}")
    finally:
        viewer.close()
    return 0


def _read_if_too_large(path: Path):
    """None for an image napari can open whole; its reduced read (napari_intr.large_images) for
    one too large to decode whole; FileNotFoundError/ValueError naming the file otherwise (napari's
    readers would blame a missing plugin for a damaged file)."""
    from ...image_files import TooLargeError, check_decodable, read_header
    from ...large_images import read_within_budget
    if not path.is_file():
        raise FileNotFoundError(f"no image at {path}")
    try:
        check_decodable(path, read_header(path))
        return None
    except TooLargeError:
        return read_within_budget(path, allow_mapped=False)  # napari would read a memory map whole


def add_reduced(viewer, path: Path, read):
    """The reduced image as a layer on the file's pixel grid (each pixel the mean of k×k), named
    and announced as reduced, so that nobody mistakes it for the file's resolution."""
    from ...preprocess import is_colour  # after the viewer: it imports torch
    from ..workers import messages
    factor = read.factor
    name = f"{path.stem} (read reduced {factor}×)" if factor > 1 else path.stem
    layer = viewer.add_image(read.pixels, name=name, scale=(factor, factor),
                             translate=((factor - 1) / 2, (factor - 1) / 2),
                             rgb=is_colour(read.pixels))
    if read.note:
        print(f"note: {read.note}")
        messages.notify(f"{read.note}; the layer shows it reduced", "warning")
    return layer


def explain_when_ready(explorer) -> None:
    """Explain the chosen image as soon as a model is loaded (now, if one is)."""
    state = explorer.state
    if state.model is not None:
        explorer.explain()
        return

    def on_model(model):
        if model is not None:
            state.events.model.disconnect(on_model)
            explorer.explain()

    state.events.model.connect(on_model)


def wait_for_explanation(explorer, timeout_s: float):
    """Run the Qt event loop until loading and explaining are over (shown, failed or timed out)."""
    loop = QEventLoop()

    def check(*_):
        if not explorer.model_source.task.busy and not explorer.explain_box.task.busy:
            loop.quit()

    explorer.model_source.task.busy_changed.connect(check)
    explorer.explain_box.task.busy_changed.connect(check)
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    explain_when_ready(explorer)
    if explorer.model_source.task.busy or explorer.explain_box.task.busy:
        loop.exec_()
    QApplication.processEvents()  # let the boxes lay out their final text
    return explorer.state.explanation
