"""A status label that wraps its text itself and hides while empty.

Qt's own word wrap misjudges label heights inside the Explorer's scroll area (lines get cut
off or leave gaps), so the text is wrapped at a fixed number of characters instead."""
from __future__ import annotations

import textwrap

from qtpy.QtWidgets import QLabel

WRAP_CHARACTERS = 52


class TextLabel(QLabel):
    def __init__(self, text: str = "", parent=None):
        super().__init__(parent)
        self.full_text = ""
        self.setText(text)

    def setText(self, text: str) -> None:  # noqa: N802 (Qt's name)
        self.full_text = text
        lines = [textwrap.fill(paragraph, WRAP_CHARACTERS) for paragraph in text.split("\n")]
        super().setText("\n".join(lines))
        self.setVisible(bool(text))
