"""The small Qt pieces every dock uses: a wrapping status label, a path field with Browse…,
a read-only table and its rows, a drop-down's items, a search field over a list of classes, the
scrolling column of boxes, the docks' tabs and napari's layer list's width."""
from __future__ import annotations

import functools
import textwrap
from pathlib import Path

from magicgui.widgets import FileEdit
from qtpy.QtCore import QEvent, QObject, QSortFilterProxyModel, Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDockWidget,
    QGroupBox,
    QHeaderView,
    QLabel,
    QLayout,
    QLineEdit,
    QScrollArea,
    QSizePolicy,
    QStyle,
    QStyleOptionViewItem,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

# Qt's own word wrap misjudges label heights inside the docks' scroll areas (lines get cut off
# or leave gaps), so TextLabel wraps at a fixed number of characters instead.
WRAP_CHARACTERS = 52


class TextLabel(QLabel):
    """A status label that wraps its text itself and hides while empty."""

    def __init__(self, text: str = "", parent=None):
        super().__init__(parent)
        self.full_text = ""
        self.setText(text)

    def setText(self, text: str) -> None:  # noqa: N802 (Qt's name)
        self.full_text = text
        lines = [textwrap.fill(paragraph, WRAP_CHARACTERS) for paragraph in text.split("\n")]
        super().setText("\n".join(lines))
        self.setVisible(bool(text))


class PathEdit(FileEdit):
    """magicgui's FileEdit (a line edit with a Browse… button) with a placeholder. Empty means
    none: `value` is None and `path` is "" (FileEdit alone would give Path('.'), an existing
    folder, and pass every "no folder chosen" check). Put `.native` in a Qt layout."""

    def __init__(self, placeholder: str, caption: str, folder: bool = False, file_filter: str = "",
                 **kwargs):
        super().__init__(mode="d" if folder else "r", filter=file_filter or None, nullable=True, **kwargs)
        self.edit = self.line_edit.native  # the QLineEdit, for its placeholder and signals
        self.edit.setPlaceholderText(placeholder)
        self.choose_btn.text = "…"
        self.choose_btn.tooltip = caption
        self.choose_btn.native.setFixedWidth(32)

    def get_value(self) -> Path | None:
        return Path(self.path) if self.path else None

    @property
    def path(self) -> str:
        """The typed or chosen path, stripped; "" when none."""
        return self.line_edit.value.strip()

    @path.setter
    def path(self, value) -> None:
        self.line_edit.value = "" if value is None else str(value)


def read_only_table(columns, stretch_column: int | tuple[int, ...] = 0) -> QTableWidget:
    """A table with these column titles, no row numbers, no editing; the stretch column(s) (the
    class names) share the width the others (fitting their contents) leave, eliding in the
    middle rather than making the table scroll sideways."""
    table = QTableWidget(0, len(columns))
    table.setHorizontalHeaderLabels(columns)
    table.verticalHeader().setVisible(False)
    table.setEditTriggers(QAbstractItemView.NoEditTriggers)
    header = table.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeToContents)
    for column in (stretch_column,) if isinstance(stretch_column, int) else stretch_column:
        header.setSectionResizeMode(column, QHeaderView.Stretch)
    table.setTextElideMode(Qt.ElideMiddle)  # look-alike names differ at their ends
    table.setWordWrap(False)  # wrapped at a space, "Heliconia synthetica-rubra" showed as "Heliconia ..."
    return table


def fill_table(table: QTableWidget, rows, numeric_columns=()) -> None:
    """Show `rows` (sequences of texts) in the table, replacing what it showed. Every cell's full
    text is its tooltip (long names are elided); the `numeric_columns` align right. A row shorter
    than the table leaves its last cells empty (e.g. a region of a two-class model has no 3rd class)."""
    table.clearContents()  # setRowCount keeps the cells of the rows it keeps
    table.setRowCount(len(rows))
    for row, cells in enumerate(rows):
        for column, text in enumerate(cells):
            item = QTableWidgetItem(text)
            item.setToolTip(text)
            if column in numeric_columns:
                item.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
            table.setItem(row, column, item)


def set_items(combo: QComboBox, items, keep_current: bool = False) -> None:
    """Replace a drop-down's items without signalling the change (and the choice, unless
    `keep_current` and the current text is among the new items). Each item's full text is its
    tooltip; the drop-down fits a narrow dock (fit_combo)."""
    fit_combo(combo)
    combo.blockSignals(True)
    current = combo.currentText()
    combo.clear()
    for item in items:
        combo.addItem(item)
        combo.setItemData(combo.count() - 1, item, Qt.ToolTipRole)
    if keep_current and current:
        combo.setCurrentText(current)
    combo.blockSignals(False)


def fit_combo(combo: QComboBox, characters: int = 12) -> QComboBox:
    """A drop-down as narrow as `characters` letters whatever its items, so that long class names
    never push its arrow (or the dock's other controls) off the right edge; the list it opens
    shows the full names, elided in the middle where even that is too narrow."""
    combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(characters)
    combo.view().setTextElideMode(Qt.ElideMiddle)
    return combo


class _NameFilter(QSortFilterProxyModel):
    """Shows the rows whose key column contains the typed text, names compared as everywhere
    (NFC, any case: README "Limits", rule 2), so "Café" finds a class a Mac wrote as "Cafe\u0301"."""

    def __init__(self, model, key_column: int):
        super().__init__(model)
        self.setSourceModel(model)
        self.key_column, self.wanted = key_column, ""

    def set_text(self, text: str) -> None:
        self.wanted = _search_key(text)
        self.invalidateFilter()

    def filterAcceptsRow(self, row: int, parent) -> bool:  # noqa: N802 (Qt's name)
        if not self.wanted:
            return True
        cell = self.sourceModel().index(row, self.key_column, parent).data()
        return self.wanted in _search_key(str(cell or ""))


@functools.lru_cache(maxsize=100_000)
def _search_key(text: str) -> str:
    from napari_intr.model.names import normal_name
    return normal_name(text).casefold()


def search_field(model, placeholder: str, key_column: int = 0) -> tuple[QLineEdit, QSortFilterProxyModel]:
    """A search field and the proxy of `model` that shows only the rows whose `key_column` contains
    the typed text (any case, any Unicode normal form; spaces around it ignored). Views show the proxy."""
    proxy = _NameFilter(model, key_column)
    field = QLineEdit()
    field.setPlaceholderText(placeholder)
    field.setClearButtonEnabled(True)
    field.textChanged.connect(proxy.set_text)
    return field, proxy


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


INTR_DOCK = "napari_intr_dock"  # Qt property marking the contents of our docks


class _JoinDockTabs(QObject):
    """On a dock's first Show (it then sits in its QDockWidget), tabify it with the INTR docks
    already open in the same dock area, and bring it to the front."""

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Show:
            watched.removeEventFilter(self)
            join_dock_tabs(watched)
        return False


def tabbed_dock(widget: QWidget) -> QWidget:
    """Make `widget` (a dock's contents) join the other INTR docks as a tab. Five docks side by
    side in napari's right area left each one row; as tabs each gets the whole height, and
    one click (the tab bar names them) switches task."""
    widget.setProperty(INTR_DOCK, True)
    widget._join_dock_tabs = _JoinDockTabs(widget)
    widget.installEventFilter(widget._join_dock_tabs)
    return widget


def _dock_of(widget: QWidget):
    while widget is not None and not isinstance(widget, QDockWidget):
        widget = widget.parentWidget()
    return widget


def join_dock_tabs(widget: QWidget) -> None:
    dock = _dock_of(widget)
    window = dock.parentWidget() if dock is not None else None
    if dock is None or window is None or not hasattr(window, "tabifyDockWidget") or dock.isFloating():
        return
    area = window.dockWidgetArea(dock)
    for other in window.findChildren(QDockWidget):
        if (other is dock or other.isFloating() or not other.isVisible()
                or window.dockWidgetArea(other) != area):
            continue
        contents = [other.widget(), *(other.widget().findChildren(QWidget) if other.widget() else [])]
        if any(part.property(INTR_DOCK) for part in contents if part is not None):
            window.tabifyDockWidget(other, dock)
            dock.show()
            dock.raise_()
            return


def group_box(title: str, *parts) -> QGroupBox:
    """A titled box stacking `parts` (widgets and layouts) top to bottom."""
    box = QGroupBox(title)
    stack(box, *parts)
    return box


def stack(owner: QWidget, *parts) -> QVBoxLayout:
    """Lay `parts` (widgets and layouts) out in `owner` top to bottom."""
    column = QVBoxLayout(owner)
    for part in parts:
        if isinstance(part, QLayout):
            column.addLayout(part)
        else:
            column.addWidget(part)
    return column


LAYER_LIST_SHARE = 1 / 3  # of the window's width, at most, for napari's layer list (the canvas keeps more)


def _layer_list_item(view, row: int):
    """(style option, text width) of napari's layer list's `row`: the width its name gets beside
    the eye, thumbnail and type icon, as the list's delegate paints it."""
    index = view.model().index(row, 0)
    option = QStyleOptionViewItem()
    view.initViewItemOption(option)
    option.rect = view.visualRect(index)
    delegate = view.itemDelegate()
    delegate.initStyleOption(option, index)
    if hasattr(delegate, "get_layer_icon"):  # napari's delegate puts the type icon on the right
        delegate.get_layer_icon(option, index)
    style = view.style()
    margin = style.pixelMetric(QStyle.PixelMetric.PM_FocusFrameHMargin, None, view) + 1
    return option, style.subElementRect(QStyle.SubElement.SE_ItemViewItemText, option, view).width() - 2 * margin


def layer_list_text(view, row: int) -> tuple[str, str]:
    """(name, what napari's layer list shows of it): the name of the list's `row` as its delegate
    elides it (in the middle) to the width it gets."""
    option, width = _layer_list_item(view, row)
    return option.text, option.fontMetrics.elidedText(option.text, Qt.TextElideMode.ElideMiddle, width)


def fit_layer_list(viewer, names) -> None:
    """Widen napari's layer list (to at most LAYER_LIST_SHARE of the window) so that the layer
    `names` show whole: at its default width (~30 characters) a map's name lost its middle, the
    query that tells a look-alike's map apart. Only ever widens, and only a docked list."""
    qt_viewer = getattr(getattr(viewer, "__wrapped__", viewer).window, "_qt_viewer", None)
    view, dock = getattr(qt_viewer, "layers", None), getattr(qt_viewer, "dockLayerList", None)
    if view is None or dock is None or dock.isFloating() or not dock.isVisible() or not view.model().rowCount():
        return
    window = dock.parentWidget()
    option, width = _layer_list_item(view, 0)
    missing = max(option.fontMetrics.horizontalAdvance(name) for name in names) - width
    target = min(dock.width() + missing + 2, int(window.width() * LAYER_LIST_SHARE))
    if missing > 0 and target > dock.width() and hasattr(window, "resizeDocks"):
        window.resizeDocks([dock], [target], Qt.Orientation.Horizontal)
