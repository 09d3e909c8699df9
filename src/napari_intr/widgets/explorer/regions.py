"""Regions box: many specimens in one photo. A Shapes layer's rectangles (or a Labels layer's
objects) choose regions of the Explorer's image; "Explain regions" explains each as its own
specimen from the full-resolution pixels (with a margin), lists them in one table, places each
region's attention on the photo and outlines the regions in their top-1 class's colour. A
calibrated model's rejected regions ("none of the N species") are outlined grey, marked "no" in
the Known column and counted and listed in the summary, never named as a species."""
from __future__ import annotations

import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QPushButton,
)

from napari_intr.explanation import layer_name, short_class_name

from ..layers import ATTENTION_TAG, KeyedLayers, LayerPicker, camera_of, grid_placement, scaled_mean
from ..qt_helpers import TextLabel, fill_table, read_only_table, stack
from ..state import ExplorerState, follow
from ..workers import messages
from ..workers.jobs import regions_job
from ..workers.task_bar import TaskBar

COLUMNS = ("Region", "Top class", "p", "2nd", "p", "Known")  # the saved CSV has the 3rd too: a dock has room for two
REJECTED_COLOUR = np.array([0.6, 0.6, 0.6, 1.0])
MARGINS = ("0", "5%", "10%", "20%", "16")
OUTLINE_WIDTH = 3
LABEL_SIZE = 10  # points (napari draws text at this size on screen, whatever the zoom; label_text_size)
CHARACTER_WIDTH, LINE_HEIGHT = 0.62, 1.4  # of LABEL_SIZE: DejaVu Sans, as napari draws it


def is_region_layer(layer) -> bool:
    return layer.__class__.__name__ in ("Shapes", "Labels") and ATTENTION_TAG not in layer.metadata


def class_colour(index: int) -> np.ndarray:
    """RGBA of a class (by its index in the model): one colour per class, ten in turn."""
    from matplotlib import colormaps
    return np.asarray(colormaps["tab10"](index % 10), dtype=float)


class RegionsBox(QGroupBox):
    """Region results belong to their photo: explaining regions replaces the single-image
    explanation (the Results and Save boxes then show the regions), and explaining an image
    clears the regions (their layers stay in the viewer)."""
    explained = Signal(str)  # a line for the Results box: which photo's regions are shown

    def __init__(self, viewer, state: ExplorerState, image_box, parent=None):
        super().__init__("Regions: many specimens in one photo", parent)
        self.viewer, self.state, self.image_box = viewer, state, image_box
        self.regions_layer = LayerPicker(viewer, accept=is_region_layer, tooltip=(
            "A Shapes layer (each shape's bounding box is a region) or a Labels layer (each object's "
            "bounding box) over the image"))
        self.margin = QComboBox()
        self.margin.setEditable(True)
        self.margin.addItems(MARGINS)
        self.margin.setCurrentText("10%")
        self.margin.setToolTip("Context around each box: pixels (16) or % of the box's longer side (10%)")
        self.explain_button = QPushButton("Explain regions")
        self.explain_button.setToolTip("Explain each region of the chosen image as its own specimen, "
                                       "cut from the full-resolution image")
        self.explain_button.clicked.connect(self.explain_regions)
        self.task = TaskBar()
        self.task.busy_changed.connect(lambda busy: self.explain_button.setEnabled(not busy))
        self.table = read_only_table(COLUMNS, stretch_column=(1, 3))  # the class columns
        self.table.setMinimumHeight(120)
        self.summary = TextLabel("Draw rectangles in a Shapes layer over the photo (or label the "
                                 "specimens), choose it here, and press Explain regions")
        form = QFormLayout()
        form.addRow("Regions layer", self.regions_layer.native)
        form.addRow("Margin", self.margin)
        stack(self, form, self.explain_button, self.task, self.table, self.summary)
        self.maps = KeyedLayers(viewer)
        self.outlines = None
        self._labels: tuple = ()   # (boxes, full texts, region ids) of the outlines' labels
        zoomed = camera_of(viewer).events.zoom
        zoomed.connect(self._place_labels)
        self.destroyed.connect(lambda *_, zoomed=zoomed, slot=self._place_labels: zoomed.disconnect(slot))
        self.results: list = []    # regions.RegionResult of the last run
        self.photo = None          # (full-resolution plane, ImageSource) of the last run
        follow(state.events.model, self._model_changed, self)
        follow(state.events.explanation, self._image_explained, self)

    def explain_regions(self) -> None:
        from napari_intr.regions import Margin
        if self.state.model is None:
            messages.notify("No model loaded yet: press 'Load model' in the Model box", "warning")
            return
        try:
            plane, source = full_resolution_plane(self.image_box.selected_layer(), self.viewer)
            regions = regions_of(self.regions_layer.layer(), source.layer, self.viewer)
            margin = Margin.parse(self.margin.currentText())
        except ValueError as error:
            messages.notify(str(error), "warning")
            return
        self._pending = (plane, source, self.state.model)
        self.task.start(regions_job, self.state.model, self.state.model_name, plane, regions, margin, source.name,
                        self.image_box.shortlist.value() or None,  # the Image box's Shortlist field
                        doing=f"Explaining {len(regions)} regions of '{source.name}'", on_result=self._show)

    def _show(self, outcome) -> None:
        results, failures = outcome
        plane, source, model = self._pending
        if model is not self.state.model:
            messages.notify("The regions were explained with the previous model; press Explain regions "
                            "again for the new one", "info")
            return
        self.state.clear_explanation()  # the regions are now the current result (before they are set)
        self.results, self.photo = results, (plane, source)
        self._fill_table(results)
        for result in results:
            self._show_maps(result, source)
        self._show_outlines(results, source)
        lines = [(f"{len(results)} regions explained; each region's attention (its top-1 class, mean of "
                  "the heads, last decoder layer) lies on the photo")]
        calibration = getattr(model, "calibration", None)
        rejected = [result.region.id for result in results if result.explanation.rejected]
        if calibration is not None and any(result.explanation.calibrated for result in results):
            from napari_intr.calibration import rejected_text
            text = rejected_text(calibration, [f"region {name}" for name in rejected], len(results), "regions")
            lines.append(f"{text[:1].upper()}{text[1:]}: outlined grey, Known = no")
        lines += [note[:1].upper() + note[1:] for result in results
                  if (note := result.region.off_image_note(plane.shape[:2])) is not None]
        lines += [f"Region {region.id} skipped: {reason}" for region, reason in failures]
        self.summary.setText("\n".join(lines))
        self.explained.emit(f"{len(results)} regions of '{source.name}' explained: their classes are in "
                            "the Regions table")
        for region, reason in failures:
            messages.notify(f"Region {region.id}: {reason}", "warning")

    def _fill_table(self, results) -> None:
        """Two classes a row share a dock's width: each shows its short name (the epithet, which
        tells look-alikes apart) and its full name on hover."""
        rows, full_names = [], []
        for result in results:
            cells, names = [result.region.id], []
            for entry in result.explanation.table()[:2]:
                cells += [short_class_name(entry["name"]), f"{entry['probability']:.3f}"]
                names.append(entry["name"])
            cells += [""] * (2 * (2 - len(names)))
            verdict = result.explanation.calibrated
            rows.append([*cells, "" if verdict is None else ("yes" if verdict.known else "no")])
            full_names.append(names)
        fill_table(self.table, rows)
        for row, names in enumerate(full_names):
            for column, name in zip((1, 3), names):
                self.table.item(row, column).setToolTip(name)

    def _show_maps(self, result, source) -> None:
        explanation, region = result.explanation, result.region
        top = explanation.top_class()
        mean = scaled_mean(explanation, top, -1, "per_map")
        scale, translate = region_placement(explanation, result.offset, source)
        name = layer_name(f"{source.label} · {region.id}", top, explanation.num_layers, None)
        metadata = {"image": source.name, "region": region.id, "class": top, "decoder_layer": explanation.num_layers,
                    "head": "mean", "probability": float(explanation.probabilities[explanation.column(top)])}
        self.maps.show((source.name, region.id), name, mean, scale, translate, colormap="inferno",
                       limits=(0.0, 1.0), metadata=metadata)

    def _show_outlines(self, results, source) -> None:
        plane_scale, plane_translate = np.asarray(source.plane_scale), np.asarray(source.plane_translate)
        rectangles, colours, texts = [], [], []
        for result in results:
            region, explanation = result.region, result.explanation
            top = explanation.top_class()
            corners = np.array([[region.y0, region.x0], [region.y1, region.x1]]) - 0.5  # edges -> napari
            (row0, col0), (row1, col1) = corners * plane_scale + plane_translate
            rectangles.append(np.array([[row0, col0], [row0, col1], [row1, col1], [row1, col0]]))
            column = explanation.column(top)
            if explanation.rejected:  # never named as a species
                colours.append(REJECTED_COLOUR)
                texts.append(f"{region.id}: none of the {explanation.calibrated.calibration.classes} species")
                continue
            colours.append(class_colour(explanation.class_indices[column]))
            probability = float(explanation.probabilities[column])
            texts.append(f"{region.id}: {short_class_name(top)} ({probability:.2f})")
        name = f"{source.name} · regions (top-1)"
        if self.outlines is not None and self.outlines in self.viewer.layers:
            self.viewer.layers.remove(self.outlines)  # our own layer, replaced by the new run's
        self.outlines = self.viewer.add_shapes(
            rectangles, shape_type="rectangle", name=name, edge_color=colours, face_color="transparent",
            edge_width=OUTLINE_WIDTH * float(plane_scale.mean()),
            features={"label": texts, "full": texts, "region": [result.region.id for result in results]},
            text={"string": "{label}", "anchor": "upper_left", "size": LABEL_SIZE, "color": "white"},
            metadata={ATTENTION_TAG: True, "image": source.name})
        self._labels = ([np.array([r.min(axis=0), r.max(axis=0)]) for r in rectangles], texts,
                        [result.region.id for result in results])
        self._place_labels()

    def _place_labels(self, *_) -> None:
        """Napari's text keeps its screen size as the canvas zooms out, so at fit-to-view the
        labels of neighbouring regions ran into each other: each zoom re-places them."""
        if self.outlines is None or self.outlines not in self.viewer.layers or not self._labels:
            return
        boxes, texts, ids = self._labels
        shown = label_texts(boxes, texts, ids, label_text_size(self.viewer))
        if list(self.outlines.features["label"]) != shown:
            features = self.outlines.features.copy()
            features["label"] = shown
            self.outlines.features = features

    def _model_changed(self, *_) -> None:
        self.clear()

    def _image_explained(self, explanation) -> None:
        if explanation is not None and self.results:
            self.clear("The regions' results were cleared: an image was explained since. Explain "
                       "regions again to show or save them")

    def clear(self, note: str = "") -> None:
        self.results, self.photo = [], None
        self.table.setRowCount(0)
        if note:
            self.summary.setText(note)


def label_text_size(viewer) -> float:
    """The labels' font size in world units at the viewer's zoom. Napari's text size is in points:
    vispy draws LABEL_SIZE points as LABEL_SIZE × dpi / 72 screen pixels (13.3 at 96 dpi), so
    sizes taken as pixels made labels a third wider than their room and neighbours ran together."""
    viewer = getattr(viewer, "__wrapped__", viewer)  # napari hands plugins a proxy of the viewer
    canvas = getattr(getattr(viewer.window, "_qt_viewer", None), "canvas", None)
    dpi = getattr(getattr(canvas, "_scene_canvas", canvas), "dpi", None) or 96.0
    return LABEL_SIZE * float(dpi) / 72 / max(float(camera_of(viewer).zoom), 1e-9)


def label_texts(boxes, texts, short_texts, text_size: float) -> list[str]:
    """What each region's label says so that no two labels overlap: first every region's short
    text (the region id: the Regions table names its class) where it has room, then its full text
    where that has room beside the others, so a long label never leaves a neighbour unlabelled.
    `boxes`: per region [[row0, col0], [row1, col1]] in world units; `text_size`: the labels' size
    in world units at the current zoom. A label sits on its box's top edge, starting at its left."""
    def rect(box, text):
        (row0, col0), _ = np.asarray(box, dtype=float)
        return row0 - LINE_HEIGHT * text_size, col0, row0, col0 + CHARACTER_WIDTH * text_size * len(text)

    def free(candidate, placed, index):
        return not any(candidate[0] < other[2] and other[0] < candidate[2] and candidate[1] < other[3]
                       and other[1] < candidate[3] for j, other in placed.items() if j != index)

    texts, short_texts = [str(t) for t in texts], [str(t) for t in short_texts]
    placed, shown = {}, [""] * len(texts)
    for index, (box, text) in enumerate(zip(boxes, short_texts, strict=True)):
        if free(rect(box, text), placed, index):
            placed[index], shown[index] = rect(box, text), text
    for index, (box, text) in enumerate(zip(boxes, texts, strict=True)):
        if free(rect(box, text), placed, index):
            placed[index], shown[index] = rect(box, text), text
    return shown


def region_placement(explanation, offset, source) -> tuple[tuple[float, float], tuple[float, float]]:
    """napari (scale, translate) of a region's [h, w] map over the image layer: the crop's grid
    placement shifted by the crop's offset in the photo."""
    scale, translate = grid_placement(explanation, source.plane_scale, source.plane_translate)
    shift = np.asarray(offset, dtype=float) * np.asarray(source.plane_scale, dtype=float)
    return scale, tuple(float(t) for t in np.asarray(translate) + shift)


def full_resolution_plane(layer, viewer):
    """The chosen image's full-resolution 2-D plane and its source. For a multiscale image that is
    level 0, sliced lazily: the crops read only their own pixels. Checks and notes: explainable_plane."""
    from ..state import ImageSource
    from .image_input import current_index, explainable_plane
    plane, source = explainable_plane(layer, viewer)
    if not layer.multiscale:
        return plane, source
    base = layer.data[0]
    leading = layer.ndim - 2  # napari's ndim leaves out an RGB(A) layer's channels
    index = current_index(layer, viewer, leading, base.shape) if leading else ()
    full = ImageSource(layer, source.name, tuple(float(s) for s in layer.scale[-2:]),
                       tuple(float(t) for t in layer.translate[-2:]), source.notes, source.label)
    return (base[index] if index else base), full


def regions_of(regions_layer, image_layer, viewer) -> list:
    """Regions (image pixels) from a Shapes layer's shapes or a Labels layer's objects."""
    from napari_intr.regions import Region, regions_from_labels, regions_from_rectangles
    if regions_layer is None:
        raise ValueError("no regions layer: add a Shapes layer and draw a rectangle around each "
                         "specimen (or a Labels layer with one label per specimen), then choose it")
    if regions_layer.__class__.__name__ == "Shapes":
        if not len(regions_layer.data):
            raise ValueError(f"'{regions_layer.name}' has no shapes: draw a rectangle around each specimen")
        corners = [_to_image_data(regions_layer, image_layer, np.asarray(shape)[:, -2:])
                   for shape in regions_layer.data]
        return regions_from_rectangles(corners)
    labels = regions_layer.data[0] if regions_layer.multiscale else regions_layer.data
    if labels.ndim > 2:  # a stack of label planes: the one at the viewer's current slice
        step = viewer.dims.current_step[: labels.ndim - 2]
        labels = labels[tuple(round(v) for v in step)]
    try:
        found = regions_from_labels(np.asarray(labels))
    except ValueError as error:  # the layer is the user's name for these labels
        raise ValueError(f"'{regions_layer.name}': {error}") from error
    if not found:
        raise ValueError(f"'{regions_layer.name}' has no labelled objects: paint one label per specimen")
    regions = []
    for region in found:  # pixel edges of the labels -> napari data -> world -> image pixel edges
        corners = np.array([[region.y0, region.x0], [region.y1, region.x1]]) - 0.5
        (row0, col0), (row1, col1) = _to_image_data(regions_layer, image_layer, corners) + 0.5
        regions.append(Region(region.id, col0, row0, col1, row1))
    return regions


def _to_image_data(layer, image_layer, points: np.ndarray) -> np.ndarray:
    """[k, 2] data coordinates of `layer` (its last two axes) -> [k, 2] data coordinates of
    `image_layer`'s plane, through world coordinates (scale and translate on the last two axes)."""
    out = []
    for point in np.asarray(points, dtype=float):
        full = np.zeros(layer.ndim)
        full[-2:] = point
        world = np.asarray(layer.data_to_world(full))[-2:]
        out.append((world - np.asarray(image_layer.translate[-2:])) / np.asarray(image_layer.scale[-2:]))
    return np.asarray(out)
