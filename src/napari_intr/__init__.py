"""napari-intr: INTR's class-specific attention as an explanation, in napari and headless.

Importing this package loads neither Qt nor napari (the plugin's widgets live in
`napari_intr.widgets`), and it imports torch only when a model function is first used.
"""
from ._lazy import lazy_getattr
from ._version import __version__
from .threads import passive_openmp_waiting

passive_openmp_waiting()  # before torch loads OpenMP (napari_intr/threads.py says why)

_LAZY = {
    "load_model": "loading", "resolve_device": "devices", "sample_data_dir": "loading",
    "save_model": "checkpoints", "read_metadata": "checkpoints", "CheckpointError": "checkpoints",
    "INTR": "model", "IntrConfig": "model", "IntrOutput": "model", "EncodedImages": "model",
    "build_model": "model",
}

__all__ = ["__version__", *_LAZY]


__getattr__ = lazy_getattr(__name__, _LAZY)
