"""The "INTR Explorer" dock widget: wires the Model, Image, Results, Attention, Regions, Save and
Batch boxes through the shared state. Each box lives in its own module."""
from __future__ import annotations

from qtpy.QtWidgets import QWidget

from ..model_source import ModelSourceBox
from ..qt_helpers import scroll_column, tabbed_dock
from ..state import follow, shared_state
from .attention import AttentionBox
from .batch import BatchBox
from .explain import ExplainBox
from .predictions import PredictionsBox
from .regions import RegionsBox
from .save import SaveBox


class ExplorerWidget(QWidget):
    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        tabbed_dock(self)
        self.viewer = napari_viewer
        self.state = state = shared_state(napari_viewer)
        state.clear_explanation()  # a new Explorer starts afresh: its boxes show no earlier result
        self.model_source = ModelSourceBox(state)
        self.explain_box = ExplainBox(napari_viewer, state, request_model=self.model_source.ensure_loading)
        self.results = PredictionsBox()
        self.attention = AttentionBox(napari_viewer, state)
        self.regions = RegionsBox(napari_viewer, state, self.explain_box)
        self.save_box = SaveBox(napari_viewer, state, self.attention, self.regions)
        self.batch = BatchBox(state)
        follow(state.events.explanation, self.results.show_explanation, self.results)
        self.results.class_selected.connect(self.attention.set_class)
        self.regions.explained.connect(self.results.answer.setText)
        self.model_source.task.busy_changed.connect(
            lambda busy: None if busy else self.explain_box.model_load_ended())

        scroll_column(self, (self.model_source, self.explain_box, self.results, self.attention, self.regions,
                             self.save_box, self.batch))
        if state.model is None:  # the preselected bundled model is small: load it at once
            self.model_source.load()

    def explain(self) -> None:
        self.explain_box.explain()
