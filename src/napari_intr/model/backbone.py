"""Feature extractor f_theta (Fig. 2, left): a CNN whose last feature map becomes the image tokens."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .config import BACKBONE_FEATURES, VIT_BACKBONES, IntrConfig
from .position_encoding import PositionEmbeddingSine
from .vit_backbone import ViTBackbone


def _frozen_batch_norm():
    # torchvision.ops pulls in its compiled extension; import it only when a ResNet is built.
    from torchvision.ops.misc import FrozenBatchNorm2d
    return FrozenBatchNorm2d


class ResNetBody(nn.Module):
    """torchvision ResNet up to layer4 (stride 32), frozen batch norm, as DETR-R50's backbone.

    Attribute names (conv1, bn1, layer1..4) match DETR's state dict under `backbone.0.body`.
    """

    def __init__(self, name: str):
        super().__init__()
        from torchvision.models import resnet
        net = getattr(resnet, name)(weights=None, norm_layer=_frozen_batch_norm())
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        # DETR trains layer2-4 only; the stem and layer1 keep their pretrained weights.
        for module in (self.conv1, self.bn1, self.layer1):
            module.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _conv_block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class TinyBody(nn.Sequential):
    """A small CNN for CPU work. Stride 8 rather than 32 so that the ~128 px images it is
    meant for still give a 16x16 attention grid worth looking at."""

    def __init__(self):
        widths = (32, 64, 128)
        layers, c_in = [], 3
        for width in widths:
            layers += [_conv_block(c_in, width, 2), _conv_block(width, width, 1)]
            c_in = width
        super().__init__(*layers)


class Backbone(nn.Module):
    def __init__(self, name: str):
        super().__init__()
        self.body = TinyBody() if name == "tiny" else ResNetBody(name)
        self.num_channels, self.stride = BACKBONE_FEATURES[name]

    def forward(self, images: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """images [B, 3, H, W], mask [B, H, W] (True = padding) -> features [B, C, h, w], mask [B, h, w]."""
        features = self.body(images)
        feature_mask = F.interpolate(mask[None].float(), size=features.shape[-2:])[0].to(torch.bool)
        return features, feature_mask


class Joiner(nn.Sequential):
    """Backbone and positional encoding side by side, as DETR keeps them (keys `backbone.0.*`)."""

    def __init__(self, backbone: Backbone | ViTBackbone, position_embedding: PositionEmbeddingSine):
        super().__init__(backbone, position_embedding)
        self.num_channels = backbone.num_channels
        self.stride = backbone.stride

    def forward(self, images: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        features, feature_mask = self[0](images, mask)
        pos = self[1](feature_mask).to(features.dtype)
        return features, feature_mask, pos


def _is_batch_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.BatchNorm2d, _frozen_batch_norm()))


def _fold_children(module: nn.Module) -> None:
    """Fold each (conv, batch norm) pair among `module`'s children: consecutive in a Sequential
    (TinyBody's blocks, ResNet's downsample) or named convN / bnN (ResNet's stem and bottlenecks)."""
    children = dict(module.named_children())
    pairs = list(zip(children, list(children)[1:])) if isinstance(module, nn.Sequential) else [
        (name, "bn" + name[4:]) for name in children if name.startswith("conv") and "bn" + name[4:] in children]
    for conv_name, norm_name in pairs:
        conv, norm = children[conv_name], children[norm_name]
        if isinstance(conv, nn.Conv2d) and _is_batch_norm(norm):
            setattr(module, conv_name, fuse_conv_bn_eval(conv, norm))  # duck-typed: FrozenBatchNorm2d too
            setattr(module, norm_name, nn.Identity())
    for child in module.children():
        _fold_children(child)


def folded_batch_norm(backbone: Backbone | ViTBackbone) -> Backbone | ViTBackbone:
    """A copy of a FROZEN backbone (eval mode, weights fixed) with every batch norm folded into
    the convolution before it: the same function, but in bf16 autocast the frozen batch norm's
    separate float32 arithmetic (and the casts around it) was a large part of resnet50's forward
    on the CPU (benchmarks/RESULTS.md). For computing features only: train and save `backbone`.
    A backbone without batch norm (a ViT) is returned itself: nothing to fold, and no copy of
    its weights (a gigabyte for ViT-L)."""
    if not any(_is_batch_norm(module) for module in backbone.modules()):
        return backbone
    folded = copy.deepcopy(backbone).eval()
    with torch.no_grad():
        _fold_children(folded.body)
    return folded.requires_grad_(False)


def build_backbone(config: IntrConfig) -> Joiner:
    body = ViTBackbone(config.backbone) if config.backbone in VIT_BACKBONES else Backbone(config.backbone)
    return Joiner(body, PositionEmbeddingSine(config.hidden_dim // 2))
