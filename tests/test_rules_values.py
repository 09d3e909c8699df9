"""Rules 4 and 5 (README "Limits"): configuration from the environment is read when used, with a
message naming it; numbers are checked where they come in. Inputs: hostile_corpus_2.py."""

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
)
from hostile_rules_support import (
    run_cli,
)


@pytest.mark.parametrize("text", BAD_DECODE_BUDGETS)
def test_a_bad_environment_value_is_named_at_every_entry_point_and_imports_never_fail(text, monkeypatch, capsys,
                                                                                      tmp_path):
    from napari_intr import image_files as io
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
              "modules = ['napari_intr.image_files', 'napari_intr.zoo', 'napari_intr.collection.explain', 'napari_intr.large_images', "
              "'intr_training.cli', 'intr_training.data', 'napari_intr.distributed']\n"
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
