"""The "INTR Compare" dock widget: why not the mimic? (the paper's Fig. 6, interactive).

Decodes only the chosen candidate classes on the cached encoder memory of the Explorer's current
image (no backbone pass) and shows: their probabilities among themselves; per head, their maps
in one layer with a leading candidate axis (napari's slider steps through the classes); and for
the selected class, per head, its maps with all classes, with the candidates only, and their
difference. Switching the selected class among the compared candidates decodes nothing.

A separate dock widget sharing the Explorer's state (model, encoded image, explanation): the
Explorer stays short, and the comparison can sit beside it."""
from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QStandardItem, QStandardItemModel
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListView,
    QPushButton,
    QSpinBox,
    QWidget,
)

from napari_intr.comparison import (
    MIN_CANDIDATES,
    Comparison,
    most_confused_with,
    symmetric_limits,
    top_k_candidates,
)
from napari_intr.explanation import head_number, layer_name
from napari_intr.model.config import DECODE_MODES

from .layers import DIFFERENCE_COLORMAP, KeyedLayers, grid_placement
from .qt_helpers import (
    TextLabel,
    fill_table,
    group_box,
    read_only_table,
    scroll_column,
    search_field,
    set_items,
    stack,
    tabbed_dock,
)
from .state import follow, shared_state
from .workers import messages
from .workers.jobs import compare_job
from .workers.task_bar import TaskBar

# What each of INTR.decode's modes (the choices: model.config.DECODE_MODES) says in the box and its note.
MODE_TEXTS = {"drop": ("default", "only the candidates' queries enter the decoder"),
              "zero": ("as in the paper", "every query enters the decoder, the non-candidates' zeroed, as the "
                                          "paper describes")}
NEEDS_TWO = "comparison needs two classes or more: tick at least two candidates"


class CompareWidget(QWidget):
    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        tabbed_dock(self)
        self.viewer, self.state = napari_viewer, shared_state(napari_viewer)
        self.layers = KeyedLayers(napari_viewer)
        self.comparison: Comparison | None = None
        self._compared = None  # (source, explanation) the comparison belongs to
        self.status = TextLabel("")
        scroll_column(self, (self.status, self._choice_box(), self._results_box()), min_width=380)
        follow(self.state.events.model, self._new_model, self)
        follow(self.state.events.explanation, self._new_explanation, self)
        napari_viewer.dims.events.current_step.connect(self._show_slider_class)
        self._new_model(self.state.model)
        self._new_explanation(self.state.explanation)
        self._show_mode()

    def _choice_box(self) -> QGroupBox:
        """Candidate classes: the list, the presets, the selected class, the mode, Compare."""
        self.selected = QComboBox()
        self.selected.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.selected.setMinimumContentsLength(12)
        self.selected.setToolTip("The class whose maps are compared with all classes vs the candidates")
        self.selected.currentTextChanged.connect(self._selected_changed)
        self.candidates = CandidateList()
        self.k = QSpinBox()
        self.k.setRange(MIN_CANDIDATES, MIN_CANDIDATES)
        self.k.setToolTip("How many classes the presets tick")
        self.top_k_button = QPushButton("Top-k")
        self.top_k_button.setToolTip("Tick the k most probable classes of the current prediction")
        self.top_k_button.clicked.connect(self.tick_top_k)
        self.confused_button = QPushButton("Most confused")
        self.confused_button.setToolTip("The selected class and the k − 1 classes whose logits on "
                                        "this image are closest to its logit")
        self.confused_button.clicked.connect(self.tick_most_confused)
        self.mode = QComboBox()
        self.mode.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.mode.setMinimumContentsLength(12)
        for mode in DECODE_MODES:
            self.mode.addItem(f"{mode} ({MODE_TEXTS[mode][0]})", mode)
        self.mode.currentIndexChanged.connect(self._show_mode)
        self.mode_note = TextLabel("")
        self.compare_button = QPushButton("Compare")
        self.compare_button.setToolTip("Decode the candidates only, on the cached encoder memory")
        self.compare_button.clicked.connect(self.compare)
        self.task = TaskBar()
        self.task.busy_changed.connect(self._update_enabled)
        presets = QHBoxLayout()
        presets.addWidget(QLabel("Presets, k ="))
        presets.addWidget(self.k)
        presets.addWidget(self.top_k_button)
        presets.addWidget(self.confused_button)
        form = QFormLayout()
        form.addRow("Selected class", self.selected)
        form.addRow("Mode", self.mode)
        return group_box("Candidate classes", self.candidates, presets, form, self.mode_note, self.compare_button,
                         self.task)

    def _results_box(self) -> QGroupBox:
        """Among the candidates: their probabilities, a summary, which class the slider shows."""
        self.table = read_only_table(("Candidate", "p among them", "p of all"))
        self.table.setMinimumHeight(90)
        self.summary = TextLabel("")
        self.slider_note = TextLabel("")
        return group_box("Among the candidates", self.table, self.summary, self.slider_note)

    # --- presets and choices -------------------------------------------------------------------
    def tick_top_k(self) -> None:
        if self._need_explanation("the top-k preset"):
            self.candidates.set_checked(top_k_candidates(self.state.explanation, self.k.value()))

    def tick_most_confused(self) -> None:
        if self._need_explanation("the most-confused preset"):
            names = most_confused_with(self.state.explanation, self.selected.currentText(), self.k.value())
            self.candidates.set_checked(names)

    def mode_value(self) -> str:
        return self.mode.currentData()

    # --- compare -------------------------------------------------------------------------------
    def compare(self) -> None:
        if not self._need_explanation("Compare"):
            return
        names = self.candidates.checked()
        selected = self.selected.currentText()
        if len(names) < MIN_CANDIDATES:
            messages.notify(f"{NEEDS_TWO} (ticked: {', '.join(names) or 'none'})", "warning")
            return
        if selected not in names:
            messages.notify(f"the selected class '{selected}' is not among the ticked candidates: "
                            "tick it or select one of them", "warning")
            return
        from napari_intr.explanation import Explainer
        state = self.state
        self._pending = (state.source, state.explanation)
        self.task.start(compare_job, Explainer(state.model, state.model_name), state.encoded, selected,
                        names, self.mode_value(), state.explanation,
                        doing=f"Comparing {len(names)} candidates on '{state.source.name}'",
                        on_result=self._show_result)

    def _show_result(self, comparison: Comparison) -> None:
        source, explanation = self._pending
        if self.state.explanation is not explanation:
            messages.notify("the image was explained again meanwhile: press Compare again", "info")
            return
        self.comparison, self._compared = comparison, (source, explanation)
        self._show_comparison()

    def _selected_changed(self, name: str) -> None:
        """Re-show the cached comparison for another of its candidates: nothing is decoded."""
        comparison = self.comparison
        if comparison is None or not name or name == comparison.selected:
            return
        if name not in comparison.candidate_names:
            self.summary.setText(f"'{name}' was not compared: tick it and press Compare "
                                 f"(showing '{comparison.selected}')")
            return
        self.comparison = Comparison(name, comparison.all_classes, comparison.candidates)
        self._show_comparison()

    def _show_comparison(self) -> None:
        comparison, (source, _) = self.comparison, self._compared
        rows = comparison.table()
        fill_table(self.table, [(entry["name"], f"{entry['probability']:.4f}",
                                 f"{entry['probability_all_classes']:.4f}") for entry in rows])
        among = comparison.candidates
        self.summary.setText(
            f"Mode {comparison.mode}. Among the {len(rows)} candidates the model picks "
            f"'{among.top_class()}'; with all classes it picks '{comparison.all_classes.top_class()}'. "
            f"Layers: per head the candidates' maps (slider steps through the classes) and, for "
            f"'{comparison.selected}', its maps with all classes, with the candidates only, and "
            "candidates − all (green: more attention among the candidates).")
        self._show_layers(comparison, source)
        self._show_slider_class()

    def _show_layers(self, comparison: Comparison, source) -> None:
        among, layer = comparison.candidates, -1
        scale, translate = grid_placement(among, source.plane_scale, source.plane_translate)
        number, image, selected = among.layer_number(layer), source.label, comparison.selected
        maps = comparison.candidate_maps(layer)                        # [heads, C', h, w]
        with_all, with_candidates = comparison.selected_maps_all(layer), comparison.selected_maps_candidates(layer)
        difference = comparison.difference(layer)
        limits = symmetric_limits(difference)
        strongest = among.head_order(selected, layer)[0]
        common = {"image": source.name, "decoder_layer": number, "mode": comparison.mode,
                  "candidates": list(comparison.candidate_names), "selected": selected}
        for head in range(among.num_heads):
            visible = head == strongest
            base = f"{image} ◂ candidate queries · L{number} H{head_number(head)}"  # the slider picks the candidate
            self.layers.show(("candidates", source.name, head), base, maps[head], scale, translate,
                             colormap="inferno", limits=(0, maps[head].max()), visible=visible,
                             metadata={**common, "head": head_number(head), "axis 0": "candidate"})
            peak = max(with_all[head].max(), with_candidates[head].max())
            for kind, data in (("all classes", with_all[head]), ("candidates only", with_candidates[head])):
                self.layers.show((kind, source.name, head), f"{layer_name(image, selected, number, head_number(head))} · {kind}",
                                 data, scale, translate, colormap="inferno", limits=(0, peak),
                                 visible=False, metadata={**common, "head": head_number(head), "decoded": kind})
            self.layers.show(("difference", source.name, head),
                             f"{layer_name(image, selected, number, head_number(head))} · candidates − all",
                             difference[head], scale, translate, colormap=DIFFERENCE_COLORMAP,
                             limits=(-limits[head], limits[head]), visible=visible, diverging=True,
                             metadata={**common, "head": head_number(head), "decoded": "candidates − all"})

    def _show_slider_class(self, *_) -> None:
        """Say which candidate napari's slider points at in the candidate layers."""
        comparison = self.comparison
        if comparison is None or self._compared is None:
            return
        layer = self.layers.layer(("candidates", self._compared[0].name, 0))
        if layer is None:
            self.slider_note.setText("")
            return
        index = int(np.clip(round(layer.world_to_data(self.viewer.dims.point)[0]), 0,
                            len(comparison.candidate_names) - 1))
        self.slider_note.setText(f"Candidate layers at slider position {index}: "
                                 f"'{comparison.candidate_names[index]}'")

    # --- state ---------------------------------------------------------------------------------
    def _new_model(self, model) -> None:
        names = list(self.state.class_names) if model is not None else []
        self.candidates.set_classes(names)
        set_items(self.selected, names)
        self.k.setRange(MIN_CANDIDATES, max(MIN_CANDIDATES, len(names)))
        self._update_enabled()

    def _new_explanation(self, explanation) -> None:
        self.comparison = self._compared = None
        self.table.setRowCount(0)
        self.summary.setText("")
        self.slider_note.setText("")
        if explanation is None:
            self.status.setText("Explain an image in the INTR Explorer first: the comparison decodes "
                                "its cached encoder memory")
        else:
            self.status.setText(f"Comparing on '{self.state.source.name}' (cached encoder memory, "
                                "no backbone pass)")
            self.selected.setCurrentText(explanation.top_class())
        self._update_enabled()

    def _show_mode(self, *_) -> None:
        mode = self.mode_value()
        kind, note = MODE_TEXTS[mode]
        self.mode_note.setText(f"Mode '{mode}'" + (" (the default)" if kind == "default" else "") + f": {note}")

    def _need_explanation(self, what: str) -> bool:
        if self.state.explanation is None or self.state.encoded is None:
            messages.notify(f"{what}: explain an image in the INTR Explorer first (the comparison "
                            "reuses its encoder memory)", "warning")
            return False
        return True

    def _update_enabled(self, *_) -> None:
        ready = self.state.explanation is not None and not self.task.busy
        for widget in (self.compare_button, self.top_k_button, self.confused_button):
            widget.setEnabled(ready)


class CandidateList(QWidget):
    """Checkable, searchable class list on a model/view: with 10 000 classes only the visible rows
    are drawn and a search is one pass of a filter proxy, not 10 000 item hides."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.model = QStandardItemModel(self)
        self.filter, self.proxy = search_field(self.model, "Search classes…")
        self.list = QListView()
        self.list.setModel(self.proxy)
        self.list.setUniformItemSizes(True)  # no size hint per row
        self.list.setTextElideMode(Qt.ElideMiddle)  # look-alike names differ at their ends
        self.list.setEditTriggers(QListView.NoEditTriggers)
        self.list.setMinimumHeight(120)
        self.list.setToolTip("Tick the classes to compare (at least two)")
        stack(self, self.filter, self.list).setContentsMargins(0, 0, 0, 0)

    def set_classes(self, names) -> None:
        """New class list (a new model); ticks of classes still present are kept."""
        ticked = set(self.checked())
        self.model.clear()
        root = self.model.invisibleRootItem()
        items = []
        for name in names:
            item = QStandardItem(name)
            item.setToolTip(name)
            item.setCheckable(True)
            item.setCheckState(Qt.Checked if name in ticked else Qt.Unchecked)
            items.append(item)
        if items:
            root.appendRows(items)

    def names(self) -> list[str]:
        return [self.model.item(row).text() for row in range(self.model.rowCount())]

    def checked(self) -> list[str]:
        """Ticked classes in the list's (the model's) order."""
        return [self.model.item(row).text() for row in range(self.model.rowCount())
                if self.model.item(row).checkState() == Qt.Checked]

    def set_checked(self, names) -> None:
        wanted = set(names)
        unknown = wanted - set(self.names())
        if unknown:
            raise ValueError(f"not classes of this model: {', '.join(sorted(unknown))}")
        for row in range(self.model.rowCount()):
            item = self.model.item(row)
            state = Qt.Checked if item.text() in wanted else Qt.Unchecked
            if item.checkState() != state:  # 10 000 unchanged rows emit nothing
                item.setCheckState(state)

    def visible_names(self) -> list[str]:
        return [self.proxy.index(row, 0).data() for row in range(self.proxy.rowCount())]
