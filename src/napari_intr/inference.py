"""The inference path: how a loaded model computes when nothing needs gradients.

`load_model` prepares every model it returns (`prepare_for_inference`), so every entry point
(`intr explain`, `intr eval`, `intr atlas`, the Explorer, Compare, Edit) runs the same path:

- frozen batch norm folded into the convolutions before it (model/backbone.folded_batch_norm),
  on a cached copy of the backbone: the model's own weights, what it trains and saves, stay as
  they are, and the copy is folded again whenever they change (the faithfulness randomisation
  check re-initialises them: its randomised model is folded from the randomised weights);
- channels-last (NHWC) convolutions (on the CPU and CUDA);
- bf16 autocast where the device computes bf16 natively (CPUs with AVX512-BF16 or AMX, CUDA),
  float32 elsewhere; `precision` "fp32" or "bf16" forces either. The presence vector's logits,
  the encoder memory and the returned maps stay float32.

INTR.encode and INTR.decode take this path in eval mode without autograd (inference_mode or
no_grad); training, and anything computing gradients (Grad-CAM), runs the model as it is.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from .devices import PRECISIONS, native_bf16
from .model.backbone import Backbone, folded_batch_norm


def resolve_precision(precision: str | None, device) -> str:
    """"auto" (or None) -> "bf16" where `device` computes bf16 natively, else "fp32"."""
    if precision is None or precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


class InferencePath:
    """A model's inference settings and its folded backbone (built on first use, then reused
    while the backbone's weights, device and dtype stay the same)."""

    def __init__(self, precision: str):
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"an inference path computes in fp32 or bf16, got {precision!r}")
        self.precision = precision
        self._folded: Backbone | None = None
        self._key: tuple | None = None

    def __repr__(self) -> str:
        return f"InferencePath({self.precision!r})"

    def __deepcopy__(self, memo) -> InferencePath:
        return InferencePath(self.precision)  # a copy (e.g. to randomise) folds its own weights

    def __getstate__(self) -> dict:
        return {"precision": self.precision}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["precision"])

    def autocast(self, device: torch.device):
        if self.precision != "bf16" or device.type not in ("cpu", "cuda"):
            return nullcontext()
        return torch.autocast(device.type, dtype=torch.bfloat16)

    def channels_last(self, device: torch.device) -> bool:
        # NHWC convolutions pay on CUDA and on the CPU, in fp32 too: resnet50's folded backbone at
        # 800x1200 px took 7.4 s in NHWC against 9.9 s in NCHW (fp32), 3.1 s against 6.1 s (bf16),
        # one thread on the loaded 2-core machine (issue 24). MPS is left as it is: not measured.
        return device.type in ("cpu", "cuda")

    def backbone(self, backbone: Backbone) -> Backbone:
        """The folded (and, where it pays, channels-last) copy of `backbone`."""
        key = _weights_key(backbone)
        if self._folded is None or key != self._key:
            self._folded = None  # the old copy's memory is freed before the new one is made
            folded = folded_batch_norm(backbone)
            device = next(backbone.parameters()).device
            if self.channels_last(device):
                folded = folded.to(memory_format=torch.channels_last)
            self._folded, self._key = folded, key
        return self._folded

    def images(self, images: torch.Tensor) -> torch.Tensor:
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last(images.device) else images


def _weights_key(module: nn.Module) -> tuple:
    """Changes whenever a weight or buffer is replaced, moved, cast or modified in place
    (re-initialised, loaded, edited): tensors count their in-place changes in `_version`."""
    return tuple((t.data_ptr(), _version(t), t.dtype, t.device) for t in (*module.parameters(), *module.buffers()))


def _version(tensor: torch.Tensor) -> int:
    if tensor.is_inference():  # made under inference_mode: no counter, and never changed outside it
        return -1
    return tensor._version


def prepare_for_inference(model, precision: str | None = "auto"):
    """Give `model` (an INTR) the inference path in `precision` ("auto", "fp32", "bf16") on its
    device, and put it in eval mode. Returns the model. Its weights are not changed."""
    model.inference = InferencePath(resolve_precision(precision, model.device))
    return model.eval()
