"""Worker jobs: generators run by napari's thread workers. They yield plain messages
(`Progress`, then one `Result`), raise on failure (the worker's `errored` signal), and never
touch a widget. Cancelling (`worker.quit()`) takes effect at the next `yield`; jobs that wrap a
blocking call also get a `threading.Event` the call polls.
"""
from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

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


def _reports_runtime_errors(job):
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


@_reports_runtime_errors
def load_model_job(source: str, class_names: str | None, device: str, cancel: threading.Event):
    """Download a zoo model if it is not cached yet (with progress), then load it once."""
    from napari_intr import zoo
    from napari_intr.loading import load_model
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
    model = load_model(source, class_names or None, device)
    yield Result(model)


@_reports_runtime_errors
def explain_job(model, model_name: str, image: np.ndarray, name: str):
    """Preprocess + encode (backbone and encoder), then decode every class. Yields between stages."""
    from napari_intr.explanation import Explainer
    explainer = Explainer(model, model_name)
    yield Progress(0, 2, "encoding the image (backbone + encoder)")
    encoded = explainer.encode(image, name)
    yield Progress(1, 2, "decoding every class query")
    explanation = explainer.decode(encoded)
    yield Progress(2, 2, "done")
    yield Result((encoded, explanation))


@_reports_runtime_errors
def batch_job(model, inputs: str, out_dir: str, top_k: int, cancel: threading.Event):
    """`napari_intr.batch.explain_folder` with progress and cancel; yields its summary."""
    from napari_intr.batch import explain_folder
    latest = {"done": 0, "total": 0, "path": ""}

    def progress(done, total, path):
        latest.update(done=done, total=total, path=str(path))

    summary = yield from _run_polled(
        lambda: explain_folder(model, inputs, out_dir, top_k=top_k, progress=progress,
                               should_stop=cancel.is_set),
        lambda: Progress(latest["done"], latest["total"], latest["path"]))
    yield Result(summary)
