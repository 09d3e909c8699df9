"""`intr train`: output files, JSON progress, fine-tuning to another class set, freezing."""
import json

import pytest
import torch
from safetensors.torch import load_file

from intr_training import cli
from intr_training.initialization import fine_tuned_queries, freeze
from napari_intr import load_model, read_metadata
from napari_intr.model import IntrConfig, build_model
from napari_intr.recipes import NEW_MODEL
from training_data import FAST, json_events, write_classes

EVENT_KEYS = {
    "start": {"epochs", "steps_per_epoch", "classes", "train_images", "val_images", "skipped_images", "out",
              "precision"},
    "step": {"epoch", "step", "steps", "loss", "accuracy", "lr", "eta_seconds"},
    "epoch": {"epoch", "loss", "train_acc", "val_acc", "lr", "seconds", "best_val_acc"},
    "done": {"best_val_acc", "model", "per_class_accuracy", "calibration", "train_seconds"},
}


def test_the_json_protocol_names_every_key_the_events_carry():
    from intr_training import progress
    for event, keys in EVENT_KEYS.items():
        documented = progress.__doc__.split(f'{{"event": "{event}"', 1)[1].split("}", 1)[0]
        assert {key for key in keys if f'"{key}":' not in documented} == set(), event


def test_without_a_terminal_each_epoch_is_one_plain_line_on_stdout(tmp_path, capsys):
    """`intr train … > log`: stdout is not a terminal (nor is pytest's capture), so no bar and no
    JSON, but a record a batch job can keep: a start line, one line per epoch, a done line."""
    data = write_classes(tmp_path / "data", {"disc": 4, "diamond": 4})
    code = cli.main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--epochs", "2",
                     "--val-split", "0.25", *FAST])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.out.splitlines()
    assert lines[0].startswith("training on 6 images (2 for validation) of 2 classes")
    assert [line.split(":")[0] for line in lines[1:]] == ["epoch 1/2", "epoch 2/2", "done"]
    assert "\r" not in captured.out + captured.err and "batch" not in captured.err  # no tqdm bar


def test_run_writes_a_loadable_model_and_json_progress(tmp_path, capsys):
    data = write_classes(tmp_path / "data", {"disc": 5, "diamond": 5, "third": 5})
    (data / "disc" / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "run"
    code = cli.main(["train", "--data", str(data), "--out", str(out), "--epochs", "2", "--progress", "json",
                     "--val-split", "0.2", *FAST])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    events = json_events(captured.out)
    kinds = [event["event"] for event in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert kinds.count("epoch") == 2 and "step" in kinds and "warning" in kinds
    for event in events:
        assert EVENT_KEYS.get(event["event"], set()) <= set(event)
    start = events[0]
    assert start["classes"] == ["diamond", "disc", "third"]
    assert (start["train_images"], start["val_images"], start["skipped_images"]) == (12, 3, 1)
    assert start["precision"] == "fp32"  # small CPU steps
    steps = [event for event in events if event["event"] == "step"]
    assert steps[-1]["step"] == steps[-1]["steps"] == start["steps_per_epoch"] == 3

    for name in ("model.safetensors", "last.safetensors", "training_state.pt", "metrics.jsonl", "classes.txt"):
        assert (out / name).is_file(), name
    assert not list(out.glob(".*.tmp"))  # no temporary files left behind
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert set(metrics[0]) == {"epoch", "loss", "train_acc", "val_acc", "lr", "seconds"}
    assert (out / "classes.txt").read_text().split("\n")[:3] == ["diamond", "disc", "third"]

    model = load_model(out, device="cpu")
    assert model.class_names == ["diamond", "disc", "third"] and model.config.short_side == 64
    assert model.config.hidden_dim == NEW_MODEL["tiny"]["hidden_dim"] != IntrConfig.tiny(3).hidden_dim  # a new tiny
    provenance = read_metadata(out / "model.safetensors")["provenance"]
    best = max(m["val_acc"] for m in metrics)
    assert provenance["best_val_acc"] == best == events[-1]["best_val_acc"]
    assert set(provenance["per_class_accuracy"]) == set(model.class_names)
    assert provenance["seed"] == 0 and provenance["data"] == str(data.resolve())
    # 3 validation images are too few to calibrate: said, and the model behaves as uncalibrated
    assert not events[-1]["calibration"]["calibrated"] and model.calibration is None
    assert "only 3 calibration images" in events[-1]["calibration"]["reason"]
    assert "at least 19" in events[-1]["calibration"]["reason"]
    assert any("not calibrated" in event.get("message", "") for event in events if event["event"] == "warning")


def test_a_run_ends_calibrated_on_its_validation_images(tmp_path, capsys):
    data = write_classes(tmp_path / "data", {"disc": 16, "diamond": 16})
    out = tmp_path / "run"
    code = cli.main(["train", "--data", str(data), "--out", str(out), "--epochs", "1", "--progress", "json",
                     "--val-split", "0.75", *FAST])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    done = json_events(captured.out)[-1]
    calibration = load_model(out, device="cpu").calibration
    assert done["calibration"]["calibrated"] and calibration is not None
    assert calibration.images == done["calibration"]["images"] == 24 and calibration.classes == 2
    assert (calibration.keep, calibration.alpha, calibration.score) == (0.95, 0.1, "energy")
    assert 0 <= done["calibration"]["seconds"] and done["train_seconds"] > 0


def test_fine_tuning_keeps_matched_queries_and_adds_new_ones():
    old = build_model(IntrConfig.tiny(3), ["a", "b", "c"])
    queries, kept = fine_tuned_queries(old, ["c", "a", "new"], torch.Generator().manual_seed(0))
    assert kept == ["c", "a"]
    assert torch.equal(queries[0], old.query_embed.weight[2]) and torch.equal(queries[1], old.query_embed.weight[0])
    assert not any(torch.allclose(queries[2], q) for q in old.query_embed.weight)
    again, _ = fine_tuned_queries(old, ["c", "a", "new"], torch.Generator().manual_seed(0))
    assert torch.equal(again, queries)  # seeded


def test_freeze_freezes_what_it_says():
    model = build_model(IntrConfig.tiny(2))
    freeze(model, "backbone")
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"input_proj", "transformer", "query_embed", "presence_vector"}
    model = build_model(IntrConfig.tiny(2))
    freeze(model, "encoder")
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert all(name.startswith(("transformer.decoder", "query_embed", "presence_vector")) for name in trainable)
    assert any(name.startswith("transformer.decoder") for name in trainable)


def test_fine_tune_cli_to_new_classes_with_frozen_encoder(tmp_path, capsys):
    base = tmp_path / "base.safetensors"
    from napari_intr import save_model
    torch.manual_seed(1)
    save_model(build_model(IntrConfig.tiny(3, short_side=64, max_side=112), ["diamond", "disc", "gone"]), base)
    data = write_classes(tmp_path / "data", {"diamond": 4, "disc": 4, "fresh": 4})
    out = tmp_path / "tuned"
    code = cli.main(["train", "--data", str(data), "--out", str(out), "--init", str(base), "--epochs", "1",
                     "--freeze", "encoder", "--progress", "json", *FAST[2:], "--backbone", "resnet18"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    warnings = [e["message"] for e in json_events(captured.out) if e["event"] == "warning"]
    assert any("--backbone resnet18 ignored" in message for message in warnings)

    before, after = load_file(base), load_file(out / "model.safetensors")
    for name in before:  # backbone (batch-norm statistics too), projection and encoder untouched
        if name.startswith(("backbone.", "input_proj.", "transformer.encoder.")):
            assert torch.equal(before[name], after[name]), name
    assert not torch.equal(before["presence_vector.weight"], after["presence_vector.weight"])
    tuned = load_model(out, device="cpu")
    assert tuned.class_names == ["diamond", "disc", "fresh"]
    assert tuned.config.hidden_dim == IntrConfig.tiny(3).hidden_dim  # an older model keeps its own shape


def test_a_diverged_loss_stops_the_epoch_with_advice(monkeypatch):
    from intr_training import engine
    from intr_training.data import Batch

    def nan_step(model, batch, options, sampler=None):
        return model(torch.zeros(1, 1)).sum() * float("nan"), torch.zeros(1, dtype=torch.long)

    monkeypatch.setattr(engine, "train_step", nan_step)
    model = torch.nn.Linear(1, 1)
    batch = Batch(torch.zeros(1, 3, 8, 8), torch.zeros(1, 8, 8, dtype=torch.bool), torch.zeros(1, dtype=torch.long), 0)
    with pytest.raises(RuntimeError, match=r"the loss became nan at epoch 3, step 1: training diverged\. Lower --lr"):
        engine.train_one_epoch(model, [batch], torch.optim.SGD(model.parameters(), 0.1),
                               engine.StepOptions(torch.device("cpu")), epoch=3)
