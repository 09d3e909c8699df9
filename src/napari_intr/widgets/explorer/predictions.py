"""Results box: classes by probability (searchable, top-1 marked) and, for the selected class,
the paper's question: does its query see itself, i.e. is it the prediction? A calibrated model
may answer "none of the N species" (then no row is starred) and marks its prediction set.

A model/view table, not one widget item per cell: with 10 000 classes the rows are made only
when they scroll into view, and the filter is one pass of a proxy model, not 10 000 row hides."""
from __future__ import annotations

from qtpy.QtCore import (
    QAbstractTableModel,
    QItemSelectionModel,
    QModelIndex,
    Qt,
    Signal,
)
from qtpy.QtGui import QFont
from qtpy.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHeaderView,
    QTableView,
)

from ..qt_helpers import TextLabel, search_field, stack

COLUMNS = ("Rank", "Class", "Probability", "Logit", "Set")
NAME_COLUMN = 1
IN_SET = "✓"  # the Set column of a class in the calibrated prediction set


class PredictionsModel(QAbstractTableModel):
    """An explanation's table (rank order) as rows of text."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self._rows: list[tuple[str, str, str, str, str]] = []
        self._bold = QFont()
        self._bold.setBold(True)
        self.rejected = False

    def set_entries(self, entries: list[dict], in_set: frozenset[str] = frozenset(), rejected: bool = False) -> None:
        """rejected: a calibrated model found none of its species: the first row is only the nearest."""
        self.beginResetModel()
        self.rejected = rejected
        self._rows = [(f"★ {e['rank']}" if e["rank"] == 1 and not rejected else str(e["rank"]), e["name"],
                       f"{e['probability']:.4f}", f"{e['logit']:.3f}", IN_SET if e["name"] in in_set else "")
                      for e in entries]
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: B008 (Qt's signature)
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def data(self, index, role=Qt.DisplayRole):
        if not index.isValid():
            return None
        row, column = index.row(), index.column()
        if role == Qt.DisplayRole:
            return self._rows[row][column]
        if role == Qt.TextAlignmentRole and column != NAME_COLUMN:
            return int(Qt.AlignRight | Qt.AlignVCenter)
        if role == Qt.ToolTipRole and column == len(COLUMNS) - 1 and self._rows[row][column]:
            return "in the calibrated prediction set"
        if role == Qt.ToolTipRole and column == NAME_COLUMN:  # the full name, however narrow the column
            note = ""
            if row == 0:
                note = (" — the nearest class; the image is none of the classes (below the open-set threshold)"
                        if self.rejected else " — the model's prediction (top-1)")
            return self._rows[row][column] + note
        if row == 0 and role == Qt.FontRole and not self.rejected:  # rank order: the first row is the top-1
            return self._bold
        return None

    def headerData(self, section, orientation, role=Qt.DisplayRole):
        if role == Qt.DisplayRole and orientation == Qt.Horizontal:
            return COLUMNS[section]
        return None

    def row_text(self, row: int) -> tuple[str, str, str, str, str]:
        return self._rows[row]

    def row_of(self, name: str) -> int:
        for row, cells in enumerate(self._rows):
            if cells[NAME_COLUMN] == name:
                return row
        raise ValueError(f"{name!r} is not in the results table")


class PredictionsBox(QGroupBox):
    class_selected = Signal(str)

    def __init__(self, parent=None):
        super().__init__("Results", parent)
        self.model = PredictionsModel(self)
        self.filter, self.proxy = search_field(self.model, "Filter classes…", NAME_COLUMN)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.ElideMiddle)  # look-alike names differ at their ends
        self.table.setMinimumHeight(150)
        header = self.table.horizontalHeader()
        for column in range(len(COLUMNS)):  # fixed widths: no size hints computed over 10 000 rows
            header.setSectionResizeMode(column, QHeaderView.Stretch if column == NAME_COLUMN else QHeaderView.Fixed)
        header.resizeSection(0, 56)
        header.resizeSection(2, 80)
        header.resizeSection(3, 64)
        header.resizeSection(4, 36)
        self.table.selectionModel().selectionChanged.connect(self._selection_changed)
        self.not_decoded = TextLabel("")
        self.not_decoded.setVisible(False)
        self.answer = TextLabel("Explain an image to see its classes")
        self.verdict = TextLabel("")  # the calibrated open-set verdict and prediction set
        self.verdict.setVisible(False)
        stack(self, self.verdict, self.filter, self.table, self.not_decoded, self.answer)
        self.explanation = None

    def show_explanation(self, explanation) -> None:
        """Fill the table (rank order) and select the top-1 row."""
        self.explanation = explanation
        verdict = None if explanation is None else explanation.calibrated
        self.table.selectionModel().blockSignals(True)
        self.model.set_entries([] if explanation is None else explanation.table(),
                               frozenset(verdict.prediction_set) if verdict else frozenset(),
                               explanation is not None and explanation.rejected)
        self.table.selectionModel().blockSignals(False)
        self._show_verdict(explanation)
        undecoded = 0 if explanation is None else explanation.undecoded
        self.not_decoded.setVisible(bool(undecoded))
        if undecoded:
            self.not_decoded.setText(
                f"Shortlist: {len(explanation.class_names):,} of {explanation.candidates:,} classes decoded; "
                f"the other {undecoded:,} were not (a first pass ranked them lower): they have no "
                "probability or maps here")
        if explanation is None:
            self.answer.setText("Explain an image to see its classes")
        else:
            self.select_class(explanation.top_class())

    def _show_verdict(self, explanation) -> None:
        from napari_intr.calibration import SUBSET_NOTE
        verdict = None if explanation is None else explanation.calibrated
        self.verdict.setVisible(explanation is not None)
        if explanation is None:
            return
        font = self.verdict.font()
        font.setBold(verdict is not None and not verdict.known)
        self.verdict.setFont(font)
        if verdict is None:
            self.verdict.setText(_sentence(SUBSET_NOTE) if SUBSET_NOTE in explanation.notes else
                                 "Model not calibrated: the image is named as one of its classes "
                                 "(intr calibrate adds a 'none of these species' answer)")
            return
        marked = f" (marked {IN_SET} in the Set column)" if verdict.prediction_set else ""
        self.verdict.setText(f"{'⚠ ' if not verdict.known else ''}{_sentence(verdict.describe())}\n"
                             f"{_sentence(verdict.describe_set())}{marked}")

    def rows(self) -> list[tuple[str, str, str, str, str]]:
        """The table's text, row by row (what a user reads)."""
        return [self.model.row_text(row) for row in range(self.model.rowCount())]

    def visible_classes(self) -> list[str]:
        return [self.proxy.index(row, NAME_COLUMN).data() for row in range(self.proxy.rowCount())]

    def selected_class(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        return rows[0].siblingAtColumn(NAME_COLUMN).data() if rows else None

    def select_class(self, name: str) -> None:
        source = self.model.index(self.model.row_of(name), NAME_COLUMN)
        index = self.proxy.mapFromSource(source)
        if not index.isValid():  # filtered out: show it anyway, the user asked for it
            self.filter.clear()
            index = self.proxy.mapFromSource(source)
        self.table.selectionModel().select(index, QItemSelectionModel.ClearAndSelect | QItemSelectionModel.Rows)
        self.table.scrollTo(index)

    def _selection_changed(self, *_) -> None:
        name = self.selected_class()
        if name is None or self.explanation is None:
            return
        self.answer.setText(self._answer(name))
        self.class_selected.emit(name)

    def _answer(self, name: str) -> str:
        explanation = self.explanation
        rank, total = explanation.rank_of(name), len(explanation.class_names)
        probability = explanation.probabilities[explanation.column(name)]
        if rank == 1 and explanation.rejected:
            return (f"Does '{name}' see itself? Not enough: it is only the nearest class (p = {probability:.3f}); "
                    f"the image is {explanation.calibrated.describe()}.")
        if rank == 1:
            return (f"Does '{name}' see itself? Yes: it is the top-1 prediction "
                    f"(p = {probability:.3f}).")
        return (f"Does '{name}' see itself? No: rank {rank} of {total} (p = {probability:.3f}); "
                f"the model picks '{explanation.top_class()}'.")


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]
