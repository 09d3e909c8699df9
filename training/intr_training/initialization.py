"""Where a run's weights start: from scratch, from DETR-R50's COCO weights (the paper), or from
an earlier INTR model (fine-tuning, possibly to another class set)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from napari_intr.checkpoints import load_state
from napari_intr.model import INTR, IntrConfig, build_model
from napari_intr.model.config import VIT_BACKBONES
from napari_intr.recipes import DEFAULT_BACKBONE, FREEZE_CHOICES, NEW_MODEL

from .train_settings import check_ranges

NEW_QUERY_NOISE = 0.1  # new classes start near the mean old query, spread by this fraction of its std


def default_init(backbone: str) -> str:
    return "detr-r50" if backbone == "resnet50" else "pretrained" if backbone in VIT_BACKBONES else "none"


def with_image_size(config: IntrConfig, short_side: int | None) -> IntrConfig:
    """Short side `short_side`, the max side scaled in proportion (800/1333 -> 400/666)."""
    if short_side is None:
        return config
    check_ranges({"image_size": short_side})
    if config.backbone in VIT_BACKBONES and short_side % 14:
        raise ValueError(f"--image-size must be a multiple of 14 px (the patch size) for {config.backbone}, got "
                         f"{short_side}: try {max(1, round(short_side / 14)) * 14}")
    return config.replace(short_side=short_side,
                          max_side=max(short_side, round(short_side * config.max_side / config.short_side)))


@dataclass
class Start:
    model: INTR
    description: str
    warnings: list[str] = field(default_factory=list)


def fine_tuned_queries(old: INTR, class_names: list[str], generator: torch.Generator
                       ) -> tuple[torch.Tensor, list[str]]:
    """Queries for `class_names`: an old class's own query where the name matches, else the mean
    old query plus small seeded noise. Returns the queries and the names that kept theirs."""
    old_queries = old.query_embed.weight.detach().cpu()
    mean, spread = old_queries.mean(0), old_queries.std(0) if len(old_queries) > 1 else old_queries.abs().mean(0)
    queries, kept = [], []
    for name in class_names:
        if name in old.class_names:
            queries.append(old_queries[old.class_names.index(name)])
            kept.append(name)
        else:
            queries.append(mean + NEW_QUERY_NOISE * spread * torch.randn(mean.shape, generator=generator))
    return torch.stack(queries), kept


def from_checkpoint(source: str, class_names: list[str], backbone: str | None, image_size: int | None,
                    generator: torch.Generator, dropout: float | None = None) -> Start:
    from napari_intr.loading import load_model
    old = load_model(source, device="cpu")
    warnings = []
    if backbone is not None and backbone != old.config.backbone:
        warnings.append(f"--backbone {backbone} ignored: the --init model {source} has a "
                        f"{old.config.backbone} backbone, and fine-tuning keeps it")
    config = with_image_size(old.config.replace(num_classes=len(class_names)), image_size)
    if dropout is not None:
        config = config.replace(dropout=dropout)
    model = build_model(config, class_names)
    state = old.state_dict()
    state["query_embed.weight"], kept = fine_tuned_queries(old, class_names, generator)
    load_state(model, state, source)
    new = len(class_names) - len(kept)
    description = (f"fine-tuning {source}: {len(kept)} of {len(class_names)} classes keep their query "
                   f"(matched by name), {new} new")
    return Start(model, description, warnings)


def initial_model(init: str | None, class_names: list[str], backbone: str | None, image_size: int | None,
                  generator: torch.Generator, dropout: float | None = None,
                  backbone_weights: str | None = None, encoder_window: int | None = None,
                  enc_layers: int | None = None, null_keys: int | None = None) -> Start:
    """The model a run starts from. Call after seeding: fresh weights come from torch's RNG.
    backbone_weights: with init "pretrained", the user's file of the backbone's published weights
    (default: the model cache's, downloaded on first use)."""
    shape = {"encoder_window": encoder_window, "enc_layers": enc_layers, "null_keys": null_keys}
    check_ranges({"dropout": dropout, **shape})  # called without TrainSettings too
    shape = {name: value for name, value in shape.items() if value is not None}
    init = init or default_init(backbone or DEFAULT_BACKBONE)
    if backbone_weights is not None and init != "pretrained":
        raise ValueError(f"--backbone-weights is for --init pretrained (a foundation backbone's published weights), "
                         f"not --init {init}")
    if init not in ("none", "detr-r50", "pretrained"):
        if shape:
            option = "--" + next(iter(shape)).replace("_", "-")
            raise ValueError(f"{option} shapes a new model; {init} keeps its own encoder and decoder: leave the "
                             "option out, or start from --init none")
        return from_checkpoint(init, class_names, backbone, image_size, generator, dropout)
    backbone = backbone or DEFAULT_BACKBONE
    # New models get the shortlist head (a few hundred parameters): shortlist decoding works on them.
    overrides = {"shortlist_head": True, **NEW_MODEL.get(backbone, {})}
    if dropout is not None:
        overrides["dropout"] = dropout
    overrides.update(shape)
    config = with_image_size(IntrConfig.for_backbone(backbone, len(class_names), **overrides), image_size)
    model = build_model(config, class_names)
    if init == "none":
        return Start(model, f"{backbone} from random weights")
    if init == "pretrained":
        if backbone not in VIT_BACKBONES:
            raise ValueError(f"--init pretrained fits the foundation backbones ({', '.join(VIT_BACKBONES)}), not "
                             f"--backbone {backbone}")
        from napari_intr.backbone_weights import load_backbone_weights, weights_file
        from napari_intr.zoo import _sha256, trust
        path = weights_file(backbone, backbone_weights)
        load_backbone_weights(model.backbone[0], path)
        if backbone_weights is None:  # the zoo's file, now known to load
            trust(path)
        return Start(model, f"{backbone} from its published weights ({path.name}, sha256 {_sha256(path)})")
    if backbone != "resnet50":
        raise ValueError(f"--init detr-r50 fits only --backbone resnet50 (got {backbone}); use --init none "
                         "or a checkpoint of the same backbone")
    from napari_intr import zoo
    from napari_intr.official import detr_initial_state
    path = zoo.fetch("detr-r50")
    load_state(model, detr_initial_state(path, model, generator), path)
    return Start(model, "resnet50 from DETR-R50 COCO weights (the paper's initialisation)")


def freeze(model: INTR, what: str | None) -> tuple[nn.Module, ...]:
    """Stop training the backbone ("backbone") or everything up to the decoder ("encoder");
    returns the frozen modules, which the engine keeps in eval mode."""
    if what in (None, "none"):
        return ()
    if what not in FREEZE_CHOICES:
        raise ValueError(f"--freeze must be one of {', '.join(FREEZE_CHOICES)}, got {what!r}")
    modules = (model.backbone,) if what == "backbone" else (
        model.backbone, model.input_proj, model.transformer.encoder)
    for module in modules:
        module.requires_grad_(False)
    return modules


def set_dropout(model: INTR, p: float) -> None:
    """The transformer's dropout (part of the recipe; weights do not depend on it)."""
    from napari_intr.model.attention import MultiheadAttention
    model.config = model.config.replace(dropout=p)
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
        elif isinstance(module, MultiheadAttention):
            module.dropout = p
