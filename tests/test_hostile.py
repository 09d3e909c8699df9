"""The hostile corpus (hostile_corpus.py) through the `intr` command: every case gives its exit
code, a message naming the input, no traceback, and no partial or overwritten files."""
import re

import pytest

from hostile_corpus import CASES
from intr_training import cli


def snapshot(root):
    """Every file under root with its size and modification time."""
    return {path: (path.stat().st_size, path.stat().st_mtime_ns) for path in root.rglob("*") if path.is_file()}


def run_cli(argv, capsys):
    try:
        code = cli.main(argv)
    except SystemExit as exit:  # argparse refuses a value with exit code 2
        code = exit.code
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def check_no_partial_or_changed_files(tmp_path, before):
    after = snapshot(tmp_path)
    leftovers = [path for path in after if path.name.endswith((".tmp", ".part"))]
    assert not leftovers, f"partial files left behind: {leftovers}"
    changed = [path for path, stamp in before.items() if after.get(path) != stamp]
    assert not changed, f"inputs changed or removed: {changed}"


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_hostile_input(case, tmp_path, capsys):
    argv, named = case.build(tmp_path)
    before = snapshot(tmp_path)
    code, text = run_cli(argv, capsys)
    assert code == case.code, text
    assert "Traceback" not in text
    assert named in text, f"the message does not name {named}:\n{text}"
    for pattern in case.says:
        assert re.search(pattern, text), f"{pattern!r} not in:\n{text}"
    check_no_partial_or_changed_files(tmp_path, before)
    assert not [name for name in case.absent if (tmp_path / name).exists()]
    if case.code == 2 and argv[0] == "explain":  # "skipped X: " always comes with its reason
        assert not re.search(r"skipped [^\n]*: *$", text, re.MULTILINE)


def test_corpus_covers_every_class_of_input():
    kinds = {case.id.split("-")[0].split("--")[0] for case in CASES}
    assert len(CASES) >= 60
    assert {"image", "checkpoint", "class", "synth", "train", "folder"} <= kinds


def test_out_of_memory_hint_for_cpu_allocation_failures():
    from intr_training.training_run import out_of_memory_message
    for error in (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate "
                               "memory: you tried to allocate 123 bytes"), MemoryError(),
                  RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")):
        assert "lower --batch-size" in out_of_memory_message(error, None)
    assert out_of_memory_message(RuntimeError("shape mismatch"), None) is None


def test_demo_image_that_is_empty_is_named_before_napari_starts(tmp_path, capsys):
    empty = tmp_path / "specimen.png"
    empty.write_bytes(b"")
    code, text = run_cli(["demo", "--image", str(empty), "--no-show"], capsys)
    assert code == 2 and "specimen.png is an empty file" in text and "imageio" not in text
