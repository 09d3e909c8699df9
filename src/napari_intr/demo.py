"""`intr demo`: napari on a bundled specimen, the INTR Explorer docked, the bundled model's
explanation shown. `--screenshot PATH` / `--no-show` run it headless and exit."""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path

DEFAULT_SAMPLE = "heliconia-alba"  # the spotted half of the look-alike pair
WINDOW_SIZE = (1500, 950)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", metavar="PATH",
                        help="image file to explain instead of the bundled specimen")
    parser.add_argument("--screenshot", metavar="PATH",
                        help="save a PNG of the window once the attention layers are shown, then exit")
    parser.add_argument("--no-show", action="store_true",
                        help="do not show the window: explain, print the top classes and exit")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for the model and the explanation (default 120)")


def run(args: argparse.Namespace) -> int:
    headless = args.no_show or args.screenshot
    if args.image and not Path(args.image).is_file():
        raise FileNotFoundError(f"no image at {args.image}")
    if args.screenshot:  # keep napari's Qt-binding notice out of the picture
        warnings.filterwarnings("ignore", message=".*PyQt5 backend is deprecated.*")
    import napari
    viewer = napari.Viewer(title="INTR demo", show=not args.no_show)
    # The plugin comes after the viewer, as when napari loads it (see widgets/__init__.py).
    from napari_intr.widgets.demo_driver import explain_when_ready, wait_for_explanation
    if args.image:
        layers = viewer.open(args.image)
        image_layer = layers[0]
    else:
        viewer.open_sample("napari-intr", DEFAULT_SAMPLE)
        image_layer = viewer.layers[-1]
    _, explorer = viewer.window.add_plugin_dock_widget("napari-intr", "INTR Explorer")
    explorer.explain_panel.image.setCurrentText(image_layer.name)
    if not headless:
        explain_when_ready(explorer)
        viewer.window.resize(*WINDOW_SIZE)
        napari.run()
        return 0
    try:
        explanation = wait_for_explanation(explorer, args.timeout)
        if explanation is None:
            raise RuntimeError(explorer.explain_panel.task.status.text()
                               or explorer.model_picker.task.status.text()
                               or f"no explanation within {args.timeout:.0f} s")
        for entry in explanation.table()[:3]:
            print(f"{entry['rank']}. {entry['name']}  p = {entry['probability']:.3f}")
        if args.screenshot:
            viewer.window.resize(*WINDOW_SIZE)
            viewer.reset_view()
            target = Path(args.screenshot)
            target.parent.mkdir(parents=True, exist_ok=True)
            viewer.screenshot(str(target), canvas_only=False)
            print(f"screenshot: {target}")
    finally:
        viewer.close()
    return 0
