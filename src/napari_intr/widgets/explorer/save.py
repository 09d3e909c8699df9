"""Save box: the Explorer's "save explanation" — the current class's maps (every layer and head)
as an ImageJ hyperstack or OME-TIFF, the class table as CSV, the image as TIFF, and the attention
over the image as a PNG; with explained regions, their table, maps and an outlined overlay too."""
from __future__ import annotations

from pathlib import Path

from magicgui.widgets import ComboBox, Container
from qtpy.QtWidgets import QGroupBox, QPushButton

from napari_intr.explanation import layer_from_number
from napari_intr.filenames import apart_from_case_twins, safe_stem

from ..qt_helpers import PathEdit, TextLabel, stack
from ..state import ExplorerState
from ..workers import messages
from ..workers.jobs import save_job
from ..workers.task_bar import TaskBar

FORMATS = {"ImageJ hyperstack (Fiji)": "imagej", "OME-TIFF": "ome"}


class SaveBox(QGroupBox):
    def __init__(self, viewer, state: ExplorerState, attention_box, regions_box, parent=None):
        super().__init__("Save explanation", parent)
        self.viewer, self.state = viewer, state
        self.attention_box, self.regions_box = attention_box, regions_box
        self.folder = PathEdit("folder for the files", "Choose a folder for the saved explanation", folder=True,
                               label="Folder")
        self.file_format = ComboBox(label="Maps as", choices=list(FORMATS.items()))
        # the settings: a magicgui form
        self.form = Container(widgets=[self.folder, self.file_format])
        self.form.margins = (0, 0, 0, 0)
        self.save_button = QPushButton("Save explanation")
        self.save_button.setToolTip("The current class's attention maps (TIFF), the class table (CSV), the "
                                    "image (TIFF) and the attention over the image (PNG); explained regions too")
        self.save_button.clicked.connect(self.save)
        self.task = TaskBar()
        self.task.busy_changed.connect(lambda busy: self.save_button.setEnabled(not busy))
        self.summary = TextLabel("")
        stack(self, self.form.native, self.save_button, self.task, self.summary)

    def save(self) -> None:
        """Save the current result: the explained image, or the explained regions of a photo
        (never both: each clears the other), in files named after that image."""
        state, regions = self.state, self.regions_box.results
        if state.explanation is None and not regions:
            messages.notify("Nothing to save yet: Explain an image (or Explain regions) first", "warning")
            return
        if not self.folder.path:
            messages.notify("Choose a folder for the saved explanation", "warning")
            return
        explanation, image, photo = state.explanation, None, None
        if explanation is not None:
            source = state.source
            try:
                image = self._explained_plane(source)
            except ValueError as error:
                messages.notify(str(error), "warning")
                return
            regions = []
        else:
            photo, source = self.regions_box.photo
        image_file = _file_of(source.layer)
        pixel_size = _layer_pixel_size(source.layer) or _pixel_size(image_file)
        layer = layer_from_number(self.attention_box.decoder_layer.value, explanation.num_layers) if explanation else -1
        class_name = (self.attention_box.class_name or explanation.top_class()) if explanation else None
        self.summary.setText("")
        self.task.start(save_job, self.folder.path, file_stem(source.name, self.folder.path), explanation, image, class_name, layer,
                        regions, photo, pixel_size, self.file_format.value, image_file,
                        doing=f"Saving the explanation of '{source.name}'", on_result=self._report)

    def _explained_plane(self, source):
        """The plane the current explanation was made from, read again from its layer."""
        from .image_input import explainable_plane
        if source.layer not in self.viewer.layers:
            raise ValueError(f"'{source.name}' is no longer in the viewer: Explain an image again to save it")
        plane, now = explainable_plane(source.layer, self.viewer)
        if now.name != source.name or tuple(plane.shape[:2]) != tuple(self.state.explanation.image_shape):
            raise ValueError(f"the viewer now shows '{now.name}', not the explained '{source.name}': move "
                             "back to that slice, or Explain again, then save")
        return plane

    def _report(self, written) -> None:
        folder = Path(written[0]).parent if written else Path(self.folder.path)
        self.summary.setText(f"Saved {len(written)} files in {folder}: " + ", ".join(Path(p).name for p in written))
        messages.notify(f"Saved {len(written)} files in {folder}")


def file_stem(image_name: str, folder=None) -> str:
    """The start of every saved file's name: the image's (layer) name, safe on every file system,
    and apart from another image's files in `folder` whose name differs only in case."""
    stem = safe_stem(image_name, r"[^\w.-]+", "explanation")
    return stem if folder is None else apart_from_case_twins(folder, stem, image_name)


def _file_of(layer) -> str | None:
    path = getattr(getattr(layer, "source", None), "path", None)
    return str(path) if path else None


def _layer_pixel_size(layer):
    """The layer's own physical scale, when napari knows its units (e.g. from a calibrated reader)."""
    from napari_intr.image_files import PixelSize
    units = getattr(layer, "units", None)
    if not units or len(units) < 2:
        return None
    names = [f"{unit:~}" if hasattr(unit, "dimensionality") else str(unit) for unit in units[-2:]]
    if names[0] != names[1] or names[0] in ("px", "pixel", ""):
        return None
    scale_y, scale_x = (float(s) for s in layer.scale[-2:])
    return PixelSize(scale_y, scale_x, names[0])


def _pixel_size(image_file: str | None):
    from napari_intr.image_files import read_pixel_size
    return read_pixel_size(image_file) if image_file and Path(image_file).is_file() else None
