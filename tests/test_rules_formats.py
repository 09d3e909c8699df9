"""Rules 7 and 8 (README "Limits"): auxiliary inputs (masks, part files) are validated and named;
every format follows one stack rule; a folder of only unusable images shows each reason."""
import re
import shutil

import pytest

from hostile_corpus_2 import (
    MASK_DAMAGE,
    STACK_FORMATS,
)
from hostile_rules_support import (
    RESUMABLE,
    TWO,
    animated,
    cub_parts,
    make_small_collection,
    run_cli,
    write_bad_mask,
)
from napari_intr import synth


@pytest.fixture(scope="module")
def small_collection(tmp_path_factory):
    return make_small_collection(tmp_path_factory.mktemp("collection"))


@pytest.mark.parametrize("which", ["masks", "specimens"])
@pytest.mark.parametrize("kind", MASK_DAMAGE)
def test_a_bad_mask_is_named_as_the_mask_by_every_reader(which, kind, small_collection, tmp_path):
    from napari_intr.atlas.parts import PartSource
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


@pytest.mark.parametrize("suffix", STACK_FORMATS)
def test_animated_images_follow_the_stack_rule_at_every_entry_point(suffix, tmp_path, capsys, sample_model):
    from napari_intr.collection.scan import scan_collection
    from napari_intr.explanation import Explainer
    from napari_intr.image_files import read_image
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
    from napari_intr.image_files import read_image
    assert read_image(animated(tmp_path / f"still.{suffix}", frames=1)).shape[:2] == (48, 48)


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


def test_the_faithfulness_evaluation_names_mis_sized_masks_instead_of_stretching_them(tmp_path, capsys):
    import numpy as np
    from PIL import Image
    data = tmp_path / "data"
    synth.write_collection(data, per_class=1, size=48, seed=7)
    for mask in (data / ".masks").rglob("*.png"):
        Image.fromarray(np.zeros((20, 30), np.uint8)).save(mask)  # every mask of the wrong size
    code, text = run_cli(["eval", "--model", "sample", "--data", data, "--explanations", "--out", tmp_path / "report",
                          "--limit", "2", "--rise-masks", "8", "--steps", "4", "--workers", "0", "--device", "cpu"],
                         capsys)
    assert code == 2 and "none of the 2 images could be measured" in text
    assert "attribute mask" in text and "is 30×20 px but its image is 48×48 px" in text
