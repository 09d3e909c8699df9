"""The layout every dock widget of the plugin uses: its boxes in one scrolling column."""
from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QScrollArea, QSizePolicy, QVBoxLayout, QWidget


def scroll_column(owner: QWidget, boxes, min_width: int = 440, natural_height: bool = True) -> QVBoxLayout:
    """Stack `boxes` in a vertical scroll area filling `owner`; returns the column's layout.
    With natural_height each box keeps its own height: the area scrolls instead of squeezing them."""
    content = QWidget()
    column = QVBoxLayout(content)
    for box in boxes:
        if natural_height:
            box.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Fixed)
        column.addWidget(box)
    column.addStretch(1)
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setWidget(content)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
    layout = QVBoxLayout(owner)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(scroll)
    owner.setMinimumWidth(min_width)
    return column
