"""The INTR model, one concept per module (see the paper's Fig. 2).

`config` (the architecture and the names callers choose among) imports no torch, so command-line
parsers can read it quickly; the rest loads on first use."""
from .config import BACKBONES, DECODE_MODES, IntrConfig

_LAZY = {"INTR": "intr", "EncodedImages": "intr", "IntrOutput": "intr", "build_model": "intr"}

__all__ = ["BACKBONES", "DECODE_MODES", "INTR", "EncodedImages", "IntrConfig", "IntrOutput", "build_model"]


def __getattr__(name):
    if name in _LAZY:
        from importlib import import_module
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
