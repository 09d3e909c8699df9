"""Which input a piece of resumable work was made from: the rule that re-runs are keyed by content.

Every job that reuses earlier results (batch explain, the trait atlas, the feature cache,
`intr train --resume`) keeps, with each result, the `fingerprint` of the input it came from: its
size and modification time, plus a SHA-256 of its bytes when the file is small enough to hash
cheaply. A re-run redoes an input whose fingerprint no longer matches (an image replaced under
the same name), drops results whose input has vanished, and says so in one line (`Changes`).

A job's own outputs are never its inputs: `outside` leaves out the files under a job's output
folder when that folder lies inside the input folders (`intr atlas --out DATA/<class>/atlas`).
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .manifest import file_digest

HASH_LIMIT_BYTES = 64 << 20  # hashing a specimen photo costs less than decoding it; a 1 GB scan does not


def fingerprint(path: str | os.PathLike) -> dict:
    """{size, mtime_ns[, sha256]} of a file as it is now."""
    status = os.stat(path)
    found = {"size": status.st_size, "mtime_ns": status.st_mtime_ns}
    if status.st_size <= HASH_LIMIT_BYTES:
        found["sha256"] = file_digest(path)
    return found


def unchanged(recorded: object, path: str | os.PathLike) -> bool:
    """Whether the file still holds what `recorded` (a `fingerprint`) was taken from. A file that
    was only touched (new mtime, same bytes) is unchanged when both sides have a hash."""
    if not isinstance(recorded, dict):
        return False
    try:
        status = os.stat(path)
    except OSError:
        return False
    if status.st_size != recorded.get("size"):
        return False
    if status.st_mtime_ns == recorded.get("mtime_ns"):
        return True
    if "sha256" not in recorded or status.st_size > HASH_LIMIT_BYTES:
        return False
    try:
        return file_digest(path) == recorded["sha256"]
    except OSError:
        return False


def record(sources) -> dict:
    """What a result keeps of its inputs: the main file's path and fingerprint, and, for the files
    that come with it (its masks), their fingerprints or None where there is none."""
    main, *others = sources if isinstance(sources, (list, tuple)) else [sources]
    try:
        kept = {"path": str(main), **fingerprint(main)}
    except OSError:  # gone: the result cannot count for a later run
        kept = {"path": str(main)}
    if others:
        kept["with"] = {str(other): fingerprint(other) if os.path.isfile(other) else None for other in others}
    return kept


def still_current(recorded: object, sources) -> bool:
    """Whether every input of a result still holds what `record` saw (a mask added, changed or
    removed since counts as a change)."""
    main, *others = sources if isinstance(sources, (list, tuple)) else [sources]
    if not isinstance(recorded, dict) or not unchanged(recorded, main):
        return False
    kept = recorded.get("with", {})
    for other in others:
        before, exists = kept.get(str(other)), os.path.isfile(other)
        if (before is None) != (not exists) or (before is not None and not unchanged(before, other)):
            return False
    return True


@dataclass
class Changes:
    """What a re-run found changed since the run it continues (counts and a few example names)."""
    changed: list[str] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)

    def line(self, what: str = "images", added_note: str = "", changed_note: str = "redone") -> str | None:
        """One line for the user, or None when nothing changed."""
        parts = []
        if self.changed:
            parts.append(f"{len(self.changed)} {what} changed since the last run: {changed_note} "
                         f"({_examples(self.changed)})")
        if self.vanished:
            parts.append(f"{len(self.vanished)} {what} of the last run no longer there: dropped "
                         f"({_examples(self.vanished)})")
        if self.added:
            parts.append(f"{len(self.added)} {what} new since the last run{added_note} ({_examples(self.added)})")
        return "; ".join(parts) or None


def _examples(names: list[str], shown: int = 2) -> str:
    more = f", … {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(Path(name).name or name for name in names[:shown]) + more


def outside(paths: Iterable[Path], out: str | os.PathLike | None) -> tuple[list[Path], int]:
    """(paths not under the output folder `out`, how many were left out)."""
    paths = list(paths)
    if out is None:
        return paths, 0
    out = Path(out).expanduser().resolve()
    kept = [path for path in paths if out != path.resolve() and out not in path.resolve().parents]
    return kept, len(paths) - len(kept)


def check_apart(folders: Iterable[str | os.PathLike], out: str | os.PathLike) -> None:
    """Refuse an output folder that is, or holds, an input folder: the job's results would be
    scanned as inputs on the next run (an output folder inside an input folder is fine: `outside`
    leaves it out)."""
    target = Path(out).expanduser().resolve()
    for folder in folders:
        folder = Path(folder).expanduser()
        if folder.is_dir() and (folder.resolve() == target or target in folder.resolve().parents):
            raise ValueError(f"the output folder {out} is, or holds, the input folder {folder}: its results "
                             "would be read back as inputs by the next run; choose an output folder beside "
                             f"the images or inside {folder}")


WORK_PREFIX = ".intr-"  # OUT/.intr-<task>/: a resumable job's records (batch explain, atlas: collection.sharding)
PREDICTIONS_FILE = "predictions.csv"  # a batch explain's table (collection.explain names its files by it)
ATLAS_FILE = "atlas.json"  # an atlas's index (atlas.folder)


def holds_job_output(folder: Path) -> bool:
    """Whether `folder` is the output folder of one of our jobs: a batch explain's (its table, or
    its .intr-explain/ records), an atlas's (atlas.json, .intr-atlas/) or a training run's (its state)."""
    from .run_folder import holds_run
    return ((folder / PREDICTIONS_FILE).is_file() or (folder / ATLAS_FILE).is_file() or holds_run(folder)
            or any(entry.is_dir() for entry in folder.glob(f"{WORK_PREFIX}*")))


def earlier_outputs(paths: Iterable[Path], roots: Iterable[str | os.PathLike]) -> tuple[list[Path], list[Path]]:
    """(the paths that lie in no output folder of an earlier job, those folders). Only folders inside
    the input folders `roots` are looked at: a batch explain, an atlas or a training run written
    there, whichever run wrote it and wherever this job writes, is never read back as input."""
    roots = {Path(root).expanduser().resolve() for root in roots}
    roots = {root for root in roots if root.is_dir()}
    verdict: dict[Path, bool] = {}

    def job_folder(path: Path) -> Path | None:
        for folder in ([path] if path.is_dir() else []) + list(path.parents):
            if folder in roots or not any(root in folder.parents for root in roots):
                return None  # at (or above) the input folder: the user chose it
            if folder not in verdict:
                verdict[folder] = holds_job_output(folder)
            if verdict[folder]:
                return folder
        return None

    kept, folders = [], []
    for path in paths:
        folder = job_folder(Path(path).resolve()) if roots else None
        if folder is None:
            kept.append(path)
        elif folder not in folders:
            folders.append(folder)
    return kept, folders


class EarlierOutputs(UserWarning):
    """Files of an earlier job's output folder inside an input folder were left out (the note says which)."""


def earlier_outputs_note(count: int, folders: list[Path]) -> str:
    return (f"left out {count} files in {len(folders)} output folder(s) of earlier runs ({_examples([str(f) for f in folders])}): "
            "a job's outputs are never read back as its inputs")


def outputs_note(count: int, out: str | os.PathLike) -> str:
    return (f"left out {count} files inside the output folder {out} (a job's own outputs are never "
            "read back as its inputs)")
