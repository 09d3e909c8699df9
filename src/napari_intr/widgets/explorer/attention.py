"""Attention box: decoder layer, normalisation, placement, colour map, Keep; the heads' ranking.

Class switches only index the cached explanation (every class was decoded once on the cached
encoder memory), so they are instant and run on the GUI thread. Explain decodes the maps of the
layer shown first (the last); a switch to another decoder layer decodes every layer once, on a
worker from the cached encoder memory, and keeps them, so every later switch is instant too. A
new image or class set is a new explanation, with its own layers."""
from __future__ import annotations

from magicgui.widgets import ComboBox, Container, SpinBox
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QGroupBox, QLabel, QListWidget, QPushButton

from napari_intr.explanation import head_number, layer_from_number

from ..gui_turns import turns
from ..layers import DisplayOptions, LiveLayerSet, layer_views
from ..qt_helpers import TextLabel, stack
from ..state import ExplorerState, follow
from ..workers import messages
from ..workers.jobs import layer_job
from ..workers.task_bar import TaskBar

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
        # the display settings: a magicgui form (values are what DisplayOptions takes)
        self.decoder_layer = SpinBox(label="Decoder layer", min=1, max=1, value=1, tooltip=(
            "Decoder layer whose cross-attention is shown (the paper uses the last)"))
        self.normalization = ComboBox(label="Normalise", choices=list(NORMALIZATIONS.items()))
        self.placement = ComboBox(label="Placement", choices=list(PLACEMENTS.items()), tooltip=(
            "The feature grid is exact and light; upsampling is smoother but as large as the image"))
        self.colormap = ComboBox(label="Colour map", choices=COLORMAPS)
        self.display = Container(widgets=[self.decoder_layer, self.normalization, self.placement, self.colormap])
        self.display.margins = (0, 0, 0, 0)
        self.keep_button = QPushButton("Keep these layers")
        self.keep_button.setToolTip("Freeze the current maps under new names; the next class or layer "
                                    "switch creates new ones")
        self.keep_button.clicked.connect(self.keep)
        self.ranking = QListWidget()
        self.ranking.setMaximumHeight(110)
        self.ranking.setTextElideMode(Qt.ElideMiddle)
        self.ranking.setToolTip("Heads by their evidence for the class, the strongest first: how much hiding "
                                "the region a head attends lowers the class against its rival. Flagged heads "
                                "(no evidence, on registers) come last")
        # decodes a decoder layer not decoded yet (and measures its heads' evidence) on a worker
        self.task = TaskBar()
        self.task.busy_changed.connect(self._job_ended)
        self._decoded = False
        self._waiting: list = []  # after_shown callbacks
        stack(self, self.showing, self.display.native, QLabel("Heads ranked by evidence:"), self.ranking,
              self.keep_button, self.task)
        self.display.changed.connect(self.update_layers)
        follow(state.events.explanation, self._new_explanation, self)
        self._set_enabled(False)

    def options(self) -> DisplayOptions:
        return DisplayOptions(self.normalization.value, self.placement.value, self.colormap.value)

    def set_class(self, name: str) -> None:
        if name != self.class_name:
            self.class_name = name
            self.update_layers()

    def update_layers(self, *_) -> None:
        """Rewrite the live layers of the current image for the current class and options."""
        explanation, source = self.state.explanation, self.state.source
        if explanation is None or source is None or self.class_name is None:
            return
        layer = layer_from_number(self.decoder_layer.value, explanation.num_layers)
        shown = explanation.holding(layer)
        if shown is None or shown.evidence_pending(self.class_name, layer):
            self._decode(explanation, layer)
            return
        explanation = shown
        try:
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
        evidence = explanation.head_evidence(self.class_name, layer)
        nothing = explanation.nothing_share(self.class_name, layer)
        self.ranking.setToolTip(f"Heads ranked by {explanation.ranking_basis(self.class_name, layer)}; "
                                "flagged heads last")
        for position, head in enumerate(explanation.head_order(self.class_name, layer), start=1):
            text = f"{position}. H{head_number(head)}   peak weight {heads[head]:.4f}"
            if nothing is not None:  # null keys: attention that is on no pixel
                text += f"   looks at nothing {100 * nothing[head]:.0f} %"
            if evidence is not None:
                text += f"   evidence {evidence.drops[head]:+.2f}"
                if evidence.flags[head]:
                    text += f"   ⚑ {evidence.flags[head]}"
            self.ranking.addItem(text)

    def after_shown(self, callback) -> None:
        """Call `callback` once the layers of the current class and decoder layer are in the
        viewer (a decoder layer not decoded yet is decoded first, on a worker)."""
        if self.task.busy:
            self._waiting.append(callback)
        else:
            turns().after_steps(callback)

    def _decode(self, explanation, layer: int) -> None:
        """Decode `layer` (and its heads' evidence) on a worker; the layers are shown when it ends.
        A switch meanwhile is shown after it (the job's result then serves it, or another starts)."""
        number = explanation.layer_number(layer)
        self.showing.setText(f"Decoding decoder layer {number} of {explanation.num_layers} on the cached encoder "
                             "memory (once per image and class set)…")
        if not self.task.busy:
            self.task.start(layer_job, explanation, layer, self.class_name,
                            doing=f"Decoding decoder layer {number}", on_result=self._layer_decoded)

    def _layer_decoded(self, _shown) -> None:
        self._decoded = True  # kept in the explanation; shown once the task has ended (_job_ended)

    def _job_ended(self, busy: bool) -> None:
        if busy:
            return
        if self._decoded:  # a failed job is not retried by itself: the next switch tries again
            self._decoded = False
            self.update_layers()
        if not self.task.busy:
            waiting, self._waiting = self._waiting, []
            for callback in waiting:
                turns().after_steps(callback)

    def keep(self) -> None:
        source = self.state.source
        kept = self.layers.keep(source.name) if source is not None else []
        if not kept:
            messages.notify("No attention layers to keep yet: explain an image first", "warning")
            return
        messages.notify(f"Kept {len(kept)} layers as '{kept[0].name}' …; the next switch creates new ones")

    def _new_explanation(self, explanation) -> None:
        self._set_enabled(explanation is not None)
        if explanation is None:  # the layers stay; this box no longer drives them
            self.showing.setText("Explain an image to see the attention of each head")
            self.ranking.clear()
            return
        with self.decoder_layer.changed.blocked():
            self.decoder_layer.max = explanation.num_layers
            self.decoder_layer.value = explanation.num_layers
        self.class_name = None  # the results table selects the top-1 next

    def _set_enabled(self, enabled: bool) -> None:
        self.display.enabled = enabled
        self.keep_button.setEnabled(enabled)
