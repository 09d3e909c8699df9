"""`intr eval --explanations` end to end: the bundled model on a tiny synthetic set."""
import csv
import shutil

import pytest

from intr_training import cli
from napari_intr.faithfulness.methods import METHODS
from napari_intr.synth import write_collection

FAST = ["--rise-masks", "8", "--steps", "4", "--workers", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    data = tmp_path_factory.mktemp("synth") / "data"
    write_collection(data, per_class=1, seed=7)
    return data


def rows(path):
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def test_explanations_on_synthetic_data(synthetic, tmp_path, capsys):
    out = tmp_path / "report"
    code = cli.main(["eval", "--model", "sample", "--data", str(synthetic), "--explanations", "--out", str(out),
                     "--limit", "2", *FAST])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    table = rows(out / "faithfulness.csv")
    found = {(row["method"], row["metric"]) for row in table}
    for method in METHODS:
        for metric in ("insertion", "deletion", "pointing", "pointing_strict", "sanity_decoder", "sanity_encoder",
                       "sanity_backbone"):
            assert (method, metric) in found
    for metric in ("pointing_look_alikes", "pointing_look_alikes_strict"):
        assert ("INTR top head", metric) in found and ("RISE", metric) not in found
    assert {("INTR model", "flip_rate_attribute"), ("INTR model", "flip_rate_background")} <= found
    for row in table:
        if row["metric"].startswith("pointing") or row["metric"] in ("insertion", "deletion"):
            assert 0 <= float(row["value"]) <= 1 and int(row["images"]) == 2
        if row["metric"].startswith("sanity") and row["value"]:
            assert -1 <= float(row["value"]) <= 1
    markdown = (out / "faithfulness.md").read_text(encoding="utf-8")
    assert "| INTR head mean |" in markdown and "transplant the look-alike's attribute" in markdown
    assert "insertion AUC" in captured.out
    for plot in ("insertion_deletion.png", "example_maps.png"):
        assert (out / plot).stat().st_size > 1000


def test_without_masks_or_look_alike_information(synthetic, tmp_path, capsys):
    plain = tmp_path / "plain"
    shutil.copytree(synthetic, plain, ignore=shutil.ignore_patterns(".masks", "synth.json"))
    out = tmp_path / "report"
    code = cli.main(["eval", "--model", "sample", "--data", str(plain), "--explanations", "--out", str(out),
                     "--limit", "1", "--explain-class", "true", *FAST])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    metrics = {row["metric"] for row in rows(out / "faithfulness.csv")}
    assert {"insertion", "deletion", "sanity_backbone"} <= metrics
    assert not metrics & {"pointing", "pointing_strict", "pointing_look_alikes", "flip_rate_attribute"}
    markdown = (out / "faithfulness.md").read_text(encoding="utf-8")
    assert "pointing game is skipped" in markdown and "flip rate are skipped" in markdown


@pytest.mark.parametrize("extra, message", [
    ([], "give --out"),
    (["--out", "OUT", "--steps", "0"], "--steps must be at least 1"),
    (["--out", "OUT", "--layer", "9"], "--layer 9 is out of range"),
])
def test_bad_options_are_one_line_errors(synthetic, tmp_path, capsys, extra, message):
    extra = [str(tmp_path / "o") if value == "OUT" else value for value in extra]
    code = cli.main(["eval", "--model", "sample", "--data", str(synthetic), "--explanations", "--workers", "0",
                     "--device", "cpu", "--limit", "1", *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_missing_captum_says_what_to_install(synthetic, tmp_path, capsys, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "captum", None)  # as if captum were not installed
    code = cli.main(["eval", "--model", "sample", "--data", str(synthetic), "--explanations",
                     "--out", str(tmp_path / "o"), "--workers", "0", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "napari-intr[faithfulness]" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # refused before any work
