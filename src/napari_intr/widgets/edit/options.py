"""The Edit widget's operation and its settings: recolour (a chosen colour, or one sampled with
a click on any image layer), erase, blur, transplant (from another image layer, with an offset).
`make_edit` turns the settings into a `napari_intr.editing` edit or says what is wrong."""
from __future__ import annotations

import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSpinBox, SpinBox
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QColorDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QStackedWidget,
    QWidget,
)

from napari_intr.editing import Blur, Erase, Recolour, Transplant, check_image, sample_colour

from ..layers import LayerPicker
from ..qt_helpers import stack
from ..workers import messages

OPERATIONS = ("recolour", "erase", "blur", "transplant")


def plain_image(layer) -> np.ndarray:
    """The 2-D grey or RGB(A) pixels of an image layer, or a ValueError saying why not."""
    if layer.multiscale:
        raise ValueError(f"'{layer.name}' is multiscale; edit a single-resolution 2-D image")
    data = np.asarray(layer.data)
    if layer.ndim != 2:  # napari's ndim leaves out an RGB(A) layer's channels
        raise ValueError(f"'{layer.name}' has shape {data.shape}; edit a 2-D grey or RGB(A) image "
                         "(split a stack first: right-click the layer ▸ Split Stack)")
    return check_image(data)


class EditOptions(QWidget):
    def __init__(self, viewer, parent=None):
        super().__init__(parent)
        self.viewer = viewer
        self.operation = ComboBox(label="Operation", choices=OPERATIONS)
        self.colour: tuple[float, float, float] = (1.0, 1.0, 1.0)
        self.colour_button = QPushButton()
        self.colour_button.setToolTip("Choose the colour")
        self.colour_button.clicked.connect(self._choose_colour)
        self.pick_button = QPushButton("Pick with a click")
        self.pick_button.setCheckable(True)
        self.pick_button.setToolTip("The next click on the canvas samples the colour of the image "
                                    "layer chosen beside")
        self.pick_button.toggled.connect(self._picking)
        self.sample_layer = LayerPicker(viewer)
        # the blur and transplant settings: magicgui forms, one page each
        self.sigma = FloatSpinBox(label="Gaussian σ", min=0.5, max=50, step=0.1, value=2.0)
        self.sigma.native.setSuffix(" px")
        self.source = LayerPicker(viewer, tooltip="The image whose pixels are copied into the painted region")
        self.source.label = "From layer"
        self.dy = SpinBox(label="dy", min=-100_000, max=100_000, value=0)
        self.dx = SpinBox(label="dx", min=-100_000, max=100_000, value=0)
        offset = Container(label="Offset (px)", layout="horizontal", widgets=[self.dy, self.dx])

        recolour = QWidget()
        form = QFormLayout(recolour)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Colour", self.colour_button)
        pick = QHBoxLayout()
        pick.addWidget(self.pick_button)
        pick.addWidget(self.sample_layer.native, 1)
        form.addRow("Sample", pick)
        erase = QLabel("Fills the region from its surroundings (inpainting)")
        blur = Container(widgets=[self.sigma])
        transplant = Container(widgets=[self.source, offset])
        for form in (blur, transplant, offset):
            form.margins = (0, 0, 0, 0)
        self.pages = QStackedWidget()
        for page in (recolour, erase, blur.native, transplant.native):
            self.pages.addWidget(page)
        self.operation.changed.connect(lambda name: self.pages.setCurrentIndex(OPERATIONS.index(name)))
        choose = Container(widgets=[self.operation])
        choose.margins = (0, 0, 0, 0)
        stack(self, choose.native, self.pages).setContentsMargins(0, 0, 0, 0)
        self.set_colour(self.colour)

    def set_colour(self, colour) -> None:
        self.colour = tuple(float(v) for v in colour)
        hex_colour = "#" + "".join(f"{round(v * 255):02x}" for v in self.colour)
        self.colour_button.setText(hex_colour)
        text = "black" if sum(self.colour) > 1.5 else "white"
        self.colour_button.setStyleSheet(f"background-color: {hex_colour}; color: {text}")

    def sample_at(self, layer, world_point) -> tuple[float, float, float]:
        """Take the colour of `layer` at a world position (what a click does)."""
        data = plain_image(layer)
        point = np.asarray(layer.world_to_data(world_point))[-2:]
        self.set_colour(sample_colour(data, tuple(point)))
        return self.colour

    def make_edit(self, image_shape):
        """The chosen edit; a ValueError names what to fix (e.g. a source of another size)."""
        operation = self.operation.value
        if operation == "recolour":
            return Recolour(self.colour)
        if operation == "erase":
            return Erase()
        if operation == "blur":
            return Blur(self.sigma.value)
        layer = self.source.layer()
        if layer is None:
            raise ValueError("transplant: choose the image layer to copy from")
        source = plain_image(layer)
        if source.shape[:2] != tuple(image_shape[:2]):
            raise ValueError(f"the transplant source '{layer.name}' is {source.shape[0]}×{source.shape[1]} "
                             f"but the edited image is {image_shape[0]}×{image_shape[1]}; choose a "
                             "source of the same size")
        return Transplant(source, (self.dy.value, self.dx.value), layer.name)

    def _choose_colour(self) -> None:
        chosen = QColorDialog.getColor(QColor.fromRgbF(*self.colour), self, "Recolour with")
        if chosen.isValid():
            self.set_colour((chosen.redF(), chosen.greenF(), chosen.blueF()))

    def _picking(self, on: bool) -> None:
        callbacks = self.viewer.mouse_drag_callbacks
        if on and self._on_click not in callbacks:
            callbacks.append(self._on_click)
        elif not on and self._on_click in callbacks:
            callbacks.remove(self._on_click)

    def _on_click(self, viewer, event) -> None:
        layer = self.sample_layer.layer()
        self.pick_button.setChecked(False)  # one click, one sample
        if layer is None:
            messages.notify("Pick a colour: choose the image layer to sample from", "warning")
            return
        try:
            colour = self.sample_at(layer, event.position)
        except ValueError as error:
            messages.notify(f"Picking a colour failed: {error}", "warning")
            return
        messages.notify(f"Recolour colour sampled from '{layer.name}': {self.colour_button.text()} "
                        f"(RGB fractions {', '.join(f'{v:.2f}' for v in colour)})")
