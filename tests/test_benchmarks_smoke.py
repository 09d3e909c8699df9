"""benchmarks/run_all.py records given measurements as RESULTS.md with the expected sections.
No measuring and no timing assertions: only the table and record functions (no torch needed)."""
from pathlib import Path

import pytest

import many_classes  # benchmarks/ is on the tests' pythonpath (pyproject.toml)
import run_all
import shown_maps

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_results_file_has_machine_and_table_and_keeps_other_devices(tmp_path):
    rows = [run_all.row("(a) explain", "resnet50: class switch", "400.0 ms", "full/switch 20.0x", "target"),
            run_all.row("(b) all C classes", "Grad-CAM | all", "1.0 s", "", "EXTRAPOLATED"),
            run_all.row("(c) training", "tiny: images/s", "9 vs 8", "ours/ref 1.1x"),
            run_all.row("(d) napari event loop", "skipped", "-", "-", "--skip-napari")]
    machine = {"CPU": "test CPU, 2 logical cores", "device": "cpu", "load average (1/5/15 min)": "0.1"}
    path = tmp_path / "RESULTS.md"

    run_all.write_results(path, machine, rows, ["a note"], "cpu")
    run_all.write_results(path, {**machine, "device": "cuda"}, rows[:1], [], "cuda")
    text = run_all.write_results(path, {**machine, "CPU": "second run"}, rows, [], "cpu")

    assert text == path.read_text(encoding="utf-8")
    assert text.startswith("# Benchmark results")
    assert text.count("## cpu run") == 1 and text.count("## cuda run") == 1
    assert "second run" in text and "test CPU" in text  # cpu block replaced, cuda block kept
    assert "### Machine" in text and "### Results" in text
    for section in ("(a) explain", "(b) all C classes", "(c) training", "(d) napari event loop"):
        assert section in text
    table = run_all.format_table(rows).splitlines()
    assert table[0].startswith("| section") and set(table[1]) <= {"|", "-"}
    assert len(table) == 2 + len(rows) and all(line.count("|") == 6 for line in table)  # "|" escaped


def test_many_classes_rows_state_ratios_and_targets():
    args = vars(many_classes.parser().parse_args([]))
    cases = {"full200": {"seconds": 2.0, "peak_mib": 400, "decoded": 200, "classes": 200},
             "shortlist10000": {"seconds": 2.4, "peak_mib": 500, "decoded": 64, "classes": 10_000},
             "full10000": {"seconds": 30.0, "peak_mib": 5000, "decoded": 10_000, "classes": 10_000,
                           "warm_up": False},
             "train_full200": {"seconds": 4.0, "peak_mib": 900, "classes": 200},
             "train_sampled10000": {"error": "boom"}}
    rows = many_classes.rows({"cases": cases, "args": args, "loads": []})
    shortlist, full, training = rows
    assert shortlist[3] == "time 1.20x, memory 1.25x" and shortlist[4].endswith("met")
    assert full[3] == "time 15.00x, memory 12.50x" and "no warm-up" in full[4]
    assert training[2] == "failed" and "boom" in training[4]
    cases["train_sampled10000"] = {"seconds": 7.0, "peak_mib": 900, "classes": 10_000}
    training = many_classes.rows({"cases": cases, "args": args, "loads": []})[2]
    assert training[3].startswith("time 1.75x") and training[4].endswith("NOT met")


def test_shown_maps_report_states_ratios_to_the_plain_forward():
    medians = {"plain": 2.0, "explain_all": 3.0, "explain_shown": 2.2,
               "decode_plain": 0.010, "decode_all": 0.030, "decode_shown": 0.012}
    text = shown_maps.report({"median_seconds": medians, "loads": ["1.00", "2.00"], "threads": 1, "device": "cpu",
                              "classes": 200, "decoder_layers": 6, "input": [800, 1200], "torch": "2"})
    assert "| explain_all | 3 s | 1.50x plain |" in text and "| explain_shown | 2.2 s | 1.10x plain |" in text
    assert "| decode_all | 30 ms | 3.00x decode_plain |" in text
    assert "1.10x (target on the GPU <= 1.2x; on this device: met)" in text and "load 1.00 -> 2.00" in text


def run_feature_cache(tmp_path, *arguments):
    import os
    import subprocess
    import sys
    root = BENCHMARKS.parent
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root / "training")])}
    completed = subprocess.run([sys.executable, str(BENCHMARKS / "feature_cache.py"), *arguments], cwd=tmp_path,
                               capture_output=True, text=True, env=environment, timeout=600, check=False)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout


def test_feature_cache_parts_time_both_halves_in_both_precisions(tmp_path):
    text = run_feature_cache(tmp_path, "--parts", "--backbone", "tiny", "--size", "64", "--batch-size", "2",
                             "--repeats", "1")
    assert "| backbone forward (what the cache saves) |" in text and "| cached step" in text
    assert "fp32: at most" in text and "bf16: at most" in text and "native bf16:" in text


@pytest.mark.slow  # three small training runs in child processes
def test_feature_cache_runs_cached_and_uncached_in_each_precision(tmp_path):
    text = run_feature_cache(tmp_path, "--backbone", "tiny", "--size", "64", "--images", "8", "--classes", "2",
                             "--epochs", "2", "--uncached-epochs", "1", "--batch-size", "2",
                             "--uncached-precisions", "fp32", "--work", str(tmp_path / "work"))
    assert "| cached, --precision auto |" in text
    assert "| uncached, --precision auto | " in text and "| uncached, --precision fp32 | " in text
    assert "EXTRAPOLATED from 1 epochs" in text
    assert "cached vs uncached, --precision auto:" in text and "cached vs uncached, --precision fp32:" in text


def test_median_seconds_warms_up_once_then_runs_the_functions_in_turn():
    import timed_training
    calls = []
    medians = timed_training.median_seconds({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3)
    assert calls == ["a", "b"] * 4  # one warm-up round, then three interleaved repeats
    assert set(medians) == {"a", "b"} and all(seconds >= 0 for seconds in medians.values())


def test_open_set_reuses_a_finished_run_and_tabulates_every_score(tmp_path):
    import json

    import numpy as np

    import open_set
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "seconds": 2.0, "val_acc": 1.0}) + "\n"
                                               for e in (1, 2)))
    assert open_set.finished_run(run, epochs=3) is None  # unfinished: trained again
    (tmp_path / "train.jsonl").write_text(json.dumps({"event": "done", "train_seconds": 4.0}) + "\n")
    finished = open_set.finished_run(run, epochs=2)
    assert finished["epoch_seconds"] == 4.0 and finished["done"]["train_seconds"] == 4.0
    from intr_training.calibrate import Outputs
    rng = np.random.default_rng(0)

    def outputs(count, centre, logit):
        """images of class 0 (centre and logit as the calibration's) or of an unknown (elsewhere)"""
        features = rng.normal(centre, 0.3, (count, 4))
        logits = np.stack([np.full(count, logit), np.zeros(count)], axis=1) + rng.normal(0, 0.1, (count, 2))
        return Outputs(logits, np.zeros(count, int), np.stack([features, features], axis=1), features)
    calibration, known, far = outputs(40, 0.0, 6.0), outputs(20, 0.0, 6.0), outputs(20, 5.0, 1.0)
    table = open_set.candidate_table(calibration, known, {"far": far})
    assert {"max_logit", "energy", "max_softmax", "mahalanobis", "energy_plus_mahalanobis"} <= set(table)
    assert table["max_logit"]["far"]["auroc"] == 1.0 and table["mahalanobis"]["far"]["auroc"] == 1.0


def test_inference_speed_rows_name_each_target():
    """benchmarks/inference_speed.py's table (issue 24): the ratios and whether each target is met."""
    import inference_speed

    def run(condition, task, model, path, **values):
        return {"condition": condition, "task": task, "model": model, "path": path, "threads": 2,
                "precision": "bf16", "wait_policy": "PASSIVE", "images": 4, **values}
    results = {"cores": 2, "device": "cpu", "loads": ["quiet start 1.0 1.0 1.0"], "runs": [
        run("quiet", "folder", "resnet50", "today", images_per_second=0.1),
        run("quiet", "folder", "resnet50", "new", images_per_second=0.3),
        run("loaded", "folder", "resnet50", "new", images_per_second=0.1),
        run("loaded", "explorer", "resnet50", "new", full_seconds=8.0, decode_seconds=0.4)],
        "event_loop": {"loaded": {"max_ms": 120, "p99_ms": 50, "idle_max_ms": 20, "explains": 3}}}
    text = "\n".join(" | ".join(cells) for cells in inference_speed.rows(results))
    assert "0.100 -> 0.300 | 3.00x | 4 images, bf16; target >= 2.5x: met" in text
    assert "8.00 s / 0.400 s | 20.0x | 2 threads, bf16; target >= 15x: met" in text
    assert "0.300 / 0.100 | 3.00x | target <= 2x: NOT met" in text
    assert "max 120 ms (p99 50); idle max 20 ms" in text and "target max < 100 ms: NOT met" in text
    assert "OMP_WAIT_POLICY PASSIVE" in inference_speed.notes(results)[1]
