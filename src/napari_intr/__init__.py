"""napari-intr: INTR's class-specific attention as an explanation, in napari and headless.

Importing this package loads neither Qt nor napari (the plugin's widgets live in
`napari_intr.widgets`), and it imports torch only when a model function is first used.
"""
from ._version import __version__

_LAZY = {
    "load_model": "loading", "resolve_device": "devices", "sample_data_dir": "loading",
    "save_model": "checkpoints", "read_metadata": "checkpoints", "CheckpointError": "checkpoints",
    "INTR": "model", "IntrConfig": "model", "IntrOutput": "model", "EncodedImages": "model",
    "build_model": "model",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        from importlib import import_module
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'napari_intr' has no attribute {name!r}")
