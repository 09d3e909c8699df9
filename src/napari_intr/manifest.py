"""What a command wrote into a folder, so that a later run removes exactly that and nothing else.

The rule (README "Limits"): nothing is deleted that the program did not write. A command that
replaces its earlier output (`intr synth --out` into an earlier synth folder) lists every file it
writes, with its size and SHA-256, in a manifest; the next run removes only files that are in the
manifest AND still hold what was written. A file the user added, or one the user changed after
the run, is never removed: the whole replacement is refused with that file's path, before
anything is deleted.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .atomic import atomic_write


def file_digest(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, read in chunks (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class Manifest:
    """The files one run wrote under `root` (paths relative to it, POSIX separators)."""

    def __init__(self, root: str | os.PathLike, files: dict[str, dict] | None = None):
        self.root = Path(root)
        self.files: dict[str, dict] = dict(files or {})

    def add(self, path: str | os.PathLike) -> None:
        """Record a file just written under root (its size and digest as it is now)."""
        path = Path(path)
        self.files[path.relative_to(self.root).as_posix()] = {
            "size": path.stat().st_size, "sha256": file_digest(path)}

    def to_json(self) -> dict:
        return {relative: dict(entry) for relative, entry in sorted(self.files.items())}

    @classmethod
    def from_json(cls, root: str | os.PathLike, files: object, source: Path) -> Manifest:
        if not isinstance(files, dict) or not all(
                isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and _plain_relative(name)
                for name, entry in files.items()):
            raise ValueError(f"{source} has no valid list of the files it wrote; nothing was removed. "
                             "Delete the folder yourself or choose an empty or new one")
        return cls(root, files)

    def foreign(self, keep: set[str] = frozenset()) -> list[Path]:
        """Files under root that this run did not write, or that changed since (sorted), leaving
        out the relative paths in `keep` (e.g. the manifest's own file)."""
        found = []
        for path in sorted(self.root.rglob("*")):
            if path.is_dir() and not path.is_symlink():
                continue
            relative = path.relative_to(self.root).as_posix()
            if relative in keep:
                continue
            entry = self.files.get(relative)
            if (entry is None or path.is_symlink() or path.stat().st_size != entry.get("size")
                    or file_digest(path) != entry["sha256"]):
                found.append(path)
        return found

    def remove_written(self, keep: set[str] = frozenset()) -> int:
        """Remove the files this run wrote, then the folders they leave empty. Refuses (ValueError
        naming the first such path) when any other file is under root, before removing anything."""
        foreign = self.foreign(keep)
        if foreign:
            more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
            raise ValueError(f"{self.root} holds {foreign[0]}{more}, which the earlier run did not write "
                             "(or which changed since); nothing was removed. Move your files out, or "
                             "choose an empty or new folder")
        removed, root = 0, self.root.resolve()
        for relative in self.files:
            path = self.root / relative
            if path.is_file() and root in path.resolve().parents:  # never through a link out of root
                path.unlink()
                removed += 1
        for folder in sorted({p for relative in self.files for p in (self.root / relative).parents
                              if self.root in p.parents}, key=lambda p: len(p.parts), reverse=True):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        return removed


def _plain_relative(name: object) -> bool:
    """A path inside the root as the manifest writes one: relative, "/"-separated, no "..", "." or "\\"."""
    return (isinstance(name, str) and bool(name) and not name.startswith("/") and "\\" not in name
            and "\x00" not in name and all(part not in ("", ".", "..") for part in name.split("/")))


def write_json(path: str | os.PathLike, data: dict) -> Path:
    """A JSON file written atomically (the manifest is what makes the next run safe)."""
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    return atomic_write(path, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"))
