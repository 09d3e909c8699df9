"""--resume continues a run exactly; an interrupted run (SIGINT, or SIGTERM from the plugin's
Cancel) leaves a state that --resume completes."""
import json
import json as json_module
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from intr_training import cli
from intr_training.progress import JsonProgress
from training_data import FAST, json_events, write_classes


def train(data, out, *extra):
    return cli.main(["train", "--data", str(data), "--out", str(out), "--progress", "none", *FAST, *extra])


def stop_after_first_epoch(monkeypatch):
    """The next run sends itself SIGTERM (the plugin's Cancel) once epoch 1 is saved."""
    original = JsonProgress.epoch

    def epoch_then_terminate(self, **summary):
        original(self, **summary)
        if summary["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(JsonProgress, "epoch", epoch_then_terminate)
    return lambda: monkeypatch.setattr(JsonProgress, "epoch", original)


@pytest.mark.parametrize("recipe", [
    ["--augment", "flip", "--dropout", "0"],  # warm-up + cosine per update, flips of images kept in memory
    # the paper's StepLR, DETR's random scales and flips, dropout: every RNG state must come back
    ["--schedule", "step", "--lr-drop", "1", "--augment", "multiscale", "--dropout", "0.1", "--warmup-epochs", "0.5"],
    ["--freeze", "backbone"],  # cosine from the frozen backbone's feature cache
    ["--freeze", "backbone", "--precision", "bf16"],  # ... in bf16 autocast, as large CPU steps run
    ["--augment", "flip", "--dropout", "0", "--backbone-epochs", "2"],  # the backbone alone first, then INTR
], ids=["cosine", "step-multiscale", "cached-features", "cached-bf16", "backbone-alone-first"])
def test_resumed_run_equals_uninterrupted_run(tmp_path, monkeypatch, capsys, recipe):
    data = write_classes(tmp_path / "data", {"disc": 5, "diamond": 5})
    json = ["--progress", "json", "--epochs", "3"]
    assert cli.main(["train", "--data", str(data), "--out", str(tmp_path / "straight"), *FAST, *json, *recipe]) == 0
    restore = stop_after_first_epoch(monkeypatch)
    arguments = ["train", "--data", str(data), "--out", str(tmp_path / "resumed"), *FAST, *json, *recipe]
    assert cli.main(arguments) == 130
    restore()
    assert cli.main([*arguments, "--resume"]) == 0
    capsys.readouterr()
    straight = load_file(tmp_path / "straight" / "last.safetensors")
    resumed = load_file(tmp_path / "resumed" / "last.safetensors")
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name
    metrics = [[json_module.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
               for run in ("straight", "resumed")]
    assert [m["epoch"] for m in metrics[1]] == [1, 2, 3]
    for a, b in zip(*metrics, strict=True):
        assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}
    rates = [m["lr"] for m in metrics[0]]
    assert rates[0] > rates[1] > rates[2] or "step" in recipe  # decays to the end of the run


def test_resume_with_more_epochs_replans_the_schedule(tmp_path, capsys):
    data = write_classes(tmp_path / "data", {"disc": 4, "diamond": 4})
    assert train(data, tmp_path / "run", "--epochs", "1") == 0
    assert cli.main(["train", "--data", str(data), "--out", str(tmp_path / "run"), *FAST, "--epochs", "2",
                     "--resume", "--progress", "json"]) == 0
    warnings = [e["message"] for e in json_events(capsys.readouterr().out) if e["event"] == "warning"]
    assert any("now spans 2 epochs" in message for message in warnings)


def test_sigint_leaves_a_state_that_resume_completes(tmp_path, capsys):
    data = write_classes(tmp_path / "data", {"disc": 6, "diamond": 6})
    out = tmp_path / "run"
    arguments = ["train", "--data", str(data), "--out", str(out), *FAST]
    process = subprocess.Popen([sys.executable, "-m", "intr_training", *arguments, "--epochs", "30",
                                "--progress", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in process.stdout:
        if json.loads(line)["event"] == "epoch":
            process.send_signal(signal.SIGINT)
            break
    rest, errors = process.communicate(timeout=60)
    assert process.returncode == 130, errors
    last = json_events(rest)[-1]
    assert last["event"] == "interrupted" and last["epoch"] >= 1 and last["state"] == str(out / "training_state.pt")
    assert "--resume" in errors and "Traceback" not in errors
    completed = last["epoch"]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == completed

    assert cli.main([*arguments, "--epochs", str(completed + 1), "--resume", "--progress", "json"]) == 0
    events = json_events(capsys.readouterr().out)
    assert events[0]["first_epoch"] == completed + 1 and events[-1]["event"] == "done"
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, completed + 2))


def test_sigterm_stops_after_saving_and_resume_finishes(tmp_path, capsys, monkeypatch):
    """The plugin's Cancel sends SIGTERM; here the run sends it to itself after epoch 1."""
    data = write_classes(tmp_path / "data", {"disc": 4, "diamond": 4})
    original = JsonProgress.epoch

    def epoch_then_terminate(self, **summary):
        original(self, **summary)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(JsonProgress, "epoch", epoch_then_terminate)
    arguments = ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--progress", "json", *FAST]
    assert cli.main([*arguments, "--epochs", "3"]) == 130
    captured = capsys.readouterr()
    last = json_events(captured.out)[-1]
    assert last["event"] == "interrupted" and last["epoch"] == 1 and "--resume" in captured.err
    monkeypatch.setattr(JsonProgress, "epoch", original)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler does not outlive the run
    assert cli.main([*arguments, "--epochs", "2", "--resume"]) == 0
    events = json_events(capsys.readouterr().out)
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [2]


def test_sampled_query_run_resumes_exactly(tmp_path, monkeypatch, capsys):
    """Random negatives are seeded per epoch: a resumed sampled-query run equals an uninterrupted one."""
    data = write_classes(tmp_path / "data", {"disc": 4, "diamond": 4, "third": 4, "fourth": 4, "fifth": 4})
    sampled = ["--sampled-queries", "3", "--batch-size", "2", "--epochs", "2", "--progress", "json"]
    assert train(data, tmp_path / "straight", *sampled) == 0
    restore = stop_after_first_epoch(monkeypatch)
    assert train(data, tmp_path / "resumed", *sampled) == 130
    restore()
    assert train(data, tmp_path / "resumed", *sampled, "--resume") == 0
    capsys.readouterr()
    straight = load_file(tmp_path / "straight" / "last.safetensors")
    resumed = load_file(tmp_path / "resumed" / "last.safetensors")
    assert "shortlist_head.score.weight" in straight
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name


def test_a_run_saved_before_precision_existed_resumes_in_fp32_on_a_cpu(tmp_path, capsys):
    from napari_intr import run_folder as state
    data = write_classes(tmp_path / "data", {"disc": 4, "diamond": 4})
    out = tmp_path / "run"
    cpu = ("--device", "cpu")  # the fp32 default is the CPU's (a GPU's is auto)
    assert train(data, out, *cpu, "--epochs", "1") == 0
    saved = state.load_state(out)
    assert saved["args"]["precision"] == "auto"
    del saved["args"]["precision"]
    torch.save(saved, out / state.STATE_FILE)
    assert train(data, out, *cpu, "--epochs", "2", "--resume") == 0
    assert state.load_state(out)["args"]["precision"] == "fp32"
    assert "ignored" not in capsys.readouterr().err
    # Asked for on resume: the precision it continues in is named (was "(None)"), and asking for it is no conflict.
    for epochs, precision, warned in (("3", "bf16", True), ("4", "fp32", False)):
        saved = state.load_state(out)
        del saved["args"]["precision"]
        torch.save(saved, out / state.STATE_FILE)
        assert train(data, out, *cpu, "--epochs", epochs, "--resume", "--precision", precision) == 0
        err = capsys.readouterr().err
        assert ("--precision bf16 ignored: --resume continues with the saved run's setting (fp32)" in err) is warned
        assert "ignored" in err if warned else "ignored" not in err
        assert state.load_state(out)["args"]["precision"] == "fp32"
