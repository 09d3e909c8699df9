"""Evaluate a model on an image folder: top-1/top-5 accuracy, per-class accuracy and the
confusion matrix. Folder classes are matched to the model's classes by name; images of classes
the model does not know are reported and left out. With DATA/train and DATA/val, DATA/val is used.
The `intr eval` command (evaluate_cli.py) parses arguments and calls `evaluate_folder`."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from torch.utils.data import DataLoader

from napari_intr.atomic import atomic_write
from napari_intr.collection.scan import Collection, class_images
from napari_intr.csv_output import write_csv
from napari_intr.devices import resolve_device
from napari_intr.model import INTR

from .data import ImageFolderDataset, collate
from .engine import Evaluation, evaluate, options_for
from .transforms import eval_transform


@dataclass
class MatchedImages:
    """The images of a folder whose class the model knows, as (path, model class index)."""
    folder: Path
    samples: list[tuple[Path, int]]
    classes: dict[str, list[Path]]  # every class folder found, known or not
    unknown: list[str]              # class folders the model does not know
    found: Collection               # scan warnings and unreadable files


def evaluation_folder(data) -> tuple[Path, Path]:
    """(root, folder): DATA/val when DATA has train/ and val/, else DATA itself."""
    root = Path(data).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist; give a folder with one subfolder "
                                "of images per class")
    folder = root / "val" if (root / "val").is_dir() and (root / "train").is_dir() else root
    return root, folder


def match_images(model: INTR, folder: Path) -> MatchedImages:
    found = Collection(folder, [], [], [])
    classes = class_images(folder, found)
    if not classes:
        raise ValueError(f"{folder} has no class folders with images; expected {folder}/<class name>/<image>")
    unknown = sorted(name for name in classes if name not in model.class_names)
    samples = [(path, model.class_names.index(name)) for name, paths in classes.items()
               if name not in unknown for path in paths]
    if not samples:
        raise ValueError(f"none of the {len(classes)} class folders in {folder} is a class of the model "
                         f"(e.g. {unknown[0]!r} vs the model's {model.class_names[0]!r}); name the folders "
                         "after the model's classes, or give --class-names")
    return MatchedImages(folder, samples, classes, unknown, found)


def summarize(model_source, model: INTR, matched: MatchedImages, result: Evaluation) -> dict:
    per_class = dict(zip(model.class_names, result.per_class_accuracy()))
    summary = {"model": str(model_source), "data": str(matched.folder), "images": result.images,
               "top1": result.accuracy, "top5": result.top5_accuracy,
               "per_class_accuracy": {name: per_class[name] for name in matched.classes
                                      if name not in matched.unknown},
               "unknown_classes": {name: len(matched.classes[name]) for name in matched.unknown},
               "skipped_images": len(matched.found.skipped) + result.skipped}
    if result.shortlist is not None:
        summary["shortlist_check"] = result.shortlist.as_dict()
    return summary


def write_tables(out: Path, class_names: list[str], result: Evaluation, summary: dict) -> None:
    """confusion_matrix.csv, per_class_accuracy.csv and metrics.json, each written atomically."""
    matrix = result.confusion.tolist()
    per_class = result.per_class_accuracy()
    write_csv(out / "confusion_matrix.csv", ["true \\ predicted", *class_names],
              ([name, *row] for name, row in zip(class_names, matrix)))
    write_csv(out / "per_class_accuracy.csv", ["class", "images", "accuracy"],
              ([name, sum(matrix[i]), per_class[i]] for i, name in enumerate(class_names)))
    atomic_write(out / "metrics.json", lambda t: Path(t).write_text(json.dumps(summary, indent=2) + "\n"))


def evaluate_folder(model: INTR, model_source, matched: MatchedImages, out=None, batch_size: int = 16,
                    workers: int = 2, shortlist: int | None = None, compare_full: bool = False,
                    extra: dict | None = None) -> dict:
    """Evaluate `model` on the matched images; with `out`, also write the tables there.
    shortlist K: decode each image's first-pass top K only; compare_full: also decode every
    class and report the shortlist's agreement with it and its recall@K. extra: more results for
    the summary and metrics.json (the open-set evaluation)."""
    if shortlist is not None and (isinstance(shortlist, bool) or shortlist < 1):
        raise ValueError(f"--shortlist must be at least 1, got {shortlist}")
    if compare_full and shortlist is None:
        raise ValueError("--compare-full compares a shortlist with the full decode: give --shortlist K too")
    loader = DataLoader(ImageFolderDataset(matched.samples, eval_transform(model.config)), batch_size=batch_size,
                        num_workers=workers, collate_fn=collate)
    result = evaluate(model, loader, options_for(model.device), len(model.class_names), shortlist, compare_full)
    summary = summarize(model_source, model, matched, result)
    if shortlist is not None:
        summary["shortlist"] = shortlist
    summary.update(extra or {})
    if out is not None:
        out = Path(out).expanduser()
        write_tables(out, model.class_names, result, summary)
        summary["out"] = str(out)
    return summary


def load_and_match(model_source, data, class_names=None, device="auto", precision: str = "auto",
                   warn: Callable[[str], None] = lambda message: None) -> tuple[INTR, Path, MatchedImages]:
    """The model and the images of `data` it can be judged on; `warn` hears what is left out."""
    from napari_intr.loading import load_model
    root, folder = evaluation_folder(data)
    model = load_model(model_source, class_names, resolve_device(device), precision)
    matched = match_images(model, folder)
    for message in matched.found.warnings + matched.found.skipped:
        warn(message)
    if matched.unknown:
        warn(f"left out {len(matched.unknown)} classes the model does not know: {', '.join(matched.unknown)}")
    return model, root, matched
