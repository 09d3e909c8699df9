"""The INTR model, one concept per module (see the paper's Fig. 2)."""
from .config import BACKBONES, IntrConfig
from .intr import DECODE_MODES, INTR, EncodedImages, IntrOutput, build_model

__all__ = ["BACKBONES", "DECODE_MODES", "INTR", "EncodedImages", "IntrConfig", "IntrOutput", "build_model"]
