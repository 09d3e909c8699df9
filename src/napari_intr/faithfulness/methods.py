"""Saliency maps of one INTR model for one class, all [H, W] float32 at the model input size.

Every method explains the same model, so insertion/deletion and the sanity checks compare the
explanations, not the classifiers. INTR's own explanation is a class query's cross-attention
(the head shown first, by evidence: napari_intr.head_evidence; or the mean over heads); Grad-CAM
and RISE are post-hoc.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from napari_intr.explanation import EncodedImage, Explainer
from napari_intr.model import INTR

INTR_TOP_HEAD, INTR_HEAD_MEAN, GRAD_CAM, RISE = "INTR top head", "INTR head mean", "Grad-CAM", "RISE"
METHODS = (INTR_TOP_HEAD, INTR_HEAD_MEAN, GRAD_CAM, RISE)
RISE_GRID = 7          # RISE's s: coarse mask cells per side
RISE_KEEP = 0.5        # RISE's p: probability a cell is kept
Score = Callable[[Tensor], Tensor]  # images [B, 3, H, W] -> probability of one class [B]


class ClassScore:
    """score(images) -> the softmax probability of one class, over `classes` (default: all).

    `device` tells the metric functions where to put images before calling it."""

    def __init__(self, model: INTR, class_index: int, classes: Sequence[int] | None = None,
                 mode: str = "drop", batch_size: int = 32):
        self.model, self.mode, self.batch_size = model, mode, batch_size
        self.classes = model.class_indices(classes)
        if class_index not in self.classes:
            raise ValueError(f"class {model.class_names[class_index]!r} is not among the candidates")
        self.column = self.classes.index(class_index)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def __call__(self, images: Tensor) -> Tensor:
        images = images.to(self.device)
        with torch.inference_mode():
            out = [self.model.decode(self.model.encode(chunk), self.classes, self.mode, return_attention=False)
                   .logits.float().softmax(-1)[:, self.column] for chunk in images.split(self.batch_size)]
        return torch.cat(out)


def device_of(score) -> torch.device | None:
    """Where a score function wants its inputs: its `device`, or its first parameter's."""
    device = getattr(score, "device", None)
    if device is not None:
        return torch.device(device)
    if isinstance(score, torch.nn.Module):
        parameter = next(score.parameters(), None)
        return None if parameter is None else parameter.device
    return None


def as_images(images, score) -> Tensor:
    """numpy or tensor [3, H, W] / [B, 3, H, W] -> float tensor [B, 3, H, W] on the score's device."""
    images = torch.as_tensor(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected an image [3, H, W] or batch [B, 3, H, W], got {list(images.shape)}")
    device = device_of(score)
    return images.float() if device is None else images.float().to(device)


def intr_maps(model: INTR, inputs: Tensor, class_index: int, layer: int = -1,
              classes: Sequence[int] | None = None, mode: str = "drop",
              on_grid: bool = False) -> dict[str, np.ndarray]:
    """The class query's cross-attention at `layer`: the head shown first (Explanation.head_order),
    and the mean over heads, each upsampled (bilinear, the plugin's cell geometry) to the input
    size; on_grid: the raw weights, one per feature cell (what the strict pointing game reads)."""
    inputs = as_images(inputs, model)
    explainer = Explainer(model)
    size = tuple(inputs.shape[-2:])
    with torch.inference_mode():
        encoded = EncodedImage(model.encode(inputs), "image", size, size)
    explanation = explainer.decode(encoded, classes, mode, layers=[layer], evidence=[class_index])
    name = model.class_names[class_index]
    top = explanation.head_order(name, layer)[0]
    maps = np.stack([explanation.head_maps(name, layer, "none")[top], explanation.mean_map(name, layer)])
    top_map, mean_map = maps if on_grid else explanation.upsample(maps)
    return {INTR_TOP_HEAD: top_map, INTR_HEAD_MEAN: mean_map}


CAPTUM_MISSING = ("the faithfulness evaluation compares INTR's attention with Grad-CAM, which needs captum: "
                  "pip install 'napari-intr[faithfulness]' (or pip install captum)")


def require_captum() -> None:
    """ImportError with what to install, before any long work starts, when captum is missing."""
    try:
        import captum  # noqa: F401
    except ImportError:
        raise ImportError(CAPTUM_MISSING) from None


def grad_cam(model: INTR, inputs: Tensor, class_index: int) -> np.ndarray:
    """captum's LayerGradCam on the backbone's last feature map, the class's logit as target."""
    require_captum()
    from captum.attr import LayerAttribution, LayerGradCam

    inputs = as_images(inputs, model)

    def logits(images):
        return model(images, return_attention=False).logits

    with torch.enable_grad():
        cam = LayerGradCam(logits, model.backbone[0].body).attribute(
            inputs.clone().requires_grad_(True), target=class_index, relu_attributions=True)
        cam = LayerAttribution.interpolate(cam.detach(), tuple(inputs.shape[-2:]), "bilinear")
    return cam[0, 0].float().cpu().numpy()


def rise(score: Score, inputs: Tensor, masks: int, seed: int = 0, batch_size: int = 32) -> np.ndarray:
    """RISE (Petsiuk et al. 2018): the expected class probability under random coarse masks,
    sum_i score(I ⊙ M_i) M_i / (N p). Masked pixels become 0 in normalised space (the mean colour)."""
    if masks < 1:
        raise ValueError(f"RISE needs at least 1 mask, got {masks}")
    images = as_images(inputs, score)
    height, width = images.shape[-2:]
    generator = torch.Generator().manual_seed(seed)
    cell = (int(np.ceil(height / RISE_GRID)), int(np.ceil(width / RISE_GRID)))
    saliency = torch.zeros(height, width, dtype=torch.float64)
    for start in range(0, masks, batch_size):
        count = min(batch_size, masks - start)
        grid = (torch.rand(count, 1, RISE_GRID, RISE_GRID, generator=generator) < RISE_KEEP).float()
        smooth = torch.nn.functional.interpolate(grid, size=((RISE_GRID + 1) * cell[0], (RISE_GRID + 1) * cell[1]),
                                                 mode="bilinear", align_corners=False)
        shifts = torch.randint(0, cell[0], (count,), generator=generator), torch.randint(0, cell[1], (count,),
                                                                                          generator=generator)
        batch = torch.stack([smooth[i, :, dy: dy + height, dx: dx + width]
                             for i, (dy, dx) in enumerate(zip(*shifts))])  # [b, 1, H, W]
        with torch.no_grad():
            probabilities = torch.as_tensor(score(images * batch.to(images.device))).double().cpu()
        saliency += (probabilities[:, None, None] * batch[:, 0].double()).sum(0)
    return (saliency / (masks * RISE_KEEP)).float().numpy()


def all_maps(model: INTR, inputs: Tensor, class_index: int, layer: int, rise_masks: int,
             seed: int = 0) -> dict[str, np.ndarray]:
    """Every method's map for one image and class, in METHODS order."""
    maps = intr_maps(model, inputs, class_index, layer)
    maps[GRAD_CAM] = grad_cam(model, inputs, class_index)
    maps[RISE] = rise(ClassScore(model, class_index), inputs, rise_masks, seed)
    return maps
