"""The "INTR Traits" dock widget: a trait atlas of a whole collection (what each head of each
class's query looks for; which heads tell look-alikes apart), built in the background and browsed
as napari layers. A clicked patch opens its specimen in the Explorer, with that class, decoder
layer and head shown."""
from __future__ import annotations

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QWidget

from napari_intr.explanation import layer_name

from ..gui_turns import turns
from ..model_source import ModelSourceBox
from ..qt_helpers import scroll_column, tabbed_dock
from ..state import follow, shared_state
from ..workers import messages
from .browse import AtlasBrowser, PatchChoice
from .run import AtlasRunBox

EXPLORER = ("napari-intr", "INTR Explorer")


class TraitsWidget(QWidget):
    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        tabbed_dock(self)
        self.viewer = napari_viewer
        self.state = state = shared_state(napari_viewer)
        self.model_source = ModelSourceBox(state)  # the Explorer's model: loading here loads it there
        self.run_box = AtlasRunBox(state)
        self.browser = AtlasBrowser(napari_viewer)
        self.run_box.atlas_ready.connect(self.browser.load)
        self.browser.patch_chosen.connect(self.open_in_explorer)
        self.explorer = None
        self._pending: tuple[PatchChoice, str] | None = None  # (choice, its image layer's name)
        follow(state.events.explanation, self._explained, self)
        scroll_column(self, (self.model_source, self.run_box, self.browser))

    def open_in_explorer(self, choice: PatchChoice) -> None:
        """Add the specimen as an image layer, explain it in the Explorer, then show the patch's
        class, decoder layer and head there."""
        from napari_intr.image_files import read_image
        layer = next((layer for layer in self.viewer.layers if layer.metadata.get("source_path") == str(choice.path)),
                     None)
        if layer is None:  # read only a specimen not open yet (a second click on it reuses its layer)
            try:
                image = read_image(choice.path)
            except (OSError, ValueError) as error:
                messages.notify(f"Cannot open {choice.path.name}: {error}", "warning")
                return
            layer = self.viewer.add_image(image, name=choice.path.stem, translate=self.browser.beside_gallery(),
                                          metadata={"source_path": str(choice.path)})
        if self.state.model is None:
            messages.notify("Load a model first (Model box): the Explorer explains with it", "warning")
            return
        _, self.explorer = self.viewer.window.add_plugin_dock_widget(*EXPLORER)
        self.viewer.layers.selection.active = layer  # the Explorer's image box follows the active layer
        self._pending = (choice, layer.name)
        self.explorer.explain()

    def _explained(self, explanation) -> None:
        # After the Explorer's own listeners (it was docked after us): its table holds the classes;
        # and after the new image's layers, added one per turn (gui_turns), are all in.
        QTimer.singleShot(0, lambda: turns().after_steps(lambda: self._show_choice(explanation)))

    def _show_choice(self, explanation) -> None:
        source = self.state.source
        if self._pending is None or explanation is None or source is None:
            return  # cleared (e.g. a new model), or not ours
        (choice, image_name), self._pending = self._pending, None
        if source.name != image_name or explanation is not self.state.explanation:
            return  # the user explained another image meanwhile
        explorer = self.explorer
        if choice.class_name not in explanation.class_names:
            messages.notify(f"'{choice.class_name}' is not among the decoded classes", "warning")
            return
        explorer.results.select_class(choice.class_name)
        explorer.attention.decoder_layer.value = choice.layer  # another layer is decoded on a worker first
        explorer.attention.after_shown(lambda: self._show_head(choice, source))

    def _show_head(self, choice: PatchChoice, source) -> None:
        head_layer = layer_name(source.label, choice.class_name, choice.layer, choice.head)
        for layer in self.viewer.layers:
            if layer.metadata.get("image") == source.name and layer.metadata.get("head") not in (None, "mean"):
                layer.visible = layer.name == head_layer
        messages.notify(f"{choice.path.name}: {choice.class_name}, decoder layer {choice.layer}, "
                        f"head {choice.head} shown in the Explorer")
