"""A searchable multi-select of class names: a filter line above a list of check boxes."""
from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QLineEdit, QListWidget, QListWidgetItem, QVBoxLayout, QWidget


class CandidateList(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Search classes…")
        self.filter.setClearButtonEnabled(True)
        self.filter.textChanged.connect(self._apply_filter)
        self.list = QListWidget()
        self.list.setMinimumHeight(120)
        self.list.setToolTip("Tick the classes to compare (at least two)")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.filter)
        layout.addWidget(self.list)

    def set_classes(self, names) -> None:
        """New class list (a new model); ticks of classes still present are kept."""
        ticked = set(self.checked())
        self.list.clear()
        for name in names:
            item = QListWidgetItem(name)
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
            item.setCheckState(Qt.Checked if name in ticked else Qt.Unchecked)
            self.list.addItem(item)
        self._apply_filter()

    def names(self) -> list[str]:
        return [self.list.item(row).text() for row in range(self.list.count())]

    def checked(self) -> list[str]:
        """Ticked classes in the list's (the model's) order."""
        return [self.list.item(row).text() for row in range(self.list.count())
                if self.list.item(row).checkState() == Qt.Checked]

    def set_checked(self, names) -> None:
        wanted = set(names)
        unknown = wanted - set(self.names())
        if unknown:
            raise ValueError(f"not classes of this model: {', '.join(sorted(unknown))}")
        for row in range(self.list.count()):
            item = self.list.item(row)
            item.setCheckState(Qt.Checked if item.text() in wanted else Qt.Unchecked)

    def visible_names(self) -> list[str]:
        return [self.list.item(row).text() for row in range(self.list.count())
                if not self.list.item(row).isHidden()]

    def _apply_filter(self, *_) -> None:
        text = self.filter.text().strip().casefold()
        for row in range(self.list.count()):
            item = self.list.item(row)
            item.setHidden(bool(text) and text not in item.text().casefold())
