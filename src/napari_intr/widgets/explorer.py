"""The "INTR Explorer" dock widget: wires the Model, Image, Results, Attention and Batch boxes
through the shared state. Each box lives in its own module."""
from __future__ import annotations

from qtpy.QtWidgets import QWidget

from .attention_panel import AttentionPanel
from .batch_panel import BatchPanel
from .explain_panel import ExplainPanel
from .model_picker import ModelPicker
from .results_table import ResultsTable
from .scroll_column import scroll_column
from .state import follow, shared_state


class ExplorerWidget(QWidget):
    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.state = state = shared_state()
        state.clear_explanation()  # a new Explorer starts without another viewer's result
        self.model_picker = ModelPicker(state)
        self.explain_panel = ExplainPanel(napari_viewer, state)
        self.results = ResultsTable()
        self.attention = AttentionPanel(napari_viewer, state)
        self.batch = BatchPanel(state)
        follow(state.events.explanation, self.results.show_explanation, self.results)
        self.results.class_selected.connect(self.attention.set_class)

        scroll_column(self, (self.model_picker, self.explain_panel, self.results, self.attention, self.batch))
        if state.model is None:  # the preselected bundled model is small: load it at once
            self.model_picker.load()

    def explain(self) -> None:
        self.explain_panel.explain()
