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
COLLIDING = (b"a:b.png", b"caf\xe9.png")
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
            notes = explorer.explain_box.notes.full_text  # a GIF as a stack, a WebP as its first frame)
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
    summary = batch.summary.full_text
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
    # results written inside the images, then a run into another folder: never explained as images
    small = write_class_folders(tmp_path / "small", ["a"], images=3)
    for out in ("results", "results-2"):
        batch.inputs.path, batch.output.path = str(small), str(small / out)
        batch.run()
        wait(qtbot, batch.task)
        assert "Explained 3 of 3 images" in batch.summary.full_text, batch.summary.full_text
    assert "output folder(s) of earlier runs (results)" in batch.summary.full_text
    no_python_errors(messages)
    assert snapshot(tmp_path / "in") == before


def specimen_photo(size=160):
    """A bundled specimen (the plain image the region, compare and edit inputs are put on)."""
    from napari_intr.image_files import read_image
    from napari_intr.loading import sample_data_dir
    return read_image(sample_data_dir() / "specimens" / "heliconia-synthetica-alba.png")[:size, :size, :3]


def test_explain_regions_takes_label_ids_of_any_type_and_refuses_bad_margins_and_boxes(
        make_napari_viewer, qtbot, messages, tmp_path):
    from hostile_corpus_2 import BAD_MARGINS, LABEL_IDS
    viewer = make_napari_viewer()
    explorer = explorer_with_model(viewer, qtbot)
    viewer.add_image(specimen_photo(), name="photo", rgb=True)
    explorer.explain_box.image.choose("photo")
    regions = explorer.regions
    regions.margin.setCurrentText("0")
    for dtype, value in LABEL_IDS[:3] + LABEL_IDS[3::3]:  # ids of any integer type and size: each object a region
        labels = np.zeros((160, 160), dtype)
        other = 1 if value != 1 else 2
        labels[10:90, 10:90], labels[100:150, 90:150] = value, other
        layer = viewer.add_labels(labels, name=f"{dtype} {value}")
        regions.regions_layer.choose(layer.name)
        regions.explain_regions()
        wait(qtbot, regions.task)
        ids = [regions.table.item(row, 0).text() for row in range(regions.table.rowCount())]
        assert sorted(ids) == sorted([str(value), str(other)]), (dtype, value, ids, messages[-3:])
    negative = np.zeros((160, 160), np.int32)
    negative[10:90, 10:90], negative[100:150, 90:150] = -3, 4
    regions.regions_layer.choose(viewer.add_labels(negative, name="negative").name)
    regions.explain_regions()  # refused, not dropped: the message says which ids
    assert "negative label ids" in messages[-1][1] and "'negative'" in messages[-1][1], messages[-1]
    # a box wholly outside the photo is named, and the others go on; one crossing its edge is the
    # part inside (napari's canvas itself overflows past 2^31, so BAD_COORDINATES's larger ones are
    # for boxes files: test_rules_values.py)
    for low, high in ((-400.0, -200.0), (1e6, 2e6), (100.0, 5000.0)):
        corners = np.array([[low, low], [low, high], [high, high], [high, low]])
        boxes = viewer.add_shapes([np.array([[10, 10], [10, 80], [80, 80], [80, 10]]), corners],
                                  shape_type="rectangle", name=f"boxes {low}-{high}")
        regions.regions_layer.choose(boxes.name)
        said = len(messages)
        regions.explain_regions()
        wait(qtbot, regions.task)
        new = [text for _, text in messages[said:]]
        if low >= 160 or high < 0:
            assert regions.table.rowCount() == 1 and any(text.startswith("Region 2") and "outside the image" in text
                                                         for text in new), (low, high, new)
        else:  # explained within the photo, and said so by the region's id
            assert regions.table.rowCount() == 2, (low, high, new)
            summary = " ".join(regions.summary.text().split())  # the label wraps its lines
            assert "Region 2 (" in summary and "runs off the image" in summary, summary
    regions.regions_layer.choose(viewer.layers[f"{LABEL_IDS[0][0]} {LABEL_IDS[0][1]}"].name)
    for margin in BAD_MARGINS:  # refused before any work, naming the margin
        regions.margin.setCurrentText(margin)
        said = len(messages)
        regions.explain_regions()
        assert not regions.task.busy and [text for _, text in messages[said:] if "margin" in text.lower()], margin
    regions.margin.setCurrentText("0")
    regions.explain_regions()
    wait(qtbot, regions.task)
    explorer.save_box.folder.path = str(tmp_path / "saved")
    explorer.save_box.save()  # region ids of 2^63 and more name their files, which fit
    wait(qtbot, explorer.save_box.task)
    assert any(text.startswith("Saved ") for _, text in messages[-2:]), messages[-2:]
    assert any(str(LABEL_IDS[0][1]) in path.name for path in (tmp_path / "saved").iterdir())
    no_python_errors(messages)
    assert not [text for level, text in messages if level == "error"]


def named_checkpoints(root):
    """Class names in NFC, in NFD, differing only in case, and 248 characters long."""
    from hostile_corpus import write_ours
    from hostile_rules_support import make_named_checkpoints
    checkpoints = make_named_checkpoints(root)
    checkpoints["long"] = write_ours(root / "long.safetensors", names=["x" * 247 + "a", "x" * 247 + "b", "c"])
    return checkpoints


def test_compare_takes_names_in_either_normal_form_of_any_case_and_length(make_napari_viewer, qtbot, messages,
                                                                         tmp_path):
    import unicodedata
    viewer = make_napari_viewer()
    explorer = explorer_with_model(viewer, qtbot)
    _, compare = viewer.window.add_plugin_dock_widget("napari-intr", "INTR Compare")
    viewer.add_image(specimen_photo(64), name="photo", rgb=True)
    checkpoints = named_checkpoints(tmp_path)
    for form, checkpoint in checkpoints.items():
        load_checkpoint(explorer.model_source, checkpoint, qtbot)
        names = explorer.state.model.class_names
        explorer.explain_box.image.choose("photo")
        explorer.explain()
        wait(qtbot, explorer.explain_box.task)
        # the search finds a name typed in the other normal form, in any case
        typed = unicodedata.normalize("NFC" if form == "nfd" else "NFD", names[0][:4]).upper()
        compare.candidates.filter.setText(typed)
        assert names[0] in compare.candidates.visible_names(), (form, typed, compare.candidates.visible_names())
        compare.candidates.filter.setText("")
        for selected in names[:2]:  # "Foo" and "foo" are two classes: each is compared as itself
            compare.candidates.set_checked(names[:2])
            compare.selected.setCurrentText(selected)
            compare.compare()
            wait(qtbot, compare.task)
            assert compare.comparison is not None and compare.comparison.selected == selected, (form, selected)
            assert list(compare.comparison.candidate_names) == names[:2]
    assert not [text for level, text in messages if level == "error"]
    # the Model box's class-names file: read by its byte-order mark, refused (naming it) when not clean text
    from hostile_rules_support import NFC_NAMES
    from test_rules_names import BAD_NAMES_FILES, NAMES_FILES
    box = explorer.model_source
    for encoding, write in [*NAMES_FILES.items(), *BAD_NAMES_FILES.items()][2::3]:
        path = tmp_path / f"names {encoding}.txt"
        path.write_bytes((write if encoding in NAMES_FILES else write[0])("\n".join(NFC_NAMES) + "\n"))
        box.class_names.path = str(path)
        said = len(messages)
        load_checkpoint(box, checkpoints["case"], qtbot)
        if encoding in NAMES_FILES:
            assert [unicodedata.normalize("NFC", n) for n in explorer.state.model.class_names] == NFC_NAMES, encoding
        else:
            errors = [text for level, text in messages[said:] if level == "error"]
            assert errors and path.name in errors[-1] and BAD_NAMES_FILES[encoding][1] in errors[-1], (encoding, errors)
    no_python_errors(messages)


def test_edit_exports_of_hostile_names_fit_and_never_meet(make_napari_viewer, qtbot, messages, tmp_path):
    """Edit (blur a painted region) then Export, for images whose names are long, undecodable,
    hold control characters or punctuation, and masks of any integer type."""
    viewer = make_napari_viewer()
    names = (b"a,b.png", b"a:b.png", b"\xff\xfe.png", b"caf\xe9.png", b"tab\there.png", b"bell\x07.png")
    chosen = [item for item in FILES if item.name in names] + [item for item in FILES if item.kind.startswith("long-")][::5]
    paths = write_corpus(tmp_path / "in")
    before = snapshot(tmp_path / "in")
    explorer_with_model(viewer, qtbot)
    _, edit = viewer.window.add_plugin_dock_widget("napari-intr", "INTR Edit")
    edit.folder.path = str(tmp_path / "edited")
    mask_types = [np.uint64, np.int8, np.uint16, np.int64]
    for number, item in enumerate(chosen):
        (layer,) = viewer.open(str(paths[item.id]))
        edit.image.choose(layer.name)
        edit.start()
        mask = np.zeros(item.size, mask_types[number % len(mask_types)])
        mask[5:20, 5:20] = np.iinfo(mask.dtype).max if number % 2 else -1 if mask.dtype.kind == "i" else 1
        edit.region_layer.data = mask
        edit.options.operation.value = "blur"
        edit.apply()
        wait(qtbot, edit.task)
        assert len(edit.session.history) == 1, (item.id, messages[-3:])
        said = len(messages)
        edit.export()
        assert not [text for level, text in messages[said:] if level != "info"], (item.id, messages[said:])
        viewer.layers.clear()
    exported = os.listdir(tmp_path / "edited")
    assert all(len(os.fsencode(name)) <= 255 for name in exported)
    assert len(exported) == 3 * len(chosen), sorted(exported)  # image, report.json and report.csv each
    assert snapshot(tmp_path / "in") == before
    no_python_errors(messages)


def write_class_folders(root, names, images=2, size=48):
    """A class folder per name (bytes: any name, even undecodable), `images` plain PNGs in each."""
    from PIL import Image
    for number, name in enumerate(names):
        folder = os.path.join(os.fsencode(root), name if isinstance(name, bytes) else name.encode())
        os.makedirs(folder, exist_ok=True)
        for index in range(images):
            Image.new("RGB", (size, size), (40 * number % 256, 30 * index, 90)).save(
                os.fsdecode(os.path.join(folder, b"%d.png" % index)))
    return root


def scanned(widget, qtbot, folder):
    widget.collection.folder.path = str(folder)
    widget.collection.summary = None
    widget.collection.scan()
    wait(qtbot, widget.collection.task)
    return widget.collection.summary


def test_finetune_scan_uses_or_names_every_folder_and_file(make_napari_viewer, qtbot, messages, tmp_path):
    """Fine-tune's Scan collection (what Start runs before a run) over hostile collections."""
    import unicodedata
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-intr", "INTR Fine-tune")
    # the whole corpus as one class beside a plain one: the refused files are named, with their reason
    paths = write_corpus(tmp_path / "corpus" / "hostile")
    write_class_folders(tmp_path / "corpus", ["plain"], images=4)
    summary = scanned(widget, qtbot, tmp_path / "corpus")
    counts = {name: train + val for name, train, val in summary.counts}
    assert counts == {"hostile": sum(not item.refused for item in FILES), "plain": 4}, counts
    shown = widget.collection.notes.full_text
    refused = [item for item in FILES if item.refused]
    assert f"{len(refused)} images skipped" in shown, shown
    for item in refused:
        assert [note for note in summary.skipped if str(paths[item.id]) in note and item.refused in note], item.id
    # class folders written in NFD are the NFC classes; long and case-twin names are classes of their own
    names = ["Café alba", "Noël rubra", "Foo", "foo", "x" * 240]
    summary = scanned(widget, qtbot, write_class_folders(tmp_path / "names", [unicodedata.normalize("NFD", n)
                                                                           for n in names]))
    assert summary.class_names == sorted(names), summary.class_names
    said = len(messages)
    for folder, says in ((write_class_folders(tmp_path / "twins", ["Café", unicodedata.normalize("NFD", "Café"),
                                                                   "other"]), "both give the class name"),
                         (write_class_folders(tmp_path / "undecodable", [b"bad\xffname", b"good"]), "bad"),
                         (write_class_folders(tmp_path / "tiny", ["a", "b"], size=16), "at least 32 px")):
        assert scanned(widget, qtbot, folder) is None
        errors = [text for level, text in messages[said:] if level == "error"]
        assert errors and says in errors[-1] and folder.name in errors[-1], (folder, messages[said:])
        said = len(messages)
    no_python_errors(messages)


def test_traits_builds_an_atlas_of_the_corpus_once_and_names_what_it_left_out(make_napari_viewer, qtbot, messages,
                                                                               tmp_path):
    """Build atlas over a collection holding one file of each kind, with the atlas folder inside the
    collection, twice: the second run reuses every summary and never reads the atlas's own files."""
    from hostile_corpus import write_ours
    viewer = make_napari_viewer()
    data = tmp_path / "data"
    chosen = one_of_each_kind(COLLIDING)
    for item in chosen:
        (data / "hostile").mkdir(parents=True, exist_ok=True)
        item.write(data / "hostile")
    write_class_folders(data, ["plain"], images=2)
    _, widget = viewer.window.add_plugin_dock_widget("napari-intr", "INTR Traits")
    wait(qtbot, widget.model_source.task)
    load_checkpoint(widget.model_source, write_ours(tmp_path / "two.safetensors", names=("hostile", "plain")), qtbot)
    run = widget.run_box
    run.data.path, run.out.path = str(data), str(data / "hostile" / "atlas")
    run.pairs.value = "hostile:plain, hostile : plain"  # a repeated pair: removed with a note
    run.per_head.value = 1
    used = sum(not item.refused for item in chosen) + 2
    for attempt in range(2):
        said = len(messages)
        run.run()
        wait(qtbot, run.task)
        new = [text for _, text in messages[said:]]
        assert any("hostile:plain more than once" in text for text in new), new
        summary = run.summary.full_text
        reused = used if attempt else 0
        assert f"{used - reused} images summarised now, {reused} reused" in summary, summary
        for item in chosen:
            if item.refused:
                name = os.fsdecode(item.name)
                assert any(name in text and item.refused in text for text in new), (item.id, new)
    assert (data / "hostile" / "atlas" / "atlas.html").is_file()
    no_python_errors(messages)
    assert not [text for level, text in messages if level == "error"]


def test_save_keeps_apart_images_whose_names_differ_only_in_case(make_napari_viewer, qtbot, messages, tmp_path):
    """Rule 3 on case-insensitive file systems (macOS, Windows): 'Moth' saved after 'moth' would
    overwrite its files there. Their names stay apart by case alone on no system."""
    from napari_intr.filenames import apart_from_case_twins
    viewer = make_napari_viewer()
    explorer = explorer_with_model(viewer, qtbot)
    out = tmp_path / "saved"
    explorer.save_box.folder.path = str(out)
    for name in ("moth", "Moth", "MOTH"):
        viewer.add_image(specimen_photo(), name=name, rgb=True)
        explorer.explain_box.image.choose(name)
        explorer.explain()
        wait(qtbot, explorer.explain_box.task)
        explorer.save_box.save()
        wait(qtbot, explorer.save_box.task)
    names = os.listdir(out)
    assert len(names) == 12 and len({name.casefold() for name in names}) == 12, sorted(names)
    assert any(name.startswith("moth_") for name in names)  # the first keeps its plain name
    no_python_errors(messages)
    assert apart_from_case_twins(out, "moth", "moth") == "moth"  # its own earlier files: the same name again
    assert apart_from_case_twins(tmp_path / "none", "Moth", "Moth") == "Moth"
