"""Hostile conditions around a run rather than hostile files: a second run into the same folder,
a stale lock, a full disk (a real small tmpfs where one can be mounted, else a patched writer),
a memory cap (resource.setrlimit in a child process), extreme aspect ratios in one batch."""
import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from hostile_corpus import FAST, blank_png, bomb_png, lock_holder, training_folder
from intr_training import cli
from napari_intr.collection.run_lock import RunLock

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "training"),
                                                     os.environ.get("PYTHONPATH", "")])}


def train(capsys, data, out, *extra):
    code = cli.main(["train", "--data", str(data), "--out", str(out), "--epochs", "1", *FAST, *extra])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return code, captured


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def no_partial_files(folder):
    return not [p for p in folder.rglob("*") if p.name.endswith((".tmp", ".part"))]


def test_second_run_into_a_locked_folder_is_refused(tmp_path, capsys):
    data = training_folder(tmp_path / "data")
    out = tmp_path / "run"
    with lock_holder(out) as holder:
        before = digest(out)
        code, captured = train(capsys, data, out, "--progress", "json")
        assert code == 2
        assert f"another intr train (pid {holder.pid}" in captured.err and str(out) in captured.err
        events = [json.loads(line) for line in captured.out.splitlines()]
        assert events[-1]["event"] == "error" and "another intr train" in events[-1]["message"]
        assert digest(out) == before  # nothing written over the running one's files
    # the holder was killed: the lock it left is stale, taken over, and said so
    with RunLock(out) as lock:
        assert f"took over the lock of an earlier run in {out} (pid {holder.pid}" in lock.stale_message()


def test_lock_in_one_process_refuses_a_second_and_is_released(tmp_path, capsys):
    data = training_folder(tmp_path / "data")
    with RunLock(tmp_path / "run") as lock:
        assert lock.stale_message() is None
        code, captured = train(capsys, data, tmp_path / "run")
        assert code == 2 and f"pid {os.getpid()}" in captured.err
    assert not (tmp_path / "run").exists()  # released, and the folder it made for nothing removed
    (tmp_path / "run").mkdir()
    with RunLock(tmp_path / "run") as lock:
        assert lock.stale_message() is None
    assert list((tmp_path / "run").iterdir()) == []  # released: the lock file is gone
    # a refused run that created the folder leaves nothing behind
    code, _ = train(capsys, tmp_path / "no-data", tmp_path / "never")
    assert code == 2 and not (tmp_path / "never").exists()


FULL_DISK_SCRIPT = textwrap.dedent("""
    import json, sys
    from intr_training import cli
    data, mounts = sys.argv[1], sys.argv[2:]
    fast = ["--backbone", "tiny", "--image-size", "64", "--batch-size", "4", "--workers", "0", "--seed", "0"]
    for mount, epochs in zip(mounts, ("1", "1", "1", "2")):
        resume = ["--resume"] if epochs == "2" else []
        code = cli.main(["train", "--data", data, "--out", mount + "/run", "--epochs", epochs,
                         "--progress", "json", *fast, *resume])
        print(json.dumps({"mount": mount, "code": code}), file=sys.stderr, flush=True)
""")


def mountable_tmpfs() -> bool:
    if not shutil.which("unshare") or sys.platform != "linux":
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True, check=False)
    return probe.returncode == 0


def new_tiny_model_bytes() -> int:
    """The weights of the model FULL_DISK_SCRIPT's runs train (a new tiny model; its width is the recipe's)."""
    import torch

    from intr_training.initialization import initial_model
    model = initial_model("none", ["red", "blue"], "tiny", 64, torch.Generator()).model
    return sum(tensor.numel() * tensor.element_size() for tensor in model.state_dict().values())


@pytest.mark.slow
@pytest.mark.skipif(not mountable_tmpfs(), reason="no user namespaces here to mount a small tmpfs")
def test_full_disk_on_a_real_tmpfs(tmp_path):
    """Three small tmpfs disks: full while writing model.safetensors, while writing
    training_state.pt, and (after a good first epoch) while --resume writes the second."""
    data = training_folder(tmp_path / "data")
    mounts = [tmp_path / name for name in ("model", "state", "resume")]
    for mount in mounts:
        mount.mkdir()
    weights = int(1.03 * new_tiny_model_bytes()) + 65_536  # its safetensors file, with a margin
    sizes = [int(1.5 * weights), int(2.6 * weights), int(5.5 * weights)]
    mount_all = " && ".join(f"mount -t tmpfs -o size={size} tmpfs {mount}" for size, mount in zip(sizes, mounts))
    # the resume mount first gets a good epoch, then --resume fills it
    script = (f"{mount_all} && {sys.executable} -c '{FULL_DISK_SCRIPT}' {data} {mounts[0]} {mounts[1]} "
              f"{mounts[2]} {mounts[2]} && find {' '.join(map(str, mounts))} -type f -printf '%p %s\\n' "
              f"&& sha256sum {mounts[2]}/run/last.safetensors")
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, env=ENV,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    codes = [json.loads(line)["code"] for line in done.stderr.splitlines() if line.startswith('{"mount"')]
    assert codes == [2, 2, 0, 2], done.stderr
    errors = [json.loads(line)["message"] for line in done.stdout.splitlines()
              if line.startswith("{") and json.loads(line)["event"] == "error"]
    assert len(errors) == 3
    assert all("not enough disk space to write" in message for message in errors)
    assert f"{mounts[0]}/run/model.safetensors" in errors[0] or f"{mounts[0]}/run/last.safetensors" in errors[0]
    assert f"{mounts[1]}/run/training_state.pt" in errors[1]
    assert f"{mounts[2]}/run/last.safetensors" in errors[2] and "is kept" in errors[2]
    files = done.stdout.splitlines()
    assert not [line for line in files if ".tmp " in line or ".part " in line], files


def test_full_disk_with_a_patched_writer(tmp_path, capsys, monkeypatch):
    """Where no tmpfs can be mounted: the writers fail as a full disk makes them fail."""
    import torch

    from napari_intr import atomic, checkpoints
    data = training_folder(tmp_path / "data")
    assert train(capsys, data, tmp_path / "run")[0] == 0
    before = digest(tmp_path / "run")

    def full_safetensors(state, path, metadata=None):
        Path(path).write_bytes(b"\0" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoints, "save_file", full_safetensors)
    code, captured = train(capsys, data, tmp_path / "run", "--resume", "--epochs", "2", "--progress", "json")
    assert code == 2 and "not enough disk space to write" in captured.err and "last.safetensors" in captured.err
    assert json.loads(captured.out.splitlines()[-1])["event"] == "error"
    monkeypatch.undo()

    def full_torch_save(payload, path):
        Path(path).write_bytes(b"PK\3\4" + b"\0" * 1000)
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing "
                           "file data/3: file write failed")

    monkeypatch.setattr(torch, "save", full_torch_save)
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 0))
    code, captured = train(capsys, data, tmp_path / "run", "--resume", "--epochs", "2")
    assert code == 2 and "not enough disk space to write" in captured.err and "training_state.pt" in captured.err
    assert "is kept" in captured.err
    after = digest(tmp_path / "run")
    assert after["training_state.pt"] == before["training_state.pt"]  # the previous state is intact
    assert no_partial_files(tmp_path)


MEMORY_CAP_SCRIPT = textwrap.dedent("""
    import resource, sys
    import torch
    from intr_training import cli
    from napari_intr import loading
    size = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (size + 2**30, resource.RLIM_INFINITY))
    sys.exit(cli.main(["explain", sys.argv[1], "--out", sys.argv[2]]))
""")


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and /proc are Linux's")
def test_memory_cap_refuses_before_decoding(tmp_path):
    """Under a 1 GiB address-space cap a 20 000² px image (2.2 GiB to decode, within the 8 GiB
    budget) that cannot be read reduced (an interlaced PNG) is refused from its header with the
    reason, not killed or met by a bare MemoryError."""
    image = bomb_png(tmp_path / "scan.png", 20000, 20000, interlaced=True)
    done = subprocess.run([sys.executable, "-c", MEMORY_CAP_SCRIPT, str(image), str(tmp_path / "out")],
                          capture_output=True, text=True, env=ENV, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "skipped" in done.stderr and "scan.png is 20000×20000 px" in done.stderr
    assert "more than the memory available now" in done.stderr and "interlaced" in done.stderr


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and /proc are Linux's")
def test_memory_cap_reads_a_real_png_bomb_row_by_row(tmp_path):
    """Under the same cap a complete 10 000² px PNG (300 KB on disk, 1.1 GiB to decode whole) is
    read row by row into a reduced image and explained, with a note saying so."""
    image = blank_png(tmp_path / "bomb.png", 10000, 10000)
    done = subprocess.run([sys.executable, "-c", MEMORY_CAP_SCRIPT, str(image), str(tmp_path / "out")],
                          capture_output=True, text=True, env=ENV, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr + done.stdout and "explained 1 of 1" in done.stdout
    assert re.search(r"bomb.png is 10000×10000 px, .*more than the memory available now .*read reduced \d+× "
                     r"\(row by row\)", done.stdout), done.stdout


def test_a_batch_is_never_padded_beyond_the_size_limit():
    """Portrait, landscape and extreme images through the training transform and collate."""
    from intr_training.data import collate
    from intr_training.transforms import train_transform
    from napari_intr.model import IntrConfig
    config = IntrConfig.tiny(2, short_side=64, max_side=112)
    transform = train_transform(config, stride=16)
    items = []
    for shape in [(40, 20000), (20000, 40), (64, 100), (100, 64), (100, 100)]:
        try:
            items.append((transform(np.random.default_rng(0).random((*shape, 3), dtype=np.float32)), 0))
        except ValueError as error:
            assert "crop" in str(error)
            items.append(None)
    batch = collate(items)
    assert batch.skipped == 2 and max(batch.images.shape[-2:]) <= config.max_side


def test_every_skip_has_a_reason():
    from napari_intr.image_files import reason
    assert reason(MemoryError()).startswith("out of memory")
    assert reason(OSError()) == "OSError"
    assert reason(ValueError("bad")) == "bad"


def test_huge_uncompressed_tiff_is_read_strip_by_strip(tmp_path, monkeypatch):
    """Past the decode budget, an uncompressed TIFF is memory-mapped and block-averaged band by
    band (Explainer's shrink) instead of refused; a compressed one is read reduced, strip by
    strip (test_large_images.py has every layout)."""
    import tifffile
    import torch

    from napari_intr import image_files
    from napari_intr.collection.explain import explain_folder
    from napari_intr.model import IntrConfig, build_model
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (600, 800, 3), dtype=np.uint8)
    folder = tmp_path / "scans"
    folder.mkdir()
    tifffile.imwrite(folder / "plain.tif", pixels)
    tifffile.imwrite(folder / "zipped.tif", pixels, compression="zlib", rowsperstrip=16)
    monkeypatch.setattr(image_files, "DECODE_BUDGET_BYTES", 1_000_000)  # as if these were 50 000 px scans
    mapped = image_files.read_image(folder / "plain.tif", allow_mapped=True)
    assert isinstance(mapped, np.memmap) and mapped.shape == (600, 800, 3)
    with pytest.raises(ValueError, match="decode budget"):
        image_files.read_image(folder / "plain.tif")  # callers that need the pixels in memory are refused
    torch.manual_seed(0)
    model = build_model(IntrConfig.tiny(3), ["a", "b", "c"]).eval()
    summary = explain_folder(model, [folder], tmp_path / "out", top_k=2)
    assert summary["done"] == 2 and not summary["skipped"]
    notes = {Path(path).name: note for path, note in summary["notes"]}
    assert "block-averaged" in notes["plain.tif"]
    assert "zipped.tif is 600×800 px" in notes["zipped.tif"] and "read reduced" in notes["zipped.tif"]
