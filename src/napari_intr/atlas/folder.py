"""The atlas folder on disk: the one place that names its files and reads and writes atlas.json
(report.py writes the folder, the Traits dock reads it). Imports no torch: the dock opens an atlas
before any model runs.

OUT/atlas.html      the self-contained report
OUT/heads.csv       per class and head: peak, spread, on-specimen share, consistency
OUT/pairs.csv       per look-alike pair: its heads, ranked
OUT/montages/*.png  the galleries (rows: heads; columns: the images with the highest peak)
OUT/atlas.json      what the dock browses: statistics, exemplars, montage layouts
"""
from __future__ import annotations

import json
from pathlib import Path

from ..atomic import atomic_write
from ..provenance import ATLAS_FILE

ATLAS_JSON, ATLAS_HTML = ATLAS_FILE, "atlas.html"
HEADS_CSV, PAIRS_CSV = "heads.csv", "pairs.csv"
MONTAGES = "montages"


def holds_atlas(folder: str | Path) -> bool:
    return (Path(folder) / ATLAS_JSON).is_file()


def write_bytes(path: Path, data: bytes) -> None:
    """Atomically: a kill leaves the previous file or the new one, never a torn one."""
    atomic_write(path, lambda temporary: Path(temporary).write_bytes(data))


def write_atlas_json(out: Path, document: dict, default=None) -> Path:
    path = Path(out) / ATLAS_JSON
    write_bytes(path, (json.dumps(document, separators=(",", ":"), allow_nan=False, default=default)
                       + "\n").encode("utf-8"))
    return path


def read_atlas(folder: str | Path) -> dict:
    path = Path(folder) / ATLAS_JSON
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read the atlas in {folder}: {error}") from error
