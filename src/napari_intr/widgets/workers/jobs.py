"""Every background job of the plugin: generators run by napari's thread workers (TaskBar
starts them, reports their errors and cancels them). They yield plain messages
(`Progress`, then one `Result`), raise on failure (the worker's `errored` signal), and never
touch a widget. Cancelling (`worker.quit()`) takes effect at the next `yield`; jobs that wrap a
blocking call also get a `threading.Event` the call polls.
"""
from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:
    from napari_intr.editing import EditSession

_POLL_SECONDS = 0.1


@dataclass(frozen=True)
class Progress:
    done: int
    total: int  # 0: unknown
    text: str


@dataclass(frozen=True)
class Result:
    value: Any


class Cancelled(Exception):
    """Raised inside a blocking call when the user pressed Cancel."""


class JobFailed(Exception):
    """Carries a RuntimeError (torch's, ZooError) out of a job: superqt's generator worker takes
    a RuntimeError for a deleted worker and would end silently, never emitting `finished`."""

    def __init__(self, error: RuntimeError):
        super().__init__(str(error))
        self.error = error


def reports_runtime_errors(job):
    @functools.wraps(job)
    def wrapper(*args, **kwargs):
        try:
            return (yield from job(*args, **kwargs))
        except RuntimeError as error:
            raise JobFailed(error) from error
    return wrapper


class DownloadCounter:
    """The tqdm-like object pooch drives; reading it from another thread is fine (ints)."""

    def __init__(self, cancel: threading.Event):
        self.total, self.n, self._cancel = 0, 0, cancel

    def update(self, count):
        if self._cancel.is_set():
            raise Cancelled("download cancelled")
        self.n += int(count)

    def reset(self):
        self.n = 0

    def close(self):
        pass


def _run_polled(call: Callable[[], Any], snapshot: Callable[[], Progress]):
    """Run a blocking `call` on a helper thread, yielding `snapshot()` while it runs."""
    box: dict = {}

    def target():
        try:
            box["value"] = call()
        except BaseException as error:  # handed to the worker thread below
            box["error"] = error

    thread = threading.Thread(target=target, name="napari-intr-job", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(_POLL_SECONDS)
        yield snapshot()
    if "error" in box:
        raise box["error"]
    return box["value"]


@reports_runtime_errors
def load_model_job(source: str, class_names: str | None, device: str, precision: str, cancel: threading.Event):
    """Download a zoo model if it is not cached yet (with progress), then load it once, on the
    inference path in `precision` (napari_intr.inference), with torch's threads leaving napari's
    GUI thread a core (napari_intr.threads)."""
    from napari_intr import zoo
    from napari_intr.loading import load_model
    from napari_intr.threads import use_inference_threads
    if source in zoo.ZOO and not zoo.cached_path(source).exists():
        counter = DownloadCounter(cancel)
        try:
            yield from _run_polled(lambda: zoo.fetch(source, progressbar=counter),
                                   lambda: Progress(counter.n, counter.total, f"downloading {source}"))
        except Exception:
            if cancel.is_set():  # zoo.fetch reports our Cancelled as a failed download
                raise Cancelled("download cancelled") from None
            raise
    if cancel.is_set():
        raise Cancelled("cancelled before loading")
    yield Progress(0, 0, f"loading {source}")
    use_inference_threads(leave_for_gui=True)
    model = load_model(source, class_names or None, device, precision)
    yield Result(model)


@reports_runtime_errors
def explain_job(model, model_name: str, image: np.ndarray, name: str, shortlist: int | None = None):
    """Preprocess + encode (backbone and encoder), then decode every class (or the shortlist's top
    K of a first pass over them). Yields between stages."""
    from napari_intr.explanation import Explainer
    explainer = Explainer(model, model_name)
    yield Progress(0, 2, "encoding the image (backbone + encoder)")
    encoded = explainer.encode(image, name)
    yield Progress(1, 2, "decoding every class query" if shortlist is None
                   else f"shortlisting {shortlist} classes, decoding them")
    # the maps and the heads' evidence of the layer shown first (the last); the other layers' when
    # the user shows one (layer_job) or saves (save_job)
    explanation = explainer.decode(encoded, shortlist=shortlist, layers=[-1], evidence_layers=[-1])
    yield Progress(2, 2, "done")
    yield Result((encoded, explanation))


@reports_runtime_errors
def layer_job(explanation, layer: int, class_name: str):
    """The explanation that shows decoder `layer` (Python index) of `explanation`'s image and
    class set: itself when it holds that layer, else every layer decoded once on the cached encoder
    memory (Explanation.every_layer, then kept); the heads' evidence of `class_name` there measured."""
    yield Progress(0, 1, f"decoding decoder layer {explanation.layer_number(layer)} on the cached encoder memory")
    shown = explanation.holding(layer) or explanation.every_layer()
    shown.head_evidence(class_name, layer)
    yield Result(shown)


@reports_runtime_errors
def batch_job(model, inputs: str, out_dir: str, top_k: int, cancel: threading.Event):
    """`napari_intr.collection.explain.explain_folder` with progress and cancel; yields its summary."""
    from napari_intr.collection.explain import explain_folder
    latest = {"done": 0, "total": 0, "path": ""}

    def progress(done, total, path):
        latest.update(done=done, total=total, path=str(path))

    summary = yield from _run_polled(
        lambda: explain_folder(model, inputs, out_dir, top_k=top_k, progress=progress,
                               should_stop=cancel.is_set),
        lambda: Progress(latest["done"], latest["total"], latest["path"]))
    yield Result(summary)


@reports_runtime_errors
def regions_job(model, model_name: str, photo, regions: list, margin, name: str, shortlist: int | None = None):
    """Explain each region of a photo as its own specimen; yields ([RegionResult], [(Region, reason)])."""
    from napari_intr.explanation import Explainer
    from napari_intr.regions import explain_regions
    explainer = Explainer(model, model_name)
    results, failures = [], []
    for number, region in enumerate(regions):
        yield Progress(number, len(regions), f"region {region.id}")
        done, failed = explain_regions(explainer, photo, [region], margin, name=name, shortlist=shortlist)
        results += done
        failures += failed
    yield Progress(len(regions), len(regions), "done")
    yield Result((results, failures))


@reports_runtime_errors
def save_job(folder: str, stem: str, explanation, image, class_name: str | None, layer: int, regions: list,
             photo, pixel_size, file_format: str, image_file: str | None):
    """The Explorer's "save explanation": the current explanation, or the regions of a photo."""
    from napari_intr.export import save_explanation, save_regions
    written = []
    if explanation is not None and class_name is not None:
        yield Progress(0, 2, "saving the explanation")
        explanation = explanation.every_layer()  # the file holds every decoder layer's maps
        written += save_explanation(folder, stem, explanation, np.asarray(image), class_name, layer,
                                    pixel_size, file_format, image_file)
    if regions:
        yield Progress(1, 2, f"saving {len(regions)} regions")
        written += save_regions(folder, stem, regions, np.asarray(photo), layer,
                                pixel_size, file_format, image_file=image_file)
    yield Result(written)


@reports_runtime_errors
def compare_job(explainer, encoded, selected: str, candidates: list[str], mode: str, all_classes):
    yield Progress(0, 1, f"decoding {len(candidates)} candidates on the cached encoder memory")
    from napari_intr.comparison import compare
    # the Compare dock shows the last decoder layer: only its maps are decoded
    yield Result(compare(explainer, encoded, selected, candidates, mode, all_classes, layers=[-1]))


@reports_runtime_errors
def edit_job(explainer, session: EditSession, edit, region: np.ndarray, before):
    """Explain the image before the edit (unless `before` is known), prepare the edit's step,
    explain after; yields the step carrying both explanations. The session is not changed: the
    dock pushes the step on the GUI thread."""
    total, done = 2 + (before is None), 0
    if before is None:
        yield Progress(0, total, f"explaining '{session.name}' before the edit")
        before, done = explainer.explain(session.current, session.name, evidence_layers=()), 1
    yield Progress(done, total, edit.describe())
    step = session.prepare(edit, region)
    yield Progress(done + 1, total, "explaining the edited image")
    # the Edit dock ranks no heads: their evidence is measured only if something asks for it
    after = explainer.explain(step.image, f"{session.name} (edited)", evidence_layers=())
    yield Result(replace(step, before=before, after=after, explained_by=explainer.model))


FEW_IMAGES = 10  # a class with fewer images than this is hard to learn: say so


@dataclass(frozen=True)
class CollectionSummary:
    root: str
    val_split: float
    counts: tuple[tuple[str, int, int], ...]  # (class, training images, validation images)
    val_folder: bool                          # ROOT/train + ROOT/val rather than a split
    notes: tuple[str, ...]                    # the scan's warnings
    skipped: tuple[str, ...] = ()             # "<file> skipped: <reason>", one per image left out

    @property
    def class_names(self) -> list[str]:
        return [name for name, _, _ in self.counts]

    def few_image_classes(self) -> list[str]:
        return [name for name, train, val in self.counts if train + val < FEW_IMAGES]


@reports_runtime_errors
def scan_job(root: str, val_split: float, seed: int):
    from napari_intr.collection.scan import scan_collection
    collection = scan_collection(root, val_split, seed)
    train, val = {}, {}
    for _, index in collection.train:
        train[index] = train.get(index, 0) + 1
    for _, index in collection.val:
        val[index] = val.get(index, 0) + 1
    counts = tuple((name, train.get(i, 0), val.get(i, 0)) for i, name in enumerate(collection.class_names))
    is_split = (collection.root / "train").is_dir() and (collection.root / "val").is_dir()
    yield Result(CollectionSummary(str(collection.root), val_split, counts, is_split,
                                   tuple(collection.warnings), tuple(collection.skipped)))


@reports_runtime_errors
def atlas_job(model, model_name: str, data: str, out: str, options: dict, cancel: threading.Event):
    """`napari_intr.atlas.build_atlas` with progress and cancel (finished images are kept: the
    next run continues); yields its AtlasRun."""
    from napari_intr.atlas import AtlasOptions, build_atlas
    latest = {"done": 0, "total": 0}

    def progress(done, total):
        latest.update(done=done, total=total)

    def snapshot():
        done, total = latest["done"], latest["total"]
        text = f"{done} of {total} images summarised" if total else "listing the images"
        if total and done >= total:
            text = "writing atlas.html, the tables and the montages"
        return Progress(done, total, text)

    result = yield from _run_polled(
        lambda: build_atlas(model, model_name, data, out, AtlasOptions(**options), progress,
                            should_stop=cancel.is_set),
        snapshot)
    yield Result(result)
