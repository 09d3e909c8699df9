"""Feature extractor f_theta (Fig. 2, left) as a foundation ViT: DINOv2 ViT-S/14 and ViT-B/14 (with
and without registers) and BioCLIP 2's ViT-L/14 image tower, built by timm.

The feature map INTR's encoder reads is the ViT's last layer of patch tokens (after its final
norm), laid back on the 14-px patch grid: cell (i, j) is the patch of input pixels
[14i, 14i+14) x [14j, 14j+14). The class token and DINOv2's register tokens are dropped.

Padding: a ViT's tokens attend to each other over the whole image, so features of a padded batch
would depend on the other images in it. Each image is therefore encoded on its own unpadded extent
(same-size images together), padded only up to the next multiple of 14; its feature map then sits
in the batch's top-left corner, the rest masked. A cell is an image cell when its patch's first
pixel is: the last row and column may hold a partial patch, zero-padded (the mean colour).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..preprocess import IMAGENET_MEAN, IMAGENET_STD
from .config import BACKBONE_FEATURES

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ViTArchitecture:
    timm_name: str           # timm's architecture (built with random weights, never downloaded by timm)
    mean: tuple[float, ...]  # the normalisation the weights were trained with
    std: tuple[float, ...]


ARCHITECTURES = {
    "dinov2-vits14": ViTArchitecture("vit_small_patch14_dinov2", IMAGENET_MEAN, IMAGENET_STD),
    "dinov2-vits14-reg": ViTArchitecture("vit_small_patch14_reg4_dinov2", IMAGENET_MEAN, IMAGENET_STD),
    "dinov2-vitb14": ViTArchitecture("vit_base_patch14_dinov2", IMAGENET_MEAN, IMAGENET_STD),
    "dinov2-vitb14-reg": ViTArchitecture("vit_base_patch14_reg4_dinov2", IMAGENET_MEAN, IMAGENET_STD),
    # open_clip's ViT-L-14 (GELU, pre-norm) from LAION-2B, which BioCLIP 2 continued to train
    "bioclip2-vitl14": ViTArchitecture("vit_large_patch14_clip_224", CLIP_MEAN, CLIP_STD),
}


def build_vit(name: str) -> nn.Module:
    """timm's VisionTransformer for backbone `name`, random weights, any input size (multiple of
    its patch) by interpolating the positional embedding (`dynamic_img_size`)."""
    import timm
    return timm.create_model(ARCHITECTURES[name].timm_name, pretrained=False, num_classes=0,
                             dynamic_img_size=True)


class ViTBackbone(nn.Module):
    """Patch tokens of a foundation ViT as INTR's feature map (stride = patch size = 14)."""

    def __init__(self, name: str):
        super().__init__()
        architecture = ARCHITECTURES[name]
        self.body = build_vit(name)
        self.num_channels, self.stride = BACKBONE_FEATURES[name]
        if self.body.patch_embed.patch_size != (self.stride, self.stride):
            raise ValueError(f"{name}: timm's {architecture.timm_name} has patches of "
                             f"{self.body.patch_embed.patch_size}, not {self.stride} px")
        # Images arrive normalised with ImageNet's statistics (preprocess.py); the CLIP weights
        # want their own: an affine map per channel, x' = x * scale + shift. Plain numbers, not
        # buffers: fixed by the architecture, and a model built on the meta device (checkpoints.
        # model_from_state) gets them without a state dict.
        self.scale = [s / t for s, t in zip(IMAGENET_STD, architecture.std)]
        self.shift = [(m - n) / t for m, n, t in zip(IMAGENET_MEAN, architecture.mean, architecture.std)]
        self.renormalise = architecture.mean != IMAGENET_MEAN or architecture.std != IMAGENET_STD

    def to_backbone_normalisation(self, images: Tensor) -> Tensor:
        """ImageNet-normalised images -> normalised as the backbone's weights were trained."""
        if not self.renormalise:
            return images
        scale, shift = (torch.tensor(v, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
                        for v in (self.scale, self.shift))
        return images * scale + shift

    def patch_tokens(self, images: Tensor) -> Tensor:
        """images [B, 3, H, W] (backbone-normalised, H and W multiples of 14) -> [B, C, H/14, W/14]."""
        height, width = images.shape[-2] // self.stride, images.shape[-1] // self.stride
        tokens = self.body.forward_features(images)[:, self.body.num_prefix_tokens:]  # [B, h*w, C]
        return tokens.transpose(1, 2).unflatten(-1, (height, width))

    def forward(self, images: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """images [B, 3, H, W], mask [B, H, W] (True = padding, bottom and right) -> features
        [B, C, ceil(H/14), ceil(W/14)], mask of the same grid."""
        batch, _, height, width = images.shape
        grid = (math.ceil(height / self.stride), math.ceil(width / self.stride))
        features = images.new_zeros(batch, self.num_channels, *grid)
        feature_mask = torch.ones(batch, *grid, dtype=torch.bool, device=images.device)
        valid = ~mask
        rows, columns = valid.any(dim=2).sum(dim=1).tolist(), valid.any(dim=1).sum(dim=1).tolist()
        extents: dict[tuple[int, int], list[int]] = {}
        for index, extent in enumerate(zip(rows, columns)):
            if min(extent) == 0:
                raise ValueError(f"image {index} of the batch is all padding: its mask has no image pixel")
            extents.setdefault(extent, []).append(index)
        for (h, w), indices in extents.items():
            index = torch.as_tensor(indices, device=images.device)
            crop = self.to_backbone_normalisation(images[index, :, :h, :w])
            cells_h, cells_w = math.ceil(h / self.stride), math.ceil(w / self.stride)
            crop = F.pad(crop, (0, cells_w * self.stride - w, 0, cells_h * self.stride - h))
            tokens = self.patch_tokens(crop)
            features[index, :, :cells_h, :cells_w] = tokens.to(features.dtype)
            feature_mask[index, :cells_h, :cells_w] = False
        return features, feature_mask
