"""Batch explain: images (or regions of them) -> predictions.csv plus one attention TIFF per item.

An item is an image, or one region of a photograph holding many specimens (`boxes`, see
napari_intr.regions). Each item's TIFF is written first (atomically), then its record; the CSV
is written from the records at the end (also on cancel). The work can be shared between the
processes of a torchrun job and resumed after a crash: pass `start_job` (the `intr explain`
command passes `sharding.ShardedRun.start`, beside this module); without it, one process does every
item with no ledger (the Explorer's batch box). The `intr explain` command is
intr_training/explain_cli.py.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from itertools import takewhile
from pathlib import Path

from .. import provenance
from ..atomic import DiskFullError
from ..calibration import SUBSET_NOTE
from ..csv_output import write_csv
from ..filenames import fitting_name
from ..image_files import find_images, read_pixel_size, reason
from ..large_images import BudgetedImage, read_within_budget
from ..provenance import Changes, EarlierOutputs, check_apart, outputs_note, outside
from ..read_ahead import ReadAhead
from ..regions import REGION_COLUMNS, Margin, Region, crop_region

PREDICTIONS_FILE = provenance.PREDICTIONS_FILE
TASK = "explain"
TIFF_FORMATS = {"imagej": ".tif", "ome": ".ome.tif"}
# Whole images encoded together where their input sizes match, on a GPU. On the CPU one at a
# time: a batch of 4 was no faster there (resnet50 C=200, 800x1200 px, bf16, 2 threads: 0.39-0.40
# against 0.40-0.44 images/s, issue 24) and needs 4 images' activations at once.
BATCH_IMAGES = {"cpu": 1}
BATCH_IMAGES_ELSEWHERE = 4


def csv_columns(top_k: int, regions: bool = False) -> list[str]:
    from ..export import prediction_columns
    return ["file", *(REGION_COLUMNS if regions else []), *prediction_columns(top_k), "map_class",
            "attention_file", "error"]


@dataclass(frozen=True)
class Item:
    """One thing to explain: an image file, or one region of it."""
    key: str            # unique in the job; changes when the region's box changes
    path: Path
    region: Region | None
    attention_file: str

    def describe(self) -> str:
        return str(self.path) if self.region is None else f"{self.path} region {self.region.id}"


@dataclass(frozen=True)
class Settings:
    """What every item is explained with (the CLI's options, resolved against the model)."""
    candidates: list[int]
    mode: str
    top_k: int
    layer: int                 # 0-based decoder layer (explanation.layer_index)
    class_for_maps: str | None
    margin: Margin
    tiff_format: str
    shortlist: int | None = None  # decode each item's first-pass top K only

    def fingerprint(self, model, model_name: str, regions: bool) -> dict:
        """The settings a resumed run must share with the earlier one (JSON-able)."""
        names = "\n".join(model.class_names).encode()
        return {"model": model_name, "classes": hashlib.sha256(names).hexdigest()[:16],
                "candidates": self.candidates, "mode": self.mode, "top_k": self.top_k,
                "layer": self.layer, "class_for_maps": self.class_for_maps,
                "margin": str(self.margin), "tiff_format": self.tiff_format, "regions": regions,
                "shortlist": self.shortlist}


def plan_items(files: list[Path], boxes: dict[Path, list[Region]] | None, tiff_format: str) -> list[Item]:
    """Items in output order, with attention-file names that never collide (whatever the sharding)."""
    suffix = TIFF_FORMATS[tiff_format]
    used: set[str] = set()
    items = []
    for path in files:
        if boxes is None:
            items.append(Item(str(path), path, None, _unique_name(f"{path.stem}_attention", suffix, used)))
            continue
        for region in boxes.get(path, []):
            key = f"{path}#{region.id}#{region.x0:g},{region.y0:g},{region.x1:g},{region.y1:g}"
            stem = f"{path.stem}_{_safe(region.id)}_attention"
            items.append(Item(key, path, region, _unique_name(stem, suffix, used)))
    return items


def _safe(text: str) -> str:
    return re.sub(r"[^\w.-]+", "-", text).strip("-.") or "region"


def _unique_name(stem: str, suffix: str, used: set[str]) -> str:
    """Two inputs with the same stem (e.g. class folders) get `_2`, `_3`, ... rather than overwrite."""
    name, count = fitting_name(stem, suffix), 1
    while name.casefold() in used:
        count += 1
        name = fitting_name(stem, f"_{count}{suffix}")
    used.add(name.casefold())
    return name


class _OneProcessJob:
    """Every item in this process, no resume (what `start_job` provides when none is given)."""

    def __init__(self, keys: list[str]):
        self.keys, self.share, self.done, self.records = keys, list(keys), set(), {}
        self.is_main, self.changes = True, Changes()  # nothing earlier: nothing changed

    def record(self, key: str, record: dict) -> None:
        self.records[key] = record

    def progress(self) -> tuple[int, int]:
        return len(self.records), len(self.keys)

    def finish(self, progress=None) -> list[tuple[str, dict]]:
        return [(key, self.records[key]) for key in self.keys if key in self.records]

    def close(self) -> None:
        pass


def explain_folder(model, inputs, out_dir, classes=None, mode: str = "drop", top_k: int = 5,
                   layer: int = -1, class_for_maps: str | None = None, model_name: str = "model",
                   progress: Callable[[int, int, Path], None] | None = None,
                   should_stop: Callable[[], bool] | None = None, boxes: dict[Path, list[Region]] | None = None,
                   margin: Margin | str | None = None, tiff_format: str = "imagej",
                   start_job: Callable | None = None, shortlist: int | None = None) -> dict:
    """Explain every image in `inputs` (files and/or folders), or every region in `boxes`, into `out_dir`.

    layer: decoder layer of the saved maps, a Python index (-1 = last). class_for_maps: the class
    whose head maps are saved (default: each item's top-1). boxes: {image: regions} (inputs may then
    be empty); margin: context added around each box. tiff_format: "imagej" or "ome". shortlist K:
    decode each item's first-pass top K classes only (the CSV ranks those; the rest were not decoded).
    start_job(out_dir, task, keys, settings, is_done=, group=): shares and resumes the work (see
    napari_intr.collection.sharding). Unreadable images are skipped and reported. Returns a summary: total,
    done, skipped [(item, reason)], rejected [(item, open-set score)]: items a calibrated model
    finds none of its species in, calibration (the model's, or None), notes, cancelled, resumed,
    seconds, predictions, attention_files;
    on the processes other than the first of a torchrun job, predictions is None.
    """
    from ..explanation import Explainer
    start = time.perf_counter()
    inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    check_apart(inputs, out_dir)  # an output folder holding the images would be read back next time
    with warnings.catch_warnings(record=True) as earlier:  # nor an earlier run's, wherever it wrote
        warnings.simplefilter("always", EarlierOutputs)
        files = list(boxes) if boxes is not None and not inputs else find_images(inputs)
    files, inside_out = outside(files, out_dir)  # never our own attention TIFFs of an earlier run
    if not files:
        raise ValueError(f"every image given lies inside the output folder {out_dir}; give an output "
                         "folder outside the images")
    settings = _settings(model, classes, mode, top_k, layer, class_for_maps, margin, tiff_format, shortlist)
    items = plan_items(files, boxes, tiff_format)
    if not items:
        raise ValueError("the boxes file names none of the images given; check its image column")
    out_dir = _output_folder(out_dir)
    by_key = {item.key: item for item in items}

    def is_done(key: str, record: dict) -> bool:
        return not record.get("row", {}).get("error") and (out_dir / by_key[key].attention_file).is_file()

    if start_job is None:
        job = _OneProcessJob(list(by_key))
    else:
        job = start_job(out_dir, TASK, list(by_key), settings.fingerprint(model, model_name, boxes is not None),
                        is_done=is_done, group=lambda key: str(by_key[key].path),
                        inputs=lambda key: by_key[key].path)
    cancelled, last = _explain_share(job, by_key, Explainer(model, model_name), settings, out_dir, progress,
                                     should_stop)
    report = (lambda done, total: progress(done, total, last)) if progress is not None else None
    summary = _summary(job.finish(report), by_key, settings, out_dir, boxes is not None)
    summary.update(total=len(items), cancelled=cancelled, resumed=len(job.done),
                   seconds=time.perf_counter() - start, calibration=model.calibration,
                   changes=job.changes.line("regions" if boxes is not None else "images"))
    # files a job wrote, never read back as images: said by the CLI (notes) and the Batch box (left_out)
    summary["left_out"] = ([outputs_note(inside_out, out_dir)] if inside_out else []) + [
        str(warning.message) for warning in earlier if issubclass(warning.category, EarlierOutputs)]
    summary["notes"] += [(out_dir, line) for line in summary["left_out"]]
    return summary


def _output_folder(out_dir) -> Path:
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"the output {out_dir} is a file; give a folder for the results")
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def _explain_share(job, by_key: dict, explainer, settings: Settings, out_dir: Path, progress,
                   should_stop) -> tuple[bool, Path]:
    """Explain this process's share of the items, recording each; returns (cancelled, last path).
    Whole images are encoded several at a time where their sizes allow (Explainer.encode_many;
    BATCH_IMAGES)."""
    reader = _ImageReader(ReadAhead([by_key[key].path for key in job.share], _read))
    last, share = next(iter(by_key.values())).path, list(job.share)
    batch_size = BATCH_IMAGES.get(explainer.model.device.type, BATCH_IMAGES_ELSEWHERE)
    try:
        start = 0
        while start < len(share):
            if should_stop is not None and should_stop():
                return True, last
            # a run of up to batch_size whole images, or one region
            chunk = list(takewhile(lambda key: by_key[key].region is None, share[start:start + batch_size]))
            chunk = chunk or share[start:start + 1]
            start += len(chunk)
            records = _explain_chunk(explainer, [by_key[key] for key in chunk], reader, settings, out_dir)
            for number, key in enumerate(chunk):
                if number and should_stop is not None and should_stop():
                    return True, last
                job.record(key, next(records))
                last = by_key[key].path
                if progress is not None:
                    progress(*job.progress(), last)
    finally:
        reader.close()
        job.close()
    return False, last


def _summary(merged, by_key: dict, settings: Settings, out_dir: Path, regions: bool) -> dict:
    """predictions.csv from the merged records (first process only: others get merged None) and
    the counts, skipped items and notes of the summary. The records are streamed (twice: once for
    the CSV, once for the counts); they are never all in memory."""
    summary = {"predictions": None, "attention_files": [], "done": 0, "skipped": [], "notes": [], "rejected": [],
               "judged": 0}
    if merged is None:
        return summary
    summary["predictions"] = write_csv(out_dir / PREDICTIONS_FILE, csv_columns(settings.top_k, regions),
                                       (record["row"] for _, record in merged))
    for key, record in merged:
        row = record["row"]
        if row.get("error"):
            summary["skipped"].append((by_key[key].describe(), row["error"]))
            continue
        summary["done"] += 1
        summary["judged"] += bool(row.get("known"))
        if row.get("known") == "no":  # a calibrated model found none of its species: listed, not named
            summary["rejected"].append((by_key[key].describe(), row["open_set_score"]))
        summary["attention_files"].append(out_dir / row["attention_file"])
        summary["notes"].extend((by_key[key].describe(), note) for note in record.get("notes", [])
                                if not note.startswith("shortlist:") and note != SUBSET_NOTE)  # said once, by the CLI
        summary["undecoded"] = max(summary.get("undecoded", 0), record.get("undecoded", 0))
    return summary


def _settings(model, classes, mode, top_k, layer, class_for_maps, margin, tiff_format, shortlist=None) -> Settings:
    candidates = model.class_indices(classes)
    from ..explanation import layer_index
    layer = layer_index(layer, model.config.dec_layers)
    if top_k < 1:
        raise ValueError(f"top-k must be at least 1, got {top_k}")
    if tiff_format not in TIFF_FORMATS:
        raise ValueError(f"unknown TIFF format {tiff_format!r}: choose one of {', '.join(TIFF_FORMATS)}")
    if class_for_maps is not None:
        index = model.class_indices([class_for_maps])[0]
        if index not in candidates:
            raise ValueError(f"the class for the maps, {class_for_maps!r}, is not among the candidate classes")
        class_for_maps = model.class_names[index]
    if shortlist is not None:
        if isinstance(shortlist, bool) or not isinstance(shortlist, int) or shortlist < 1:
            raise ValueError(f"the shortlist must be a whole number of classes, at least 1, got {shortlist!r}")
        if mode != "drop":
            raise ValueError("a shortlist is decoded in drop mode; leave the mode at drop")
        if class_for_maps is not None and shortlist < len(candidates):
            raise ValueError("a fixed class for the maps may fall outside an image's shortlist; "
                             "leave the class out (each image's top-1) or drop the shortlist")
    margin = margin if isinstance(margin, Margin) else Margin.parse(margin)
    top_k = min(top_k, len(candidates), shortlist or len(candidates))
    return Settings(candidates, mode, top_k, layer, class_for_maps, margin, tiff_format, shortlist)


class _ImageReader:
    """The last image read, kept for its next regions (a tray photo is read once, not per region).
    An image too large to decode whole comes reduced k-fold (napari_intr.large_images)."""

    def __init__(self, read: ReadAhead | None = None):
        self.path, self.image, self.pixel_size = None, BudgetedImage(None), None
        self.reads = read or _read  # ReadAhead: the next image is read while this one is explained

    def read(self, path: Path) -> BudgetedImage:
        if path != self.path:
            self.path, self.image = None, BudgetedImage(None)  # a failed read is not kept
            self.image, self.pixel_size = self.reads(path)
            self.path = path
        return self.image

    def close(self) -> None:
        close = getattr(self.reads, "close", None)  # a ReadAhead's worker thread
        if close is not None:
            close()


def _read(path: Path) -> tuple[BudgetedImage, object]:
    return read_within_budget(path), read_pixel_size(path)


_ITEM_ERRORS = (ValueError, OSError, RuntimeError, MemoryError)


def _explain_chunk(explainer, items: list[Item], reader: _ImageReader, settings: Settings, out_dir: Path):
    """Records of items (one region, or whole images encoded as one batch), in order: the CSV row
    and notes. Each item is decoded and its TIFF written only when its record is asked for, so
    a run stopped between two records leaves no TIFF without its record. One bad image (damaged
    file, too small, out of memory) gets an error row and does not end the run."""
    rows, inputs, errors = [], {}, {}
    for index, item in enumerate(items):
        row: dict = {"file": str(item.path)}
        if item.region is not None:
            region = item.region
            row.update(region=region.id, x0=region.x0, y0=region.y0, x1=region.x1, y1=region.y1)
        rows.append(row)
        try:
            inputs[index] = _item_input(item, reader, settings)
        except _ITEM_ERRORS as error:
            errors[index] = error
    encoded = dict(zip(inputs, explainer.encode_many([image for image, *_ in inputs.values()],
                                                     [name for *_, name in inputs.values()])))
    for index, (item, row) in enumerate(zip(items, rows)):
        try:
            if index in errors or isinstance(encoded[index], Exception):
                raise errors.get(index) or encoded[index]
            # Only the saved layer's maps are computed (the others run without materialising weights).
            explanation = explainer.decode(encoded[index], settings.candidates, settings.mode, settings.shortlist,
                                           layers=[settings.layer])
        except _ITEM_ERRORS as error:
            yield {"row": {**row, "error": reason(error)}, "notes": []}
            continue
        _, offset, read, pixel_size, _ = inputs[index]
        yield _item_record(explanation, item, row, read, offset, pixel_size, settings, out_dir)


def _item_input(item: Item, reader: _ImageReader, settings: Settings) -> tuple:
    """(pixels, offset, read, pixel size, name) of an item: its image, or its region's crop."""
    read = reader.read(item.path)
    image, offset = read.pixels, (0, 0)
    if item.region is not None:
        item.region.crop_bounds(read.file_shape)  # a box outside is named in the file's pixels
        crop = crop_region(image, _reduced_region(item.region, read.factor),
                           _reduced_margin(settings.margin, read.factor))
        image, offset = crop.pixels, crop.offset
    name = item.path.stem if item.region is None else f"{item.path.stem} · {item.region.id}"
    return image, offset, read, reader.pixel_size, name


def _item_record(explanation, item: Item, row: dict, read, offset, pixel_size, settings: Settings,
                 out_dir: Path) -> dict:
    from ..export import prediction_cells
    if read.factor > 1:
        explanation, offset = _on_file_grid(explanation, read, offset)
    row.update(prediction_cells(explanation, settings.top_k))
    shown = settings.class_for_maps or explanation.top_class()
    try:
        _write_maps(out_dir / item.attention_file, explanation, shown, settings, item, offset, pixel_size)
    except DiskFullError:
        raise  # every later item would fail the same way: stop, keeping the rows done
    except (ValueError, OSError) as error:  # this item's file only (e.g. a name the disk refuses)
        return {"row": {**row, "error": f"its attention file could not be written: {reason(error)}"}, "notes": []}
    row.update(map_class=shown, attention_file=item.attention_file)
    off_image = item.region.off_image_note(read.file_shape) if item.region is not None else None
    notes = ([off_image] if off_image else []) + list(explanation.notes)
    return {"row": row, "notes": notes, "undecoded": explanation.undecoded}


def _reduced_region(region: Region, factor: int) -> Region:
    """A box in the file's pixels -> the same box in the pixels of the k-fold reduced image."""
    if factor == 1:
        return region
    return Region(region.id, region.x0 / factor, region.y0 / factor, region.x1 / factor, region.y1 / factor)


def _reduced_margin(margin: Margin, factor: int) -> Margin:
    return margin if margin.percent or factor == 1 else Margin(margin.value / factor)


def _on_file_grid(explanation, read: BudgetedImage, offset: tuple[int, int]):
    """An explanation of a k-fold reduced image (or a crop of it at `offset`) placed on the file's
    pixel grid: its image shape, the maps' scale, translate and pixel size are the file's, and
    its notes say it was read reduced. Returns (explanation, offset in the file's pixels)."""
    factor, (file_height, file_width) = read.factor, read.file_shape
    top, left = offset[0] * factor, offset[1] * factor
    height, width = explanation.image_shape
    shape = (min(height * factor, file_height - top), min(width * factor, file_width - left))
    return dataclasses.replace(explanation, image_shape=shape, notes=[read.note, *explanation.notes]), (top, left)


def _write_maps(target: Path, explanation, class_name: str, settings: Settings, item: Item,
                offset: tuple[int, int], pixel_size) -> None:
    """heads planes of raw attention weights (natural head order), named per class, layer and head."""
    from ..export import (
        attention_stack,
        explanation_metadata,
        map_pixel_size,
        write_attention_tiff,
    )
    stack, labels = attention_stack(explanation, [class_name], [settings.layer])
    metadata = explanation_metadata(explanation, class_name, settings.layer, str(item.path), offset)
    if item.region is not None:
        region = item.region
        metadata["region"] = {"id": region.id, "box": [region.x0, region.y0, region.x1, region.y1],
                              "crop_offset": list(offset), "margin": str(settings.margin)}
    write_attention_tiff(target, stack, labels, metadata, map_pixel_size(explanation, pixel_size),
                         settings.tiff_format)
