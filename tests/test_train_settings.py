"""TrainSettings: one frozen configuration per run, resolved from the defaults, the recipe, the
saved run and the command line in that order; its ranges checked once; runs saved before it resume."""
import argparse
import dataclasses
import math

import pytest
import torch

from intr_training import cli, train_cli, train_settings
from napari_intr import run_folder
from napari_intr.recipes import PAPER, PAPER_START, TINY
from training_data import FAST, write_classes


def command_line(*arguments: str) -> dict:
    """What `intr train` hands the run: argparse's values, None where nothing was given."""
    return vars(cli.build_parser().parse_args(["train", "--data", "DATA", "--out", "OUT", *arguments]))


def test_the_recipe_fills_what_the_command_line_leaves_out_and_scales_its_rates():
    settings, warnings = train_settings.new_run(command_line("--batch-size", "8"), "tiny", world_size=1)
    assert settings.epochs == TINY["epochs"] and settings.dropout == TINY["dropout"] and not warnings
    assert settings.lr == pytest.approx(TINY["lr"] * (8 / TINY["batch_size"]) ** 0.5)  # sqrt of the batch ratio
    assert settings.seed == train_settings.DEFAULTS["seed"] and settings.precision == "auto"
    given, _ = train_settings.new_run(command_line("--epochs", "3", "--lr", "0.01", "--batch-size", "8"), "tiny", 1)
    assert given.epochs == 3 and given.lr == 0.01  # the command line wins; a given rate is not scaled


def test_the_paper_recipe_brings_its_start_and_its_step_schedule():
    start = train_settings.start_values(command_line("--recipe", "paper", "--image-size", "96"))
    assert start["init"] == PAPER_START["init"] and start["image_size"] == 96
    settings, _ = train_settings.new_run(command_line("--recipe", "paper", "--epochs", "14"), "resnet50", 1)
    assert settings.schedule == "step" and settings.lr_drop == PAPER["lr_drop"]
    assert settings.warmup_epochs == PAPER["warmup_epochs"]


def test_a_resumed_run_keeps_its_saved_settings_except_the_runtime_ones():
    saved, _ = train_settings.new_run(command_line("--batch-size", "4"), "tiny", 1)
    resumed, warnings = train_settings.resumed(command_line("--epochs", "60", "--lr", "0.5", "--resume"),
                                               saved.saved(), "cpu")
    assert resumed.epochs == 60 and resumed.lr == saved.lr and resumed.batch_size == 4
    assert warnings == [f"--lr 0.5 ignored: --resume continues with the saved run's setting ({saved.lr})"]


def test_a_saved_run_without_a_recipe_setting_is_refused_by_name():
    saved, _ = train_settings.new_run(command_line(), "tiny", 1)
    incomplete = {name: value for name, value in saved.saved().items() if name != "augment"}
    with pytest.raises(ValueError, match="the saved run has no augment setting"):
        train_settings.resumed(command_line("--resume"), incomplete, "cpu")


def test_a_frozen_backbone_caches_its_features_unless_told_not_to():
    assert train_settings.new_run(command_line("--freeze", "backbone"), "tiny", 1)[0].cache_features is True
    assert train_settings.new_run(command_line("--freeze", "backbone", "--no-cache-features"), "tiny", 1)[0] \
        .cache_features is False
    assert train_settings.new_run(command_line(), "tiny", 1)[0].cache_features is False
    with pytest.raises(ValueError, match="--cache-features needs a frozen backbone"):
        train_settings.new_run(command_line("--cache-features"), "tiny", 1)


def test_settings_are_frozen_and_check_their_ranges_once():
    settings, _ = train_settings.new_run(command_line(), "tiny", 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.epochs = 2
    for field, value, message in (("dropout", 1.0, "--dropout must be at least 0 and below 1, got 1.0"),
                                  ("accumulate", 0, "--accumulate must be at least 1, got 0"),
                                  ("warmup_epochs", -1, "--warmup-epochs must be 0 or more, got -1")):
        with pytest.raises(ValueError, match=message):
            dataclasses.replace(settings, **{field: value})
    # The command line refuses what the settings refuse, in the same words (was: at most 0.99 there).
    assert dataclasses.replace(settings, dropout=0.995).dropout == 0.995
    assert command_line("--dropout", "0.995")["dropout"] == 0.995
    with pytest.raises(SystemExit):
        command_line("--dropout", "1")


def boundary_values(allowed: train_settings.Range) -> list[tuple[float, bool]]:
    """Each end of a range, and the nearest value beyond it, with whether the range admits it."""
    def beyond(end, direction):
        return end + direction if allowed.whole else math.nextafter(end, direction * math.inf)
    cases = []
    if allowed.low is not None:
        cases += [(allowed.low, allowed.low_inclusive), (beyond(allowed.low, -1), False)]
        if not allowed.low_inclusive:
            cases.append((beyond(allowed.low, 1), True))
    high = allowed.high if allowed.high is not None else train_settings.INT32_MAX if allowed.whole else None
    if high is not None:
        cases += [(high, allowed.high_inclusive), (beyond(high, 1), False)]
        if not allowed.high_inclusive:
            cases.append((beyond(high, -1), True))
    return cases


def test_the_command_line_and_the_settings_refuse_the_same_boundary_values(capsys):
    """Every ranged setting (train_settings.RANGES, so a new one is covered) is refused alike by
    `intr train`'s parser, naming its flag, and by TrainSettings: one definition of each range."""
    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    typed = {action.dest for action in parser._actions if action.type is not None}
    assert typed & set(train_settings.FIELDS) <= set(train_settings.RANGES)  # no setting parsed by its own range
    settings, _ = train_settings.new_run(command_line(), "tiny", 1)
    for name, allowed in train_settings.RANGES.items():
        assert name in train_settings.FIELDS and name in typed, name
        option = f"--{train_settings.flag(name)}"
        for value, admitted in boundary_values(allowed):
            try:
                dataclasses.replace(settings, **{name: value})
                settings_admit = True
            except ValueError as refusal:
                settings_admit = False
                assert str(refusal).startswith(f"{option} must be"), refusal
            try:
                parsed = command_line(option, str(value))[name]
                command_line_admits = True
            except SystemExit:
                command_line_admits = False
                assert option in capsys.readouterr().err
            assert settings_admit == command_line_admits == admitted, (name, value)
            if admitted:
                assert parsed == value


# training_state.pt's "args" as napari-intr wrote it before TrainSettings (commit f09414f: the
# argparse Namespace's plain values, `command` included), for `intr train --backbone tiny --epochs 1
# --device cpu --progress none --image-size 64`. The rest of the state kept its format.
OLD_ARGS = {"accumulate": 1, "augment": "flip", "backbone": "tiny", "batch_size": 32, "cache_features": False,
            "command": "train", "device": "cpu", "dropout": 0.0, "epochs": 1, "freeze": None, "image_size": 64,
            "init": None, "lr": 0.00025, "lr_backbone": 0.00025, "lr_drop": None, "precision": "auto",
            "progress": "none", "recipe": None, "resume": False, "sampled_queries": None, "schedule": "cosine",
            "seed": 0, "val_split": 0.1, "warmup_epochs": 1.0, "workers": None}


def test_a_run_saved_before_train_settings_resumes(tmp_path, capsys):
    data = write_classes(tmp_path / "data", {"disc": 4, "diamond": 4})
    out = tmp_path / "run"
    arguments = ["train", "--data", str(data), "--out", str(out), "--progress", "none", *FAST]
    assert cli.main([*arguments, "--epochs", "1"]) == 0
    state = run_folder.load_state(out)
    state["args"] = {**OLD_ARGS, "data": str(data), "out": str(out), "batch_size": state["args"]["batch_size"],
                     "image_size": state["args"]["image_size"], "lr": state["args"]["lr"],
                     "lr_backbone": state["args"]["lr_backbone"]}
    torch.save(state, out / run_folder.STATE_FILE)
    capsys.readouterr()
    assert cli.main([*arguments, "--epochs", "2", "--resume"]) == 0
    assert "ignored" not in capsys.readouterr().err
    saved = run_folder.load_state(out)
    assert saved["epoch"] == 2 and set(saved["args"]) == set(train_settings.FIELDS)  # `command` is gone
    for name in ("lr", "lr_backbone", "batch_size", "schedule", "warmup_epochs", "dropout", "augment", "seed"):
        assert saved["args"][name] == state["args"][name], name
