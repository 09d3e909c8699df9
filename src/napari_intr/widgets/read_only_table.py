"""The read-only result tables of the plugin's docks (classes, candidates, edits, training)."""
from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget


def read_only_table(columns, stretch_column: int = 0) -> QTableWidget:
    """A table with these column titles, no row numbers, no editing; one column takes the
    spare width and the others fit their contents."""
    table = QTableWidget(0, len(columns))
    table.setHorizontalHeaderLabels(columns)
    table.verticalHeader().setVisible(False)
    table.setEditTriggers(QAbstractItemView.NoEditTriggers)
    header = table.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeToContents)
    header.setSectionResizeMode(stretch_column, QHeaderView.Stretch)
    table.setTextElideMode(Qt.ElideMiddle)  # look-alike names differ at their ends
    return table
