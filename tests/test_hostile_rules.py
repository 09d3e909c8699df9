"""Property tests of the input rules (README "Limits"), each across every entry point it concerns.
The corpus of hostile inputs that exercises them case by case is hostile_corpus_2.py."""
import os
import re
import shutil
from pathlib import Path

import pytest

from hostile_corpus_2 import (
    BAD_COORDINATES,
    BAD_COUNTS,
    BAD_DECODE_BUDGETS,
    BAD_MARGINS,
    BAD_OTHER_VARIABLES,
    ENCODE_FLOATS,
    ENCODE_REFUSED,
    GOOD_DECODE_BUDGETS,
    LABEL_IDS,
    LONG_STEMS,
    LOOSE_NAMES,
    MASK_DAMAGE,
    NAME_LISTS,
    REPEATED_NAMES,
    REPEATED_PAIRS,
    STACK_FORMATS,
)
from intr_training import cli, synth


def run_cli(argv, capsys):
    try:
        code = cli.main([str(arg) for arg in argv])
    except SystemExit as exit:
        code = exit.code
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "Traceback" not in text
    return code, text


def files_of(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- rule 6: nothing is deleted that the program did not write --------------------------------------

FOREIGN = {
    "png-added-to-species": lambda out: (out / synth.SPECIES[0].name / "mine.png", b"\x89PNG user"),
    "png-added-to-masks": lambda out: (out / ".masks" / synth.SPECIES[1].name / "mine.png", b"mask"),
    "synth-png-replaced": lambda out: (next((out / synth.SPECIES[2].name).glob("*.png")), b"edited"),
    "text-at-top": lambda out: (out / "notes.txt", b"field notes"),
    "new-folder": lambda out: (out / "my species" / "a.png", b"photo"),
    "hidden-file": lambda out: (out / synth.SPECIES[0].name / ".DS_Store", b"finder"),
}


@pytest.fixture(scope="module")
def synth_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "synth"
    synth.write_collection(out, per_class=1, size=32)
    return out


@pytest.mark.parametrize("kind", FOREIGN)
@pytest.mark.parametrize("entry", ["api", "cli"])
def test_synth_never_removes_what_it_did_not_write(kind, entry, synth_folder, tmp_path, capsys):
    out = tmp_path / "synth"
    shutil.copytree(synth_folder, out)
    path, data = FOREIGN[kind](out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    before = files_of(out)
    if entry == "api":
        with pytest.raises(ValueError) as refused:
            synth.write_collection(out, per_class=1, size=32)
        text = str(refused.value)
    else:
        code, text = run_cli(["synth", "--out", out, "--per-class", "1", "--size", "32"], capsys)
        assert code == 2
    assert str(path) in text and "nothing was removed" in text
    assert files_of(out) == before  # not one file lost, not even the synth's own


def test_synth_replaces_exactly_its_own_earlier_output(synth_folder, tmp_path, capsys):
    out = tmp_path / "synth"
    shutil.copytree(synth_folder, out)
    (out / "empty folder of mine").mkdir()
    code, _ = run_cli(["synth", "--out", out, "--per-class", "2", "--size", "32", "--seed", "1"], capsys)
    assert code == 0
    assert (out / "empty folder of mine").is_dir()  # not written by synth: kept
    assert len(list((out / synth.SPECIES[0].name).glob("*.png"))) == 2
    # a synth.json without its list of files (an older version, or edited) is refused
    summary = (out / "synth.json").read_text()
    (out / "synth.json").write_text(summary.replace('"files"', '"gone"'))
    before = files_of(out)
    code, text = run_cli(["synth", "--out", out, "--per-class", "1", "--size", "32"], capsys)
    assert code == 2 and "synth.json" in text and "nothing was removed" in text
    assert files_of(out) == before


@pytest.mark.parametrize("entry", ["../precious.png", "/abs/precious.png", "a/../../precious.png", "./x.png"])
def test_a_manifest_naming_files_outside_its_folder_is_refused(entry, synth_folder, tmp_path, capsys):
    import json

    from napari_intr.manifest import file_digest
    out = tmp_path / "synth"
    shutil.copytree(synth_folder, out)
    precious = tmp_path / "precious.png"
    precious.write_bytes(b"data")
    summary = json.loads((out / "synth.json").read_text())
    summary["files"][entry] = {"size": 4, "sha256": file_digest(precious)}
    (out / "synth.json").write_text(json.dumps(summary))
    before = files_of(tmp_path)
    code, text = run_cli(["synth", "--out", out, "--per-class", "1", "--size", "32"], capsys)
    assert code == 2 and "synth.json" in text and "nothing was removed" in text
    assert files_of(tmp_path) == before


def test_synth_refuses_a_symlink_it_did_not_write(synth_folder, tmp_path, capsys):
    out = tmp_path / "synth"
    shutil.copytree(synth_folder, out)
    precious = tmp_path / "precious.png"
    precious.write_bytes(b"data")
    os.symlink(precious, out / synth.SPECIES[0].name / "link.png")
    code, text = run_cli(["synth", "--out", out, "--per-class", "1", "--size", "32"], capsys)
    assert code == 2 and "link.png" in text
    assert precious.read_bytes() == b"data" and (out / synth.SPECIES[0].name / "link.png").is_symlink()


# -- rule 1: resumable work is keyed by content, not by name -----------------------------------------

TWO = synth.SHOWCASE_PAIR


@pytest.fixture(scope="module")
def small_collection(tmp_path_factory):
    """Two look-alike species, two images each, 48 px (the sample model's classes)."""
    root = tmp_path_factory.mktemp("collection") / "data"
    synth.write_collection(root, per_class=2, size=48, seed=3)
    for entry in root.iterdir():
        if entry.is_dir() and entry.name not in TWO:
            shutil.rmtree(entry)
    return root


def replace_image(path, seed):
    """Another specimen under the same name (as a user re-exporting a photo would)."""
    from PIL import Image
    image, _ = synth.render(synth.SPECIES[-1].name, synth.sample_pose(synth.image_rng(seed, "x", 0), 48), 48)
    Image.fromarray(image).save(path)


def explain_rows(out):
    import csv
    with open(out / "predictions.csv", newline="", encoding="utf-8") as stream:
        return {row["file"]: row for row in csv.DictReader(stream)}


RESUMABLE = {
    "explain": lambda data, out: ["explain", data, "--out", out],
    "atlas": lambda data, out: ["atlas", "--data", data, "--out", out, "--per-head", "1"],
}


@pytest.mark.parametrize("command", RESUMABLE)
def test_a_rerun_redoes_changed_inputs_and_drops_vanished_ones(command, small_collection, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(small_collection, data)
    out = tmp_path / "out"
    argv = RESUMABLE[command](data, out)
    code, first = run_cli(argv, capsys)
    assert code == 0, first
    images = sorted(p for p in data.rglob("*.png") if not any(part.startswith(".") for part in p.relative_to(data).parts))
    replace_image(images[0], seed=11)
    images[1].unlink()
    code, second = run_cli(argv, capsys)
    assert code == 0, second
    assert "1 images changed since the last run: redone" in second and images[0].name in second
    assert "1 images of the last run no longer there: dropped" in second and images[1].name in second
    if command == "explain":
        rows = explain_rows(out)
        assert str(images[1]) not in rows and len(rows) == len(images) - 1
        code, third = run_cli(RESUMABLE[command](data, tmp_path / "fresh"), capsys)
        assert explain_rows(tmp_path / "fresh")[str(images[0])]["top1_class"] == rows[str(images[0])]["top1_class"]
    else:
        assert f"summarised 1 images now, {len(images) - 2} from an earlier run" in second
    code, again = run_cli(argv, capsys)  # nothing changed: nothing redone, nothing said
    assert code == 0 and "changed since" not in again and "no longer there" not in again


@pytest.mark.parametrize("command", RESUMABLE)
def test_a_jobs_outputs_inside_its_input_folder_are_never_read_back(command, small_collection, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(small_collection, data)
    out = data / TWO[0] / "results"
    argv = RESUMABLE[command](data, out)
    counts = []
    for _ in range(2):
        code, text = run_cli(argv, capsys)
        assert code == 0, text
        counts.append(len(explain_rows(out)) if command == "explain" else
                      int(re.search(r"(\d+) from an earlier run", text).group(1))
                      + int(re.search(r"summarised (\d+) images now", text).group(1)))
    assert counts[0] == counts[1] == 4
    assert "inside the output folder" in text


@pytest.mark.parametrize("command", RESUMABLE)
@pytest.mark.parametrize("where", ["same", "above"])
def test_an_output_folder_holding_the_inputs_is_refused(command, where, small_collection, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(small_collection, data)
    out = data if where == "same" else tmp_path
    before = files_of(tmp_path)
    code, text = run_cli(RESUMABLE[command](data, out), capsys)
    assert code == 2 and "is, or holds, the input folder" in text
    assert files_of(tmp_path) == before


@pytest.fixture(scope="module")
def trained_run(small_collection, tmp_path_factory):
    """A 1-epoch run of the tiny backbone on 2 classes × 5 images (val split 0.4)."""
    from hostile_corpus import FAST, training_folder
    root = tmp_path_factory.mktemp("train")
    data = training_folder(root / "data", per_class=5)
    assert cli.main(["train", "--data", str(data), "--out", str(root / "run"), "--epochs", "1",
                     "--val-split", "0.4", *FAST]) == 0
    return data, root / "run"


def saved_split(run):
    from intr_training import state
    return state.load_state(run)["split"]


@pytest.mark.parametrize("rescan", [False, True])
def test_resume_keeps_the_saved_split_and_reports_added_and_removed_images(rescan, trained_run, tmp_path, capsys):
    from hostile_corpus import FAST
    source, source_run = trained_run
    data, run = tmp_path / "data", tmp_path / "run"
    shutil.copytree(source, data)
    shutil.copytree(source_run, run)
    before = saved_split(run)
    for index in range(4):  # four new images in one class: a redrawn split would move many
        shutil.copy(data / "red" / "0.png", data / "red" / f"new{index}.png")
    removed = before["train"][0][0]
    (data / removed).unlink()
    edited = before["val"][0][0]
    replace_image(data / edited, seed=5)  # a validation image edited in place: said, not moved
    code, text = run_cli(["train", "--data", data, "--out", run, "--epochs", "2", "--resume", *FAST,
                          *(["--rescan"] if rescan else [])], capsys)
    assert code == 0, text
    assert "4 images new since the last run" in text and "1 images of the last run no longer there" in text
    assert "1 images changed since the last run: trained on as they are now" in text and Path(edited).name in text
    assert ("join training (--rescan)" in text) == rescan and ("add --rescan" in text) != rescan
    after = saved_split(run)
    assert [entry[:2] for entry in after["val"]] == [entry[:2] for entry in before["val"]]  # none moved
    expected = [entry[:2] for entry in before["train"] if entry[0] != removed]
    assert [entry[:2] for entry in after["train"][:len(expected)]] == expected
    assert sorted(entry[0] for entry in after["train"][len(expected):]) == (
        [f"red/new{index}.png" for index in range(4)] if rescan else [])


# -- rules 1 and 7 on the feature cache: keyed by content, checked, rebuilt when damaged --------------

def damage_nan(cache):
    import numpy as np
    data = np.memmap(cache / "train.f32", np.float32, "r+")
    data[:] = np.nan
    data.flush()


def damage_truncated_done(cache):
    (cache / "train.done").write_bytes((cache / "train.done").read_bytes()[:1])


def damage_layout_cut(cache):
    import json
    layout = json.loads((cache / "train.json").read_text())
    layout["offsets"] = layout["offsets"][:1]
    (cache / "train.json").write_text(json.dumps(layout))


def damage_layout_garbage(cache):
    (cache / "train.json").write_bytes(b"\x00garbage")


@pytest.fixture(scope="module")
def cached_run(tmp_path_factory):
    from hostile_corpus import FAST, training_folder
    root = tmp_path_factory.mktemp("cached")
    data = training_folder(root / "data", per_class=3)
    assert cli.main(["train", "--data", str(data), "--out", str(root / "run"), "--epochs", "1", *FAST,
                     "--freeze", "backbone", "--cache-features", "--val-split", "0.34", "--progress", "none"]) == 0
    return data, root / "run"


@pytest.mark.parametrize("damage", [damage_nan, damage_truncated_done, damage_layout_cut, damage_layout_garbage])
def test_a_damaged_feature_cache_is_rebuilt_and_never_blamed_on_the_lr(damage, cached_run, tmp_path, capsys):
    from hostile_corpus import FAST
    data, source = cached_run
    run = tmp_path / "run"
    shutil.copytree(source, run)
    damage(run / "feature_cache")
    code, text = run_cli(["train", "--data", data, "--out", run, "--epochs", "2", "--resume", *FAST,
                          "--progress", "none"], capsys)
    assert code == 0, text
    assert "--lr" not in text and "diverged" not in text
    if damage is damage_nan:
        assert "feature cache" in text and "damaged" in text and "recomputed" in text


def test_a_cached_image_replaced_under_its_name_is_recomputed_and_said(tmp_path, capsys):
    from hostile_corpus import FAST, training_folder
    data, run = training_folder(tmp_path / "data", per_class=3), tmp_path / "run"
    common = ["--data", data, "--out", run, *FAST, "--freeze", "backbone", "--cache-features", "--val-split", "0.34",
              "--progress", "none"]
    assert run_cli(["train", *common, "--epochs", "1"], capsys)[0] == 0
    replace_image(data / "red" / "0.png", seed=9)
    code, text = run_cli(["train", *common, "--epochs", "2", "--resume"], capsys)
    assert code == 0, text
    assert re.search(r"feature cache \((train|val-rank0)\): 1 images changed since the last run: their "
                     r"features are computed again \(0.png\)", text), text


def test_an_image_replaced_with_the_same_size_and_time_is_recomputed(tmp_path):
    """The cache's key holds the image's content hash, not only its size and time."""
    from intr_training.feature_cache import file_key
    image = tmp_path / "a.png"
    image.write_bytes(b"A" * 100)
    key = file_key(image)
    stamp = image.stat()
    image.write_bytes(b"B" * 100)
    os.utime(image, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert file_key(image) != key


# -- rule 4: configuration from the environment is read when used, in one place ----------------------




@pytest.mark.parametrize("text", BAD_DECODE_BUDGETS)
def test_a_bad_environment_value_is_named_at_every_entry_point_and_imports_never_fail(text, monkeypatch, capsys,
                                                                                      tmp_path):
    from napari_intr import io
    monkeypatch.setenv("INTR_MAX_DECODE_BYTES", text)
    image = tmp_path / "a.png"
    from PIL import Image
    Image.new("RGB", (40, 40)).save(image)
    with pytest.raises(ValueError, match=r"INTR_MAX_DECODE_BYTES=.*give a size in bytes"):
        io.read_image(image)  # the Python API (and the docks, which read through it)
    code, text_out = run_cli(["explain", image, "--out", tmp_path / "out"], capsys)
    assert code == 2 and "INTR_MAX_DECODE_BYTES" in text_out and "e.g. 8G" in text_out
    assert not (tmp_path / "out").exists()


def test_importing_never_fails_whatever_the_environment_holds():
    import subprocess
    import sys
    script = ("import importlib, os, sys\n"
              "modules = ['napari_intr.io', 'napari_intr.zoo', 'napari_intr.batch', 'napari_intr.large_images', "
              "'intr_training.cli', 'intr_training.data', 'intr_training.distributed']\n"
              "for text in sys.argv[1:]:\n"
              "    for name in ('INTR_MAX_DECODE_BYTES', 'WORLD_SIZE', 'RANK', 'LOCAL_RANK'):\n"
              "        os.environ[name] = text\n"
              "    for module in modules:\n"
              "        importlib.reload(importlib.import_module(module))\n"
              "print('imported')\n")
    done = subprocess.run([sys.executable, "-c", script, *BAD_DECODE_BUDGETS], capture_output=True, text=True)
    assert done.returncode == 0 and "imported" in done.stdout, done.stderr


@pytest.mark.parametrize("text", GOOD_DECODE_BUDGETS)
def test_every_documented_form_of_the_decode_budget_is_accepted(text, monkeypatch):
    from napari_intr import environment
    monkeypatch.setenv("INTR_MAX_DECODE_BYTES", text)
    assert environment.value("INTR_MAX_DECODE_BYTES") == GOOD_DECODE_BUDGETS[text]


@pytest.mark.parametrize("name,text", BAD_OTHER_VARIABLES)
def test_other_variables_are_checked_the_same_way(name, text, monkeypatch, capsys, tmp_path):
    if not text.strip():  # a blank path is no setting (an environment cannot hold NUL)
        monkeypatch.setenv(name, text)
        from napari_intr import environment
        assert environment.value(name) is None
        return
    monkeypatch.setenv(name, text)
    code, out = run_cli(["synth", "--out", tmp_path / "s", "--per-class", "1", "--size", "32"], capsys)
    assert code == 2 and f"{name}=" in out and not (tmp_path / "s").exists()


# -- rule 5: numbers are validated at the boundary ---------------------------------------------------

@pytest.mark.parametrize("margin", BAD_MARGINS)
def test_margins_out_of_range_are_refused_before_any_work(margin, capsys, tmp_path):
    from napari_intr.regions import Margin
    with pytest.raises(ValueError, match="margin"):
        Margin.parse(margin)
    boxes = tmp_path / "boxes.csv"
    from PIL import Image
    Image.new("RGB", (64, 64)).save(tmp_path / "tray.png")
    boxes.write_text("image,x0,y0,x1,y1\ntray.png,0,0,40,40\n")
    code, text = run_cli(["explain", "--boxes", boxes, "--margin", margin, "--out", tmp_path / "out"], capsys)
    assert code == 2 and "margin" in text and not (tmp_path / "out").exists()


@pytest.mark.parametrize("coordinate", BAD_COORDINATES)
def test_box_coordinates_beyond_any_image_are_refused(coordinate, tmp_path):
    from napari_intr.regions import read_boxes
    (tmp_path / "boxes.csv").write_text(f"image,x0,y0,x1,y1\ntray.png,0,0,{coordinate},40\n")
    with pytest.raises(ValueError, match="line 2"):
        read_boxes(tmp_path / "boxes.csv")


@pytest.mark.parametrize("dtype,value", LABEL_IDS)
def test_label_ids_of_any_integer_type_and_size_become_regions(dtype, value):
    import numpy as np

    from napari_intr.regions import regions_from_labels
    labels = np.zeros((10, 12), dtype)
    labels[2:5, 3:9] = value
    labels[6:9, 1:2] = 1 if value != 1 else 2
    regions = {region.id: region for region in regions_from_labels(labels)}
    assert set(regions) == {str(value), str(1 if value != 1 else 2)}
    box = regions[str(value)]
    assert (box.x0, box.y0, box.x1, box.y1) == (3, 2, 9, 5)


def test_negative_label_ids_are_refused_not_dropped():
    import numpy as np

    from napari_intr.regions import regions_from_labels
    with pytest.raises(ValueError, match="negative label ids"):
        regions_from_labels(np.array([[0, -4], [0, 3]], np.int16))


@pytest.fixture(scope="module")
def sample_model():
    from napari_intr.loading import load_model
    return load_model("sample", device="cpu")


@pytest.mark.parametrize("dtype", ENCODE_FLOATS)
def test_encode_takes_any_real_floating_type(dtype, sample_model):
    import torch
    images = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    reference = sample_model.decode(sample_model.encode(images)).logits
    logits = sample_model.decode(sample_model.encode(images.to(getattr(torch, dtype)))).logits
    assert torch.isfinite(logits).all()
    tolerance = {"float16": 0.05, "bfloat16": 0.3}.get(dtype, 1e-5)
    torch.testing.assert_close(logits, reference, atol=tolerance, rtol=0)


@pytest.mark.parametrize("make", ENCODE_REFUSED)
def test_encode_names_what_it_needs(make, sample_model):
    import torch
    images = {"int64": lambda: torch.zeros(1, 3, 64, 64, dtype=torch.int64),
              "uint8": lambda: torch.zeros(1, 3, 64, 64, dtype=torch.uint8),
              "bool": lambda: torch.zeros(1, 3, 64, 64, dtype=torch.bool),
              "nan": lambda: torch.full((1, 3, 64, 64), float("nan")),
              "inf": lambda: torch.zeros(1, 3, 64, 64).index_fill_(3, torch.tensor([5]), float("inf")),
              "complex": lambda: torch.zeros(1, 3, 64, 64, dtype=torch.complex64)}[make]()
    with pytest.raises(ValueError, match="floating-point images|NaN or infinite"):
        sample_model.encode(images)


@pytest.mark.parametrize("option,value", BAD_COUNTS)
def test_counts_that_overflow_the_type_used_later_are_refused(option, value, capsys, tmp_path):
    code, text = run_cli(["explain", tmp_path, "--out", tmp_path / "out", option, value], capsys)
    assert code == 2 and option in text and not (tmp_path / "out").exists()


# -- rule 2: names are compared after NFC; loose matching never guesses; text files by their BOM -------

import unicodedata  # noqa: E402

NFC_NAMES = ["Café alba", "Ångström nigra", "Noël rubra"]


def nfd(name):
    return unicodedata.normalize("NFD", name)


@pytest.fixture(scope="module")
def named_checkpoint(tmp_path_factory):
    from hostile_corpus import write_ours
    root = tmp_path_factory.mktemp("names")
    return {"nfc": write_ours(root / "nfc.safetensors", names=NFC_NAMES),
            "nfd": write_ours(root / "nfd.safetensors", names=[nfd(n) for n in NFC_NAMES]),
            "case": write_ours(root / "case.safetensors", names=["Foo", "foo", "Bar"])}


@pytest.mark.parametrize("stored", ["nfc", "nfd"])
@pytest.mark.parametrize("asked", ["nfc", "nfd"])
def test_names_in_either_normal_form_meet_in_the_api_and_the_cli(stored, asked, named_checkpoint, tmp_path,
                                                                 capsys):
    from PIL import Image

    from napari_intr.loading import load_model
    model = load_model(named_checkpoint[stored], device="cpu")
    assert model.class_names == NFC_NAMES
    name = NFC_NAMES[0] if asked == "nfc" else nfd(NFC_NAMES[0])
    assert model.class_indices([name]) == [0]
    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "a.png")
    code, text = run_cli(["explain", tmp_path / "a.png", "--model", named_checkpoint[stored], "--out",
                          tmp_path / "out", "--classes", f"{name},{NFC_NAMES[1]}"], capsys)
    assert code == 0, text
    assert NFC_NAMES[0] in (tmp_path / "out" / "predictions.csv").read_text(encoding="utf-8")


@pytest.mark.parametrize("folder_form", ["nfc", "nfd"])
def test_folder_scans_compare_names_after_nfc(folder_form, named_checkpoint, tmp_path):
    from PIL import Image

    from intr_training.atlas.run import collection_images
    from intr_training.data import scan_collection
    from napari_intr.loading import load_model
    for name in NFC_NAMES:
        folder = tmp_path / "data" / (name if folder_form == "nfc" else nfd(name))
        folder.mkdir(parents=True)
        for index in range(2):
            Image.new("RGB", (40, 40), (index * 90, 20, 20)).save(folder / f"{index}.png")
    collection = scan_collection(tmp_path / "data", 0.5)
    assert collection.class_names == sorted(NFC_NAMES)  # the same order whichever form the folders have
    items, warnings = collection_images(tmp_path / "data", load_model(named_checkpoint["nfc"], device="cpu"), None)
    assert len(items) == 6 and not [w for w in warnings if "does not know" in w]


def test_nfc_and_nfd_folders_of_one_name_are_refused_as_one_class(tmp_path):
    from PIL import Image

    from intr_training.data import scan_collection
    for name in (NFC_NAMES[0], nfd(NFC_NAMES[0]), "other"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (40, 40)).save(tmp_path / name / "a.png")
    if len({p.name for p in tmp_path.iterdir()}) < 3:
        pytest.skip("this file system normalises names itself")
    with pytest.raises(ValueError, match="both give the class name"):
        scan_collection(tmp_path, 0.5)


@pytest.mark.parametrize("asked,outcome", LOOSE_NAMES)
def test_loose_matching_never_guesses(asked, outcome, named_checkpoint, capsys, tmp_path):
    from PIL import Image

    from napari_intr.loading import load_model
    model = load_model(named_checkpoint["case"], device="cpu")
    Image.new("RGB", (64, 64)).save(tmp_path / "a.png")
    if outcome == "ambiguous":
        with pytest.raises(ValueError, match=r"ambiguous.*'Foo', 'foo'"):
            model.class_indices([asked])
        code, text = run_cli(["explain", tmp_path, "--model", named_checkpoint["case"], "--out", tmp_path / "o",
                              "--classes", asked], capsys)
        assert code == 2 and "ambiguous" in text and "'Foo', 'foo'" in text
    else:
        assert model.class_indices([asked]) == [outcome]


NAMES_FILES = {
    "utf-8": lambda text: text.encode("utf-8"),
    "utf-8-bom": lambda text: b"\xef\xbb\xbf" + text.encode("utf-8"),
    "utf-16-le-bom": lambda text: text.encode("utf-16"),
    "utf-16-be-bom": lambda text: b"\xfe\xff" + text.encode("utf-16-be"),
    "utf-32-bom": lambda text: text.encode("utf-32"),
    "nfd": lambda text: nfd(text).encode("utf-8"),
    "crlf": lambda text: text.replace("\n", "\r\n").encode("utf-8"),
}
BAD_NAMES_FILES = {
    "utf-16-le-no-bom": (lambda text: text.encode("utf-16-le"), "NUL bytes"),
    "utf-16-be-no-bom": (lambda text: text.encode("utf-16-be"), "NUL bytes"),
    "latin-1": (lambda text: text.encode("latin-1"), "not UTF-8"),
    "nul-in-name": (lambda text: text.replace("Noël", "No\x00ël").encode("utf-8"), "NUL"),
    "control-in-name": (lambda text: text.replace("Noël", "No\x07ël").encode("utf-8"), "control characters"),
}


@pytest.mark.parametrize("encoding", NAMES_FILES)
def test_class_names_files_are_decoded_by_their_byte_order_mark(encoding, tmp_path):
    from napari_intr.class_names import read_class_names
    path = tmp_path / "names.txt"
    path.write_bytes(NAMES_FILES[encoding]("\n".join(NFC_NAMES) + "\n"))
    assert read_class_names(path) == NFC_NAMES


@pytest.mark.parametrize("encoding", BAD_NAMES_FILES)
def test_class_names_files_that_are_not_clean_text_are_refused(encoding, tmp_path, named_checkpoint, capsys):
    from napari_intr.class_names import read_class_names
    write, message = BAD_NAMES_FILES[encoding]
    path = tmp_path / "names.txt"
    path.write_bytes(write("\n".join(NFC_NAMES) + "\n"))
    with pytest.raises(ValueError, match=message):
        read_class_names(path)
    from PIL import Image
    Image.new("RGB", (64, 64)).save(tmp_path / "a.png")
    code, text = run_cli(["explain", tmp_path, "--model", named_checkpoint["nfc"], "--out", tmp_path / "o",
                          "--class-names", path], capsys)
    assert code == 2 and "names.txt" in text


@pytest.mark.parametrize("given,expected", NAME_LISTS)
def test_names_holding_commas_or_colons_can_be_given(given, expected):
    from napari_intr.class_names import parse_names
    assert parse_names(given, "--classes") == expected


def test_names_and_pairs_can_come_from_a_file(tmp_path):
    from napari_intr.class_names import parse_names, parse_pairs
    (tmp_path / "classes.txt").write_text("Tit, great\nWren: winter\n", encoding="utf-16")
    assert parse_names(f"@{tmp_path / 'classes.txt'}", "--classes") == ["Tit, great", "Wren: winter"]
    (tmp_path / "pairs.txt").write_text('"Tit, great":"Wren: winter"\nA:B\n', encoding="utf-8")
    assert parse_pairs(f"@{tmp_path / 'pairs.txt'}", "--pairs") == [("Tit, great", "Wren: winter"), ("A", "B")]
    assert parse_pairs('"A:x":B, C:"D,y"', "--pairs") == [("A:x", "B"), ("C", "D,y")]


def test_undecodable_or_control_folder_names_are_refused_with_the_folder(tmp_path, capsys):
    from PIL import Image

    from hostile_corpus import FAST
    data = tmp_path / "data"
    for name in (b"bad\xffname", b"good"):
        folder = os.path.join(os.fsencode(data), name)
        os.makedirs(folder)
        Image.new("RGB", (64, 64)).save(os.path.join(folder, b"a.png").decode("utf-8", "surrogateescape"))
    code, text = run_cli(["train", "--data", data, "--out", tmp_path / "run", *FAST], capsys)
    assert code == 2 and "bad\\udcffname" in text and "rename it" in text


# -- rule 9: duplicates in user lists are removed with a note -----------------------------------------

@pytest.mark.parametrize("given", REPEATED_PAIRS)
def test_repeated_pairs_are_removed_with_a_note(given):
    from napari_intr.class_names import RepeatedNames, parse_pairs
    with pytest.warns(RepeatedNames, match="A:B more than once"):
        assert parse_pairs(given, "--pairs") == [("A", "B")]


@pytest.mark.parametrize("given", REPEATED_NAMES)
def test_repeated_names_are_removed_with_a_note(given):
    from napari_intr.class_names import RepeatedNames, parse_names
    with pytest.warns(RepeatedNames, match="Wren more than once"):
        assert parse_names(given, "--classes")[0] == "Wren"


def test_repeats_in_cli_lists_are_noted_once_and_rows_are_not_doubled(named_checkpoint, tmp_path, capsys):
    from PIL import Image
    Image.new("RGB", (64, 64)).save(tmp_path / "a.png")
    name = NFC_NAMES[0]
    code, text = run_cli(["explain", tmp_path / "a.png", "--model", named_checkpoint["nfc"], "--out",
                          tmp_path / "out", "--classes", f"{name},{nfd(name)},{NFC_NAMES[1]}"], capsys)
    assert code == 0 and "more than once" in text
    header = (tmp_path / "out" / "predictions.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header.count("top3") == 0  # two distinct candidates, not three
    from napari_intr.loading import load_model
    model = load_model(named_checkpoint["nfc"], device="cpu")
    with pytest.warns(UserWarning, match="more than once"):
        assert model.class_indices([0, name, 1]) == [0, 1]


# -- rule 3: output names always fit; one failing item never aborts a batch ---------------------------

def name_bytes(path):
    return len(os.fsencode(path.name))





def test_long_image_names_give_fitting_unique_outputs_and_reruns_work(tmp_path, capsys):
    from PIL import Image
    folder = tmp_path / "images"
    folder.mkdir()
    for stem in LONG_STEMS.values():
        Image.new("RGB", (64, 64), (len(stem) % 200, 40, 90)).save(folder / f"{stem}.png")
    for _ in range(2):  # the re-run continues rather than fail the same way
        code, text = run_cli(["explain", folder, "--out", tmp_path / "out"], capsys)
        assert code == 0, text
    rows = explain_rows(tmp_path / "out")
    assert len(rows) == len(LONG_STEMS) and not [row for row in rows.values() if row["error"]]
    files = {row["attention_file"] for row in rows.values()}
    assert len(files) == len(LONG_STEMS)
    assert all(name_bytes(tmp_path / "out" / name) <= 255 and (tmp_path / "out" / name).is_file() for name in files)


def test_long_region_ids_fit(tmp_path, capsys):
    from PIL import Image
    Image.new("RGB", (96, 96)).save(tmp_path / "tray.png")
    ids = ["r" * 245, "r" * 244 + "x", "id:with/slash" * 18]
    (tmp_path / "boxes.csv").write_text("image,x0,y0,x1,y1,id\n" + "".join(
        f"tray.png,0,0,64,64,{region}\n" for region in ids), encoding="utf-8")
    code, text = run_cli(["explain", "--boxes", tmp_path / "boxes.csv", "--out", tmp_path / "out"], capsys)
    assert code == 0, text
    written = sorted((tmp_path / "out").glob("*.tif"))
    assert len(written) == 3 and all(name_bytes(path) <= 255 for path in written)


def test_long_stems_fit_every_export_of_the_docks(tmp_path, sample_model):
    import numpy as np

    from napari_intr.explanation import Explainer
    from napari_intr.export import save_explanation, save_regions
    from napari_intr.regions import Region, RegionResult
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    explanation = Explainer(sample_model, "sample").explain(image, "x")
    for stem in LONG_STEMS.values():
        written = save_explanation(tmp_path, stem, explanation, image, explanation.top_class())
        written += save_regions(tmp_path, stem, [RegionResult(Region("q" * 240, 0, 0, 64, 64), (0, 0), explanation)],
                                image)
        assert all(path.is_file() and name_bytes(path) <= 255 for path in written)
    # 6 files a stem (the two saves share the image and overlay): no two stems wrote over each other
    assert len(list(tmp_path.iterdir())) == len(LONG_STEMS) * 6


def test_an_atlas_of_long_and_colliding_class_names_is_complete(tmp_path, capsys):
    from PIL import Image

    from hostile_corpus import write_ours
    names = ["L" * 248, "L" * 247 + "M", "Foo", "foo", "蝶" * 82]
    model = write_ours(tmp_path / "long.safetensors", names=names)
    for index, name in enumerate(names):
        folder = tmp_path / "data" / name
        folder.mkdir(parents=True)
        Image.new("RGB", (48, 48), (index * 50, 30, 30)).save(folder / "a.png")
    code, text = run_cli(["atlas", "--model", model, "--data", tmp_path / "data", "--out", tmp_path / "atlas",
                          "--per-head", "1", "--pairs", f'"{names[0]}":"{names[1]}",Foo:foo'], capsys)
    assert code == 0, text
    assert (tmp_path / "atlas" / "atlas.html").is_file()
    montages = sorted((tmp_path / "atlas" / "montages").iterdir())
    assert len(montages) == len(names) + 2 and all(name_bytes(path) <= 255 for path in montages)


def test_one_item_whose_output_cannot_be_written_gets_a_row_and_the_rest_go_on(tmp_path, capsys):
    from PIL import Image
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a", "b", "c"):
        Image.new("RGB", (64, 64)).save(folder / f"{name}.png")
    (tmp_path / "out" / "b_attention.tif").mkdir(parents=True)  # its output name is taken by a folder
    code, text = run_cli(["explain", folder, "--out", tmp_path / "out"], capsys)
    assert code == 0 and "skipped" in text and "b.png" in text
    rows = explain_rows(tmp_path / "out")
    assert len(rows) == 3 and rows[str(folder / "b.png")]["error"] and not rows[str(folder / "a.png")]["error"]
    assert (tmp_path / "out" / "c_attention.tif").is_file()


# -- rule 7: auxiliary inputs are validated and named -------------------------------------------------

def write_bad_mask(kind, path, shape):
    import numpy as np
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "truncated":
        Image.fromarray(np.full(shape, 255, np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[:30])
    elif kind == "text":
        path.write_text("not a mask")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "wrong-size":
        Image.fromarray(np.full((shape[0] // 2, shape[1] + 3), 255, np.uint8)).save(path)


@pytest.mark.parametrize("which", ["masks", "specimens"])
@pytest.mark.parametrize("kind", MASK_DAMAGE)
def test_a_bad_mask_is_named_as_the_mask_by_every_reader(which, kind, small_collection, tmp_path):
    from intr_training.atlas.parts import PartSource
    from napari_intr.masks import read_mask
    data = tmp_path / "data"
    shutil.copytree(small_collection, data)
    image = sorted((data / TWO[0]).glob("*.png"))[0]
    mask = data / f".{which}" / TWO[0] / image.name
    write_bad_mask(kind, mask, (48, 48))
    message = "is 51×24 px but its image is 48×48 px" if kind == "wrong-size" else "cannot be read"
    with pytest.raises(ValueError, match=message) as refused:
        PartSource().for_image(image, (48, 48))  # the atlas
    assert str(mask) in str(refused.value)
    with pytest.raises(ValueError, match=message):
        read_mask(mask, (48, 48))
    if which == "masks":  # the faithfulness evaluation reads attribute masks through synth
        with pytest.raises(ValueError, match=message):
            synth.load_mask(image, (48, 48))


def test_the_atlas_names_a_bad_mask_and_goes_on(small_collection, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(small_collection, data)
    image = sorted((data / TWO[0]).glob("*.png"))[0]
    write_bad_mask("wrong-size", data / ".specimens" / TWO[0] / image.name, (48, 48))
    code, text = run_cli(RESUMABLE["atlas"](data, tmp_path / "out"), capsys)
    assert code == 0 and f".specimens/{TWO[0]}/{image.name}" in text and "its image is 48×48 px" in text
    assert "summarised 4 images now" in text


def cub_parts(root, image_paths):
    """A CUB-style parts/part_locs.txt with images.txt two folders up."""
    (root / "parts").mkdir(parents=True)
    (root / "images.txt").write_text("".join(f"{i} {p}\n" for i, p in enumerate(image_paths, 1)))
    (root / "parts" / "parts.txt").write_text("1 beak\n")
    (root / "parts" / "part_locs.txt").write_text("".join(f"{i} 1 10 10 1\n" for i in range(1, len(image_paths) + 1)))
    return root / "parts" / "part_locs.txt"


@pytest.mark.parametrize("strict", [False, True])
def test_a_parts_file_that_matches_no_image_warns_or_fails_under_strict(strict, small_collection, tmp_path, capsys):
    parts = cub_parts(tmp_path / "cub", ["001.Other/a.jpg", "002.Else/b.jpg"])
    argv = RESUMABLE["atlas"](small_collection, tmp_path / "out") + ["--parts", parts]
    code, text = run_cli(argv + (["--strict"] if strict else []), capsys)
    assert "has annotations for none of the 4 images" in text and str(parts) in text
    assert code == (2 if strict else 0)
    if strict:
        assert not (tmp_path / "out" / "atlas.html").exists()


def test_a_parts_file_that_matches_runs_quietly_under_strict(small_collection, tmp_path, capsys):
    images = sorted(p.relative_to(small_collection).as_posix() for p in small_collection.glob(f"{TWO[0]}/*.png"))
    parts = cub_parts(tmp_path / "cub", images)
    code, text = run_cli(RESUMABLE["atlas"](small_collection, tmp_path / "out") + ["--parts", parts, "--strict"],
                         capsys)
    assert code == 0 and "none of the" not in text


# -- rule 8: every input format gets one policy: stacks are refused, whatever the format ---------------

def animated(path, frames=3, **options):
    import numpy as np
    from PIL import Image
    images = [Image.fromarray(np.full((48, 48, 3), 40 * i, np.uint8)) for i in range(frames)]
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=100, **options)
    return path


@pytest.mark.parametrize("suffix", STACK_FORMATS)
def test_animated_images_follow_the_stack_rule_at_every_entry_point(suffix, tmp_path, capsys, sample_model):
    from intr_training.data import scan_collection
    from napari_intr.explanation import Explainer
    from napari_intr.io import read_image
    path = animated(tmp_path / "data" / "a" / f"moth.{suffix}")
    pattern = rf"moth.{suffix} holds a stack of 3 planes along time \(the frames of an animated {STACK_FORMATS[suffix]}\)"
    with pytest.raises(ValueError, match=pattern):
        read_image(path)  # the API and the docks
    code, text = run_cli(["explain", path, "--out", tmp_path / "out"], capsys)
    assert code == 2 and re.search(pattern, text)
    animated(tmp_path / "data" / "b" / f"moth.{suffix}")
    with pytest.raises(ValueError, match="none could be used") as refused:
        scan_collection(tmp_path / "data", 0.5)  # training
    assert "stack of 3 planes" in str(refused.value)
    assert Explainer  # the Explorer reads through read_image above


@pytest.mark.parametrize("suffix", STACK_FORMATS)
def test_single_frame_files_of_the_same_formats_are_read(suffix, tmp_path):
    from napari_intr.io import read_image
    assert read_image(animated(tmp_path / f"still.{suffix}", frames=1)).shape[:2] == (48, 48)


# -- all images unusable: the per-image reasons are shown ----------------------------------------------

@pytest.mark.parametrize("command", ["train", "atlas"])
def test_a_folder_of_only_unusable_images_shows_each_reason(command, tmp_path, capsys):
    from PIL import Image

    from hostile_corpus import FAST
    for name, size in (("a", (20, 20)), ("b", (31, 64))):
        (tmp_path / "data" / name).mkdir(parents=True)
        Image.new("RGB", size[::-1]).save(tmp_path / "data" / name / "tiny.png")
    argv = (["train", "--data", tmp_path / "data", "--out", tmp_path / "run", *FAST] if command == "train"
            else RESUMABLE["atlas"](tmp_path / "data", tmp_path / "out"))
    code, text = run_cli(argv, capsys)
    assert code == 2 and "none could be used" in text
    assert "it is 20×20 px" in text and "it is 31×64 px" in text and "at least 32 px" in text


@pytest.mark.parametrize("stem", LONG_STEMS.values(), ids=list(LONG_STEMS))
def test_the_edit_docks_export_names_fit(stem, tmp_path):
    from types import SimpleNamespace

    import numpy as np

    from napari_intr.widgets.edit.dock import export_paths
    session = SimpleNamespace(name=stem, original=np.zeros((40, 40, 3), np.uint8))
    image, report = export_paths(session, SimpleNamespace(source=SimpleNamespace(path=None)), tmp_path)
    for path in (image, report.with_name(report.name + ".json"), report.with_name(report.name + ".csv")):
        assert len(os.fsencode(path.name)) <= 255
        path.write_bytes(b"")  # the file system takes it


@pytest.mark.parametrize("change", ["mask-replaced", "mask-added", "mask-removed"])
def test_an_atlas_rerun_redoes_images_whose_masks_changed(change, small_collection, tmp_path, capsys):
    import numpy as np
    from PIL import Image
    data = tmp_path / "data"
    shutil.copytree(small_collection, data)
    image = sorted((data / TWO[0]).glob("*.png"))[0]
    mask = data / ".masks" / TWO[0] / image.name  # (the small collection keeps no masks)
    if change != "mask-added":
        mask.parent.mkdir(parents=True)
        Image.fromarray(np.full((48, 48), 255, np.uint8)).save(mask)
    argv = RESUMABLE["atlas"](data, tmp_path / "out")
    assert run_cli(argv, capsys)[0] == 0
    if change == "mask-removed":
        mask.unlink()
    else:
        mask.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((48, 48), 255 if change == "mask-added" else 0, np.uint8)).save(mask)
    code, text = run_cli(argv, capsys)
    assert code == 0 and "1 images changed since the last run: redone" in text and "summarised 1 images now" in text


def test_an_atlas_rerun_after_its_parts_file_changed_is_refused(small_collection, tmp_path, capsys):
    images = sorted(p.relative_to(small_collection).as_posix() for p in small_collection.glob(f"{TWO[0]}/*.png"))
    parts = cub_parts(tmp_path / "cub", images)
    argv = RESUMABLE["atlas"](small_collection, tmp_path / "out") + ["--parts", parts]
    assert run_cli(argv, capsys)[0] == 0
    parts.write_text(parts.read_text().replace(" 10 10 ", " 20 20 "))
    code, text = run_cli(argv, capsys)
    assert code == 2 and "parts_sha256" in text and "--restart" in text
    assert run_cli(argv + ["--restart"], capsys)[0] == 0


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-32"])
@pytest.mark.parametrize("form", ["nfc", "nfd"])
def test_boxes_files_are_read_by_their_bom_and_meet_images_after_nfc(encoding, form, tmp_path):
    from PIL import Image

    from napari_intr.regions import read_boxes
    on_disk = nfd("Café tray.png") if form == "nfc" else "Café tray.png"  # the CSV names it the other way
    Image.new("RGB", (64, 64)).save(tmp_path / on_disk)
    named = unicodedata.normalize("NFC" if form == "nfc" else "NFD", "Café tray.png")
    (tmp_path / "boxes.csv").write_text(f"image,x0,y0,x1,y1\n{named},0,0,40,40\n", encoding=encoding)
    boxes = read_boxes(tmp_path / "boxes.csv")
    assert list(boxes) == [tmp_path / on_disk]


def test_a_cub_parts_file_meets_images_after_nfc(tmp_path):
    from intr_training.atlas.parts import PartSource
    parts = cub_parts(tmp_path / "cub", [nfd("001.Café/a.jpg")])
    assert PartSource(parts).matching([tmp_path / "data" / "001.Café" / "a.jpg"]) == 1
