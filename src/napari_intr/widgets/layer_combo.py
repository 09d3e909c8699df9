"""A combo box of the viewer's image layers (not our attention maps) or labels layers, kept
current as layers are added, removed, moved or renamed."""
from __future__ import annotations

from qtpy.QtWidgets import QComboBox

from .layer_set import ATTENTION_TAG


def is_image(layer) -> bool:
    # napari hands plugins proxy layers: compare class names, not types
    return layer.__class__.__name__ == "Image" and ATTENTION_TAG not in layer.metadata


def is_labels(layer) -> bool:
    return layer.__class__.__name__ == "Labels"


class LayerCombo(QComboBox):
    def __init__(self, viewer, accept=is_image, parent=None):
        super().__init__(parent)
        self.viewer, self._accept = viewer, accept
        self.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(12)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed,
                      viewer.layers.events.moved):
            event.connect(self.refresh)
        self.destroyed.connect(lambda *_: self._disconnect(viewer))
        self.refresh()

    def layer(self):
        name = self.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def choose(self, name: str) -> None:
        self.refresh()
        if self.findText(name) < 0:
            raise ValueError(f"no layer named {name!r} to choose here")
        self.setCurrentText(name)

    def refresh(self, *_) -> None:
        current = self.currentText()
        names = [layer.name for layer in self.viewer.layers if self._accept(layer)]
        self.blockSignals(True)
        self.clear()
        self.addItems(names)
        if current in names:
            self.setCurrentText(current)
        self.blockSignals(False)
        for layer in self.viewer.layers:
            layer.events.name.connect(self.refresh)  # connecting twice is harmless in psygnal

    def _disconnect(self, viewer) -> None:
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed,
                      viewer.layers.events.moved):
            event.disconnect(self.refresh)
        for layer in viewer.layers:
            layer.events.name.disconnect(self.refresh)
