"""`build_atlas`: a folder of class-labelled images -> the trait atlas, resumable and sharded.

Pass 1 (the model, `summarise`): every image not summarised yet becomes one JSON record, kept in
OUT/.intr-atlas/ through `napari_intr.collection.sharding` (a re-run skips what is there; torchrun ranks
take interleaved shares and rank 0 merges them). Pass 2 (`aggregate`): the records, in key order,
become statistics and top-N galleries. Pass 3 (`report`): the files.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from napari_intr import __version__
from napari_intr.collection.scan import Collection, class_images
from napari_intr.explanation import layer_from_number, layer_number
from napari_intr.manifest import file_digest
from napari_intr.provenance import check_apart

from ..collection import run_lock, sharding
from .aggregate import DEFAULT_PAIR_COUNT, Atlas, AtlasBuilder
from .montage import PatchCache
from .parts import PartSource
from .report import write_report
from .summarise import DEFAULT_PARTNERS, ImageSummariser

TASK = "atlas"
COMMAND = "intr atlas"
DEFAULT_PER_HEAD = 6
ERRORS_KEPT = (ValueError, OSError, RuntimeError, MemoryError)  # one bad image never ends the run


@dataclass
class AtlasOptions:
    layer: int | None = None               # 1-based decoder layer; None: the last
    classes: list[str] | None = None       # restrict the atlas to these classes
    pairs: list[tuple[str, str]] | None = None  # ordered look-alike pairs (A, B); None: most confused
    per_head: int = DEFAULT_PER_HEAD
    parts: str | os.PathLike | None = None  # CUB parts/part_locs.txt; None: synth masks if present
    restart: bool = False
    strict: bool = False                   # a --parts file that matches no image is an error, not a warning


@dataclass
class AtlasRun:
    total: int
    summarised_now: int = 0
    reused: int = 0
    cancelled: bool = False
    atlas: Atlas | None = None
    files: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


def collection_images(data: Path, model, classes: list[str] | None, out: Path | None = None
                      ) -> tuple[dict[str, tuple[Path, int]], list[str]]:
    """key (path relative to DATA) -> (path, class index), for the class folders the model knows.
    DATA/<class>/<image>; with DATA/train and DATA/val, both. Files under `out` (the atlas's own
    output folder, when it lies inside DATA) are left out, with a warning."""
    if not data.is_dir():
        raise FileNotFoundError(f"data folder {data} does not exist; give a folder with one subfolder "
                                "of images per class")
    found = Collection(data, [], [], [], exclude=out)
    roots = [data / "train", data / "val"] if (data / "train").is_dir() and (data / "val").is_dir() else [data]
    by_class: dict[str, list[Path]] = {}
    for root in roots:
        for name, paths in class_images(root, found).items():
            by_class.setdefault(name, []).extend(paths)
    if not by_class:
        raise ValueError(f"{data} has no class folders with images; expected {data}/<class name>/<image>"
                         + found.unusable_reasons())
    wanted = set(model.class_names) if classes is None else set(classes)
    unknown = sorted(name for name in by_class if name not in model.class_names)
    warnings = found.warnings + found.skipped
    if unknown:
        warnings.append(f"left out {len(unknown)} class folders the model does not know: {', '.join(unknown)}")
    items = {path.relative_to(data).as_posix(): (path, model.class_names.index(name))
             for name, paths in by_class.items() if name in wanted and name in model.class_names for path in paths}
    if not items:
        raise ValueError(f"none of the class folders in {data} is a class of the model"
                         + (" among --classes" if classes else "")
                         + f" (the model's classes are e.g. {', '.join(model.class_names[:3])})")
    return items, warnings


def pair_partners(model, pairs: list[tuple[str, str]] | None) -> dict[int, list[int]] | None:
    """Each class -> the classes its images are decoded against (both sides of every pair)."""
    if pairs is None:
        return None
    partners: dict[int, set[int]] = {}
    for a, b in pairs:
        ia, ib = model.class_indices([a, b])
        partners.setdefault(ia, set()).add(ib)
        partners.setdefault(ib, set()).add(ia)
    return {index: sorted(others) for index, others in partners.items()}


def model_identity(model_name: str) -> dict:
    """What the records depend on about the model: its name and, for a file, its size and time."""
    path = Path(model_name).expanduser()
    if path.is_file():
        stat = path.stat()
        return {"model": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    return {"model": model_name}


def build_atlas(model, model_name: str, data: str | os.PathLike, out: str | os.PathLike,
                options: AtlasOptions | None = None,
                progress: Callable[[int, int], None] | None = None,
                should_stop: Callable[[], bool] | None = None) -> AtlasRun:
    """Summarise every image not summarised yet, then (on rank 0) write the atlas to `out`.

    progress(done, total) after each image; should_stop() is asked before each image (a cancel
    keeps every finished record: the next run continues from there)."""
    start = time.perf_counter()
    options = options or AtlasOptions()
    data, out = Path(data).expanduser(), Path(out).expanduser()
    layers = model.config.dec_layers
    layer_index, classes, partners = _checked(model, options, out)
    layer = layer_number(layer_index)  # as people count it, in the settings and the report
    parts = PartSource(options.parts)
    check_apart([data], out)
    items, warnings = collection_images(data, model, classes, out)
    if options.parts is not None and not parts.matching(path for path, _ in items.values()):
        unmatched = (f"--parts {options.parts} has annotations for none of the {len(items)} images in {data} "
                     "(they meet by <class folder>/<file name>, as in CUB's images.txt); consistency falls "
                     "back to feature cosine")
        if options.strict:
            raise ValueError(unmatched + "; check that --data is the collection the parts file describes")
        warnings.append(unmatched)
    settings = {**model_identity(model_name), "layer": layer, "parts": None if options.parts is None
                else str(Path(options.parts).expanduser().resolve()),
                # its content: a parts file edited since refuses the re-run (the summaries used it)
                "parts_sha256": None if options.parts is None else file_digest(Path(options.parts).expanduser()),
                "pairs": None if options.pairs is None else [list(pair) for pair in options.pairs],
                "default_partners": DEFAULT_PARTNERS, "classes": classes}
    with run_lock.job_lock(out, COMMAND) as lock:  # a second run into OUT is refused, naming it
        if lock.stale_message():
            warnings.append(lock.stale_message())
        run = sharding.ShardedRun.start(out, TASK, items, settings, restart=options.restart,
                                        inputs=lambda key: [items[key][0], *parts.files_beside(items[key][0])])
        if run.changes.line():
            warnings.append(run.changes.line())
        result = AtlasRun(total=len(items), reused=len(run.done), warnings=warnings)
        present = sorted({index for _, index in items.values()})  # default partners: classes with images
        summariser = ImageSummariser(model, layer_index, present, partners, parts)
        cache = _summarise_share(run, items, summariser, result, progress, should_stop, options)
        if not result.cancelled:
            merged = run.finish(progress)
            if merged is not None:  # rank 0
                names = [model.class_names[index] for index in present]
                builder = AtlasBuilder(names, model.config.nheads, options.per_head, options.pairs,
                                       DEFAULT_PAIR_COUNT)
                result.atlas = builder.add_all(merged).build()
                meta = {"model": model_name, "data": str(data), "layer": layer, "layers": layers,
                        "heads": model.config.nheads, "per_head": options.per_head, "version": __version__,
                        "consistency": _consistency_text(result.atlas, parts), "parts": settings["parts"],
                        "pairs_requested": settings["pairs"]}
                result.files = write_report(result.atlas, out, data, meta, cache.patches())
    result.seconds = time.perf_counter() - start
    return result


def _checked(model, options: AtlasOptions, out: Path) -> tuple[int, list[str] | None, dict | None]:
    """(0-based decoder layer, classes or None, pair partners or None), or a ValueError saying what to fix."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"the output {out} is a file; give a folder for the atlas")
    if options.per_head < 1:
        raise ValueError(f"--per-head must be at least 1, got {options.per_head}")
    layer = layer_from_number(options.layer, model.config.dec_layers, "--layer")
    classes = None
    if options.classes is not None:
        classes = [model.class_names[i] for i in model.class_indices(options.classes)]
        if len(classes) < 1:
            raise ValueError("--classes is empty; give class names separated by commas")
    partners = pair_partners(model, options.pairs)
    if options.pairs is not None and classes is not None:
        missing = sorted({name for pair in options.pairs for name in pair} - set(classes))
        if missing:
            raise ValueError(f"--pairs names {', '.join(missing)}, which --classes leaves out; add them to --classes")
    return layer, classes, partners


def _summarise_share(run, items: dict, summariser: ImageSummariser, result: AtlasRun, progress,
                     should_stop, options: AtlasOptions) -> PatchCache:
    """Summarise this process's share of the images (a cancel keeps every finished record).

    One worker thread reads the next image and its annotations while the model runs on this one
    (decoding and file reads release the GIL; torch may hold only one core); a read's error
    surfaces as that image's, in order. The same thread cuts the gallery patches the report will
    need while the image is in memory (rank 0 only: it writes the report)."""
    keys, ahead = list(run.share), None
    with ThreadPoolExecutor(1, thread_name_prefix="atlas-read") as reader:
        cache = PatchCache(options.per_head, reader, limit=None if run.info.is_main else 0,
                           pairs=options.pairs is not None)
        try:
            ahead = reader.submit(summariser.load, items[keys[0]][0]) if keys else None
            for position, key in enumerate(keys):
                if should_stop is not None and should_stop():
                    result.cancelled = True
                    break
                path, class_index = items[key]
                loading = ahead
                ahead = (reader.submit(summariser.load, items[keys[position + 1]][0])
                         if position + 1 < len(keys) else None)
                image = None  # a read that fails leaves no image (nor the previous one) to cut from
                try:
                    image, parts = loading.result()
                    record = summariser(path, class_index, (image, parts))
                except ERRORS_KEPT as error:
                    record = {"error": f"{type(error).__name__}: {error}" if not str(error) else str(error)}
                run.record(key, record)
                cache.offer(key, record, image)
                result.summarised_now += 1
                if progress is not None:
                    progress(*run.progress())
        finally:
            if ahead is not None:
                ahead.cancel()
            summariser.close()
            if result.cancelled or not _finished(result, run):
                run.close()
    return cache


def _finished(result: AtlasRun, run) -> bool:
    return result.summarised_now == len(run.share)


def _consistency_text(atlas: Atlas, parts: PartSource) -> str:
    methods = {head.consistency_method for summary in atlas.classes for head in summary.heads}
    texts = []
    if "parts" in methods:
        texts.append(f"share of annotated images whose peak lands on the head's most frequent part ({parts.description})")
    if "feature cosine" in methods:
        texts.append("mean pairwise cosine similarity of the backbone features under the peaks (no part annotations)")
    return "; ".join(texts) or "not available"
