"""Rejected images ("none of the N species") in every output that is not a widget: the
`intr explain` CSV and summary, the region table, `intr atlas`; and a model without calibration."""
import csv
import json

import pytest
import torch

from intr_training.cli import main
from napari_intr import load_model, synth
from napari_intr.atlas import AtlasOptions, build_atlas
from napari_intr.calibration import Calibration, open_set_scores
from napari_intr.checkpoints import save_model
from napari_intr.collection.explain import PREDICTIONS_FILE, explain_folder
from napari_intr.explanation import Explainer
from napari_intr.export import region_columns, region_rows
from napari_intr.image_files import find_images, read_image
from napari_intr.regions import Region, explain_regions


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    synth.write_collection(root, per_class=1, size=64, seed=11)
    return root


@pytest.fixture(scope="module")
def calibrated(collection):
    """The bundled model with a threshold at the median score of the collection's images: about
    half of them are "none of the 9 species"."""
    torch.set_num_threads(1)
    model = load_model("sample", device="cpu")
    explainer = Explainer(model)
    scores = {path: float(open_set_scores(explainer.explain(read_image(path)).logits[None], "energy")[0])
              for path in find_images([collection])}
    ordered = sorted(scores.values())  # halfway between two scores: no image sits on the threshold
    threshold = (ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2
    model.calibration = Calibration(score="energy", threshold=threshold, keep=0.95, alpha=0.1, quantile=0.3,
                                    images=123, classes=len(model.class_names))
    rejected = sorted(str(path) for path, score in scores.items() if score < threshold)
    assert 0 < len(rejected) < len(scores)
    return model, rejected


def test_explain_csv_and_summary_list_the_rejected_images(calibrated, collection, tmp_path, capsys):
    model, rejected = calibrated
    summary = explain_folder(model, [collection], tmp_path / "out", top_k=2)
    assert sorted(item for item, _ in summary["rejected"]) == rejected
    with open(tmp_path / "out" / PREDICTIONS_FILE, newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert sorted(row["file"] for row in rows if row["known"] == "no") == rejected
    assert {row["known"] for row in rows} == {"yes", "no"}
    threshold = model.calibration.threshold
    for row in rows:
        assert (float(row["open_set_score"]) >= threshold) == (row["known"] == "yes")
        assert set(filter(None, row["prediction_set"].split("; "))) <= set(model.class_names)

    checkpoint = save_model(model, tmp_path / "calibrated.safetensors")
    assert main(["explain", str(collection), "--out", str(tmp_path / "cli"), "--model", str(checkpoint)]) == 0
    printed = capsys.readouterr().out
    assert f"none of the 9 species: {len(rejected)} of 9 images" in printed
    assert "calibrated on 123 images" in printed
    assert all(path in printed for path in rejected)


def test_a_model_without_calibration_says_so(collection, tmp_path, capsys):
    assert main(["explain", str(collection), "--out", str(tmp_path / "plain")]) == 0
    assert "the model is not calibrated" in capsys.readouterr().out
    with open(tmp_path / "plain" / PREDICTIONS_FILE, newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert all(row["known"] == row["prediction_set"] == "" and row["top1_class"] for row in rows)


def test_a_subset_of_candidates_is_not_judged(calibrated, collection, tmp_path):
    model, _ = calibrated
    summary = explain_folder(model, [collection], tmp_path / "subset", classes=list(synth.SHOWCASE_PAIR))
    assert summary["judged"] == 0 and summary["rejected"] == []


def test_region_rows_mark_rejected_regions(calibrated, collection):
    model, rejected = calibrated
    image = read_image(rejected[0])
    results, failures = explain_regions(Explainer(model), image, [Region("a", 0, 0, 64, 64)])
    assert not failures and results[0].explanation.rejected
    (row,) = region_rows(results)
    assert set(region_columns()) >= {"known", "open_set_score", "prediction_set"}
    assert row["known"] == "no"


def test_atlas_lists_rejected_images_apart_from_the_species(calibrated, collection, tmp_path, capsys):
    model, rejected = calibrated
    result = build_atlas(model, "sample", collection, tmp_path / "atlas", AtlasOptions(per_head=1))
    atlas = result.atlas
    assert sorted(str(collection / key) for key, _, _ in atlas.rejected) == rejected
    assert atlas.images == 9 - len(rejected)  # never summarised as a species
    assert sum(c.images for c in atlas.classes) == atlas.images
    document = json.loads((tmp_path / "atlas" / "atlas.json").read_text())
    assert len(document["rejected"]) == len(rejected)
    assert f"{len(rejected)} images are none of the model" in (tmp_path / "atlas" / "atlas.html").read_text()
