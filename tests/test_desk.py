"""The scientist's desk: all five docks open at once in a 1550×980 window, as the tutorial is
followed. They sit as tabs of one dock area, each gets the whole height, every control is within
its dock's width (nothing to scroll sideways to), class names elide in the middle, and the view
follows the work.

As in real use the viewer exists before torch: model code is imported inside the test."""
import numpy as np
from qtpy.QtCore import QPoint, Qt
from qtpy.QtWidgets import (
    QAbstractButton,
    QAbstractItemView,
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QDockWidget,
    QHeaderView,
    QLineEdit,
    QScrollArea,
    QTableView,
)

from desk_support import TIMEOUT_MS, WINDOW, open_desk

RUBRA, ALBA = "Heliconia synthetica-rubra", "Heliconia synthetica-alba"
CONTROLS = (QAbstractButton, QComboBox, QLineEdit, QAbstractSpinBox, QAbstractItemView)


def dock_of(widget):
    while not isinstance(widget, QDockWidget):
        widget = widget.parentWidget()
    return widget


def clipped_controls(widget, dock) -> list[str]:
    """Visible controls whose right edge lies beyond the dock's visible width (or the viewport of
    the scroll area holding them)."""
    clipped = []
    for control in widget.findChildren(QWidget_types()):
        if not control.isVisibleTo(widget) or control.width() == 0:
            continue
        if isinstance(control.parentWidget(), (QComboBox, QAbstractItemView)) or control.objectName().startswith(
                "qt_scrollarea"):
            continue  # parts of a composite control (its popup, its scroll bars)
        right = control.mapTo(dock, QPoint(control.width(), 0)).x()
        area = control.parentWidget()
        while area is not None and not isinstance(area, QScrollArea):
            area = area.parentWidget()
        limit = (area.viewport().mapTo(dock, QPoint(area.viewport().width(), 0)).x()
                 if area is not None and area is not control else dock.width())
        if right > limit + 1:
            clipped.append(f"{type(control).__name__} {control.objectName() or control.toolTip()[:40]!r}: "
                           f"right edge {right} > {limit}")
    return clipped


def QWidget_types():  # noqa: N802 (a tuple of Qt classes, as findChildren takes)
    return CONTROLS


def test_five_docks_fit_a_1550_by_980_window_and_the_view_follows_the_work(make_napari_viewer, qtbot, messages):
    viewer, widgets = open_desk(make_napari_viewer, qtbot)
    window = viewer.window._qt_window
    explorer = widgets["INTR Explorer"]
    QApplication.processEvents()

    # one dock area, five tabs: each dock gets the whole height, not one row of it
    docks = {name: dock_of(widget) for name, widget in widgets.items()}
    tabbed = set(window.tabifiedDockWidgets(docks["INTR Explorer"]))
    assert tabbed == {dock for name, dock in docks.items() if name != "INTR Explorer"}
    for name, dock in docks.items():
        dock.raise_()
        QApplication.processEvents()
        assert dock.height() > 0.7 * WINDOW[1], (name, dock.height())
        assert clipped_controls(widgets[name], dock) == [], name
        views = [view for view in widgets[name].findChildren(QAbstractItemView)
                 if view.isVisibleTo(widgets[name]) and not isinstance(view, QHeaderView)]
        for view in views:  # names elide in the middle
            assert view.textElideMode() == Qt.ElideMiddle, (name, type(view).__name__, view.toolTip())
            assert not isinstance(view, QTableView) or not view.wordWrap(), name
    assert window.width() <= WINDOW[0] + 1  # the docks' minimum widths did not widen the window

    # Fine-tune: the curves are in view without scrolling
    finetune = widgets["INTR Fine-tune"]
    docks["INTR Fine-tune"].raise_()
    QApplication.processEvents()
    area = next(a for a in finetune.findChildren(QScrollArea) if a.widget() is not None and
                a.widget().isAncestorOf(finetune.plot))
    assert finetune.plot.mapTo(area.viewport(), QPoint(0, finetune.plot.height() // 2)).y() < area.viewport().height()

    # the view follows the work: zoomed onto rubra, explaining alba shows alba
    from napari_intr.widgets.layers import camera_of
    rubra, alba = viewer.layers[f"{RUBRA} (synthetic)"], viewer.layers[f"{ALBA} (synthetic)"]
    camera = camera_of(viewer)
    camera.center = tuple(np.asarray(rubra.extent.world).mean(axis=0)[-2:])
    camera.zoom = 4.0
    explorer.explain_box.image.choose(alba.name)
    explorer.explain()
    qtbot.waitUntil(lambda: explorer.state.explanation is not None and not explorer.explain_box.task.busy,
                    timeout=TIMEOUT_MS)
    low, high = np.asarray(alba.extent.world)[:, -2:]
    centre = np.asarray(camera.center)[-2:]
    assert np.all(centre >= low - 0.5) and np.all(centre <= high + 0.5)
    # ... and its layers say whose query looks at which image
    top = explorer.state.explanation.top_class()
    # (the image by the part that tells it from rubra; its full name is in the layer's metadata)
    assert any(layer.name.startswith("alba ◂ query ") and layer.metadata.get("image") == alba.name
               for layer in viewer.layers)
    assert explorer.results.model.data(explorer.results.model.index(0, 1), Qt.ToolTipRole).startswith(top)
