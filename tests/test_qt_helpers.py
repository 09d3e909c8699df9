"""The small Qt pieces the docks share (widgets/qt_helpers.py)."""
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox


def test_fill_table_replaces_the_rows_with_tooltips_and_right_aligned_numbers(qtbot):
    from napari_intr.widgets.qt_helpers import fill_table, read_only_table
    table = read_only_table(("Class", "train", "val"))
    qtbot.addWidget(table)
    fill_table(table, [("a", "1", "2"), ("b", "3", "4"), ("c", "5", "6")])
    fill_table(table, [("Heliconia synthetica-rubra", "12", "3")], numeric_columns=(1, 2))
    assert table.rowCount() == 1
    assert [table.item(0, column).text() for column in range(3)] == ["Heliconia synthetica-rubra", "12", "3"]
    assert table.item(0, 0).toolTip() == "Heliconia synthetica-rubra"
    assert table.item(0, 1).textAlignment() & Qt.AlignRight and not table.item(0, 0).textAlignment() & Qt.AlignRight


def test_fill_table_leaves_no_cell_of_what_it_showed_before(qtbot):
    # the Regions table: a region explained by a two-class model has no 3rd class
    from napari_intr.widgets.qt_helpers import fill_table, read_only_table
    table = read_only_table(("Region", "Top class", "p", "2nd", "p", "3rd", "p"))
    qtbot.addWidget(table)
    fill_table(table, [("1", "alba", "0.6", "rubra", "0.3", "flava", "0.1")])
    fill_table(table, [("1", "alba", "0.7", "rubra", "0.3")])
    assert [table.item(0, column) and table.item(0, column).text() for column in range(7)] == [
        "1", "alba", "0.7", "rubra", "0.3", None, None]


def test_set_items_replaces_them_quietly_and_can_keep_the_choice(qtbot):
    from napari_intr.widgets.qt_helpers import set_items
    combo = QComboBox()
    qtbot.addWidget(combo)
    changes = []
    combo.currentIndexChanged.connect(changes.append)
    set_items(combo, ["alba", "rubra"])
    combo.setCurrentText("rubra")
    changes.clear()
    set_items(combo, ["flava", "rubra", "alba"], keep_current=True)
    assert combo.currentText() == "rubra" and changes == []
    set_items(combo, ["flava", "alba"], keep_current=True)  # gone: the first item
    assert combo.currentText() == "flava"
    set_items(combo, ["alba", "flava"])
    assert combo.currentText() == "alba" and changes == []


def test_search_field_filters_by_the_key_column_in_any_case(qtbot):
    from qtpy.QtGui import QStandardItem, QStandardItemModel

    from napari_intr.widgets.qt_helpers import search_field
    model = QStandardItemModel()
    for name, number in (("Heliconia rubra", "1"), ("Heliconia alba", "2"), ("Morpho peleides", "3")):
        model.appendRow([QStandardItem(number), QStandardItem(name)])
    field, proxy = search_field(model, "Filter classes…", key_column=1)
    qtbot.addWidget(field)

    def shown():
        return [proxy.index(row, 1).data() for row in range(proxy.rowCount())]
    field.setText("  HELICONIA ")
    assert shown() == ["Heliconia rubra", "Heliconia alba"]
    field.setText("2")  # the number column is not searched
    assert shown() == []
    field.clear()
    assert len(shown()) == 3 and field.placeholderText() == "Filter classes…"


def test_class_columns_share_a_narrow_table_and_elide_in_the_middle(qtbot):
    """The Regions table in a 440 px dock: three class columns elide ("Heliconia s…etica-alba"), the
    table does not scroll sideways, and no name wraps to "Heliconia ..." (the Edit report did)."""
    from napari_intr.widgets.qt_helpers import fill_table, read_only_table
    table = read_only_table(("Region", "Top class", "p", "2nd", "p", "3rd", "p"), stretch_column=(1, 3, 5))
    qtbot.addWidget(table)
    fill_table(table, [("1", "Heliconia synthetica-alba", "1.000", "Heliconia synthetica-rubra", "0.000",
                        "Papilionella simulata-coccinea", "0.000")])
    table.setFixedWidth(420)
    table.show()
    qtbot.waitExposed(table)
    assert table.horizontalScrollBar().maximum() == 0
    assert table.textElideMode() == Qt.ElideMiddle and not table.wordWrap()
