"""Batch explain and `intr explain`: CSV and TIFF outputs, skipped files, cancelling, CLI errors."""
import csv
import re

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from intr_training import cli
from napari_intr.checkpoints import save_model
from napari_intr.collection.explain import PREDICTIONS_FILE, csv_columns, explain_folder
from napari_intr.explanation import Explainer
from napari_intr.export import read_attention_tiff
from napari_intr.image_files import find_images, read_image
from napari_intr.model import IntrConfig, build_model

NAMES = ["Heliconius erato", "Heliconius melpomene", "Morpho peleides", "Danaus plexippus"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(IntrConfig.tiny(len(NAMES)), NAMES).eval()


@pytest.fixture
def folder(tmp_path):
    """Three PNGs in a class subfolder, a grey 16-bit TIFF, and a damaged file."""
    rng = np.random.default_rng(1)
    images = tmp_path / "images"
    (images / "erato").mkdir(parents=True)
    for k in range(3):
        Image.fromarray(rng.integers(0, 256, (64, 80 + 8 * k, 3), dtype=np.uint8)).save(images / "erato" / f"s{k}.png")
    tifffile.imwrite(images / "grey.tif", rng.integers(0, 65536, (72, 72), dtype=np.uint16))
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really an image")
    return images


def read_rows(out):
    with open(out / PREDICTIONS_FILE, newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        return reader.fieldnames, list(reader)


def test_csv_and_tiffs(model, folder, tmp_path):
    out = tmp_path / "out"
    seen = []
    summary = explain_folder(model, [folder], out, top_k=3, model_name="tiny-test",
                             progress=lambda done, total, path: seen.append((done, total)))
    assert summary["done"] == 4 and summary["total"] == 5 and not summary["cancelled"]
    assert [path for path, _ in summary["skipped"]] == [str(folder / "broken.png")]
    assert seen == [(k, 5) for k in range(1, 6)]
    columns, rows = read_rows(out)
    assert columns == csv_columns(3) == ["file", "known", "open_set_score", "prediction_set", "top1_class", "top1_label", "top1_probability", "top2_class",
                                         "top2_label", "top2_probability", "top3_class", "top3_label",
                                         "top3_probability", "map_class", "attention_file", "error"]
    assert [row["file"] for row in rows] == [str(p) for p in find_images(folder)]
    broken = next(row for row in rows if row["file"].endswith("broken.png"))
    assert "broken.png" in broken["error"] and broken["top1_class"] == "" and broken["attention_file"] == ""
    explainer = Explainer(model, "tiny-test")
    for row in (row for row in rows if not row["error"]):
        expected = explainer.explain(read_image(row["file"]))
        assert row["top1_class"] == expected.top_class() == row["map_class"]
        assert float(row["top1_probability"]) == pytest.approx(expected.table()[0]["probability"], rel=1e-5)
        assert row["top1_label"] == row["top1_class"]  # a model without labels: its names
        assert row["known"] == row["open_set_score"] == row["prediction_set"] == ""  # not calibrated
        maps, metadata, labels = read_attention_tiff(out / row["attention_file"])
        assert labels == [f"{row['map_class']} · L2 · H{h}" for h in range(1, 5)]  # Fiji's slice names
        assert maps.dtype == np.float32 and maps.shape == expected.attention.shape[1:2] + expected.attention.shape[3:]
        np.testing.assert_allclose(maps, expected.head_maps(row["map_class"], -1, "none"), rtol=1e-5, atol=1e-8)
        assert metadata["class"] == row["map_class"] and metadata["layer"] == 2
        assert metadata["model"] == "tiny-test" and metadata["mode"] == "drop" and metadata["candidates"] == NAMES
        assert metadata["image_file"] == row["file"]
        scale, translate = expected.grid_to_image()
        assert metadata["scale"] == pytest.approx(scale) and metadata["translate"] == pytest.approx(translate)
    assert not list(out.glob("*.part"))


def test_chosen_class_layer_and_candidates(model, folder, tmp_path):
    out = tmp_path / "out"
    candidates = ["Morpho peleides", "Danaus plexippus"]
    summary = explain_folder(model, [folder / "erato" / "s0.png", folder / "grey.tif"], out, candidates,
                             mode="zero", top_k=5, layer=0, class_for_maps="Danaus plexippus")
    assert summary["done"] == 2
    columns, rows = read_rows(out)
    assert columns == csv_columns(2)  # top-k is capped by the number of candidates
    assert {row["top1_class"] for row in rows} <= set(candidates)
    metadata = read_attention_tiff(out / rows[1]["attention_file"])[1]
    assert metadata["class"] == "Danaus plexippus" and metadata["layer"] == 1
    assert metadata["candidates"] == candidates and metadata["mode"] == "zero"


def test_same_stem_in_two_folders_does_not_overwrite(model, folder, tmp_path):
    (folder / "melpomene").mkdir()
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(folder / "melpomene" / "s0.png")
    summary = explain_folder(model, [folder / "erato" / "s0.png", folder / "melpomene" / "s0.png"], tmp_path / "o")
    assert [p.name for p in summary["attention_files"]] == ["s0_attention.tif", "s0_attention_2.tif"]


def test_cancel_leaves_consistent_files(model, folder, tmp_path):
    out = tmp_path / "out"
    done = []
    summary = explain_folder(model, [folder], out, progress=lambda *_: done.append(1),
                             should_stop=lambda: len(done) >= 2)
    assert summary["cancelled"] and summary["done"] + len(summary["skipped"]) == 2
    _, rows = read_rows(out)
    assert len(rows) == 2
    written = sorted(p.name for p in out.glob("*.tif"))
    assert written == sorted(row["attention_file"] for row in rows if row["attention_file"])
    assert not list(out.glob("*.part"))


def test_bad_arguments_fail_before_any_work(model, folder, tmp_path):
    with pytest.raises(ValueError, match="unknown class 'Morpho'"):
        explain_folder(model, [folder], tmp_path / "a", classes=["Morpho"])
    with pytest.raises(ValueError, match="not among the candidate classes"):
        explain_folder(model, [folder], tmp_path / "a", classes=NAMES[:2], class_for_maps=NAMES[3])
    with pytest.raises(ValueError, match="out of range"):
        explain_folder(model, [folder], tmp_path / "a", layer=2)
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        explain_folder(model, [folder / "missing"], tmp_path / "a")
    assert not (tmp_path / "a").exists()


def test_read_image_formats(tmp_path):
    planar = np.arange(3 * 40 * 50, dtype=np.uint16).reshape(3, 40, 50)
    tifffile.imwrite(tmp_path / "planar.tif", planar, photometric="rgb", planarconfig="separate")
    assert read_image(tmp_path / "planar.tif").shape == (40, 50, 3)
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((7, 40, 50), np.uint8), photometric="minisblack")
    with pytest.raises(ValueError, match="stack of 7 planes"):
        read_image(tmp_path / "stack.tif")
    Image.fromarray(np.zeros((40, 50), np.uint8)).convert("P").save(tmp_path / "palette.png")
    assert read_image(tmp_path / "palette.png").shape == (40, 50, 3)
    deep = (np.arange(40 * 50).reshape(40, 50) * 30).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    np.testing.assert_array_equal(read_image(tmp_path / "deep.png"), deep)  # 16 bits kept
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="cannot read notes.txt"):
        read_image(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "absent.png")


def test_find_images(folder, tmp_path):
    (folder / ".hidden.png").write_bytes(b"")
    (folder / "readme.txt").write_text("not an image")
    found = find_images(folder)
    assert [p.name for p in found] == ["broken.png", "s0.png", "s1.png", "s2.png", "grey.tif"]
    assert find_images([folder / "grey.tif", folder / "grey.tif"]) == [folder / "grey.tif"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images found"):
        find_images(tmp_path / "empty")


# --- the `intr explain` command ---

@pytest.fixture
def checkpoint(model, tmp_path):
    return str(save_model(model, tmp_path / "tiny.safetensors"))


def intr_explain(monkeypatch, *arguments):
    # Only the explain subcommand is registered, so these tests don't depend on the others.
    monkeypatch.setattr(cli, "COMMANDS", {"explain": cli.COMMANDS["explain"]})
    return cli.main(["explain", *map(str, arguments)])


def test_cli_success(monkeypatch, capsys, checkpoint, folder, tmp_path):
    out = tmp_path / "out"
    code = intr_explain(monkeypatch, "--model", checkpoint, folder, "--out", out, "--device", "cpu",
                        "--classes", "Morpho peleides, Danaus plexippus,Heliconius erato",
                        "--top-k", "2", "--layer", "1", "--class", "Heliconius erato")
    captured = capsys.readouterr()
    assert code == 0
    assert "explained 4 of 5 images" in captured.out and "skipped" in captured.err
    columns, rows = read_rows(out)
    assert columns == csv_columns(2) and len(rows) == 5
    metadata = read_attention_tiff(out / "s0_attention.tif")[1]
    assert metadata["class"] == "Heliconius erato" and metadata["layer"] == 1
    assert metadata["model"] == checkpoint


def test_cli_single_class_warns(monkeypatch, capsys, checkpoint, folder, tmp_path):
    code = intr_explain(monkeypatch, "--model", checkpoint, folder / "grey.tif", "--out", tmp_path / "o",
                        "--classes", "Morpho peleides")
    assert code == 0
    assert "single candidate class" in capsys.readouterr().err


@pytest.mark.parametrize("arguments, message", [
    (["{missing}"], "no such file or folder"),
    (["{empty}"], "no images found"),
    (["{folder}", "--classes", "Morpho peleides,Danaus plexipus"], "unknown class 'Danaus plexipus'.*did you mean"),
    (["{folder}", "--classes", " , "], "--classes is empty"),
    (["{folder}", "--layer", "3"], r"--layer 3 is out of range.*\(1..2\)"),
    (["{folder}", "--layer", "0"], "--layer 0 is out of range"),
    (["{folder}", "--top-k", "0"], "top-k must be at least 1"),
    (["{folder}", "--classes", "Morpho peleides", "--class", "Danaus plexippus"], "not among the candidate"),
    (["{folder}/broken.png"], "none of the 1 images could be explained"),
    (["{folder}", "--out", "{folder}/grey.tif"], "is a file; give a folder"),
])
def test_cli_bad_input(monkeypatch, capsys, checkpoint, folder, tmp_path, arguments, message):
    (tmp_path / "empty").mkdir()
    places = {"missing": tmp_path / "missing", "empty": tmp_path / "empty", "folder": folder}
    arguments = [a.format(**places) for a in arguments]
    code = intr_explain(monkeypatch, "--model", checkpoint, "--out", tmp_path / "out", *arguments)
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and error.startswith("intr explain: error: ")
    assert re.search(message, error), error


def test_cli_missing_model(monkeypatch, capsys, folder, tmp_path):
    code = intr_explain(monkeypatch, "--model", tmp_path / "nope.safetensors", folder, "--out", tmp_path / "o")
    assert code == 2 and "no model at" in capsys.readouterr().err


def test_cli_shortlist(monkeypatch, capsys, checkpoint, folder, tmp_path):
    out = tmp_path / "out"
    code = intr_explain(monkeypatch, "--model", checkpoint, folder, "--out", out, "--device", "cpu",
                        "--shortlist", "2", "--top-k", "4")
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "the other 2 classes were not" in captured.out
    columns, _ = read_rows(out)
    assert columns == csv_columns(2)  # only the 2 decoded classes can be ranked
    metadata = read_attention_tiff(out / "s0_attention.tif")[1]
    assert len(metadata["candidates"]) == 2 and metadata["scored_by_first_pass_only"] == 2
    for arguments, message in ((["--shortlist", "0"], "at least 1"), (["--shortlist", "2", "--mode", "zero"],
                                                                        "drop mode"),
                               (["--shortlist", "2", "--class", "Morpho peleides"], "outside an image's shortlist")):
        code = intr_explain(monkeypatch, "--model", checkpoint, folder, "--out", tmp_path / "o2", *arguments)
        assert code == 2 and re.search(message, capsys.readouterr().err)
