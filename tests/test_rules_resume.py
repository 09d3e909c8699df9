"""Rule 1 (README "Limits"): resumable work is keyed by content, not by name — explain, the atlas
(images and their masks), `train --resume` and the feature cache (which rule 7 also checks)."""
import os
import re
import shutil
from pathlib import Path

import pytest

from hostile_rules_support import (
    RESUMABLE,
    TWO,
    cub_parts,
    explain_rows,
    files_of,
    make_small_collection,
    replace_image,
    run_cli,
)
from intr_training import cli


@pytest.fixture(scope="module")
def small_collection(tmp_path_factory):
    return make_small_collection(tmp_path_factory.mktemp("collection"))


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
    assert "inside the output folder" in text or "output folder(s) of earlier runs (results)" in text


@pytest.mark.parametrize("earlier", RESUMABLE)
@pytest.mark.parametrize("command", RESUMABLE)
def test_outputs_inside_the_input_folder_of_an_earlier_run_into_another_folder_are_never_read(
        earlier, command, small_collection, tmp_path, capsys):
    """An explain or an atlas written inside the images, then a job into another folder: the
    earlier maps and montages are left out, with a note (they were explained or counted as specimens)."""
    data = tmp_path / "data"
    shutil.copytree(small_collection, data)
    code, text = run_cli(RESUMABLE[earlier](data, data / TWO[0] / "earlier"), capsys)
    assert code == 0, text
    out = tmp_path / "out"
    code, text = run_cli(RESUMABLE[command](data, out), capsys)
    assert code == 0, text
    count = (len(explain_rows(out)) if command == "explain" else
             int(re.search(r"summarised (\d+) images now", text).group(1)))
    assert count == 4 and "output folder(s) of earlier runs (earlier)" in text, text


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
    from napari_intr import run_folder as state
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
