"""benchmarks/attention_diagnosis.py end to end on a few synth specimens with the bundled model."""
import json

import pytest

import attention_diagnosis  # benchmarks/ is on the tests' pythonpath (pyproject.toml)
from napari_intr.synth import write_collection


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    data = tmp_path_factory.mktemp("diagnosis") / "synth"
    write_collection(data, per_class=1, seed=11)
    return data


def test_the_diagnosis_reports_pointing_misses_and_mixing(collection, tmp_path, capsys):
    out = tmp_path / "diagnosis.json"
    assert attention_diagnosis.main(["--data", str(collection), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Grid-strict pointing of the map shown first: by peak weight" in text and "Encoder mixing" in text
    summary = json.loads(out.read_text())["summary"]
    assert summary["images"] >= 7  # species whose trait mask is empty are left out
    for key in ("strict_peak", "strict_evidence", "strict_mean", "change_away_memory", "change_away_features"):
        assert 0 <= summary[key] <= 1
    assert max(summary["strict_per_head"]) == summary["strict_best_head"]
    for head in summary["heads"]:
        if head["miss_where"]:
            assert sum(head["miss_where"].values()) == pytest.approx(1)


def test_a_folder_without_masks_is_refused_with_what_to_give(tmp_path, capsys):
    (tmp_path / "Heliconia synthetica-alba").mkdir()
    assert attention_diagnosis.main(["--data", str(tmp_path)]) == 2
    assert "no images with trait and specimen masks" in capsys.readouterr().err
