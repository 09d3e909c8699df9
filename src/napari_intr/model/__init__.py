"""The INTR model, one concept per module (see the paper's Fig. 2).

`config` (the architecture and the names callers choose among) imports no torch, so command-line
parsers can read it quickly; the rest loads on first use."""
from .._lazy import lazy_getattr
from .config import BACKBONES, DECODE_MODES, IntrConfig

_LAZY = {"INTR": "intr", "EncodedImages": "intr", "IntrOutput": "intr", "build_model": "intr"}

__all__ = ["BACKBONES", "DECODE_MODES", "INTR", "EncodedImages", "IntrConfig", "IntrOutput", "build_model"]


__getattr__ = lazy_getattr(__name__, _LAZY)
