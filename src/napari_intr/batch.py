"""Batch explain: a folder of images -> predictions.csv plus one float32 TIFF of head maps per image.

Files are written image by image (TIFF first, then its flushed CSV row), so a cancelled or
crashed run leaves consistent output. The `intr explain` command is intr_training/explain_cli.py.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from .csv_output import open_csv
from .io import find_images, read_image, reason

PREDICTIONS_FILE = "predictions.csv"


def csv_columns(top_k: int) -> list[str]:
    ranked = [f"top{rank}_{what}" for rank in range(1, top_k + 1) for what in ("class", "probability")]
    return ["file", *ranked, "map_class", "attention_file", "error"]


def explain_folder(model, inputs, out_dir, classes=None, mode: str = "drop", top_k: int = 5,
                   layer: int = -1, class_for_maps: str | None = None, model_name: str = "model",
                   progress: Callable[[int, int, Path], None] | None = None,
                   should_stop: Callable[[], bool] | None = None) -> dict:
    """Explain every image in `inputs` (files and/or folders) and write the results to `out_dir`.

    layer: decoder layer of the saved maps, a Python index (-1 = last). class_for_maps: the class
    whose head maps are saved (default: each image's top-1). Unreadable images are skipped and
    reported. Returns a summary: done, skipped [(file, reason)], notes, cancelled, seconds, paths.
    """
    from .explanation import Explainer
    start = time.perf_counter()
    files = find_images(inputs)
    candidates = model.class_indices(classes)
    num_layers = model.config.dec_layers
    if not -num_layers <= layer < num_layers:
        raise ValueError(f"layer {layer} is out of range: the decoder has {num_layers} layers")
    if top_k < 1:
        raise ValueError(f"top-k must be at least 1, got {top_k}")
    if class_for_maps is not None:
        index = model.class_indices([class_for_maps])[0]
        if index not in candidates:
            raise ValueError(f"the class for the maps, {class_for_maps!r}, is not among the candidate classes")
        class_for_maps = model.class_names[index]
    top_k = min(top_k, len(candidates))
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"the output {out_dir} is a file; give a folder for the results")
    out_dir.mkdir(parents=True, exist_ok=True)
    explainer = Explainer(model, model_name)
    summary = {"total": len(files), "done": 0, "skipped": [], "notes": [], "cancelled": False,
               "predictions": out_dir / PREDICTIONS_FILE, "attention_files": []}
    used_names: set[str] = set()
    with open_csv(summary["predictions"], csv_columns(top_k)) as table:
        for position, path in enumerate(files):
            if should_stop is not None and should_stop():
                summary["cancelled"] = True
                break
            row = {"file": str(path)}
            try:
                explanation = explainer.explain(read_image(path), path.stem, candidates, mode)
            except (ValueError, OSError, RuntimeError, MemoryError) as error:
                # One bad image (damaged file, too small, out of memory) must not end the batch.
                summary["skipped"].append((str(path), reason(error)))
                row["error"] = reason(error)
            else:
                for rank, entry in enumerate(explanation.table()[:top_k], start=1):
                    row[f"top{rank}_class"] = entry["name"]
                    row[f"top{rank}_probability"] = float(f"{entry['probability']:.6g}")
                shown = class_for_maps or explanation.top_class()
                target = out_dir / _unique_name(f"{path.stem}_attention", used_names)
                _write_maps(target, explanation, shown, layer, path)
                row.update(map_class=shown, attention_file=target.name)
                summary["attention_files"].append(target)
                summary["notes"].extend((str(path), note) for note in explanation.notes)
                summary["done"] += 1
            table.write(row)
            if progress is not None:
                progress(position + 1, len(files), path)
    summary["seconds"] = time.perf_counter() - start
    return summary


def _unique_name(stem: str, used: set[str]) -> str:
    """Two inputs with the same stem (e.g. class folders) get `_2`, `_3`, ... rather than overwrite."""
    name, count = f"{stem}.tif", 1
    while name.casefold() in used:
        count += 1
        name = f"{stem}_{count}.tif"
    used.add(name.casefold())
    return name


def _write_maps(target: Path, explanation, class_name: str, layer: int, source: Path) -> None:
    """heads × h × w float32 raw attention weights (natural head order), metadata as JSON."""
    import tifffile
    scale, translate = explanation.grid_to_image()
    maps = explanation.head_maps(class_name, layer, normalization="none").astype(np.float32)
    metadata = {
        "class": class_name, "layer": layer % explanation.num_layers + 1,
        "heads": explanation.num_heads, "top_heads": [h + 1 for h in explanation.head_order(class_name, layer)],
        "rank": explanation.rank_of(class_name),
        "probability": float(explanation.probabilities[explanation.class_names.index(class_name)]),
        "model": explanation.model_name, "mode": explanation.mode, "candidates": explanation.class_names,
        "image_file": str(source), "image_shape": list(explanation.image_shape),
        "scale": list(scale), "translate": list(translate), "notes": explanation.notes,
    }
    partial = target.with_name(target.name + ".part")
    with open(partial, "wb") as stream:  # written aside, then renamed: never a half TIFF
        tifffile.imwrite(stream, maps, photometric="minisblack", metadata=metadata)
    os.replace(partial, target)
