"""An official-layout INTR/DETR checkpoint and a reference forward pass, written independently of
napari_intr: key names come from torchvision's ResNet and DETR's transformer layout, the forward
uses torch.nn.MultiheadAttention sequence-first as the official code does."""
from __future__ import annotations

import argparse
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet
from torchvision.ops.misc import FrozenBatchNorm2d


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """These models are small: with two CPUs shared with other work, OpenMP's thread hand-offs
    cost far more than they give (a ResNet-50 forward at 64 px: 0.1 s on one thread, seconds on two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


DETR_COCO_CLASSES = 92  # 91 COCO ids + "no object"
BODY_CHANNELS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}


def official_args(**overrides) -> argparse.Namespace:
    """Training arguments as INTR's main.py pickles them (DETR's argument list)."""
    values = dict(
        lr=1e-4, lr_backbone=1e-5, min_lr=1e-6, batch_size=16, weight_decay=1e-4, epochs=140,
        lr_drop=80, lr_scheduler="StepLR", clip_max_norm=0.1, frozen_weights=None,
        backbone="resnet50", dilation=False, position_embedding="sine",
        enc_layers=6, dec_layers=6, dim_feedforward=2048, hidden_dim=256, dropout=0.1, nheads=8,
        num_queries=200, pre_norm=False, dataset_name="cub", dataset_path="/data/datasets",
        output_dir="output", device="cuda", seed=42, resume="checkpoints/detr-r50-e632da11.pth",
        start_epoch=0, finetune="", eval=False, num_workers=2, world_size=1, dist_url="env://",
        distributed=True, rank=0, gpu=0, dist_backend="nccl", test="val",
    )
    values.update(overrides)
    return argparse.Namespace(**values)


def _backbone_shapes(backbone: str) -> dict[str, torch.Size]:
    with torch.device("meta"):  # shapes only
        net = getattr(resnet, backbone)(weights=None)
    return {f"backbone.0.body.{name}": value.shape for name, value in net.state_dict().items()
            if not name.startswith("fc.") and not name.endswith("num_batches_tracked")}


def _attention_shapes(prefix: str, d: int) -> dict[str, tuple]:
    return {f"{prefix}.in_proj_weight": (3 * d, d), f"{prefix}.in_proj_bias": (3 * d,),
            f"{prefix}.out_proj.weight": (d, d), f"{prefix}.out_proj.bias": (d,)}


def _linear_shapes(prefix: str, d_in: int, d_out: int) -> dict[str, tuple]:
    return {f"{prefix}.weight": (d_out, d_in), f"{prefix}.bias": (d_out,)}


def _norm_shapes(prefix: str, d: int) -> dict[str, tuple]:
    return {f"{prefix}.weight": (d,), f"{prefix}.bias": (d,)}


def official_shapes(num_queries: int, backbone="resnet50", hidden_dim=256, enc_layers=6, dec_layers=6,
                    dim_feedforward=2048, detr=False) -> dict[str, tuple]:
    """Key -> shape of a released INTR checkpoint (or, with detr=True, of DETR's COCO checkpoint)."""
    d, ff = hidden_dim, dim_feedforward
    shapes = dict(_backbone_shapes(backbone))
    for i in range(enc_layers):
        p = f"transformer.encoder.layers.{i}"
        shapes.update(_attention_shapes(f"{p}.self_attn", d))
        shapes.update(_linear_shapes(f"{p}.linear1", d, ff))
        shapes.update(_linear_shapes(f"{p}.linear2", ff, d))
        for n in (1, 2):
            shapes.update(_norm_shapes(f"{p}.norm{n}", d))
    for i in range(dec_layers):
        p = f"transformer.decoder.layers.{i}"
        shapes.update(_attention_shapes(f"{p}.self_attn", d))
        shapes.update(_attention_shapes(f"{p}.multihead_attn", d))
        shapes.update(_linear_shapes(f"{p}.linear1", d, ff))
        shapes.update(_linear_shapes(f"{p}.linear2", ff, d))
        for n in (1, 2, 3):
            shapes.update(_norm_shapes(f"{p}.norm{n}", d))
    shapes.update(_norm_shapes("transformer.decoder.norm", d))
    shapes["input_proj.weight"] = (d, BODY_CHANNELS[backbone], 1, 1)
    shapes["input_proj.bias"] = (d,)
    shapes["query_embed.weight"] = (num_queries, d)
    if detr:
        shapes.update(_linear_shapes("class_embed", d, DETR_COCO_CLASSES))
        for n, d_out in enumerate((d, d, 4)):
            shapes.update(_linear_shapes(f"bbox_embed.layers.{n}", d, d_out))
    else:
        shapes.update(_linear_shapes("presence_vector", d, 1))
    return {key: tuple(shape) for key, shape in shapes.items()}


def random_state(shapes: dict[str, tuple], seed=0) -> dict[str, torch.Tensor]:
    """Random weights that keep activations in a sane range through a deep ResNet."""
    generator = torch.Generator().manual_seed(seed)

    def uniform(shape, low, high):
        return torch.rand(shape, generator=generator) * (high - low) + low

    state = {}
    for key, shape in shapes.items():
        leaf = key.rsplit(".", 1)[-1]
        is_batch_norm = key.startswith("backbone.") and len(shape) == 1
        if is_batch_norm:  # frozen BN buffers: weight, bias, running_mean, running_var
            value = uniform(shape, *{"weight": (0.5, 1.0), "bias": (-0.1, 0.1), "running_mean": (-0.2, 0.2),
                                     "running_var": (0.5, 1.5)}[leaf])
        elif ".norm" in key and leaf == "weight":
            value = uniform(shape, 0.8, 1.2)
        elif len(shape) == 1:
            value = uniform(shape, -0.1, 0.1)
        elif key == "query_embed.weight":
            value = torch.randn(shape, generator=generator)
        else:  # He init in the ResNet; smaller gains keep the post-norm transformer from saturating
            gain = math.sqrt(2) if key.startswith("backbone.") else 0.3 if key.startswith("input_proj") else 0.7
            value = torch.randn(shape, generator=generator) * gain / math.sqrt(math.prod(shape[1:]))
        state[key] = value
    return state


def official_checkpoint(state: dict[str, torch.Tensor], args: argparse.Namespace, epoch=3) -> dict:
    """The dict `torch.save`d by INTR's main.py: model, optimizer, scheduler, epoch, args."""
    names = list(state)[:3]
    optimizer = {
        "state": {i: {"step": torch.tensor(10.0), "exp_avg": torch.zeros_like(state[n]),
                      "exp_avg_sq": torch.zeros_like(state[n])} for i, n in enumerate(names)},
        "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-4,
                          "amsgrad": False, "foreach": None, "maximize": False, "capturable": False,
                          "differentiable": False, "fused": None, "params": list(range(len(names)))}],
    }
    scheduler = {"step_size": 80, "gamma": 0.1, "base_lrs": [1e-4, 1e-5], "last_epoch": epoch,
                 "_step_count": epoch + 1, "verbose": False, "_get_lr_called_within_step": False,
                 "_last_lr": [1e-4, 1e-5]}
    return {"model": state, "optimizer": optimizer, "lr_scheduler": scheduler, "epoch": epoch, "args": args}


def _sine_positions(mask: torch.Tensor, num_pos_feats: int, temperature=10000) -> torch.Tensor:
    """DETR's normalised PositionEmbeddingSine, [B, 2F, h, w]."""
    not_mask = (~mask).float()
    y = not_mask.cumsum(1)
    x = not_mask.cumsum(2)
    y = y / (y[:, -1:, :] + 1e-6) * 2 * math.pi
    x = x / (x[:, :, -1:] + 1e-6) * 2 * math.pi
    dim_t = temperature ** (2 * (torch.arange(num_pos_feats) // 2) / num_pos_feats)
    px, py = x[..., None] / dim_t, y[..., None] / dim_t
    px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=4).flatten(3)
    py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((py, px), dim=3).permute(0, 3, 1, 2)


def _mha(state, prefix, d, heads) -> nn.MultiheadAttention:
    attention = nn.MultiheadAttention(d, heads)  # sequence-first, as in DETR/INTR
    attention.load_state_dict({k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")})
    return attention.eval()


def _apply(state, prefix, x, kind):
    if kind == "linear":
        return F.linear(x, state[f"{prefix}.weight"], state[f"{prefix}.bias"])
    return F.layer_norm(x, x.shape[-1:], state[f"{prefix}.weight"], state[f"{prefix}.bias"])


@torch.no_grad()
def reference_forward(state: dict[str, torch.Tensor], args: argparse.Namespace, images: torch.Tensor,
                      positions_on_cross_attention_keys=False):
    """INTR's forward on an unpadded batch: logits [B, C], attention [layers, B, heads, C, h, w].

    positions_on_cross_attention_keys=True gives DETR's decoder instead (keys = memory + pos)."""
    d, heads = args.hidden_dim, args.nheads
    with torch.device("meta"):  # every weight comes from `state`
        body = getattr(resnet, args.backbone)(weights=None, norm_layer=FrozenBatchNorm2d)
    body.fc = nn.Identity()
    prefix = "backbone.0.body."
    body.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, assign=True)
    body.eval()
    x = body.maxpool(body.relu(body.bn1(body.conv1(images))))
    features = body.layer4(body.layer3(body.layer2(body.layer1(x))))
    batch, _, h, w = features.shape
    mask = torch.zeros(batch, h, w, dtype=torch.bool)
    pos = _sine_positions(mask, d // 2).flatten(2).permute(2, 0, 1)  # [hw, B, D]
    src = F.conv2d(features, state["input_proj.weight"], state["input_proj.bias"])
    src = src.flatten(2).permute(2, 0, 1)  # [hw, B, D]
    key_padding = mask.flatten(1)

    for i in range(args.enc_layers):
        p = f"transformer.encoder.layers.{i}"
        q = k = src + pos
        attended = _mha(state, f"{p}.self_attn", d, heads)(q, k, src, key_padding_mask=key_padding)[0]
        src = _apply(state, f"{p}.norm1", src + attended, "norm")
        ffn = _apply(state, f"{p}.linear2", F.relu(_apply(state, f"{p}.linear1", src, "linear")), "linear")
        src = _apply(state, f"{p}.norm2", src + ffn, "norm")
    memory = src

    query_pos = state["query_embed.weight"][:, None, :].repeat(1, batch, 1)  # [C, B, D]
    tgt = torch.zeros_like(query_pos)
    maps = []
    for i in range(args.dec_layers):
        p = f"transformer.decoder.layers.{i}"
        q = k = tgt + query_pos
        tgt = _apply(state, f"{p}.norm1", tgt + _mha(state, f"{p}.self_attn", d, heads)(q, k, tgt)[0], "norm")
        keys = memory + pos if positions_on_cross_attention_keys else memory
        found, weights = _mha(state, f"{p}.multihead_attn", d, heads)(
            tgt + query_pos, keys, memory, key_padding_mask=key_padding, average_attn_weights=False)
        maps.append(weights)  # [B, heads, C, hw]
        tgt = _apply(state, f"{p}.norm2", tgt + found, "norm")
        ffn = _apply(state, f"{p}.linear2", F.relu(_apply(state, f"{p}.linear1", tgt, "linear")), "linear")
        tgt = _apply(state, f"{p}.norm3", tgt + ffn, "norm")
    out = _apply(state, "transformer.decoder.norm", tgt, "norm")  # [C, B, D]
    logits = _apply(state, "presence_vector", out, "linear").squeeze(-1).transpose(0, 1)  # [B, C]
    attention = torch.stack(maps).unflatten(-1, (h, w))
    return logits, attention


def seeded_model(config, names=None, seed=0):
    """A model with random weights that, unlike a fresh init, gives clearly different logits and
    peaked maps per class, so that comparisons at 1e-5 mean something."""
    torch.manual_seed(seed)
    from napari_intr.model import build_model
    model = build_model(config, names).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name == "query_embed.weight":
                parameter.normal_()
            elif parameter.dim() > 1:
                gain = 1.0 if name.startswith("input_proj") else 2.0
                parameter.normal_(0, gain / math.sqrt(parameter[0].numel()))
        # fresh BatchNorm running stats are the identity; make them non-trivial so eval mode matters
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return model
