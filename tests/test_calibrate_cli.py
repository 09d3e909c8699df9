"""`intr calibrate` and `intr eval --unknown` end to end with the bundled model on small synthetic
specimens: where the calibrated model is written, the report, and the bad inputs."""
import json

import numpy as np
import pytest
from PIL import Image

from intr_training.cli import main
from napari_intr import load_model, synth
from napari_intr.checkpoints import read_metadata
from napari_intr.loading import sample_model_path


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("open_set")
    synth.write_collection(root / "calibration", per_class=3, size=64, seed=21)
    synth.write_collection(root / "test", per_class=2, size=64, seed=22)
    rng = np.random.default_rng(0)
    for k in range(6):  # "unknown species": textures the model never saw
        folder = root / "unknown" / "Lepidoptera ignota"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"u{k}.png")
    model = root / "model.safetensors"
    model.write_bytes(sample_model_path().read_bytes())
    return root, model


def test_calibrate_writes_beside_the_model_and_never_over_it(folders, capsys):
    root, model = folders
    before = model.read_bytes()
    assert main(["calibrate", "--model", str(model), "--data", str(root / "calibration"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    written = root / "model.calibrated.safetensors"
    assert result["model"] == str(written) and model.read_bytes() == before  # the user's file untouched
    calibration = read_metadata(written)["calibration"]
    assert calibration.images == result["images"] == 27 and calibration.classes == 9
    assert calibration.data == str(root / "calibration")
    assert load_model(written).calibration == calibration and load_model(model).calibration is None

    assert main(["calibrate", "--model", str(model), "--data", str(root / "calibration")]) == 2
    assert "exists: add --overwrite" in capsys.readouterr().err  # a second run does not replace the copy
    assert main(["calibrate", "--model", str(model), "--data", str(root / "calibration"), "--alpha", "0.2",
                 "--overwrite"]) == 0
    assert "calibrated model: " + str(model) in capsys.readouterr().out
    assert read_metadata(model)["calibration"].alpha == 0.2  # asked for: the model's own file


@pytest.mark.parametrize("arguments, message", [
    (["--alpha", "1"], "--alpha must be a share strictly between 0 and 1"),
    (["--alpha", "0"], "--alpha must be a share strictly between 0 and 1"),
    (["--keep", "1.5"], "--keep must be a share strictly between 0 and 1"),
    (["--alpha", "0.01"], "only 27 calibration images .* need at least 99"),
])
def test_bad_calibration_inputs_are_named(folders, tmp_path, capsys, arguments, message):
    root, model = folders
    code = main(["calibrate", "--model", str(model), "--data", str(root / "calibration"),
                 "--out", str(tmp_path / "m.safetensors"), *arguments])
    assert code == 2
    import re
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "m.safetensors").exists()


def test_eval_unknown_reports_auroc_coverage_and_plots(folders, tmp_path, capsys):
    root, _ = folders
    calibrated = tmp_path / "c.safetensors"
    assert main(["calibrate", "--model", "sample", "--data", str(root / "calibration"), "--out", str(calibrated)]) == 0
    capsys.readouterr()
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(calibrated), "--data", str(root / "test"), "--unknown", str(root / "unknown"),
                 "--out", str(out), "--workers", "0"]) == 0
    printed = capsys.readouterr().out
    assert "max_logit        AUROC" in printed and "(the calibrated score)" in printed
    assert "prediction sets (LAC, nominal 90%): coverage" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    report = metrics["open_set"]
    assert report["known_images"] == 18 and report["unknown_images"] == 6
    assert 0 <= report["auroc"] <= 1 and set(report["scores"]) == {"max_logit", "energy", "presence_margin",
                                                                    "max_softmax"}
    coverage = metrics["coverage"]
    assert coverage["images"] == 18 and not coverage["same_as_calibration_data"]
    assert len(coverage["per_class"]) == 9 and (out / "coverage.csv").is_file() and (out / "open_set.png").is_file()

    # the images it was calibrated on: said, since coverage there is no test
    assert main(["eval", "--model", str(calibrated), "--data", str(root / "calibration"), "--workers", "0"]) == 0
    assert "these are the images the model was calibrated on" in capsys.readouterr().out


def test_an_unknown_folder_holding_known_species_is_refused(folders, capsys):
    root, _ = folders
    code = main(["eval", "--model", "sample", "--data", str(root / "test"), "--unknown", str(root / "calibration")])
    assert code == 2
    error = capsys.readouterr().err
    assert "--unknown" in error and "holds images of species the model knows" in error
