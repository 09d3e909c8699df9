"""Image box: choose an image layer and Explain it (encode + decode in a worker, cancellable)."""
from __future__ import annotations

from collections.abc import Callable

from qtpy.QtWidgets import QFormLayout, QGroupBox, QHBoxLayout, QPushButton, QSpinBox

from ..layers import LayerPicker, bring_into_view
from ..qt_helpers import TextLabel, stack
from ..state import ExplorerState, follow
from ..workers import messages
from ..workers.jobs import explain_job
from ..workers.task_bar import TaskBar
from .image_input import InputError, explainable_plane

SHORTLIST_ABOVE = 1000  # classes; larger models get a shortlist by default
DEFAULT_SHORTLIST = 64


class ExplainBox(QGroupBox):
    """request_model: called when Explain is pressed before a model is loaded; starts a load (or
    finds one running) and returns True if one is on its way. The box then explains as soon as
    the model arrives, and says so if the load ends without one (`model_load_ended`)."""

    def __init__(self, viewer, state: ExplorerState, parent=None,
                 request_model: Callable[[], bool] | None = None):
        super().__init__("Image", parent)
        self.viewer, self.state = viewer, state
        self.request_model = request_model
        self.waiting_for_model = False
        self.image = LayerPicker(viewer, tooltip="2-D image, RGB(A) or grey; for a stack, the current slice",
                                 follow_selection=True)
        self.explain_button = QPushButton("Explain")
        self.explain_button.setToolTip("Classify the image and show each head's attention for the "
                                       "predicted class")
        self.explain_button.clicked.connect(self.explain)
        self.shortlist = QSpinBox()
        self.shortlist.setRange(0, 1_000_000)
        self.shortlist.setSpecialValueText("all classes")
        self.shortlist.setToolTip("Decode only the top K classes of a cheap first pass over all of them "
                                  "(for models with thousands of classes); 'all classes' decodes every one")
        self.task = TaskBar()
        self.task.busy_changed.connect(self._busy_changed)
        self.notes = TextLabel("")
        form = QFormLayout()
        form.addRow("Image layer", self.image.native)
        form.addRow("Shortlist", self.shortlist)
        row = QHBoxLayout()
        row.addWidget(self.explain_button)
        stack(self, form, row, self.task, self.notes)
        follow(state.events.model, self._new_model, self)
        self._new_model(state.model)
        follow(state.events.model, self._model_arrived, self)

    def selected_layer(self):
        return self.image.layer()

    def explain(self) -> None:
        """Explain the chosen image layer; with none, say what to choose instead."""
        layer = self.selected_layer()
        if layer is None and self.viewer.layers.selection.active is not None:
            layer = self.viewer.layers.selection.active  # e.g. a Labels layer: say why not
        try:
            plane, source = explainable_plane(layer, self.viewer)
        except InputError as error:
            messages.notify(str(error), "warning")
            return
        if self.state.model is None:
            if self.request_model is not None and self.request_model():
                self.waiting_for_model = True  # the first click: explain once the model is in
                self.notes.setText(f"Waiting for the model to load; '{source.name}' is explained "
                                   "as soon as it is in")
                return
            messages.notify("No model loaded yet: press 'Load model' in the Model box "
                            "(the bundled sample is preselected)", "warning")
            return
        self._pending = (source, self.state.model)
        self.notes.setText("")
        self.task.start(explain_job, self.state.model, self.state.model_name, plane, source.name,
                        self.shortlist.value() or None,
                        doing=f"Explaining '{source.name}'", on_result=self._publish)

    def _model_arrived(self, model) -> None:
        if self.waiting_for_model and model is not None:
            self.waiting_for_model = False
            self.explain()

    def model_load_ended(self) -> None:
        """A load finished; if it brought no model, the Explain that waited for it says why."""
        if self.waiting_for_model and self.state.model is None:
            self.waiting_for_model = False
            self.notes.setText("The model did not load (see the Model box), so nothing was explained; "
                               "choose another model or press 'Load model', then Explain")

    def _publish(self, result) -> None:
        encoded, explanation = result
        state, (source, model) = self.state, self._pending
        if state.model is not model:
            messages.notify(f"'{source.name}' was explained with the previous model; press Explain "
                            "again for the new one", "info")
            return
        state.source = source
        state.encoded = encoded
        state.explanation = explanation  # last: listeners read source and encoded too
        if source.layer in self.viewer.layers:
            bring_into_view(self.viewer, source.layer)
        notes = [*source.notes, *explanation.notes]
        self.notes.setText("\n".join(f"Note: {note}" for note in notes))
        for note in notes:
            if not note.startswith("shortlist:"):  # the Results box says it where it matters
                messages.notify(note, "info")

    def _new_model(self, model) -> None:
        """Models with many classes start with a shortlist: decoding 10 000 queries with maps
        takes gigabytes; a smaller model decodes all its classes."""
        classes = 0 if model is None else len(model.class_names)
        self.shortlist.setValue(DEFAULT_SHORTLIST if classes > SHORTLIST_ABOVE else 0)

    def _busy_changed(self, *_) -> None:
        self.explain_button.setEnabled(not self.task.busy)
        self.image.enabled = not self.task.busy
        self.shortlist.setEnabled(not self.task.busy)
