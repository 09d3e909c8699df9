"""Sharded, resumable jobs (napari_intr.collection.sharding): shares, merge, resume after a crash.

Several "processes" are threads here, with a threading barrier standing in for the process
group's; the real torchrun path is tested end to end in test_explain_sharded.py."""
import json
import threading
from collections import Counter

import pytest

from napari_intr import distributed
from napari_intr.collection import sharding
from napari_intr.collection.sharding import ShardedRun, shard, state_dir

KEYS = [f"image-{k:02d}.png" for k in range(11)]


@pytest.fixture(autouse=True)
def quick_polling(monkeypatch):
    monkeypatch.setattr(sharding, "POLL_SECONDS", 0.01)


def test_shards_cover_every_item_once_whatever_the_order():
    shares = [shard(reversed(KEYS), rank, 3) for rank in range(3)]
    assert sorted(key for share in shares for key in share) == KEYS
    assert shares[0] == KEYS[0::3] and shares[2] == KEYS[2::3]
    with pytest.raises(ValueError, match="rank 3 is outside a world of 3"):
        shard(KEYS, 3, 3)
    regions = [f"{photo}#{region}" for photo in ("tray-a.jpg", "tray-b.jpg", "tray-c.jpg") for region in range(4)]
    shares = [shard(regions, rank, 2, group=lambda key: key.split("#")[0]) for rank in range(2)]
    assert shares[0] == regions[:4] + regions[8:] and shares[1] == regions[4:8]  # a photo stays on one rank


def run_ranks(tmp_path, monkeypatch, world_size, work, keys=KEYS, settings=None, stop_after=None, **options):
    """Start `world_size` threads as ranks; each records work(key) for its share. Returns rank 0's merge."""
    barrier = threading.Barrier(world_size)
    monkeypatch.setattr(distributed, "barrier", lambda: barrier.wait(timeout=30))
    monkeypatch.setattr(sharding.dist, "is_initialized", lambda: True)
    results, errors, shares = {}, [], {}

    def rank_main(rank):
        try:
            info = distributed.Distributed(rank, world_size, rank)
            run = ShardedRun.start(tmp_path, "test", keys, settings or {"model": "m"}, info=info, **options)
            shares[rank] = run.share
            for count, key in enumerate(run.share):
                if stop_after is not None and count == stop_after:
                    run.close()  # a crash: no end marker, no merge
                    return
                run.record(key, work(key))
            results[rank] = run.finish()
        except BaseException as error:  # noqa: BLE001 - reported by the test thread
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=rank_main, args=(rank,)) for rank in range(world_size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    if errors:
        raise errors[0]
    return results, shares


def test_ranks_merge_into_one_ledger_in_item_order(tmp_path, monkeypatch):
    results, shares = run_ranks(tmp_path, monkeypatch, 3, lambda key: {"value": key.upper()})
    assert results[1] is None and results[2] is None
    assert [key for key, _ in results[0]] == KEYS
    assert all(record == {"value": key.upper()} for key, record in results[0])
    assert sorted(key for share in shares.values() for key in share) == KEYS and all(len(share) >= 3 for share in shares.values())
    folder = state_dir(tmp_path, "test")
    assert sorted(p.name for p in folder.iterdir()) == ["done.jsonl", "settings.json"]
    lines = [json.loads(line) for line in (folder / "done.jsonl").read_text().splitlines()]
    assert [line["key"] for line in lines] == KEYS


def test_rerun_after_a_crash_does_only_what_is_left_with_any_number_of_processes(tmp_path, monkeypatch):
    calls = []

    def work(key):
        calls.append(key)
        return {"value": key}

    run_ranks(tmp_path, monkeypatch, 2, work, stop_after=2)  # both ranks die after two items
    assert len(calls) == 4
    folder = state_dir(tmp_path, "test")
    with open(folder / "rank-00001.jsonl", "a") as stream:
        stream.write('{"key": "image-09.png", "rec')  # killed mid-line
    first = list(calls)
    calls.clear()
    results, _ = run_ranks(tmp_path, monkeypatch, 3, work)
    assert sorted(calls) == sorted(set(KEYS) - set(first))  # the cut line was not done
    assert [key for key, _ in results[0]] == KEYS
    calls.clear()
    results, shares = run_ranks(tmp_path, monkeypatch, 1, work)
    assert calls == [] and shares[0] == [] and [key for key, _ in results[0]] == KEYS


def test_is_done_redoes_items_whose_output_is_gone(tmp_path, monkeypatch):
    run_ranks(tmp_path, monkeypatch, 1, lambda key: {"ok": key != KEYS[3]})
    calls = []
    results, _ = run_ranks(tmp_path, monkeypatch, 2, lambda key: calls.append(key) or {"ok": True},
                           is_done=lambda key, record: record["ok"])
    assert calls == [KEYS[3]] and dict(results[0])[KEYS[3]] == {"ok": True}


def test_other_settings_are_refused_unless_restarted(tmp_path, monkeypatch):
    run_ranks(tmp_path, monkeypatch, 1, lambda key: {"v": 1})
    with pytest.raises(ValueError, match=r"other settings \(model differ\).*--restart"):
        run_ranks(tmp_path, monkeypatch, 2, lambda key: {"v": 2}, settings={"model": "other"})
    calls = []
    results, _ = run_ranks(tmp_path, monkeypatch, 2, lambda key: calls.append(key) or {"v": 2},
                           settings={"model": "other"}, restart=True)
    assert sorted(calls) == KEYS and all(record == {"v": 2} for _, record in results[0])
    settings = json.loads((state_dir(tmp_path, "test") / "settings.json").read_text())
    assert settings == {"model": "other"}


def test_items_no_longer_asked_for_leave_the_merge_and_progress_counts_all_ranks(tmp_path, monkeypatch):
    run_ranks(tmp_path, monkeypatch, 1, lambda key: {"v": key})
    results, _ = run_ranks(tmp_path, monkeypatch, 1, lambda key: {"v": key}, keys=KEYS[:4] + ["new.png"])
    assert [key for key, _ in results[0]] == KEYS[:4] + ["new.png"]
    with pytest.raises(ValueError, match="unique"):
        ShardedRun.start(tmp_path, "test", ["a", "a"], {"model": "m"})
    run = ShardedRun.start(tmp_path / "p", "test", ["a", "b", "c"], {"model": "m"})
    assert run.progress() == (0, 3)
    run.record("a", {})
    assert run.progress() == (1, 3)
    seen = []
    assert [key for key, _ in run.finish(lambda done, total: seen.append((done, total)))] == ["a"]
    assert seen[-1] == (1, 3)


def test_several_processes_need_a_process_group(tmp_path):
    with pytest.raises(RuntimeError, match="distributed.setup"):
        ShardedRun.start(tmp_path, "test", KEYS, {}, info=distributed.Distributed(0, 2, 0))


def test_resume_and_merge_stream_records_from_the_files_never_holding_them(tmp_path):
    """A crashed run's ledger and partial files hold 2000 records of ~6 KB (12 MB): resuming and
    merging them (and folding the merge) allocates a few hundred bytes per item at most (the
    index: where each item's last line is), never the records; later lines still win and a
    line cut by a crash is still ignored."""
    import tracemalloc
    count, filler = 2000, "x" * 6000
    keys = [f"folder/image-{index:05d}.png" for index in range(count)]
    folder = state_dir(tmp_path, "big")
    folder.mkdir(parents=True)
    (folder / "settings.json").write_text('{"model": "m"}')

    def lines(selected, version):
        return "".join(json.dumps({"key": key, "record": {"v": version, "pad": filler}}) + "\n" for key in selected)

    (folder / "done.jsonl").write_text(lines(keys[: count // 2], 1))
    (folder / "rank-00000.jsonl").write_text(lines(keys[count // 4: count // 2], 2) + lines(keys[count // 2:: 2], 2))
    (folder / "rank-00001.jsonl").write_text(lines(keys[count // 2 + 1:: 2][:-1], 2) + lines(keys[-1:], 2)[:40])
    tracemalloc.start()
    try:
        run = ShardedRun.start(tmp_path, "big", keys, {"model": "m"})
        _, resume_peak = tracemalloc.get_traced_memory()
        assert run.share == keys[-1:] and len(run.done) == count - 1  # the cut line is not done
        run.record(keys[-1], {"v": 3, "pad": filler})
        tracemalloc.reset_peak()
        merged = run.finish()
        versions = Counter()
        for (key, record), expected in zip(merged, keys, strict=True):  # folded as it streams
            assert key == expected
            versions[record["v"]] += 1
        _, merge_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(merged) == count and versions == {1: count // 4, 2: count - count // 4 - 1, 3: 1}
    assert sorted(p.name for p in folder.iterdir()) == ["done.jsonl", "settings.json"]
    for peak in (resume_peak, merge_peak):  # holding the records would take 12 MB
        assert peak < 64 * 1024 + 300 * count, f"{peak / count:.0f} bytes per item"
