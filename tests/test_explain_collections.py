"""`intr explain` on real collections: many specimens in one photo (--boxes), resuming after a
crash, and torchrun with two CPU processes giving the same output as one process."""
import csv
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from intr_training import cli
from napari_intr.checkpoints import save_model
from napari_intr.collection.explain import PREDICTIONS_FILE, explain_folder
from napari_intr.explanation import Explainer
from napari_intr.export import read_attention_tiff
from napari_intr.image_files import read_image
from napari_intr.loading import load_model, sample_data_dir
from napari_intr.model import IntrConfig, build_model

NAMES = ["Heliconius erato", "Heliconius melpomene", "Morpho peleides", "Danaus plexippus"]
# Four bundled specimens (160 px) and where they lie in the tray photo: (row, column) of the top-left.
MOSAIC = {"heliconia-synthetica-alba": (20, 30), "heliconia-synthetica-rubra": (24, 236),
          "pseudotigris-artefacta-flava": (212, 18), "papilionella-simulata-coccinea": (230, 250)}


def read_rows(out):
    with open(out / PREDICTIONS_FILE, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def intr_explain(monkeypatch, *arguments):
    monkeypatch.setattr(cli, "COMMANDS", {"explain": cli.COMMANDS["explain"]})
    return cli.main(["explain", *map(str, arguments)])


@pytest.fixture(scope="module")
def tray(tmp_path_factory):
    """A drawer photo with four specimens at known places, and the boxes file that names them."""
    folder = tmp_path_factory.mktemp("tray")
    photo = np.full((420, 440, 3), (205, 196, 176), np.uint8)  # a cardboard-coloured drawer
    specimens = {}
    for stem, (row, column) in MOSAIC.items():
        specimen = read_image(sample_data_dir() / "specimens" / f"{stem}.png")[..., :3]
        photo[row: row + 160, column: column + 160] = specimen
        specimens[stem] = specimen
    Image.fromarray(photo).save(folder / "drawer.png")
    lines = ["image,x0,y0,x1,y1,id"] + [f"drawer.png,{c},{r},{c + 160},{r + 160},{stem}"
                                        for stem, (r, c) in MOSAIC.items()]
    (folder / "boxes.csv").write_text("\n".join(lines) + "\n")
    return folder, specimens


def test_many_specimens_in_one_photo(monkeypatch, capsys, tray, tmp_path):
    folder, specimens = tray
    out = tmp_path / "out"
    # fp32: the crop's maps equal the specimen's own to 1e-4 (bf16 rounds the two runs apart)
    assert intr_explain(monkeypatch, "--boxes", folder / "boxes.csv", "--out", out, "--device", "cpu",
                        "--precision", "fp32") == 0
    assert "explained 4 of 4 regions" in capsys.readouterr().out
    rows = read_rows(out)
    assert [row["region"] for row in rows] == list(MOSAIC)
    model = load_model("sample", device="cpu", precision="fp32")
    explainer = Explainer(model, "sample")
    for row in rows:
        stem = row["region"]
        species = next(name for name in model.class_names if name.lower().replace(" ", "-") == stem)
        assert row["top1_class"] == species and float(row["top1_probability"]) > 0.9  # each its own class
        top, left = MOSAIC[stem]
        assert (float(row["x0"]), float(row["y0"]), float(row["x1"]), float(row["y1"])) == (left, top, left + 160,
                                                                                           top + 160)
        maps, metadata, _ = read_attention_tiff(out / row["attention_file"])
        alone = explainer.explain(specimens[stem])  # the same specimen in its own image
        np.testing.assert_allclose(maps, alone.head_maps(species, -1, "none"), rtol=1e-4, atol=1e-7)
        scale, translate = np.array(metadata["scale"]), np.array(metadata["translate"])
        alone_scale, alone_translate = alone.grid_to_image()
        np.testing.assert_allclose(scale, alone_scale)
        np.testing.assert_allclose(translate, np.array(alone_translate) + (top, left))  # placed on its box
        # every map cell placed on the photo lies inside the region's box ...
        cells = np.array(maps.shape[-2:])
        first_edge = translate - (scale - 1) / 2  # pixel edges: a cell spans `scale` pixels
        last_edge = first_edge + cells * scale
        assert np.all(first_edge >= (top, left)) and np.all(last_edge <= (top + 160, left + 160))
        # ... and the strongest attention falls on the specimen's own pixels, not a neighbour's
        peak = np.unravel_index(maps.mean(0).argmax(), maps.shape[-2:])
        centre = translate + np.array(peak) * scale
        assert top <= centre[0] < top + 160 and left <= centre[1] < left + 160
    assert metadata["region"]["id"] == stem and metadata["image_file"] == str(folder / "drawer.png")


def test_region_margin_and_bad_boxes(monkeypatch, capsys, tray, tmp_path):
    folder, _ = tray
    out = tmp_path / "out"
    assert intr_explain(monkeypatch, folder / "drawer.png", "--boxes", folder / "boxes.csv", "--margin", "10%",
                        "--out", out, "--device", "cpu", "--tiff-format", "ome") == 0
    rows = read_rows(out)
    assert rows[0]["attention_file"] == "drawer_heliconia-synthetica-alba_attention.ome.tif"
    metadata = read_attention_tiff(out / rows[0]["attention_file"])[1]
    assert metadata["region"]["crop_offset"] == [4, 14] and metadata["region"]["margin"] == "10%"
    (folder / "other.png").write_bytes((folder / "drawer.png").read_bytes())
    code = intr_explain(monkeypatch, folder / "other.png", "--boxes", folder / "boxes.csv", "--out", out)
    assert code == 2 and "has no boxes for the images given" in capsys.readouterr().err
    code = intr_explain(monkeypatch, "--out", out)
    assert code == 2 and "or --boxes BOXES.csv" in capsys.readouterr().err


def test_maps_of_a_calibrated_photo_open_in_fiji_named_and_to_scale(monkeypatch, capsys, tray, tmp_path):
    """A scanned tray (a TIFF at 200 px/cm): each region's maps are an ImageJ hyperstack whose
    slices are named class · layer · head, in millimetres per map cell (checked with tifffile)."""
    import tifffile
    folder, _ = tray
    photo = np.asarray(Image.open(folder / "drawer.png"))
    tifffile.imwrite(tmp_path / "scan.tif", photo, photometric="rgb", resolution=(200, 200),
                     resolutionunit="CENTIMETER")
    (tmp_path / "boxes.csv").write_text("image,x0,y0,x1,y1,id\nscan.tif,30,20,190,180,alba\n")
    assert intr_explain(monkeypatch, "--boxes", tmp_path / "boxes.csv", "--out", tmp_path / "out",
                        "--device", "cpu") == 0
    (row,) = read_rows(tmp_path / "out")
    species, heads = row["map_class"], load_model("sample", device="cpu").config.nheads
    with tifffile.TiffFile(tmp_path / "out" / row["attention_file"]) as tiff:
        assert tiff.is_imagej and tiff.series[0].axes == "CYX" and tiff.series[0].shape[0] == heads
        meta = tiff.imagej_metadata
        assert meta["hyperstack"] and meta["channels"] == heads and meta["unit"] == "mm"
        assert meta["Labels"] == [f"{species} · L2 · H{head}" for head in range(1, heads + 1)]
        per_mm = tiff.pages[0].tags["XResolution"].value
        cell_mm = per_mm[1] / per_mm[0]
    _, metadata, _ = read_attention_tiff(tmp_path / "out" / row["attention_file"])
    assert cell_mm == pytest.approx(0.05 * metadata["scale"][1], rel=1e-4)  # 0.05 mm per photo pixel


def test_boxes_that_cannot_be_explained_are_named_and_the_others_explained(monkeypatch, capsys, tray, tmp_path):
    """A box outside its photo and a photo that does not exist: each gets its CSV row with the
    reason, the command names them, and the good box is explained; a header without the needed
    columns stops the run before any work, naming the file and the columns it needs."""
    folder, _ = tray
    boxes = tmp_path / "boxes.csv"
    boxes.write_text(f"image,x0,y0,x1,y1,id\n{folder / 'drawer.png'},30,20,190,180,good\n"
                     f"{folder / 'drawer.png'},500,10,600,100,outside\n{folder / 'lost.png'},0,0,50,50,lost\n")
    out = tmp_path / "out"
    assert intr_explain(monkeypatch, "--boxes", boxes, "--out", out, "--device", "cpu") == 0
    printed = capsys.readouterr()
    assert "explained 1 of 3 regions" in printed.out
    assert "drawer.png region outside: region outside (x 500–600, y 10–100) lies outside the image, which " \
           "spans x 0–440 and y 0–420 (440 px wide, 420 px tall)" in printed.err
    assert f"lost.png region lost: no image file at {folder / 'lost.png'}" in printed.err
    rows = {row["region"]: row for row in read_rows(out)}
    assert rows["good"]["top1_class"] and not rows["good"]["error"]
    assert "lies outside the image" in rows["outside"]["error"] and "no image file" in rows["lost"]["error"]
    assert not rows["outside"]["attention_file"] and not rows["lost"]["attention_file"]

    boxes.write_text("file,left,top,right,bottom\ndrawer.png,30,20,190,180\n")
    assert intr_explain(monkeypatch, "--boxes", boxes, "--out", tmp_path / "other", "--device", "cpu") == 2
    assert (f"intr explain: error: boxes file {boxes} lacks the column(s) image, x0, y0, x1, y1: its header must "
            "be image,x0,y0,x1,y1[,id]") in capsys.readouterr().err
    assert not (tmp_path / "other" / PREDICTIONS_FILE).exists()


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """A tiny model's checkpoint and seven small images in two folders (one of them damaged)."""
    folder = tmp_path_factory.mktemp("collection")
    torch.manual_seed(0)
    checkpoint = save_model(build_model(IntrConfig.tiny(len(NAMES)), NAMES).eval(), folder / "tiny.safetensors")
    rng = np.random.default_rng(3)
    for k in range(6):
        sub = folder / "images" / ("a" if k % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (48, 56 + 4 * k, 3), dtype=np.uint8)).save(sub / f"s{k}.png")
    (folder / "images" / "a" / "broken.png").write_bytes(b"\x89PNG not an image")
    return checkpoint, folder / "images"


def test_a_rerun_skips_what_a_crashed_run_finished(monkeypatch, capsys, collection, tmp_path):
    from napari_intr.collection.sharding import ShardedRun
    checkpoint, images = collection
    model = load_model(checkpoint, device="cpu")
    out = tmp_path / "out"

    def crash_after_four(done, total, path):
        if done == 4:  # a/broken.png, a/s1, a/s3, a/s5
            raise KeyboardInterrupt  # the process is killed mid-run

    with pytest.raises(KeyboardInterrupt):
        explain_folder(model, [images], out, model_name=str(checkpoint), progress=crash_after_four,
                       start_job=ShardedRun.start)
    assert not (out / PREDICTIONS_FILE).exists() and len(list(out.glob("*.tif"))) == 3
    before = {path.name: path.stat().st_mtime_ns for path in out.glob("*.tif")}
    explained = []
    monkeypatch.setattr(Explainer, "decode", _counting(Explainer.decode, explained))  # once per image explained
    assert intr_explain(monkeypatch, "--model", checkpoint, images, "--out", out, "--device", "cpu") == 0
    assert "explained 6 of 7 images (3 done by an earlier run)" in capsys.readouterr().out
    assert len(explained) == 3  # the three images left (the damaged one is read again, and fails)
    assert all(out.joinpath(name).stat().st_mtime_ns == stamp for name, stamp in before.items())
    rows = read_rows(out)
    assert len(rows) == 7 and sum(bool(row["error"]) for row in rows) == 1
    explained.clear()
    assert intr_explain(monkeypatch, "--model", checkpoint, images, "--out", out, "--device", "cpu") == 0
    assert explained == [] and read_rows(out) == rows  # all done: only the damaged image is read again
    capsys.readouterr()
    code = intr_explain(monkeypatch, "--model", checkpoint, images, "--out", out, "--top-k", "2")
    assert code == 2 and "other settings (top_k differ)" in capsys.readouterr().err
    assert intr_explain(monkeypatch, "--model", checkpoint, images, "--out", out, "--top-k", "2", "--restart") == 0
    assert "top3_class" not in read_rows(out)[0]


def _counting(function, calls):
    def counted(self, *args, **kwargs):
        calls.append(args[1] if len(args) > 1 else None)
        return function(self, *args, **kwargs)
    return counted


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_torchrun_processes_write_what_one_process_writes(collection, tmp_path):
    checkpoint, images = collection
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    arguments = ["explain", str(images), "--model", str(checkpoint), "--device", "cpu", "--top-k", "3"]
    single = subprocess.run([sys.executable, "-m", "intr_training", *arguments, "--out", str(tmp_path / "one")],
                            capture_output=True, text=True, timeout=240, env=env, check=False)
    assert single.returncode == 0, single.stderr[-3000:]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
               "--master-port", str(free_port()), "-m", "intr_training", *arguments, "--out", str(tmp_path / "two")]
    shared = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env, check=False)
    assert shared.returncode == 0, shared.stderr[-3000:]
    assert shared.stdout.count("explained 6 of 7 images") == 1  # rank 0 alone reports
    one, two = read_rows(tmp_path / "one"), read_rows(tmp_path / "two")
    assert [row["file"] for row in one] == [row["file"] for row in two]
    for row_one, row_two in zip(one, two, strict=True):
        for column, value in row_one.items():
            if column.endswith("probability") and value:
                assert float(row_two[column]) == pytest.approx(float(value), rel=1e-4, abs=1e-6)
            else:
                assert row_two[column] == value, column
    tiffs = sorted(path.name for path in (tmp_path / "one").glob("*.tif"))
    assert tiffs == sorted(path.name for path in (tmp_path / "two").glob("*.tif")) and len(tiffs) == 6
    for name in tiffs:
        maps_one, meta_one, labels_one = read_attention_tiff(tmp_path / "one" / name)
        maps_two, meta_two, labels_two = read_attention_tiff(tmp_path / "two" / name)
        np.testing.assert_allclose(maps_two, maps_one, rtol=1e-4, atol=1e-7)
        assert labels_two == labels_one and meta_two["class"] == meta_one["class"]
    # the state folder holds the merged ledger only: no partial files are left behind
    assert sorted(p.name for p in (tmp_path / "two" / ".intr-explain").iterdir()) == ["done.jsonl", "settings.json"]


def test_a_zoo_model_without_names_warns_in_one_line(monkeypatch, capsys, tmp_path):
    """`intr explain --model intr-butterfly` without --class-names: one readable warning line."""
    from test_zoo import butterfly_checkpoint
    monkeypatch.setenv("NAPARI_INTR_CACHE", str(tmp_path / "cache"))
    butterfly_checkpoint(tmp_path / "cache" / "intr_checkpoint_butterfly_detr_r50.pth")
    image = tmp_path / "wing.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(image)
    assert intr_explain(monkeypatch, "--model", "intr-butterfly", image, "--out", tmp_path / "out",
                        "--device", "cpu") == 0
    errors = capsys.readouterr().err
    assert "intr explain: warning: intr-butterfly: classes are shown as numbers;" in errors
    (line,) = [line for line in errors.splitlines() if "warning" in line]
    assert "Cambridge butterfly" in line and line.endswith("; pass it with --class-names FILE")
    assert "warnings.warn" not in errors
