"""One job over many items (images, regions), split over the processes of a torchrun job, resumable.

`torchrun --nproc-per-node K -m intr_training explain …` (or `atlas`) starts K processes; each
one takes a deterministic share of the items that are not done yet, writes its results to its own
partial file (one JSON record per line, flushed after each item), and rank 0 merges the partial
files into one ledger after every process has finished. A re-run with the same settings skips
the items the ledger and any partial files of a crashed run already hold, with any number of
processes. A plain `python -m intr_training …` run is the same job with one process.

Files, in the job's output folder (shared by all processes, e.g. a network drive):

  .intr-<task>/settings.json        what the results depend on; a re-run must match it
  .intr-<task>/done.jsonl           the merged records, in item order: {"key": str, "record": {...}}
  .intr-<task>/rank-00003.jsonl     rank 3's records of the current (or a crashed) run
  .intr-<task>/rank-00003.end       rank 3 has finished its share

Rank/world size come from torchrun's RANK, WORLD_SIZE and LOCAL_RANK (see `distributed`);
join the process group with `distributed.setup` (gloo on CPU, nccl on GPUs) before `start`.
Processes wait for each other by polling the `.end` files rather than in a collective, so a
process may wait for a slower one for hours without hitting the process group's timeout.

Memory does not grow with the records: the resume and the merge read the files line by line and
keep, per item, only where its last line is (file, byte offset); the merged ledger is streamed,
one record at a time, to whoever folds it (the CSV of `intr explain`, the heaps of `intr atlas`).
"""
from __future__ import annotations

import json
import os
import time
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch.distributed as dist

from napari_intr import provenance
from napari_intr.atomic import atomic_write
from napari_intr.provenance import Changes

from .. import distributed

LEDGER_FILE = "done.jsonl"
SETTINGS_FILE = "settings.json"
POLL_SECONDS = 0.5


def state_dir(out_dir: str | os.PathLike, task: str) -> Path:
    return Path(out_dir) / f"{provenance.WORK_PREFIX}{task}"


def shard(items: Iterable[str], rank: int, world_size: int,
          group: Callable[[str], str] | None = None) -> list[str]:
    """This rank's share of `items` (sorted): every world_size-th of the sorted items, from rank.

    group(item): items of one group go to the same rank (e.g. the regions of one photograph, which
    is then read once); groups are dealt out in sorted order. Interleaving (rather than contiguous
    blocks) spreads folders of large images over all ranks."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of {world_size} processes")
    items = sorted(items)
    if group is None:
        return items[rank::world_size]
    mine = set(sorted({group(item) for item in items})[rank::world_size])
    return [item for item in items if group(item) in mine]


def _part_file(folder: Path, rank: int) -> Path:
    return folder / f"rank-{rank:05d}.jsonl"


def _end_file(folder: Path, rank: int) -> Path:
    return folder / f"rank-{rank:05d}.end"


def _read_lines(path: Path) -> Iterator[tuple[int, str, dict]]:
    """(offset, key, record) of each line of a ledger or partial file, one at a time; a line cut
    short by a crash is ignored."""
    if not path.is_file():
        return
    with open(path, "rb") as stream:
        offset = 0
        for line in stream:
            start, offset = offset, offset + len(line)
            entry = _parse(line)
            if entry is not None:
                yield start, entry[0], entry[1]


def _parse(line: bytes) -> tuple[str, dict] | None:
    try:
        entry = json.loads(line)
        return str(entry["key"]), entry["record"]
    except (ValueError, KeyError, TypeError):
        return None


class _Index:
    """Where the last line of each item is, among the ledger and the partial files (later lines
    win): two numbers per item, never its record, so memory does not grow with the records.
    With `inputs` (key -> input files), a record whose inputs changed since (napari_intr.provenance)
    does not count; such keys are listed in `changes.changed`, and records of items no longer in
    the job whose input file is gone in `changes.vanished`."""

    def __init__(self, folder: Path, keys: list[str], counts: Callable[[str, dict], bool] | None = None,
                 inputs: Callable[[str], Path] | None = None):
        self.files = [folder / LEDGER_FILE, *sorted(folder.glob("rank-*.jsonl"))]
        self.keys = keys
        self.changes = Changes()
        position = {key: index for index, key in enumerate(keys)}
        self.file = array("i", [-1]) * len(keys)    # which file holds the item's last line; -1: none
        self.offset = array("q", [0]) * len(keys)
        changed, vanished = set(), {}
        for number, path in enumerate(self.files):
            for offset, key, record in _read_lines(path):
                index = position.get(key)
                if index is None:  # an item of an earlier, larger job; or one whose input is gone
                    source = record.get("input", {}).get("path") if isinstance(record.get("input"), dict) else None
                    if inputs is not None and source and not os.path.exists(source):
                        vanished[key] = source
                    continue
                keep = counts is None or counts(key, record)
                if keep and inputs is not None and not provenance.still_current(record.get("input"), inputs(key)):
                    keep = False
                    changed.add(key)
                elif keep:
                    changed.discard(key)
                self.file[index], self.offset[index] = (number, offset) if keep else (-1, 0)
        self.changes.changed = [key for key in keys if key in changed]
        self.changes.vanished = sorted(vanished.values())

    def present(self) -> Iterator[str]:
        """The keys that have a (counting) record, in item order."""
        return (key for key, number in zip(self.keys, self.file) if number >= 0)

    def records(self) -> Iterator[tuple[str, dict]]:
        """(key, record) in item order, each read from its file when it is needed."""
        streams: dict[int, object] = {}
        try:
            for key, number, offset in zip(self.keys, self.file, self.offset):
                if number < 0:
                    continue
                if number not in streams:
                    streams[number] = open(self.files[number], "rb")  # noqa: SIM115 - closed below
                stream = streams[number]
                stream.seek(offset)
                entry = _parse(stream.readline())
                if entry is not None:
                    yield key, entry[1]
        finally:
            for stream in streams.values():
                stream.close()


class MergedRecords:
    """The merged ledger of a finished job, read from its file whenever it is iterated: (key, record)
    in item order, one record in memory at a time (a collection may be huge)."""

    def __init__(self, path: Path, count: int):
        self.path, self.count = path, count

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[tuple[str, dict]]:
        for _, key, record in _read_lines(self.path):
            yield key, record


def _json_line(key: str, record: dict) -> str:
    # ASCII: a key or record holding an undecodable file name (lone surrogates) still writes
    return json.dumps({"key": key, "record": record}, sort_keys=True) + "\n"


@dataclass
class ShardedRun:
    """One process's view of a sharded, resumable job; make it with `ShardedRun.start`."""
    folder: Path
    keys: list[str]                 # every item of the job, in output order
    info: distributed.Distributed
    done: set[str]                  # items finished by earlier runs (their records stay on disk)
    share: list[str]                # the items this process does now
    pending_total: int              # items left for all processes together at the start
    changes: Changes = field(default_factory=Changes)  # inputs changed or gone since the earlier run
    inputs: Callable[[str], Path] | None = None
    _stream: object = field(default=None, repr=False)
    _offsets: dict[int, int] = field(default_factory=dict, repr=False)  # rank 0: bytes counted
    _counted: int = 0   # rank 0: records of all processes in this run
    _recorded: int = 0  # records of this process in this run

    @classmethod
    def start(cls, out_dir: str | os.PathLike, task: str, keys: Iterable[str], settings: dict,
              is_done: Callable[[str, dict], bool] | None = None, restart: bool = False,
              info: distributed.Distributed | None = None,
              group: Callable[[str], str] | None = None,
              inputs: Callable[[str], Path] | None = None) -> ShardedRun:
        """Read what earlier runs finished, agree on it with the other processes, take a share.

        settings: JSON-able values the records depend on (model, classes, options); a re-run with
        other settings is refused unless restart=True, which forgets every earlier record.
        is_done(key, record): whether an earlier record still counts (e.g. its output file exists);
        items whose record does not count are done again. group: see `shard`. inputs(key): the
        file an item is made from (or a list: the file, then the files that come with it, such as
        masks); each record then keeps their fingerprints, and an item whose files changed since
        is done again (`changes` lists them, and vanished inputs, for the user)."""
        keys = [str(key) for key in keys]
        if len(set(keys)) != len(keys):
            raise ValueError("the items of a sharded job must be unique")
        info = info or distributed.from_environment()
        if info.active and not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("several processes but no process group: call distributed.setup first")
        folder = state_dir(out_dir, task)
        settings = json.loads(json.dumps(settings))  # as they will read back from the file
        if not restart:  # every process checks, so that all of them stop with the same message
            _check_settings(folder, settings, task)
        if info.is_main:
            folder.mkdir(parents=True, exist_ok=True)
            if restart:
                for stale in [*folder.glob("rank-*"), folder / LEDGER_FILE]:
                    stale.unlink(missing_ok=True)
            text = json.dumps(settings, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
            atomic_write(folder / SETTINGS_FILE, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"))
        distributed.barrier()  # the folder exists, with the settings; a restart has cleared it
        _end_file(folder, info.rank).unlink(missing_ok=True)
        _finish_cut_line(_part_file(folder, info.rank))
        index = None if restart else _Index(folder, keys, is_done, inputs)
        done = set() if index is None else set(index.present())
        todo = [key for key in keys if key not in done]
        run = cls(folder, keys, info, done, shard(todo, info.rank, info.world_size, group), len(todo),
                  changes=Changes() if index is None else index.changes, inputs=inputs)
        distributed.barrier()  # everybody has read the earlier records before anybody adds one
        if info.is_main:
            run._offsets = {rank: _size(_part_file(folder, rank)) for rank in range(info.world_size)}
        return run

    def record(self, key: str, record: dict) -> None:
        """Keep one finished item's result (write its output files first: a record means done)."""
        if self.inputs is not None:
            record = {**record, "input": provenance.record(self.inputs(key))}
        if self._stream is None:
            # open across records (closed by finish or close): one file handle per process
            self._stream = open(_part_file(self.folder, self.info.rank), "a", encoding="utf-8")  # noqa: SIM115
        self._stream.write(_json_line(key, record))
        self._stream.flush()
        self._recorded += 1

    def progress(self) -> tuple[int, int]:
        """(items done, items in the job): of all processes on rank 0, of this one elsewhere."""
        if not self.info.is_main:
            return len(self.done) + self._recorded, len(self.keys)
        for rank in range(self.info.world_size):
            path = _part_file(self.folder, rank)
            size, start = _size(path), self._offsets.get(rank, 0)
            if size > start:
                with open(path, "rb") as stream:
                    stream.seek(start)
                    chunk = stream.read(size - start)
                complete = chunk.rfind(b"\n") + 1  # a line being written counts once it ends
                self._counted += chunk[:complete].count(b"\n")
                self._offsets[rank] = start + complete
        return len(self.done) + self._counted, len(self.keys)

    def finish(self, progress: Callable[[int, int], None] | None = None) -> MergedRecords | None:
        """Wait for every process to end its share; rank 0 then merges all records.

        Returns, on rank 0, the merged ledger: iterating it yields (key, record) for every item of
        the job that has a record, in the order of `keys`, read from the file one at a time; None on
        the other ranks. progress(done, total) is called while waiting."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        _end_file(self.folder, self.info.rank).touch()
        ends = [_end_file(self.folder, rank) for rank in range(self.info.world_size)]
        while not all(end.exists() for end in ends):
            if progress is not None and self.info.is_main:
                progress(*self.progress())
            time.sleep(POLL_SECONDS)
        distributed.barrier()
        if not self.info.is_main:
            return None
        ledger, count = self.folder / LEDGER_FILE, 0

        def write(temporary: str) -> None:
            nonlocal count
            with open(temporary, "w", encoding="utf-8") as stream:  # streamed: one record at a time
                for key, record in _Index(self.folder, self.keys).records():
                    stream.write(_json_line(key, record))
                    count += 1

        # Synced before the partial files it replaces are removed (a crash keeps one or the other).
        atomic_write(ledger, write)
        for stale in self.folder.glob("rank-*"):
            stale.unlink()
        if progress is not None:
            progress(count, len(self.keys))
        return MergedRecords(ledger, count)

    def close(self) -> None:
        """Close the partial file without finishing (an error or a cancel that ends this process)."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None


def _check_settings(folder: Path, settings: dict, task: str) -> None:
    path = folder / SETTINGS_FILE
    if not path.is_file():
        return
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        earlier = {}
    if not isinstance(earlier, dict):
        earlier = {}
    # a setting absent from an earlier version's file counts as None (unset), not as a change
    changed = sorted(key for key in {*settings, *earlier} if earlier.get(key) != settings.get(key))
    if changed or not earlier:
        raise ValueError(f"{folder.parent} holds the results of an earlier `{task}` run with other "
                         f"settings ({', '.join(changed) or 'unreadable settings'} differ); give "
                         "another output folder, or --restart to redo every item")


def _finish_cut_line(path: Path) -> None:
    """A crash can leave a partial file ending mid-line: end that line so new records parse."""
    if _size(path) == 0:
        return
    with open(path, "rb+") as stream:
        stream.seek(-1, os.SEEK_END)
        if stream.read(1) != b"\n":
            stream.write(b"\n")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
