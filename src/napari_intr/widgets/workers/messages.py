"""Every message the plugin shows goes through `notify`: one place to word and to observe them."""
from __future__ import annotations

import logging

from napari.utils import notifications

from ...image_files import is_out_of_gpu_memory, is_out_of_memory

_log = logging.getLogger("napari_intr")
# Errors whose message is written for users (ours, torch's device errors, files, bad values).
_EXPECTED = (ValueError, OSError, RuntimeError, ImportError, TypeError, KeyError, MemoryError)


def notify(text: str, level: str = "info") -> None:
    """level: "info", "warning" or "error" (napari's notifications)."""
    getattr(notifications, f"show_{level}")(text)


def describe_error(error: BaseException, doing: str) -> str:
    """One line for the user: what failed and why; the traceback goes to the log only."""
    _log.debug("%s failed", doing, exc_info=error)
    if is_out_of_gpu_memory(error):
        return (f"{doing} ran out of GPU memory: choose the 'cpu' device, or a smaller image: "
                f"{str(error).splitlines()[0]}")
    if is_out_of_memory(error):
        return (f"{doing} ran out of memory: choose a smaller image or crop it, or use a smaller "
                "model (the bundled tiny one) or the CPU device")
    text = str(error) or type(error).__name__
    if not isinstance(error, _EXPECTED):
        text = f"{type(error).__name__}: {text}"
    return f"{doing} failed: {text}"
