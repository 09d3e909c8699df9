"""The screenshots of docs/tutorial.md, taken in a real napari window, one per tutorial step,
with the dock of that step in view. Run it again whenever the GUI changes.

    xvfb-run -a -s "-screen 0 1600x1100x24" python docs/make_screenshots.py     # Linux, no display
    python docs/make_screenshots.py --steps explain,tray                          # some steps only

It drives the docks as a user would (the same calls their buttons make), with the bundled model
and specimens, and small synthetic collections it draws itself (`--work`, a temporary folder by
default); it takes a few minutes on a laptop CPU, mostly the fine-tuning step. Each step writes
docs/screenshots/tutorial/NN-<step>.png and fails loudly if its dock did not finish.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "screenshots" / "tutorial"
WINDOW = (1550, 980)  # the window of the issue that reviewed the tutorial (#23)
RUBRA, ALBA = "Heliconia synthetica-rubra", "Heliconia synthetica-alba"
RUBRA_LAYER, ALBA_LAYER = f"{RUBRA} (synthetic)", f"{ALBA} (synthetic)"
# the drawer photo: four bundled specimens (160 px) at these (row, column) places
DRAWER = {"heliconia-synthetica-alba": (20, 30), "heliconia-synthetica-rubra": (24, 236),
          "pseudotigris-artefacta-flava": (212, 18), "papilionella-simulata-coccinea": (230, 250)}
TIMEOUT_S = 600


def wait_until(condition, what: str, timeout: float = TIMEOUT_S) -> None:
    """Run the Qt event loop until `condition()` holds; a step that hangs fails with its name."""
    from qtpy.QtWidgets import QApplication
    deadline = time.monotonic() + timeout
    while not condition():
        QApplication.processEvents()
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)
    QApplication.processEvents()


class Tutorial:
    """One napari window; each step docks its widget, does the step, and takes the picture."""

    def __init__(self, viewer, work: Path, out: Path = OUT):
        self.viewer, self.work, self.out = viewer, work, out
        self.docks: dict[str, tuple] = {}  # display name -> (QDockWidget, widget)

    def dock(self, name: str):
        """Bring the dock `name` to the front (adding it the first time): the docks are tabs of one
        dock area, as a user who opened them all sees them."""
        if name not in self.docks:
            self.docks[name] = self.viewer.window.add_plugin_dock_widget("napari-intr", name)
        wait_until(lambda: True, "the dock to join the tabs")
        dock_widget = self.docks[name][0]
        dock_widget.show()
        dock_widget.raise_()
        return self.docks[name][1]

    def shoot(self, filename: str, show=None) -> Path:
        """The whole window (canvas, layer list and the dock), the visible layers filling the canvas;
        `show`: a part of the dock to scroll into view."""
        self.viewer.window.resize(*WINDOW)
        wait_until(lambda: True, "the window to lay out")
        scroll = show
        while scroll is not None and scroll.__class__.__name__ != "QScrollArea":
            scroll = scroll.parent()
        if scroll is not None:
            scroll.ensureWidgetVisible(show, 0, 0)
        _close_notifications(self.viewer)
        self.viewer.reset_view()
        _fit_visible_layers(self.viewer)
        wait_until(lambda: True, "the canvas to redraw")
        target = self.out / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        self.viewer.screenshot(str(target), canvas_only=False)
        print(f"screenshot: {target}")
        return target

    def explorer(self):
        explorer = self.dock("INTR Explorer")
        wait_until(lambda: explorer.state.model is not None and not explorer.model_source.task.busy,
                   "the bundled model to load")
        return explorer

    # --- the steps, in the tutorial's order ---

    def explain(self) -> None:
        """1. Explain one specimen: the Explorer's table and one attention layer per head."""
        if ALBA_LAYER not in self.viewer.layers:
            self.viewer.open_sample("napari-intr", "look-alike-pair")
        explorer = self.explorer()
        explorer.explain_box.image.choose(ALBA_LAYER)
        explorer.explain()
        wait_until(lambda: not explorer.explain_box.task.busy and explorer.state.explanation is not None,
                   "the explanation")
        self.shoot("01-explorer.png")

    def compare(self) -> None:
        """2. Why not the mimic? Only the look-alike pair's queries decode."""
        compare = self.dock("INTR Compare")
        compare.selected.setCurrentText(ALBA)  # as the tutorial says: alba selected, Most confused
        compare.k.setValue(2)
        compare.tick_most_confused()
        ticked = compare.candidates.checked()
        if sorted(ticked) != sorted([RUBRA, ALBA]):
            raise RuntimeError(f"Most confused with {ALBA} selected ticked {ticked}, not the look-alike pair "
                               "the tutorial promises: change docs/tutorial.md step 2")
        compare.selected.setCurrentText(RUBRA)
        compare.compare()
        wait_until(lambda: not compare.task.busy and compare.comparison is not None, "the comparison")
        self.shoot("02-compare.png", show=compare.summary)

    def edit(self) -> None:
        """3. Paint an attribute: alba's white forewing spot transplanted onto rubra."""
        from scipy.ndimage import binary_dilation

        from napari_intr import synth
        self.explorer()
        edit = self.dock("INTR Edit")
        edit.image.choose(RUBRA_LAYER)
        edit.start()
        pose = synth.sample_pose(np.random.default_rng((20240501, 1)), 160)  # the pair's shared pose
        _, attribute = synth.render(ALBA, pose, 160)
        edit.options.operation.value = "transplant"
        edit.options.source.choose(ALBA_LAYER)
        edit.region_layer.data = binary_dilation(attribute, iterations=3).astype(np.uint8)
        edit.apply()
        wait_until(lambda: not edit.task.busy and edit.edits.count() >= 1, "the edit")
        self.shoot("03-edit.png", show=edit.report)

    def finetune(self) -> None:
        """4. Fine-tune on a new collection (a small synthetic one: 4 images per species, 64 px)."""
        from napari_intr.synth import write_collection
        collection = self.work / "new-collection"
        if not collection.exists():
            write_collection(collection, per_class=4, size=64, seed=5)
        finetune = self.dock("INTR Fine-tune")
        finetune.collection.folder.path = str(collection)
        settings = finetune.settings
        settings.epochs.value = 3
        settings.batch_size.value = 8
        settings.image_size.value = 64
        settings.device.value = "cpu"
        settings.out.path = str(self.work / f"finetune-run-{time.strftime('%H%M%S')}")
        finetune.start()
        wait_until(lambda: finetune.running, "fine-tuning to start")
        wait_until(lambda: not finetune.running, "fine-tuning to finish")
        self.shoot("04-finetune.png", show=finetune.plot)  # the caption promises the curves

    def traits(self) -> None:
        """5. Read the trait atlas: which head looks where, per species and per look-alike pair."""
        from napari_intr import synth
        collection = self.work / "atlas-collection"
        if not collection.exists():
            synth.write_collection(collection, per_class=3, size=96, seed=3)
        traits = self.dock("INTR Traits")
        wait_until(lambda: traits.state.model is not None, "a model for the atlas")
        traits.run_box.data.path = str(collection)
        traits.run_box.out.path = str(self.work / f"atlas-{time.strftime('%H%M%S')}")
        traits.run_box.pairs.value = f"{synth.SHOWCASE_PAIR[1]}:{synth.SHOWCASE_PAIR[0]}"
        traits.run_box.run()
        wait_until(lambda: not traits.run_box.task.busy, "the atlas")
        if traits.browser.pair_choice.count():
            traits.browser.pair_choice.setCurrentIndex(0)
            traits.browser.show_pair()
        self.shoot("05-traits.png", show=traits.browser)

    def tray(self) -> None:
        """6. A drawer photo: rectangles choose the specimens, each is explained on its own."""
        from napari_intr.image_files import read_image
        from napari_intr.loading import sample_data_dir
        explorer = self.explorer()
        for layer in list(self.viewer.layers):
            layer.visible = False
        photo = np.full((420, 440, 3), (205, 196, 176), np.uint8)
        rectangles = []
        for stem, (row, column) in DRAWER.items():
            photo[row: row + 160, column: column + 160] = read_image(
                sample_data_dir() / "specimens" / f"{stem}.png")[..., :3]
            rectangles.append(np.array([[row, column], [row, column + 159], [row + 159, column + 159],
                                        [row + 159, column]], float))
        self.viewer.add_image(photo, name="drawer", rgb=True)
        self.viewer.add_shapes(rectangles, shape_type="rectangle", name="specimens", edge_width=2,
                               edge_color="white", face_color="transparent", visible=False)
        explorer.explain_box.image.choose("drawer")
        explorer.regions.regions_layer.choose("specimens")
        explorer.regions.margin.setCurrentText("0")
        explorer.regions.explain_regions()
        wait_until(lambda: not explorer.regions.task.busy and explorer.regions.results, "the regions")
        self.shoot("06-tray.png", show=explorer.regions.summary)


def _fit_visible_layers(viewer) -> None:
    """After reset_view (which fits every layer, hidden ones too: the atlas montage of step 5 is
    large), zoom onto the shown layers. The zoom grows by the smaller of the two extent ratios, so
    the shown layers still fit along both axes."""
    def extent(layers):
        corners = np.array([np.asarray(layer.extent.world)[:, -2:] for layer in layers])
        return corners[:, 0].min(axis=0), corners[:, 1].max(axis=0)
    visible = [layer for layer in viewer.layers if layer.visible]
    if not visible:
        return
    (all_low, all_high), (low, high) = extent(viewer.layers), extent(visible)
    viewer.camera.zoom *= float(np.min((all_high - all_low) / np.maximum(high - low, 1e-9)))
    center = list(viewer.camera.center)
    center[-2:] = (low + high) / 2
    viewer.camera.center = tuple(center)


def _close_notifications(viewer) -> None:
    """Close napari's pop-up notifications, which would cover part of the picture."""
    try:
        from napari._qt.dialogs.qt_notification import NapariQtNotification
    except ImportError:  # another napari: the pictures keep their pop-ups
        return
    for popup in viewer.window._qt_window.findChildren(NapariQtNotification):
        popup.close()


STEPS = ("explain", "compare", "edit", "finetune", "traits", "tray")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, from {', '.join(STEPS)}")
    parser.add_argument("--work", help="folder for the generated collections and runs (default: temporary)")
    parser.add_argument("--out", default=str(OUT), help=f"folder for the pictures (default: {OUT})")
    args = parser.parse_args(argv)
    steps = [step.strip() for step in args.steps.split(",") if step.strip()]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        parser.error(f"unknown step(s) {', '.join(unknown)}; choose from {', '.join(STEPS)}")
    import napari
    viewer = napari.Viewer(title="napari-intr tutorial")  # before torch, as napari loads the plugin
    viewer.window.resize(*WINDOW)  # from the start, as the user's window: the docks lay out in it
    import torch
    torch.set_num_threads(max(1, (torch.get_num_threads() or 2) - 1))
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.work) if args.work else Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        tutorial = Tutorial(viewer, work, Path(args.out))
        try:
            for step in STEPS:  # in the tutorial's order: later steps use earlier results
                if step in steps:
                    getattr(tutorial, step)()
                elif step == "explain" and {"compare", "edit"} & set(steps):
                    tutorial.explain()  # what Compare and Edit start from
        finally:
            for _, widget in tutorial.docks.values():
                if hasattr(widget, "stop_and_wait"):
                    widget.stop_and_wait()
            viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
