"""intr train says when it stalls (training/intr_training/diagnosis.py): a plateau at the level of
look-alike groups, read from constructed confusion matrices; quiet on a healthy run."""
import io
import json

import numpy as np

from intr_training.diagnosis import Watch, confused_groups, diagnose, within_share
from intr_training.progress import JsonProgress

NAMES = ["beetle a", "beetle b", "beetle c", "fish a", "fish b"]


def history(losses, accuracies, train=None):
    return [{"epoch": e, "loss": loss, "train_acc": train or 0.5, "val_acc": acc}
            for e, (loss, acc) in enumerate(zip(losses, accuracies), 1)]


def group_confusion():
    """Each group told apart from the other, the species within each guessed at random."""
    confusion = np.zeros((5, 5))
    confusion[:3, :3] = 10
    confusion[3:, 3:] = 15
    confusion[0, 3] = 1  # one stray error across the groups
    return confusion


STALLED = history([1.6, 1.2, 1.1, 1.08, 1.09, 1.07], [0.3, 0.45, 0.55, 0.56, 0.55, 0.56])
HEALTHY = history([1.6, 1.2, 0.9, 0.6, 0.3, 0.1], [0.3, 0.45, 0.6, 0.8, 0.93, 0.99])


def test_confused_groups_are_the_look_alike_sets():
    confusion = group_confusion()
    groups = confused_groups(confusion, NAMES)
    assert groups == [["beetle a", "beetle b", "beetle c"], ["fish a", "fish b"]]  # most errors first
    assert within_share(confusion, NAMES, groups) > 0.95
    assert confused_groups(np.diag([10.0] * 5), NAMES) == []


def test_a_group_plateau_is_named_with_its_groups():
    found = diagnose(STALLED, group_confusion(), NAMES)
    assert found.kind == "group_plateau" and found.epoch == 6
    assert sorted(found.groups) == [["beetle a", "beetle b", "beetle c"], ["fish a", "fish b"]]
    assert "{beetle a, beetle b, beetle c}" in found.message and "{fish a, fish b}" in found.message
    # the advice the benchmark supports: for a plateau, what did not help there, and where to look
    assert "nor twice the training images found it" in found.message and "visible there" in found.message
    assert "--backbone-epochs 12" in found.message  # what found it (benchmarks/RESULTS.md, issue 27)


def test_errors_spread_over_all_classes_are_a_plain_plateau():
    confusion = np.full((5, 5), 6.0) + np.diag([10.0] * 5)
    found = diagnose(STALLED, confusion, NAMES)
    assert found.kind in ("plateau", "flat_loss") and found.groups == []


def test_quiet_on_a_healthy_run_and_early_on():
    confusion = np.diag([30.0] * 5)
    confusion[0, 1] = 1
    watch = Watch()
    for epoch in range(1, len(HEALTHY) + 1):
        assert watch.update(HEALTHY[:epoch], confusion, NAMES) is None
    assert watch.final() is None
    assert diagnose(STALLED[:3], group_confusion(), NAMES) is None  # too early to tell
    # a slow but steady climb is no plateau
    assert diagnose(history([1.6, 1.4, 1.2, 1.0, 0.9, 0.8], [0.3, 0.4, 0.5, 0.6, 0.65, 0.7]),
                    group_confusion(), NAMES) is None


def test_instability_is_told_apart_from_a_plateau():
    rising = history([1.6, 1.2, 1.0, 1.1, 1.3, 1.5], [0.3, 0.45, 0.55, 0.5, 0.4, 0.35])
    found = diagnose(rising, group_confusion(), NAMES)
    assert found.kind == "unstable" and "rising" in found.message and "--lr" in found.message


def test_without_validation_a_flat_training_loss_is_reported():
    flat = [{**row, "val_acc": None, "train_acc": 0.55} for row in STALLED]
    assert diagnose(flat, None, NAMES).kind == "flat_loss"


def test_the_watch_reports_once_per_change_and_recovery_clears_it():
    watch = Watch()
    longer = STALLED + [{"epoch": 7, "loss": 1.08, "train_acc": 0.5, "val_acc": 0.55}]
    reported = [watch.update(longer[:e], group_confusion(), NAMES) for e in range(1, 8)]
    assert [r.epoch for r in reported if r is not None] == [6]  # not again at epoch 7: the same groups
    assert watch.final().epoch == 7
    recovered = longer + [{"epoch": 8, "loss": 0.5, "train_acc": 0.9, "val_acc": 0.97}]
    assert watch.update(recovered, np.diag([30.0] * 5), NAMES) is None
    assert watch.final() is None


def test_the_json_protocol_carries_the_diagnosis():
    stream = io.StringIO()
    progress = JsonProgress(stream)
    found = diagnose(STALLED, group_confusion(), NAMES)
    progress.diagnosis(**found.as_event())
    progress.done(best_val_acc=0.56, model="m", per_class_accuracy={}, diagnosis=found.as_event())
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert events[0]["event"] == "diagnosis" and events[0]["groups"] == found.groups
    assert events[1]["diagnosis"]["kind"] == "group_plateau"


def test_intr_train_reports_a_stall_and_still_ends_normally(tmp_path, capsys):
    """A run that cannot learn (a learning rate of 1e-9: the loss stays where it starts, no
    validation images) gets a flat-loss note as it happens and in `done`, and exits 0."""
    from intr_training import cli
    from training_data import FAST, json_events, write_classes
    data = write_classes(tmp_path / "data", {"a": 4, "b": 4}, size=32)
    code = cli.main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--epochs", "4", "--progress",
                     "json", "--val-split", "0", "--lr", "1e-9", "--lr-backbone", "0", *FAST, "--image-size", "32"])
    captured = capsys.readouterr()
    events = json_events(captured.out)
    assert code == 0 and events[-1]["event"] == "done"
    found = [e for e in events if e["event"] == "diagnosis"]
    assert [e["kind"] for e in found] == ["flat_loss"] and found[0]["epoch"] == 4
    assert events[-1]["diagnosis"]["kind"] == "flat_loss"
    assert "note: epoch 4: flat loss" in captured.err


def test_noise_of_a_loss_near_zero_is_no_instability():
    """A judge draw of issue 27 (benchmarks/RESULTS.md, session 7): validation 1.00 to the end, the
    training loss 0.0003 then 0.016, a 50-fold rise of nothing; it was called unstable."""
    losses = [3.3473, 1.6385, 1.1027, 0.9822, 0.7561, 0.552, 0.2884, 0.0936, 0.0411, 0.0256, 0.0003, 0.016]
    accuracies = [0.43, 0.61, 0.63, 0.77, 0.8, 0.94, 0.97, 0.99, 1.0, 1.0, 1.0, 1.0]
    assert diagnose(history(losses, accuracies), group_confusion(), NAMES) is None


def test_a_loss_that_climbs_back_up_is_instability_never_be_patient():
    """The desk issue's run: the loss climbed from 0.015 to 0.106 (7x) while the Fine-tune dock
    said "be patient"; validation accuracy had fallen from 1.0 to 0.944."""
    found = diagnose(history([0.9, 0.2, 0.015, 0.05, 0.106], [0.8, 1.0, 1.0, 1.0, 0.944]))
    assert found.kind == "unstable" and "0.015 at epoch 3, 0.106 now" in found.message
    assert "patient" not in found.message and "--lr" in found.message


def test_a_slow_climb_that_ends_at_the_group_level_is_said_at_the_end():
    """A tune draw of issue 27 (benchmarks/RESULTS.md, session 8: draw 111 at twice the learning rate)
    climbed 0.70 -> 0.74 over its last three epochs, every error within one look-alike group, and
    ended "done" with no word: too slow for a plateau, yet the trait was not found in the run."""
    accuracies = [0.375, 0.406, 0.463, 0.562, 0.616, 0.613, 0.631, 0.700, 0.703, 0.738, 0.744, 0.744]
    losses = [3.62, 2.61, 2.02, 1.56, 1.32, 1.19, 1.09, 1.01, 0.96, 0.92, 0.90, 0.89]
    climb = history(losses, accuracies)
    watch = Watch()
    assert all(watch.update(climb[:e], group_confusion(), NAMES) is None for e in range(1, len(climb) + 1))
    found = watch.final()
    assert found.kind == "group_plateau" and found.epoch == 12
    assert "a slow climb, ended at the level of look-alike groups" in found.message and "+0.04 since epoch 9" in found.message
    assert "{beetle a, beetle b, beetle c}" in found.message and "--resume --epochs 24" in found.message
    assert "still learning" in found.message  # a slow climb was short of updates (tune draw 100)
    # the same climb with its errors spread over every class, or ending above GOOD_ENOUGH, ends quietly
    spread = np.full((5, 5), 6.0) + np.diag([10.0] * 5)
    assert diagnose(climb, spread, NAMES, at_end=True) is None
    healthy = history(losses, accuracies[:-3] + [0.90, 0.93, 0.96])
    assert diagnose(healthy, group_confusion(), NAMES, at_end=True) is None
    assert diagnose(climb, group_confusion(), NAMES) is None  # during the run: no plateau yet
