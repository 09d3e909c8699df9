"""Read the next file while the model works on the current one.

Decoding a JPEG or PNG releases the GIL, so on a CPU the reading of image k + 1 hides behind
the backbone's work on image k instead of adding to it (`intr explain`, napari_intr.collection.explain).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any


class ReadAhead:
    """`read(path)` for paths met in the order of `paths`: each call returns what `read` returns
    (or raises what it raised) and starts reading the next different path on a worker thread."""

    def __init__(self, paths: Sequence[Path], read: Callable[[Path], Any]):
        self.read = read
        self.after: dict[Path, Path] = {}  # each path -> the next different one, in order
        for current, following in zip(paths, paths[1:]):
            if current != following:
                self.after.setdefault(current, following)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="napari-intr-read-ahead")
        self.ahead: tuple[Path, Future] | None = None

    def __call__(self, path: Path) -> Any:
        ahead, self.ahead = self.ahead, None
        following = self.after.get(path)
        try:
            if ahead is not None and ahead[0] == path:
                return ahead[1].result()
            if ahead is not None:
                ahead[1].cancel()
            return self.read(path)
        finally:
            if following is not None:
                self.ahead = (following, self.pool.submit(self.read, following))

    def close(self) -> None:
        if self.ahead is not None:
            self.ahead[1].cancel()
        self.pool.shutdown(wait=True)
