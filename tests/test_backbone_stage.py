"""intr train --backbone-epochs: the backbone learns alone (a pooled classifier) before INTR's
epochs (training/intr_training/backbone_stage.py)."""
import pytest
import torch

from intr_training import cli
from intr_training.backbone_stage import PooledClassifier, train_backbone_alone
from intr_training.data import Batch
from intr_training.engine import options_for
from intr_training.train_settings import new_run
from napari_intr.model import IntrConfig, build_model
from training_data import FAST, json_events, write_classes


class CellBackbone(torch.nn.Module):
    """The images are the feature map (stride 1): what the pooling sees is what the test gives."""

    def forward(self, images, mask):
        return images, mask


def test_pooling_leaves_the_padding_out():
    classifier = PooledClassifier(CellBackbone(), 3, 2, torch.Generator().manual_seed(0))
    image = torch.randn(1, 3, 4, 5)
    padded = torch.full((1, 3, 6, 7), 1e6)  # padding that would win every max and drag every mean
    padded[..., :4, :5] = image
    mask = torch.ones(1, 6, 7, dtype=torch.bool)
    mask[:, :4, :5] = False
    expected = classifier(image, torch.zeros(1, 4, 5, dtype=torch.bool))
    assert torch.allclose(classifier(padded, mask), expected, atol=1e-5)


def test_only_the_backbone_learns_and_every_epoch_is_reported():
    torch.manual_seed(0)
    model = build_model(IntrConfig.tiny(2), ["a", "b"])
    before = {name: value.clone() for name, value in model.state_dict().items()}
    images = torch.randn(4, 3, 32, 32)
    batches = [Batch(images, torch.zeros(4, 32, 32, dtype=torch.bool), torch.tensor([0, 1, 0, 1]), 0)]
    epochs, seeded = [], []
    train_backbone_alone(model.backbone[0], model.backbone.num_channels, 2, batches, batches, 2, 1e-3,
                         options_for(torch.device("cpu"), precision="fp32"), torch.Generator().manual_seed(0),
                         before_epoch=seeded.append, on_epoch=lambda **summary: epochs.append(summary))
    assert seeded == [1, 2] and [e["epoch"] for e in epochs] == [1, 2] and {e["epochs"] for e in epochs} == {2}
    assert all(0 <= e["val_acc"] <= 1 and e["loss"] > 0 for e in epochs)
    after = model.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(name.startswith("backbone.0.") for name in changed), sorted(changed)
    assert any(name.endswith("conv.weight") or "weight" in name for name in changed)


def test_a_run_reports_the_backbone_epochs_before_its_first_epoch(tmp_path, capsys):
    data = write_classes(tmp_path / "data", {"disc": 5, "diamond": 5})
    assert cli.main(["train", "--data", str(data), "--out", str(tmp_path / "run"), *FAST, "--epochs", "1",
                     "--backbone-epochs", "2", "--progress", "json"]) == 0
    events = [event["event"] for event in json_events(capsys.readouterr().out)]
    assert events.index("start") < events.index("backbone_epoch") < events.index("epoch")
    assert events.count("backbone_epoch") == 2


def test_a_frozen_backbone_refuses_backbone_epochs(tmp_path, capsys):
    with pytest.raises(ValueError, match="--backbone-epochs trains the backbone.*--freeze backbone.*--freeze none"):
        new_run({"data": str(tmp_path), "out": str(tmp_path / "run"), "freeze": "backbone", "backbone_epochs": 2},
                "tiny", 1)
    assert cli.main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--backbone-epochs", "-1"]) == 2
    assert "--backbone-epochs must be between 0 and 1000 epochs, got -1" in capsys.readouterr().err


def test_the_plain_log_names_the_backbone_epochs(capsys):
    from intr_training.progress import PlainProgress
    PlainProgress().backbone_epoch(epoch=1, epochs=12, loss=0.5, train_acc=0.75, val_acc=None, seconds=3.2)
    assert capsys.readouterr().out.strip() == ("backbone alone, epoch 1/12: loss 0.5000, train acc 0.750, "
                                               "val acc n/a, 3 s")
