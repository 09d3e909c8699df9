"""Before vs after one edit: the top-1 flag, every class's probability and logit change, per head
the share of attention inside the painted region, and per head a difference layer (after −
before, diverging colour map, symmetric contrast limits) for the chosen class."""
from __future__ import annotations

from qtpy.QtGui import QFont
from qtpy.QtWidgets import QGroupBox

from napari_intr.explanation import head_number, layer_name, layer_number

from ..layers import DIFFERENCE_COLORMAP, KeyedLayers, grid_placement, image_label
from ..qt_helpers import TextLabel, fill_table, read_only_table, stack

CLASS_COLUMNS = ("Class", "p before", "p after", "Δp", "Δlogit")
HEAD_COLUMNS = ("Head", "in region before", "after", "change")


class EditReport(QGroupBox):
    def __init__(self, viewer, parent=None):
        super().__init__("Before vs after the last edit", parent)
        self.layers = KeyedLayers(viewer)
        self.flag = TextLabel("")
        bold = QFont()
        bold.setBold(True)
        self.flag.setFont(bold)
        self.classes = read_only_table(CLASS_COLUMNS)
        self.classes.setMinimumHeight(130)
        self.heads = read_only_table(HEAD_COLUMNS)
        self.heads.setMinimumHeight(90)
        self.heads.setToolTip("Share of the chosen class's attention (each map sums to 1) that falls "
                              "inside the painted region")
        self.note = TextLabel("")
        stack(self, self.flag, self.classes, self.heads, self.note)
        self.effect = None

    def clear(self, text: str) -> None:
        self.effect = None
        self.flag.setText(text)
        self.flag.setStyleSheet("")
        self.classes.setRowCount(0)
        self.heads.setRowCount(0)
        self.note.setText("")

    def show_effect(self, effect, after, image_layer, edited_name: str) -> None:
        """effect: manipulation.EditEffect; after: the edited image's explanation (for placement)."""
        self.effect = effect
        if effect.top1_changed:
            self.flag.setText(f"TOP-1 CHANGED: '{effect.top1_before}' → '{effect.top1_after}'")
            self.flag.setStyleSheet("color: #e0a000")
        else:
            self.flag.setText(f"Top-1 unchanged: '{effect.top1_after}'")
            self.flag.setStyleSheet("")
        fill_table(self.classes, [(row["name"], f"{row['probability_before']:.4f}",
                              f"{row['probability_after']:.4f}", f"{row['probability_change']:+.4f}",
                              f"{row['logit_change']:+.3f}") for row in effect.table()])
        fill_table(self.heads, [(f"H{row['head']}", f"{row['mass_before']:.3f}", f"{row['mass_after']:.3f}",
                            f"{row['mass_change']:+.3f}") for row in effect.head_table()])
        number = layer_number(effect.layer)
        self.note.setText(f"Attention of '{effect.class_name}', decoder layer {number}. Layers "
                          f"'… · H<n> · after − before': green where the edit drew attention, pink "
                          "where it took it away.")
        scale, translate = grid_placement(after, tuple(image_layer.scale[-2:]), tuple(image_layer.translate[-2:]))
        # named for the image that was edited (its edited copy is "… (edited)"): the suffix says
        # it is the edit's effect, and the shorter name keeps the query in the layer list
        label = image_label(self.layers.viewer, image_layer.name)
        for head, (difference, limit) in enumerate(zip(effect.difference, effect.limits)):
            self.layers.show(("edit difference", edited_name, head),
                             f"{layer_name(label, effect.class_name, number, head_number(head))} · after − before",
                             difference, scale, translate, colormap=DIFFERENCE_COLORMAP,
                             limits=(-limit, limit), diverging=True, visible=head == 0,
                             metadata={"image": edited_name, "class": effect.class_name, "head": head_number(head),
                                       "decoder_layer": number, "difference": "after − before"})

    def rows(self) -> list[tuple[str, ...]]:
        return [tuple(self.classes.item(row, column).text() for column in range(len(CLASS_COLUMNS)))
                for row in range(self.classes.rowCount())]
