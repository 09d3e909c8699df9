"""A path line edit with a Browse… button."""
from __future__ import annotations

from qtpy.QtWidgets import QFileDialog, QHBoxLayout, QLineEdit, QPushButton, QWidget


class FileField(QWidget):
    def __init__(self, placeholder: str, caption: str, folder: bool = False, file_filter: str = "",
                 parent=None):
        super().__init__(parent)
        self.edit = QLineEdit()
        self.edit.setPlaceholderText(placeholder)
        self.button = QPushButton("…")
        self.button.setToolTip(caption)
        self.button.setFixedWidth(32)
        self.button.clicked.connect(self._browse)
        self._caption, self._folder, self._filter = caption, folder, file_filter
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.edit, 1)
        layout.addWidget(self.button)

    @property
    def path(self) -> str:
        return self.edit.text().strip()

    @path.setter
    def path(self, value) -> None:
        self.edit.setText(str(value))

    def _browse(self) -> None:
        if self._folder:
            chosen = QFileDialog.getExistingDirectory(self, self._caption, self.path)
        else:
            chosen, _ = QFileDialog.getOpenFileName(self, self._caption, self.path, self._filter)
        if chosen:
            self.path = chosen
