"""`intr eval`: accuracy agrees with the model's own predictions; outputs are well-formed."""
import csv
import json

import torch

from intr_training import cli
from napari_intr import load_model, save_model
from napari_intr.collection.scan import read_image
from napari_intr.model import IntrConfig, build_model
from training_data import write_classes


def test_eval_matches_direct_predictions(tmp_path, capsys):
    names = ["diamond", "disc", "third", "four", "five", "six", "seven"]  # the last four have no images
    torch.manual_seed(3)
    save_model(build_model(IntrConfig.tiny(7, short_side=64, max_side=112), names), tmp_path / "m.safetensors")
    data = write_classes(tmp_path / "data", {"diamond": 3, "disc": 3, "third": 2, "unknown": 2}, size=72)
    code = cli.main(["eval", "--model", str(tmp_path / "m.safetensors"), "--data", str(data), "--json",
                     "--out", str(tmp_path / "eval"), "--batch-size", "3", "--workers", "0"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)
    assert "unknown" in captured.err and result["unknown_classes"] == {"unknown": 2}

    model = load_model(tmp_path / "m.safetensors", device="cpu")
    correct, in_top5, per_class = 0, 0, {}
    with torch.no_grad():
        for index, name in enumerate(names[:3]):
            hits = 0
            for path in sorted((data / name).glob("*.png")):
                logits = model(model.preprocess(read_image(path)), return_attention=False).logits[0]
                hits += int(logits.argmax()) == index
                in_top5 += index in logits.topk(5).indices.tolist()
            per_class[name] = hits / len(list((data / name).glob("*.png")))
            correct += hits
    assert result["images"] == 8
    assert result["top1"] == correct / 8 and result["top5"] == in_top5 / 8
    assert result["per_class_accuracy"] == per_class

    with open(tmp_path / "eval" / "confusion_matrix.csv") as stream:
        rows = list(csv.reader(stream))
    assert rows[0][1:] == names and [row[0] for row in rows[1:]] == names
    counts = [[int(value) for value in row[1:]] for row in rows[1:]]
    assert [sum(row) for row in counts] == [3, 3, 2, 0, 0, 0, 0]
    assert sum(counts[i][i] for i in range(3)) == correct


def test_eval_with_a_shortlist_reports_agreement_and_recall(tmp_path, capsys):
    names = ["diamond", "disc", "third", "four", "five", "six"]
    torch.manual_seed(4)
    save_model(build_model(IntrConfig.tiny(6, short_side=64, max_side=112, shortlist_head=True), names),
               tmp_path / "m.safetensors")
    data = write_classes(tmp_path / "data", {"diamond": 2, "disc": 2, "third": 2}, size=72)
    arguments = ["eval", "--model", str(tmp_path / "m.safetensors"), "--data", str(data), "--batch-size", "3",
                 "--workers", "0"]
    assert cli.main([*arguments, "--json", "--shortlist", "6", "--compare-full"]) == 0
    everything = json.loads(capsys.readouterr().out)
    check = everything["shortlist_check"]
    assert check["images"] == 6 and check["top1_agreement_with_full"] == 1.0 and check["recall_of_full_top1"] == 1.0
    assert everything["top1"] == check["full_top1"]
    assert cli.main([*arguments, "--shortlist", "2", "--compare-full"]) == 0
    printed = capsys.readouterr().out
    assert "shortlist 2: the other classes were not decoded" in printed and "recall@2" in printed
    assert cli.main([*arguments, "--compare-full"]) == 2
    assert "give --shortlist K too" in capsys.readouterr().err
