"""Bad input to `intr train` / `intr eval`: a clear message, exit code 2, never a traceback."""
import pytest
import torch

from intr_training import cli, engine
from training_data import FAST, json_events, write_classes


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured


def train(capsys, data, out, *extra):
    return run_cli(capsys, "train", "--data", str(data), "--out", str(out), "--epochs", "1", *FAST, *extra)


def test_missing_folder(tmp_path, capsys):
    code, captured = train(capsys, tmp_path / "nowhere", tmp_path / "out")
    assert code == 2 and "does not exist" in captured.err and "nowhere" in captured.err


def test_folder_without_class_folders(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "readme.txt").write_text("hello")
    code, captured = train(capsys, tmp_path / "data", tmp_path / "out")
    assert code == 2 and "no class folders" in captured.err


def test_one_class_only(tmp_path, capsys):
    data = write_classes(tmp_path / "data", {"lonely": 3})
    code, captured = train(capsys, data, tmp_path / "out")
    assert code == 2 and "only one class" in captured.err and "lonely" in captured.err


def test_empty_class_folder_leaving_one_class(tmp_path, capsys):
    data = write_classes(tmp_path / "data", {"full": 3})
    (data / "empty").mkdir()
    code, captured = train(capsys, data, tmp_path / "out")
    assert code == 2 and "only one class" in captured.err


def test_empty_class_folder_is_skipped_with_a_warning(tmp_path, capsys):
    data = write_classes(tmp_path / "data", {"a": 3, "b": 3})
    (data / "empty").mkdir()
    code, captured = train(capsys, data, tmp_path / "out", "--progress", "json")
    assert code == 0
    warnings = [e["message"] for e in json_events(captured.out) if e["event"] == "warning"]
    assert any("empty" in message and "no readable images" in message for message in warnings)


def test_resume_with_other_classes(tmp_path, capsys):
    write_classes(tmp_path / "data", {"a": 3, "b": 3})
    assert train(capsys, tmp_path / "data", tmp_path / "out")[0] == 0
    other = write_classes(tmp_path / "other", {"a": 3, "c": 3})
    code, captured = train(capsys, other, tmp_path / "out", "--resume")
    assert code == 2
    assert "only in the saved run: b" in captured.err and "only in the data: c" in captured.err


def test_existing_run_without_resume(tmp_path, capsys):
    write_classes(tmp_path / "data", {"a": 3, "b": 3})
    assert train(capsys, tmp_path / "data", tmp_path / "out")[0] == 0
    code, captured = train(capsys, tmp_path / "data", tmp_path / "out")
    assert code == 2 and "--resume" in captured.err


def test_out_of_memory_suggests_smaller_settings(tmp_path, capsys, monkeypatch):
    def exhausted(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(engine, "train_step", exhausted)
    write_classes(tmp_path / "data", {"a": 3, "b": 3})
    code, captured = train(capsys, tmp_path / "data", tmp_path / "out", "--progress", "json")
    assert code == 2 and "out of memory" in captured.err
    assert "--batch-size" in captured.err and "--image-size" in captured.err
    last = json_events(captured.out)[-1]
    assert last["event"] == "error" and "--batch-size" in last["message"]


@pytest.mark.parametrize("content", [b"", b"\x08\x00\x00\x00\x00\x00\x00\x00{broken", b"PK\x03\x04 not a zip"],
                         ids=["empty", "bad-safetensors", "bad-pth"])
def test_corrupt_init_checkpoint(tmp_path, capsys, content):
    write_classes(tmp_path / "data", {"a": 3, "b": 3})
    checkpoint = tmp_path / ("model.safetensors" if b"{" in content else "model.pth")
    checkpoint.write_bytes(content)
    code, captured = train(capsys, tmp_path / "data", tmp_path / "out", "--init", str(checkpoint))
    assert code == 2 and str(checkpoint) in captured.err


def test_detr_init_needs_resnet50(tmp_path, capsys):
    write_classes(tmp_path / "data", {"a": 3, "b": 3})
    code, captured = train(capsys, tmp_path / "data", tmp_path / "out", "--init", "detr-r50")
    assert code == 2 and "resnet50" in captured.err


def test_eval_model_without_matching_classes(tmp_path, capsys):
    from napari_intr import save_model
    from napari_intr.model import IntrConfig, build_model
    save_model(build_model(IntrConfig.tiny(2), ["x", "y"]), tmp_path / "m.safetensors")
    write_classes(tmp_path / "data", {"a": 2, "b": 2})
    code, captured = run_cli(capsys, "eval", "--model", str(tmp_path / "m.safetensors"), "--data",
                             str(tmp_path / "data"), "--workers", "0")
    assert code == 2 and "none of the 2 class folders" in captured.err


def test_version(capsys):
    """`intr --version` names the release (bug reports need it)."""
    import napari_intr
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"intr {napari_intr.__version__}"
