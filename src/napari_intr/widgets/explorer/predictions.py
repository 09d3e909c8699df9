"""Results box: classes by probability (searchable, top-1 marked) and, for the selected class,
the paper's question: does its query see itself, i.e. is it the prediction?"""
from __future__ import annotations

from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QFont
from qtpy.QtWidgets import QAbstractItemView, QGroupBox, QLineEdit, QTableWidgetItem, QVBoxLayout

from ..qt_helpers import TextLabel, read_only_table

COLUMNS = ("Rank", "Class", "Probability", "Logit")


class PredictionsBox(QGroupBox):
    class_selected = Signal(str)

    def __init__(self, parent=None):
        super().__init__("Results", parent)
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter classes…")
        self.filter.setClearButtonEnabled(True)
        self.filter.textChanged.connect(self._apply_filter)
        self.table = read_only_table(COLUMNS, stretch_column=1)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.ElideMiddle)
        self.table.setMinimumHeight(150)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        self.answer = TextLabel("Explain an image to see its classes")
        layout = QVBoxLayout(self)
        layout.addWidget(self.filter)
        layout.addWidget(self.table)
        layout.addWidget(self.answer)
        self.explanation = None

    def show_explanation(self, explanation) -> None:
        """Fill the table (rank order) and select the top-1 row."""
        self.explanation = explanation
        self.table.blockSignals(True)
        self.table.clearContents()
        rows = [] if explanation is None else explanation.table()
        self.table.setRowCount(len(rows))
        bold = QFont()
        bold.setBold(True)
        for row, entry in enumerate(rows):
            top = entry["rank"] == 1
            cells = (f"★ {entry['rank']}" if top else str(entry["rank"]), entry["name"],
                     f"{entry['probability']:.4f}", f"{entry['logit']:.3f}")
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if column != 1:
                    item.setTextAlignment(int(Qt.AlignRight | Qt.AlignVCenter))
                if top:
                    item.setFont(bold)
                    item.setToolTip("the model's prediction (top-1)")
                self.table.setItem(row, column, item)
        self.table.blockSignals(False)
        self._apply_filter()
        if explanation is None:
            self.answer.setText("Explain an image to see its classes")
        else:
            self.select_class(explanation.top_class())

    def rows(self) -> list[tuple[str, str, str, str]]:
        """The table's text, row by row (what a user reads)."""
        return [tuple(self.table.item(row, column).text() for column in range(len(COLUMNS)))
                for row in range(self.table.rowCount())]

    def visible_classes(self) -> list[str]:
        return [self.table.item(row, 1).text() for row in range(self.table.rowCount())
                if not self.table.isRowHidden(row)]

    def selected_class(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        return self.table.item(rows[0].row(), 1).text() if rows else None

    def select_class(self, name: str) -> None:
        for row in range(self.table.rowCount()):
            if self.table.item(row, 1).text() == name:
                self.table.selectRow(row)
                self.table.scrollToItem(self.table.item(row, 1))
                return
        raise ValueError(f"{name!r} is not in the results table")

    def _selection_changed(self) -> None:
        name = self.selected_class()
        if name is None or self.explanation is None:
            return
        self.answer.setText(self._answer(name))
        self.class_selected.emit(name)

    def _answer(self, name: str) -> str:
        explanation = self.explanation
        rank, total = explanation.rank_of(name), len(explanation.class_names)
        probability = explanation.probabilities[explanation.class_names.index(name)]
        if rank == 1:
            return (f"Does '{name}' see itself? Yes: it is the top-1 prediction "
                    f"(p = {probability:.3f}).")
        return (f"Does '{name}' see itself? No: rank {rank} of {total} (p = {probability:.3f}); "
                f"the model picks '{explanation.top_class()}'.")

    def _apply_filter(self, *_) -> None:
        text = self.filter.text().strip().casefold()
        for row in range(self.table.rowCount()):
            name = self.table.item(row, 1).text().casefold()
            self.table.setRowHidden(row, bool(text) and text not in name)
