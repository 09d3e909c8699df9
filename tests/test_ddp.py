"""Two CPU processes under torchrun (gloo) train one model: rank 0 alone writes the files."""
import json
import os
import socket
import subprocess
import sys

import pytest

from napari_intr import load_model, read_metadata
from training_data import FAST, json_events, write_classes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("extra", [[], ["--sampled-queries", "2", "--batch-size", "2"]], ids=["full", "sampled"])
def test_two_processes_write_one_consistent_run(tmp_path, extra):
    data = write_classes(tmp_path / "data", {"disc": 5, "diamond": 5, "third": 5})
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
               "127.0.0.1", "--master-port", str(free_port()), "-m", "intr_training", "train", "--data", str(data),
               "--out", str(out), "--epochs", "1", "--device", "cpu", "--progress", "json", *FAST, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr[-3000:]

    events = json_events(result.stdout)  # rank 0 alone reports
    assert [e["event"] for e in events].count("start") == 1 and events[-1]["event"] == "done"
    start = events[0]
    # Each rank sees half the batches of a 12-image training set.
    assert start["train_images"] == 12 and start["steps_per_epoch"] == (3 if extra else 2)
    # ... and the run says it is shared, with the images a step sees (README: --batch-size per process)
    batch = start["batch_size"]
    assert start["processes"] == 2 and batch == (2 if extra else int(FAST[FAST.index("--batch-size") + 1]))
    epoch = next(e for e in events if e["event"] == "epoch")
    assert epoch["val_acc"] is not None and 3 * epoch["val_acc"] == round(3 * epoch["val_acc"])  # 3 val images

    assert sorted(p.name for p in out.iterdir()) == ["classes.txt", "last.safetensors", "metrics.jsonl",
                                                      "model.safetensors", "training_state.pt"]
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1]
    assert load_model(out, device="cpu").class_names == ["diamond", "disc", "third"]
    assert read_metadata(out / "model.safetensors")["provenance"]["best_val_acc"] == epoch["val_acc"]


def test_the_plain_start_line_says_the_run_is_shared(capsys):
    from intr_training.progress import PlainProgress
    info = dict(epochs=1, train_images=45, val_images=9, classes=["a", "b", "c"], precision="fp32", out="run",
                batch_size=8, accumulate=2)
    PlainProgress().start(**info, processes=2)
    assert "of 3 classes in fp32 in 2 processes (batch 8 each: 32 images a step); writing to run" in capsys.readouterr().out
    PlainProgress().start(**info, processes=1)
    assert "processes" not in capsys.readouterr().out
