"""The INTR Fine-tune dock widget in a real napari viewer: it runs `intr train` in a child process
on a small synthetic collection with one class the bundled model has never seen.

As in real use the viewer exists before torch: nothing here imports torch at module level.
Training children run with OMP_NUM_THREADS=1 (two OpenMP threads fighting over this machine's
two cores make torch ten times slower)."""
import json
import shutil

import numpy as np
import psutil
import pytest
from PIL import Image

TRAIN_TIMEOUT_MS = 90_000
NOVEL = "Novel species"


@pytest.fixture
def finetune(make_napari_viewer, monkeypatch, messages):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-intr", "INTR Fine-tune")
    yield viewer, widget
    widget.stop_and_wait()


def write_novel_collection(root):
    """The nine synthetic species, plus a tenth: rubra's images with inverted colours."""
    from napari_intr.synth import write_collection
    write_collection(root, per_class=4, size=64, seed=5)
    (root / NOVEL).mkdir()
    for path in sorted((root / "Heliconia synthetica-rubra").glob("*.png")):
        pixels = np.asarray(Image.open(path).convert("RGB"))
        Image.fromarray(255 - pixels).save(root / NOVEL / f"novel-{path.name}")
    return root


def configure(widget, data, out, epochs):
    widget.collection.folder.path = data
    settings = widget.settings
    settings.epochs.value = epochs
    settings.batch_size.value = 8
    settings.image_size.value = 64
    settings.device.value = "cpu"
    settings.out.path = out


def run_to_end(qtbot, widget):
    widget.start()
    qtbot.waitUntil(lambda: widget.running, timeout=TRAIN_TIMEOUT_MS)
    qtbot.waitUntil(lambda: not widget.running, timeout=TRAIN_TIMEOUT_MS)


def test_a_stall_reported_by_the_run_is_shown_under_the_plot_and_at_the_end(finetune, messages):
    """intr train's diagnosis events (training/intr_training/diagnosis.py): shown when they come,
    notified once, and the end says whether the run ended in it or recovered."""
    _, widget = finetune
    plateau = {"event": "diagnosis", "kind": "group_plateau", "epoch": 5, "groups": [["a", "b"]],
               "message": "plateau at the level of look-alike groups (...): confuses the classes within {a, b}"}
    widget._on_event(plateau)
    assert widget.note.text().startswith("Epoch 5: plateau") and "{a, b}" in widget.note.text()
    assert [level for level, text in messages if "{a, b}" in text] == ["warning"]
    widget._on_event({"event": "done", "best_val_acc": 1.0, "model": "m.safetensors", "per_class_accuracy": {},
                      "diagnosis": None})
    assert widget.note.text().endswith("It recovered: the run did not end in it.")
    widget._reset_run()
    widget._on_event({"event": "done", "best_val_acc": 0.5, "model": "m.safetensors", "per_class_accuracy": {},
                      "diagnosis": {key: plateau[key] for key in ("kind", "epoch", "groups", "message")}})
    assert widget.note.text().startswith("The run ended in a group plateau (found at epoch 5)")


def test_the_backbone_epochs_are_logged_before_the_first_epoch(finetune):
    _, widget = finetune
    widget._on_event({"event": "backbone_epoch", "epoch": 3, "epochs": 12, "loss": 0.4, "train_acc": 0.8,
                      "val_acc": 0.75, "seconds": 2.0})
    assert widget.log.toPlainText().splitlines()[-1] == ("backbone alone, epoch 3/12: train accuracy 80.0%, "
                                                         "validation accuracy 75.0%")
    assert widget.status.text().startswith("Training the backbone alone before INTR's epochs")


def test_accuracy_comes_with_its_count_and_exact_interval():
    from scipy.stats import binomtest

    from napari_intr.widgets.finetune.results import accuracy_text, clopper_pearson
    assert accuracy_text(1.0, 9) == "100 % of 9 (66–100 %, 95 % Clopper–Pearson interval)"
    for correct, total in ((0, 5), (3, 9), (17, 18), (40, 40)):
        reference = binomtest(correct, total).proportion_ci(0.95, method="exact")
        assert clopper_pearson(correct, total) == pytest.approx((reference.low, reference.high), abs=1e-9)
    assert accuracy_text(0.5, None) == "50.0%" and accuracy_text(None, 0) == "n/a (no validation images)"


def test_the_freeze_choices_are_intr_trains(finetune):
    from napari_intr.recipes import FREEZE_CHOICES
    _, widget = finetune
    freeze = widget.settings.freeze
    assert freeze.choices == (None, *FREEZE_CHOICES)  # None: the recipe's (a ViT's backbone, else nothing)
    labels = [freeze.native.itemText(i) for i in range(freeze.native.count())]
    assert labels == ["recipe (ViT: backbone, others: nothing)", "nothing", "backbone", "backbone and encoder"]


def test_a_new_model_on_a_foundation_backbone_trains_with_its_recipe(finetune, tmp_path):
    """The base-model list offers a new model per foundation backbone: the run gets --backbone
    (its recipe: published weights, frozen, cached) instead of --init."""
    from napari_intr.model.config import VIT_BACKBONES
    _, widget = finetune
    picker = widget.settings.base.source
    offered = [picker.itemData(i) for i in range(picker.count())]
    assert [f"new:{name}" for name in VIT_BACKBONES] == [item for item in offered if item.startswith("new:")]
    picker.setCurrentIndex(offered.index("new:dinov2-vitb14-reg"))
    arguments = widget.settings.train_arguments(str(tmp_path), 0.2, tmp_path / "run")
    assert "--init" not in arguments
    assert arguments[arguments.index("--backbone") + 1] == "dinov2-vitb14-reg"


def test_backbone_alone_first_is_passed_on_and_refused_with_a_frozen_backbone(finetune, tmp_path):
    _, widget = finetune
    settings = widget.settings
    assert "--backbone-epochs" not in settings.train_arguments(str(tmp_path), 0.2, tmp_path / "run")
    settings.backbone_epochs.value = 12
    arguments = settings.train_arguments(str(tmp_path), 0.2, tmp_path / "run")
    assert arguments[arguments.index("--backbone-epochs") + 1] == "12"
    settings.freeze.value = "backbone"
    with pytest.raises(ValueError, match="Backbone alone first trains the backbone.*Freeze to nothing"):
        settings.train_arguments(str(tmp_path), 0.2, tmp_path / "run")


def test_finetune_learns_a_new_class_and_the_explorer_explains_with_it(finetune, qtbot, messages, tmp_path):
    viewer, widget = finetune
    data, out = write_novel_collection(tmp_path / "collection"), tmp_path / "run"
    configure(widget, data, out, epochs=2)
    events = []
    widget.process.message.connect(events.append)
    run_to_end(qtbot, widget)

    kinds = [event["event"] for event in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and kinds.count("epoch") == 2, messages
    assert "step" in kinds and NOVEL in events[0]["classes"]
    assert widget.plot.point_count() >= 4 and len(widget.plot.epochs) == 2
    widget.plot._redraw()
    rates = [event["lr"] for event in events if event["event"] == "epoch"]
    assert list(widget.plot.lr_line.get_ydata()) == [rate / max(rates) for rate in rates]  # the schedule, plotted
    assert [row[0] for row in widget.collection.summary.counts].count(NOVEL) == 1
    assert NOVEL in [name for name, _ in widget.results.rows()]
    assert any(level == "info" and "Fine-tuning finished" in text for level, text in messages)
    # the accuracy says how many images it rests on, with its interval, and warns when they are few
    val_images = events[0]["val_images"]
    assert 0 < val_images < 30
    summary = widget.results.summary.full_text
    assert f"% of {val_images} (" in summary and "95 % Clopper–Pearson interval" in summary
    assert f"only {val_images} validation images" in summary
    finished = next(text for level, text in messages if "Fine-tuning finished" in text)
    calibration = events[-1]["calibration"]  # said in the final message, calibrated or why not
    assert ("Calibrated on" if calibration["calibrated"] else "Not calibrated") in finished
    assert ("Calibrated on" if calibration["calibrated"] else "Not calibrated") in widget.results.summary.text()
    log = (out / "train.log").read_text()
    assert '"event": "done"' in log and "intr_training train" in log
    assert widget.start_button.isEnabled() and not widget.cancel_button.isEnabled()

    # the Explorer takes the new model through the shared state and explains with it
    viewer.open_sample("napari-intr", "heliconia-alba")
    from napari_intr.widgets.state import shared_state
    shared_state(viewer).model = None
    _, explorer = viewer.window.add_plugin_dock_widget("napari-intr", "INTR Explorer")
    qtbot.waitUntil(lambda: explorer.state.model is not None and not explorer.model_source.task.busy,
                    timeout=TRAIN_TIMEOUT_MS)
    widget.results.use_in_explorer()
    model_path = str(out / "model.safetensors")
    qtbot.waitUntil(lambda: explorer.state.model_name == model_path, timeout=TRAIN_TIMEOUT_MS)
    assert NOVEL in explorer.state.class_names and len(explorer.state.class_names) == 10
    source = explorer.model_source.picker  # the Source box names the model it now uses
    assert source.source.currentText().startswith("Checkpoint file") and source.checkpoint.path == model_path
    explorer.explain()
    qtbot.waitUntil(lambda: explorer.state.explanation is not None and not explorer.explain_box.task.busy,
                    timeout=TRAIN_TIMEOUT_MS)
    assert NOVEL in [row[1] for row in explorer.results.rows()]


def test_cancel_keeps_a_resumable_state_and_resume_finishes(finetune, qtbot, messages, tmp_path):
    viewer, widget = finetune
    data, out = write_novel_collection(tmp_path / "collection"), tmp_path / "run"
    configure(widget, data, out, epochs=20)
    def cancel_after_an_epoch(event):
        if event["event"] == "epoch":
            widget.cancel()
    widget.process.message.connect(cancel_after_an_epoch)
    widget.start()
    qtbot.waitUntil(lambda: widget.running, timeout=TRAIN_TIMEOUT_MS)
    qtbot.waitUntil(lambda: not widget.running, timeout=TRAIN_TIMEOUT_MS)
    assert (out / "training_state.pt").is_file()
    stopped = [text for level, text in messages if "stopped after epoch" in text]
    assert stopped and "Resume" in stopped[0], messages
    saved_epochs = len((out / "metrics.jsonl").read_text().splitlines())
    assert 1 <= saved_epochs < 20

    widget.process.message.disconnect(cancel_after_an_epoch)
    widget.resume()
    qtbot.waitUntil(lambda: widget.running, timeout=TRAIN_TIMEOUT_MS)
    qtbot.waitUntil(lambda: not widget.running, timeout=TRAIN_TIMEOUT_MS)
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, 21))
    assert any("Fine-tuning finished" in text for _, text in messages)
    assert len(widget.plot.epochs) == 20  # the saved epochs are plotted again on resume


@pytest.mark.parametrize("classes, expected", [((), "no class folders"), (("only one",), "only one class")])
def test_a_bad_collection_is_a_notification(finetune, qtbot, messages, tmp_path, classes, expected):
    viewer, widget = finetune
    for name in classes:
        (tmp_path / "data" / name).mkdir(parents=True)
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "data" / name / "a.png")
    (tmp_path / "data").mkdir(exist_ok=True)
    configure(widget, tmp_path / "data", tmp_path / "run", epochs=1)
    widget.start()
    qtbot.waitUntil(lambda: any(level == "error" for level, _ in messages), timeout=TRAIN_TIMEOUT_MS)
    assert any(expected in text for _, text in messages)
    assert not widget.running and widget.start_button.isEnabled()


def test_a_failing_process_is_a_notification_with_the_log(finetune, qtbot, messages, tmp_path):
    viewer, widget = finetune
    data, out = write_novel_collection(tmp_path / "collection"), tmp_path / "run"
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    configure(widget, data, out, epochs=1)
    settings = widget.settings
    settings.base.source.setCurrentIndex(settings.base.source.findData("file"))
    settings.base.checkpoint.path = corrupt
    run_to_end(qtbot, widget)
    errors = [text for level, text in messages if level == "error"]
    assert errors and errors[0].startswith("Fine-tuning failed: ")
    assert str(out / "train.log") in errors[0] and "corrupt.safetensors" in errors[0]
    assert widget.start_button.isEnabled() and widget.resume_button.isEnabled()



def start_long_run(qtbot, widget, tmp_path) -> psutil.Process:
    """Start a run far longer than the test and wait for its first step; returns the child."""
    configure(widget, write_novel_collection(tmp_path / "collection"), tmp_path / "run", epochs=500)
    steps = []
    widget.process.message.connect(lambda event: event["event"] == "step" and steps.append(event))
    widget.start()
    qtbot.waitUntil(lambda: bool(steps), timeout=TRAIN_TIMEOUT_MS)
    return psutil.Process(widget.process.pid)

def test_closing_the_widget_while_training_ends_the_process(finetune, qtbot, monkeypatch, tmp_path):
    viewer, widget = finetune
    child = start_long_run(qtbot, widget, tmp_path)
    from qtpy.QtWidgets import QMessageBox
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *args: asked.append(args) or QMessageBox.Yes)
    viewer.window.remove_dock_widget(widget)
    qtbot.waitUntil(lambda: not widget.running, timeout=TRAIN_TIMEOUT_MS)
    assert asked
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    shutil.rmtree(tmp_path / "run", ignore_errors=True)


def test_closing_napari_while_training_names_the_run_and_ends_the_process(finetune, qtbot, tmp_path):
    """napari's close dialog lists registered tasks; closing cancels them: no orphan process."""
    viewer, widget = finetune
    child = start_long_run(qtbot, widget, tmp_path)
    tasks = viewer.window._task_status_manager
    assert any("training" in line for line in tasks.get_status())  # what napari's dialog shows
    viewer.window._qt_window.close()  # not spontaneous: napari skips its dialog and cancels tasks
    qtbot.waitUntil(lambda: not widget.running, timeout=TRAIN_TIMEOUT_MS)
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    shutil.rmtree(tmp_path / "run", ignore_errors=True)
