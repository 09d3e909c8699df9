"""The second hostile corpus (hostile_corpus_2.py) through the docks, in a real napari viewer, by
the user's own actions: File ▸ Open each file and Explain it, Save explanation, Explain folder,
Explain regions, Compare, Edit and Export, Scan collection (Fine-tune), Build atlas (Traits).

The bar is the issue's: no traceback (no exception escapes a slot, no "error" notification that
is a Python error), nothing silently wrong (each input is explained, or refused with a message
naming it, or handled with a note that says what was done), no file lost or written over.

As in real use the viewer exists before torch: model code is imported inside the tests."""
from __future__ import annotations

import csv
import os

import numpy as np
import pytest

from hostile_corpus_2 import FILES

TIMEOUT_MS = 60_000
PYTHON_ERRORS = ("Traceback", "Error:", "Exception:", "object has no attribute", "unexpected keyword")


def snapshot(root):
    return {path: path.stat().st_mtime_ns for path in root.rglob("*") if path.is_file()}


def no_python_errors(messages):
    """Every message is one written for a user: no traceback, no bare Python exception."""
    wrong = [(level, text) for level, text in messages if any(sign in text for sign in PYTHON_ERRORS)]
    assert not wrong, wrong


def explorer_with_model(viewer, qtbot, checkpoint=None):
    """The Explorer dock, with the bundled model (or `checkpoint`) loaded."""
    from napari_intr.widgets.state import shared_state
    shared_state(viewer).model = None
    _, explorer = viewer.window.add_plugin_dock_widget("napari-intr", "INTR Explorer")
    qtbot.waitUntil(lambda: not explorer.model_source.task.busy, timeout=TIMEOUT_MS)
    if checkpoint is not None:
        load_checkpoint(explorer.model_source, checkpoint, qtbot)
    assert explorer.state.model is not None
    return explorer


def load_checkpoint(model_box, path, qtbot):
    from napari_intr.widgets.model_source import CHECKPOINT_FILE
    picker = model_box.picker
    picker.source.setCurrentIndex(picker.source.findData(CHECKPOINT_FILE))
    picker.checkpoint.path = str(path)
    model_box.load()
    qtbot.waitUntil(lambda: not model_box.task.busy, timeout=TIMEOUT_MS)


def wait(qtbot, task):
    qtbot.waitUntil(lambda: not task.busy, timeout=TIMEOUT_MS)


def write_corpus(folder):
    folder.mkdir(parents=True)
    return {item.id: item.write(folder) for item in FILES}


def one_of_each_kind(names=()):
    """The first input of each kind, and the inputs named in `names` (e.g. names that a file-safe
    stem would make equal): a dock's single-image actions take about a second each here."""
    kinds, chosen = set(), []
    for item in FILES:
        if item.kind not in kinds or item.name in names:
            kinds.add(item.kind)
            chosen.append(item)
    return chosen


# names whose file-safe stems collide with an earlier one's ("a,b"/"a:b", two undecodable names)
COLLIDING = (b"a:b.png", b"caf\xe9.png", b"moth.png")
EXPLORER_FILES = one_of_each_kind(COLLIDING)


def test_the_explorer_opens_explains_and_saves_each_kind_of_corpus_file(make_napari_viewer, qtbot, messages,
                                                                        tmp_path):
    """File ▸ Open (napari's reader), Explain, Save explanation, for one file of each kind."""
    viewer = make_napari_viewer()
    paths = write_corpus(tmp_path / "in")
    before = snapshot(tmp_path / "in")
    explorer = explorer_with_model(viewer, qtbot)
    out = tmp_path / "saved"
    explorer.save_box.folder.path = str(out)
    saved = []
    for item in EXPLORER_FILES:
        (layer,) = viewer.open(str(paths[item.id]))  # File ▸ Open, napari's own reader
        explorer.explain_box.image.choose(layer.name)
        said = len(messages)
        explorer.explain()
        wait(qtbot, explorer.explain_box.task)
        new = [text for _, text in messages[said:]]
        if item.refused and "stack" not in item.refused:  # too small: refused, naming the layer
            assert any(f"'{layer.name}'" in text and item.refused in text for text in new), (item.id, new)
            viewer.layers.clear()
            continue
        assert explorer.state.source is not None and explorer.state.source.layer is layer, (item.id, new)
        if item.frames > 1:  # one frame of an animation explained: the note says so (napari reads
            notes = explorer.explain_box.notes.text()  # a GIF as a stack, a WebP as its first frame)
            assert f"'{layer.name}'" in notes and ("frames" in notes or "slider" in notes), (item.id, notes)
        said = len(messages)
        explorer.save_box.save()
        wait(qtbot, explorer.save_box.task)
        assert any(text.startswith("Saved 4 files") for _, text in messages[said:]), (item.id, messages[said:])
        saved.append(item.id)
        viewer.layers.clear()  # as a user closes what they looked at (and the next explain stays quick)
    no_python_errors(messages)
    assert not [text for level, text in messages if level == "error"]
    assert snapshot(tmp_path / "in") == before  # the inputs untouched
    names = os.listdir(out)
    assert all(len(os.fsencode(name)) <= 255 for name in names)
    # four files per explained image: none written over another's
    assert len(names) == 4 * len(saved), (len(names), len(saved), sorted(names))


def test_explain_folder_over_the_corpus_explains_or_names_each_file(make_napari_viewer, qtbot, messages, tmp_path):
    viewer = make_napari_viewer()
    paths = write_corpus(tmp_path / "in")
    before = snapshot(tmp_path / "in")
    explorer = explorer_with_model(viewer, qtbot)
    batch = explorer.batch
    batch.inputs.path, batch.output.path = str(tmp_path / "in"), str(tmp_path / "out")
    batch.run()
    wait(qtbot, batch.task)
    refused = [item for item in FILES if item.refused]
    summary = batch.summary.text()
    assert f"Explained {len(FILES) - len(refused)} of {len(FILES)} images" in summary, summary
    assert f"{len(refused)} skipped" in summary
    from napari_intr.csv_output import unescape_cell
    with open(tmp_path / "out" / "predictions.csv", newline="", encoding="utf-8") as stream:
        rows = {unescape_cell(row["file"]): row for row in csv.DictReader(stream)}
    assert len(rows) == len(FILES)
    for item in FILES:
        cell = str(paths[item.id]).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        row = rows[cell]
        assert (item.refused in row["error"]) if item.refused else (row["top1_class"] and not row["error"]), item.id
    batch.run()  # again into the same folder: refused, nothing overwritten
    assert "already holds the results" in messages[-1][1]
    no_python_errors(messages)
    assert snapshot(tmp_path / "in") == before
