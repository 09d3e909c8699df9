"""Browse box: an atlas's classes and heads, its galleries as napari layers, its look-alike pairs.

A gallery is the atlas's PNG montage (rows: heads; columns: the images with the highest peak,
each patch centred on the peak and labelled with its file and peak) as an RGB image layer, with a
Shapes layer framing every patch. Clicking a patch asks the dock to open that specimen in the Explorer."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QVBoxLayout,
)

from ...atlas.folder import ATLAS_HTML, read_atlas
from ...explanation import short_class_name
from ..qt_helpers import TextLabel, fill_table, fit_combo, read_only_table, set_items
from ..workers import messages

GALLERY_TAG = "napari_intr_traits"  # metadata key marking the dock's layers
HEAD_COLUMNS = ("head", "mean peak", "spread", "on specimen", "consistency")
PAIR_COLUMNS = ("rank", "head", "effect size d", "masking drop", "peak on part")


@dataclass(frozen=True)
class PatchChoice:
    """One patch of a gallery: the specimen and what to show of it in the Explorer."""
    path: Path
    class_name: str  # the query whose attention the patch shows
    layer: int       # 1-based decoder layer
    head: int        # 1-based head


def _number(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


class AtlasBrowser(QGroupBox):
    """Emits `patch_chosen(PatchChoice)` when a gallery patch is clicked."""
    patch_chosen = Signal(object)

    def __init__(self, viewer, parent=None):
        super().__init__("Traits", parent)
        self.viewer = viewer
        self.atlas: dict | None = None
        self.folder: Path | None = None
        self._gallery = None   # (image layer, shapes layer)
        self._cells: list[dict] = []
        self._query: str | None = None  # whose attention the shown gallery's patches are
        self.summary = TextLabel("Build or open an atlas to browse it")
        self.class_choice = fit_combo(QComboBox())
        self.class_choice.currentIndexChanged.connect(self.show_class)
        self.heads = read_only_table(HEAD_COLUMNS, stretch_column=4)
        self.heads.setMaximumHeight(170)
        self.heads.itemSelectionChanged.connect(self._focus_head)
        self.pair_choice = fit_combo(QComboBox())
        self.pair_choice.currentIndexChanged.connect(self.show_pair)
        self.pair_heads = read_only_table(PAIR_COLUMNS, stretch_column=4)
        self.pair_heads.setMaximumHeight(170)
        form = QFormLayout()
        form.addRow("Class", self.class_choice)
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addLayout(form)
        layout.addWidget(self.heads)
        pair_form = QFormLayout()
        pair_form.addRow("Look-alike pair", self.pair_choice)
        layout.addLayout(pair_form)
        layout.addWidget(self.pair_heads)
        layout.addWidget(TextLabel("Click a patch in the gallery to open that specimen in the Explorer."))
        self._set_enabled(False)

    def load(self, folder: str | Path) -> None:
        try:
            self.atlas = read_atlas(folder)
        except ValueError as error:
            messages.notify(str(error), "error")
            return
        self.folder = Path(folder)
        meta = self.atlas["meta"]
        classes = [c for c in self.atlas["classes"] if c["images"]]
        self.summary.setText(f"{self.atlas['images']} images of {len(classes)} classes, decoder layer "
                             f"{meta['layer']} of {meta['layers']}, model {meta['model']}; "
                             f"{len(self.atlas['pairs'])} look-alike pairs. Full report: "
                             f"{self.folder / ATLAS_HTML}")
        set_items(self.class_choice, [c["name"] for c in classes])
        set_items(self.pair_choice, [f"{short_class_name(p['a'])} vs {short_class_name(p['b'])}"
                                     for p in self.atlas["pairs"]])
        for index, pair in enumerate(self.atlas["pairs"]):  # the full names on hover
            self.pair_choice.setItemData(index, f"{pair['a']} vs {pair['b']}", Qt.ToolTipRole)
        self._set_enabled(True)
        self.show_class()

    # -- galleries ---------------------------------------------------------------------------
    def show_class(self, *_) -> None:
        if self.atlas is None or self.class_choice.currentIndex() < 0:
            return
        name = self.class_choice.currentText()
        summary = next(c for c in self.atlas["classes"] if c["name"] == name)
        fill_table(self.heads, [(f"H{head['head'] + 1}", _number(head["mean_peak"]), _number(head["mean_spread"], 2),
                                 _number(head["on_specimen"], 2), _number(head["consistency"], 2)
                                 + (f" ({head['part']})" if head["part"] else ""))
                                for head in summary["heads"]])
        layout = self.atlas["montages"]["classes"][name]
        self._show_gallery(layout, f"atlas · {name} · L{self.atlas['meta']['layer']} gallery", name)

    def show_pair(self, *_) -> None:
        if self.atlas is None or self.pair_choice.currentIndex() < 0:
            return
        pair = self.atlas["pairs"][self.pair_choice.currentIndex()]
        fill_table(self.pair_heads, [(str(rank), f"H{head['head'] + 1}", _number(head["effect_size"], 2),
                                      _number(head["masking_drop"]), _number(head["on_part_a"], 2))
                                     for rank, head in enumerate(pair["heads"], start=1)])
        layout = self.atlas["montages"]["pairs"][f"{pair['a']}\t{pair['b']}"]
        self._show_gallery(layout, f"atlas · {pair['a']} vs {pair['b']} · L{self.atlas['meta']['layer']} "
                                   "(left: A's images, right: B's)", pair["a"])

    def _show_gallery(self, layout: dict, name: str, query: str) -> None:
        from napari_intr.image_files import read_image
        montage = read_image(self.folder / layout["file"])
        self._cells, self._query = layout["cells"], query
        boxes = [np.array([[c["y"], c["x"]], [c["y"] + c["size"], c["x"] + c["size"]]], dtype=float)
                 for c in self._cells]
        image, shapes = self._gallery_layers()
        if image is None:
            image = self.viewer.add_image(montage, name=name, rgb=True, metadata={GALLERY_TAG: True})
            image.mouse_drag_callbacks.append(self._on_click)
        else:  # the same layer shows the next gallery
            image.data, image.name = montage, name
        if shapes is not None:
            self.viewer.layers.remove(shapes)
        # The montage labels every patch (its file above, its peak below, within its row): text in the
        # image scales with it, where napari's text keeps its screen size and runs into the row above
        # when the gallery is zoomed out. The frames mark what a click opens.
        shapes = self.viewer.add_shapes(
            boxes, shape_type="rectangle", name=f"{name} · patches", edge_color="yellow", face_color="transparent",
            edge_width=1.5, features={"file": [c["key"] for c in self._cells]}, metadata={GALLERY_TAG: True})
        shapes.mouse_drag_callbacks.append(self._on_click)
        self._gallery = (image, shapes)
        self.viewer.reset_view()

    def beside_gallery(self) -> tuple[float, float]:
        """Where a specimen opened from the gallery goes (its top-left, world units): right of the
        gallery, so it never covers the patches and their labels."""
        image, _ = self._gallery_layers()
        if image is None:
            return (0.0, 0.0)
        low, high = (np.asarray(corner, dtype=float)[-2:] for corner in np.asarray(image.extent.world))
        return (float(low[0]), float(high[1] + 0.05 * (high[1] - low[1]) + 1))

    def _gallery_layers(self):
        """The gallery's (image, shapes) layers still in the viewer (None where the user deleted one)."""
        if self._gallery is None:
            return None, None
        return tuple(layer if layer in self.viewer.layers else None for layer in self._gallery)

    # -- clicks ------------------------------------------------------------------------------
    def cell_at(self, y: float, x: float) -> dict | None:
        """The gallery patch under montage pixel (y, x), if any."""
        for cell in self._cells:
            if cell["y"] <= y < cell["y"] + cell["size"] and cell["x"] <= x < cell["x"] + cell["size"]:
                return cell
        return None

    def choose_at(self, y: float, x: float) -> PatchChoice | None:
        cell = self.cell_at(y, x)
        if cell is None or self.atlas is None:
            return None
        choice = PatchChoice(Path(self.atlas["meta"]["data"]) / cell["key"], self._query,
                             int(self.atlas["meta"]["layer"]), int(cell["head"]) + 1)
        self.patch_chosen.emit(choice)
        return choice

    def _on_click(self, layer, event) -> None:
        if event.type != "mouse_press" or self._gallery is None:
            return
        y, x = self._gallery[0].world_to_data(event.position)[-2:]
        self.choose_at(y, x)

    def _focus_head(self) -> None:
        """Centre the gallery on the selected head's row."""
        rows = self.heads.selectionModel().selectedRows() if self.heads.selectionModel() else []
        if not rows or self._gallery is None:
            return
        head = rows[0].row()
        row_cells = [c for c in self._cells if c["head"] == head]
        if row_cells:
            y = row_cells[0]["y"] + row_cells[0]["size"] / 2
            self.viewer.camera.center = (y, self.viewer.camera.center[-1])

    def _set_enabled(self, enabled: bool) -> None:
        for widget in (self.class_choice, self.heads, self.pair_choice, self.pair_heads):
            widget.setEnabled(enabled)
