"""`intr atlas` end to end on synthetic specimens with the bundled model: outputs, one encoding per
image, resume after a cancel, two processes under torchrun, bounded memory, clear errors."""
import json
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from hostile_corpus import lock_holder
from intr_training.cli import main
from napari_intr import load_model, synth
from napari_intr.atlas import AtlasOptions, build_atlas

ALBA, RUBRA = synth.SHOWCASE_PAIR[1], synth.SHOWCASE_PAIR[0]


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    synth.write_collection(root, per_class=3, size=64, seed=5)
    return root


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return load_model("sample", device="cpu")


def outputs(out):
    """Every result file's bytes (the summary ledger aside)."""
    return {path.relative_to(out).as_posix(): path.read_bytes() for path in sorted(out.rglob("*"))
            if path.is_file() and ".intr-atlas" not in path.parts}


def test_atlas_of_a_collection_encodes_each_image_once(collection, model, tmp_path, monkeypatch):
    encodes = []
    original = model.encode
    monkeypatch.setattr(model, "encode", lambda *a, **k: encodes.append(1) or original(*a, **k))
    options = AtlasOptions(per_head=2, pairs=[(ALBA, RUBRA)])
    result = build_atlas(model, "sample", collection, tmp_path, options)
    assert len(encodes) == result.total == 27 and result.summarised_now == 27
    atlas = result.atlas
    assert [c.name for c in atlas.classes] == model.class_names and atlas.images == 27
    for summary in atlas.classes:
        assert summary.images == 3 and len(summary.heads) == model.config.nheads
        for head in summary.heads:
            assert len(head.top) == 2 and head.top[0].peak >= head.top[1].peak
            assert all(e.key.startswith(summary.name + "/") for e in head.top)
            assert head.consistency_method == "parts" and 0 <= head.consistency <= 1
            assert 0 <= head.on_specimen <= 1  # synth's specimen masks say where the specimen is
    (pair,) = atlas.pairs
    assert (pair.a, pair.b, pair.images_a, pair.images_b) == (ALBA, RUBRA, 3, 3)
    assert all(h.masked_images == 3 for h in pair.heads)
    drops = [h.masking_drop for h in pair.heads]
    assert drops == sorted(drops, reverse=True)  # ranked: the heads that tell A from B first

    files = outputs(tmp_path)
    page = files["atlas.html"].decode()
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/") for s in sources)  # opens offline
    assert "http://" not in page and "https://" not in page and "<script" not in page
    heads = files["heads.csv"].decode().splitlines()
    assert len(heads) == 1 + 9 * model.config.nheads and heads[0].startswith("class,layer,head,images")
    assert len(files["pairs.csv"].decode().splitlines()) == 1 + model.config.nheads
    montage = Image.open(tmp_path / "montages" / "class-heliconia-synthetica-alba.png")
    document = json.loads(files["atlas.json"])
    layout = document["montages"]["classes"][ALBA]
    assert len(layout["cells"]) == 2 * model.config.nheads and montage.height > 4 * 96


@pytest.mark.parametrize("pairs", [None, [(ALBA, RUBRA)]])
def test_patches_cut_during_the_pass_equal_the_report_reading_them(collection, model, tmp_path, monkeypatch, pairs):
    """The patches cut while each image is summarised are the report's own: the same files as a
    run whose report reads every image again, and the report reads only what was not cut."""
    from napari_intr.atlas import montage
    reads = []
    original = montage._image_patches
    monkeypatch.setattr(montage, "_image_patches", lambda path, *a: reads.append(path) or original(path, *a))
    options = AtlasOptions(per_head=2, pairs=pairs)
    build_atlas(model, "sample", collection, tmp_path / "cut", options)
    read_with_cache = len(reads)
    monkeypatch.setattr(montage.PatchCache, "LIMIT", 0)  # nothing held: the report cuts every patch
    build_atlas(model, "sample", collection, tmp_path / "read", options)
    assert outputs(tmp_path / "cut") == outputs(tmp_path / "read")
    assert len(reads) > read_with_cache  # the pass's patches spared reads
    if pairs is not None:
        assert read_with_cache == 0  # class and named pairs' galleries: every patch was cut in the pass


def test_cancel_then_rerun_skips_the_images_already_summarised(collection, model, tmp_path):
    calls = []
    stop_after = 10

    def should_stop():
        calls.append(1)
        return len(calls) > stop_after

    options = AtlasOptions(per_head=3)
    first = build_atlas(model, "sample", collection, tmp_path / "a", options, should_stop=should_stop)
    assert first.cancelled and first.summarised_now == stop_after and first.atlas is None
    assert not (tmp_path / "a" / "atlas.html").exists()
    second = build_atlas(model, "sample", collection, tmp_path / "a", options)
    assert (second.reused, second.summarised_now) == (stop_after, 27 - stop_after)
    third = build_atlas(model, "sample", collection, tmp_path / "a", AtlasOptions(per_head=3))
    assert third.summarised_now == 0 and third.reused == 27
    whole = build_atlas(model, "sample", collection, tmp_path / "b", options)
    assert whole.summarised_now == 27
    assert outputs(tmp_path / "a") == outputs(tmp_path / "b")
    # Other settings that change the records are refused, not mixed in.
    with pytest.raises(ValueError, match="other settings"):
        build_atlas(model, "sample", collection, tmp_path / "a", AtlasOptions(layer=1))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_processes_under_torchrun_give_the_single_process_result(collection, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    arguments = ["atlas", "--data", str(collection), "--device", "cpu", "--per-head", "3"]
    single = subprocess.run([sys.executable, "-m", "intr_training", *arguments, "--out", str(tmp_path / "one")],
                            capture_output=True, text=True, check=False, timeout=240, env=env)
    assert single.returncode == 0, single.stderr[-3000:]
    sharded = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                              "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
                              "-m", "intr_training", *arguments, "--out", str(tmp_path / "two")],
                             capture_output=True, text=True, check=False, timeout=240, env=env)
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    assert sharded.stdout.count("atlas: ") == 1  # rank 0 alone writes and reports
    one, two = outputs(tmp_path / "one"), outputs(tmp_path / "two")
    assert one.keys() == two.keys() and "heads.csv" in one and "pairs.csv" in one
    for name in one:
        if name == "atlas.json":  # identical but for the output folder nowhere; the data folder is the same
            assert json.loads(one[name]) == json.loads(two[name])
        else:
            assert one[name] == two[name], name


MEMORY_RUN = """
import json, sys, tracemalloc
import torch
from napari_intr.collection import sharding
from napari_intr.atlas import AtlasOptions, build_atlas
from napari_intr.model import IntrConfig, build_model
torch.set_num_threads(1)
torch.manual_seed(0)
finish = sharding.ShardedRun.finish
def traced_finish(self, *args, **kwargs):  # from the merge on: Python allocations are traced
    tracemalloc.start()
    return finish(self, *args, **kwargs)
sharding.ShardedRun.finish = traced_finish
from napari_intr.atlas import run as atlas_run
write_report = atlas_run.write_report
merge_peaks = []
def measured_write_report(*args, **kwargs):  # the report's montage thread makes its own peak vary
    merge_peaks.append(tracemalloc.get_traced_memory()[1])
    return write_report(*args, **kwargs)
atlas_run.write_report = measured_write_report
names = [f"species {i}" for i in range(4)]
model = build_model(IntrConfig.tiny(4, short_side=32, max_side=48), names).eval()
result = build_atlas(model, "random", sys.argv[1], sys.argv[2], AtlasOptions(per_head=4))
merge_peak, = merge_peaks  # the merge and the fold into the heaps, up to the report
tops = sorted({len(head.top) for summary in result.atlas.classes for head in summary.heads})
# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so it would be pytest's own peak
rss = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"images": result.atlas.images, "tops": tops, "max_rss_kib": rss, "merge_peak": merge_peak}))
"""


@pytest.mark.slow
def test_memory_stays_bounded_on_thousands_of_small_images(tmp_path):
    """300 and 2400 images of 32 px with a tiny random model, each run in a fresh process: the
    records (a ~2 KB JSON line each, ~6 KB once parsed) are streamed from the sharded job's files
    into the atlas's heaps and statistics, never held together. From the merge up to the report,
    the Python memory grows by the merge's index alone (~10 bytes per image measured; the records
    would be ~6 KB). The report after it is bounded by the galleries; its writer thread's timing
    makes its traced peak vary by MBs, so it is left out. The process's peak memory grows by the
    image list (paths, keys) alone, never by records, images or maps; every gallery keeps N
    patches."""
    rng = np.random.default_rng(0)
    peaks, merges = {}, {}
    for count in (300, 2400):
        data = tmp_path / f"data{count}"
        for index in range(count):
            folder = data / f"species {index % 4}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{index:05d}.png")
        run = subprocess.run([sys.executable, "-c", MEMORY_RUN, str(data), str(tmp_path / f"out{count}")],
                             capture_output=True, text=True, check=False, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert run.returncode == 0, run.stderr[-3000:]
        result = json.loads(run.stdout.splitlines()[-1])
        assert result["images"] == count and result["tops"] == [4]
        peaks[count], merges[count] = result["max_rss_kib"] * 1024, result["merge_peak"]
    per_image = (peaks[2400] - peaks[300]) / 2100
    merge_per_image = (merges[2400] - merges[300]) / 2100
    print(f"peak RSS {peaks[300]} -> {peaks[2400]} bytes: {per_image:.0f} bytes more per image; "
          f"merge peak {merges[300]} -> {merges[2400]} bytes: {merge_per_image:.0f} bytes more per image")
    assert merge_per_image < 512, f"the merge holds {merge_per_image:.0f} bytes per image"
    assert per_image < 3 * 1024, f"{per_image:.0f} bytes more per image"


def test_bad_arguments_get_clear_messages(collection, tmp_path, capsys):
    cases = [
        (["--pairs", f"{ALBA}-{RUBRA}"], "is not a pair; write A:B"),
        (["--pairs", f"{ALBA}:{ALBA}"], "pairs a class with itself"),
        (["--pairs", f"{ALBA}:Nobody"], "unknown class 'Nobody'"),
        (["--classes", "Heliconia synthetica-alba", "--pairs", f"{ALBA}:{RUBRA}"], "which --classes leaves out"),
        (["--layer", "7"], "--layer 7 is out of range"),
        (["--per-head", "0"], "--per-head must be at least 1"),
    ]
    for extra, message in cases:
        code = main(["atlas", "--data", str(collection), "--out", str(tmp_path / "out"), "--device", "cpu", *extra])
        assert code == 2
        assert message in capsys.readouterr().err
    assert main(["atlas", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"), "--device", "cpu"]) == 2
    assert "does not exist" in capsys.readouterr().err


# `intr atlas` whose 4th image never finishes: Ctrl-C then always lands mid-run (with a plain run
# the 27 images could all be done before the signal arrives).
HELD_AFTER_THREE = """
import sys, time
from napari_intr.atlas.summarise import ImageSummariser
from intr_training.cli import main
summarise, calls = ImageSummariser.__call__, []
def held_after_three(self, *args, **kwargs):
    calls.append(None)
    if len(calls) > 3:
        time.sleep(600)
    return summarise(self, *args, **kwargs)
ImageSummariser.__call__ = held_after_three
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_the_next_run_continues(collection, tmp_path):
    import signal
    import time
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    arguments = ["atlas", "--data", str(collection), "--out", str(out), "--device", "cpu"]
    process = subprocess.Popen([sys.executable, "-c", HELD_AFTER_THREE, *arguments], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    partial = out / ".intr-atlas" / "rank-00000.jsonl"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not (partial.is_file() and partial.read_text().count("\n") >= 3):
        assert process.poll() is None, process.communicate()[1][-2000:]
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr
    assert not (out / "atlas.html").exists()
    assert partial.read_text().count("\n") == 3  # every finished image kept, the unfinished one not
    again = subprocess.run([sys.executable, "-m", "intr_training", *arguments], capture_output=True, text=True,
                           check=False, timeout=240, env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "summarised 24 images now, 3 from an earlier run" in again.stdout
    assert (out / "atlas.html").is_file()


def test_a_second_run_into_a_busy_output_folder_is_refused(collection, model, tmp_path, capsys):
    """Another process holds OUT (as a running `intr atlas` does): a second atlas and an
    `intr explain` into it are refused, naming the folder and the holder, and write nothing there;
    once the holder is killed its lock is stale, and the next atlas takes it over and says so."""
    from napari_intr.collection.run_lock import RunLocked, job_lock
    out = tmp_path / "out"
    with lock_holder(out, "intr atlas") as holder:
        before = sorted(p.name for p in out.iterdir())
        for command in (["atlas", "--data", str(collection)], ["explain", str(collection)]):
            assert main([*command, "--out", str(out), "--device", "cpu"]) == 2
            err = capsys.readouterr().err
            assert f"another intr atlas (pid {holder.pid}" in err and str(out) in err, err
            assert "wait for it to finish" in err and "another output folder" in err and "Traceback" not in err
        assert sorted(p.name for p in out.iterdir()) == before  # nothing written beside the holder's
    result = build_atlas(model, "sample", collection, out, AtlasOptions())
    assert (out / "atlas.html").is_file()
    assert any(f"took over the lock of an earlier run in {out} (pid {holder.pid}" in w for w in result.warnings)
    assert not (out / ".intr.lock").exists()  # released at the end
    with job_lock(out, "intr explain"):  # held in this process: the atlas is refused there too
        with pytest.raises(RunLocked, match=r"another intr explain \(pid \d+"):
            build_atlas(model, "sample", collection, out, AtlasOptions())


def test_a_montage_that_cannot_be_written_fails_the_run(collection, model, tmp_path, monkeypatch):
    """Montages are written on a worker thread: its failure (here a full disk) still ends the run
    with the error, and the run's records stay for the next one."""
    import errno

    from napari_intr.atlas import report
    calls = []

    def full_disk(image):
        calls.append(1)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(report, "png_bytes", full_disk)
    with pytest.raises(OSError, match="No space left"):
        build_atlas(model, "sample", collection, tmp_path / "out", AtlasOptions())
    assert calls and not list((tmp_path / "out" / "montages").glob("*.png"))
    monkeypatch.undo()
    again = build_atlas(model, "sample", collection, tmp_path / "out", AtlasOptions())
    assert again.summarised_now == 0 and again.reused == 27 and (tmp_path / "out" / "atlas.html").is_file()


def test_an_image_that_fails_to_load_is_skipped_even_the_first(collection, model, tmp_path, monkeypatch):
    """An image that cannot be read when its turn comes (changed or removed since the folder was
    scanned) becomes that image's error, whether it is the first of the pass or a later one."""
    from napari_intr.atlas import summarise
    original = summarise.read_image
    first, later = sorted(p.relative_to(collection).as_posix() for p in collection.rglob("*.png")
                          if p.parent.parent == collection)[::13][:2]

    def read_image(path):
        if path.relative_to(collection).as_posix() in (first, later):
            raise OSError(f"{path} changed since the folder was scanned")
        return original(path)

    monkeypatch.setattr(summarise, "read_image", read_image)
    result = build_atlas(model, "sample", collection, tmp_path / "out", AtlasOptions(per_head=2))
    assert [key for key, _ in result.atlas.skipped] == [first, later]
    assert result.atlas.images == 25 and (tmp_path / "out" / "atlas.html").is_file()
