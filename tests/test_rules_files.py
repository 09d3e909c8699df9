"""Rules 6 and 3 (README "Limits"): nothing is deleted that the program did not write; output
file names always fit, and one failing item never aborts a batch. Inputs: hostile_corpus_2.py."""
import os
import shutil

import pytest

from hostile_corpus_2 import (
    LONG_STEMS,
)
from hostile_rules_support import (
    explain_rows,
    files_of,
    name_bytes,
    run_cli,
)
from napari_intr import synth

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
