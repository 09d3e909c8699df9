"""Attention box: decoder layer, normalisation, placement, colour map, Keep; the heads' ranking.

Class and layer switches only index the cached explanation (every class was decoded once on
the cached encoder memory), so they are instant and run on the GUI thread."""
from __future__ import annotations

from qtpy.QtWidgets import QComboBox, QFormLayout, QGroupBox, QLabel, QListWidget, QPushButton, QSpinBox, QVBoxLayout

from napari_intr.explanation import layer_from_number

from ..layers import DisplayOptions, LiveLayerSet, layer_views
from ..qt_helpers import TextLabel
from ..state import ExplorerState, follow
from ..workers import messages

NORMALIZATIONS = {"per map (each head 0–1)": "per_map", "shared across heads": "shared"}
PLACEMENTS = {"feature grid, placed on the image": False, "upsampled to the image grid": True}
COLORMAPS = ("inferno", "turbo", "magma", "viridis", "red", "green", "cyan")


class AttentionBox(QGroupBox):
    def __init__(self, viewer, state: ExplorerState, parent=None):
        super().__init__("Attention maps", parent)
        self.viewer, self.state = viewer, state
        self.layers = LiveLayerSet(viewer)
        self.class_name: str | None = None
        self.showing = TextLabel("Explain an image to see the attention of each head")
        self.decoder_layer = QSpinBox()
        self.decoder_layer.setRange(1, 1)
        self.decoder_layer.setToolTip("Decoder layer whose cross-attention is shown (the paper uses the last)")
        self.normalization = QComboBox()
        self.normalization.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.normalization.setMinimumContentsLength(12)
        self.normalization.addItems(NORMALIZATIONS)
        self.placement = QComboBox()
        self.placement.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.placement.setMinimumContentsLength(12)
        self.placement.addItems(PLACEMENTS)
        self.placement.setToolTip("The feature grid is exact and light; upsampling is smoother but "
                                  "as large as the image")
        self.colormap = QComboBox()
        self.colormap.addItems(COLORMAPS)
        self.keep_button = QPushButton("Keep these layers")
        self.keep_button.setToolTip("Freeze the current maps under new names; the next class or layer "
                                    "switch creates new ones")
        self.keep_button.clicked.connect(self.keep)
        self.ranking = QListWidget()
        self.ranking.setMaximumHeight(110)
        self.ranking.setToolTip("Heads by their peak attention weight: the strongest first")
        form = QFormLayout()
        form.addRow("Decoder layer", self.decoder_layer)
        form.addRow("Normalise", self.normalization)
        form.addRow("Placement", self.placement)
        form.addRow("Colour map", self.colormap)
        layout = QVBoxLayout(self)
        layout.addWidget(self.showing)
        layout.addLayout(form)
        layout.addWidget(QLabel("Heads ranked by peak attention:"))
        layout.addWidget(self.ranking)
        layout.addWidget(self.keep_button)
        for signal in (self.decoder_layer.valueChanged, self.normalization.currentIndexChanged,
                       self.placement.currentIndexChanged, self.colormap.currentIndexChanged):
            signal.connect(self.update_layers)
        follow(state.events.explanation, self._new_explanation, self)
        self._set_enabled(False)

    def options(self) -> DisplayOptions:
        return DisplayOptions(NORMALIZATIONS[self.normalization.currentText()],
                              PLACEMENTS[self.placement.currentText()], self.colormap.currentText())

    def set_class(self, name: str) -> None:
        if name != self.class_name:
            self.class_name = name
            self.update_layers()

    def update_layers(self, *_) -> None:
        """Rewrite the live layers of the current image for the current class and options."""
        explanation, source = self.state.explanation, self.state.source
        if explanation is None or source is None or self.class_name is None:
            return
        try:
            layer = layer_from_number(self.decoder_layer.value(), explanation.num_layers)
            views = layer_views(explanation, source, self.class_name, layer, self.options())
            self.layers.show(views, source.name, self.options().colormap)
        except (ValueError, MemoryError) as error:
            messages.notify(messages.describe_error(error, "Showing the attention maps"), "error")
            return
        rank = explanation.rank_of(self.class_name)
        self.showing.setText(f"Showing '{self.class_name}' (rank {rank}), decoder layer "
                             f"{explanation.layer_number(layer)} of {explanation.num_layers}: mean of the heads plus "
                             f"{explanation.num_heads} head layers, strongest first (hidden: tick an eye to show one)")
        self.ranking.clear()
        heads = explanation.head_maps(self.class_name, layer, "none").max(axis=(1, 2))
        for position, head in enumerate(explanation.head_order(self.class_name, layer), start=1):
            self.ranking.addItem(f"{position}. H{head + 1}   peak weight {heads[head]:.4f}")

    def keep(self) -> None:
        source = self.state.source
        kept = self.layers.keep(source.name) if source is not None else []
        if not kept:
            messages.notify("No attention layers to keep yet: explain an image first", "warning")
            return
        messages.notify(f"Kept {len(kept)} layers as '{kept[0].name}' …; the next switch creates new ones")

    def _new_explanation(self, explanation) -> None:
        self._set_enabled(explanation is not None)
        if explanation is None:
            return
        self.decoder_layer.blockSignals(True)
        self.decoder_layer.setRange(1, explanation.num_layers)
        self.decoder_layer.setValue(explanation.num_layers)
        self.decoder_layer.blockSignals(False)
        self.class_name = None  # the results table selects the top-1 next

    def _set_enabled(self, enabled: bool) -> None:
        for widget in (self.decoder_layer, self.normalization, self.placement, self.colormap,
                       self.keep_button):
            widget.setEnabled(enabled)
