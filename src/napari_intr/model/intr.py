"""INTR (Fig. 2): backbone -> projection -> encoder -> decoder with one query per class -> presence vector."""
from __future__ import annotations

import difflib
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..preprocess import MIN_IMAGE_SIZE, to_model_input
from .backbone import build_backbone
from .config import DECODE_MODES, IntrConfig
from .local_attention import local_attention_mask
from .names import normal_name, without_repeats
from .shortlist import ShortlistHead, first_pass_scores
from .transformer import Transformer


@dataclass
class EncodedImages:
    """Encoder memory of a batch: computed once per image, reused for every class set."""
    memory: Tensor        # [B, h*w, D]
    padding_mask: Tensor  # [B, h*w], True on padding
    grid: tuple[int, int]  # (h, w) of the feature map
    input_size: tuple[int, int]  # (H, W) of the (padded) model input
    # Per decoder layer, the cross-attention keys and values of `memory`: they do not depend
    # on the class queries, so inference computes them once per image, not once per class set.
    cross_key_values: list | None = field(default=None, repr=False)

    def select(self, rows: Sequence[int]) -> EncodedImages:
        """The images at `rows` (a sub-batch), sharing cached keys and values."""
        index = torch.as_tensor(list(rows), device=self.memory.device)
        cached = None if self.cross_key_values is None else [
            (k[index], v[index]) for k, v in self.cross_key_values]
        return EncodedImages(self.memory[index], self.padding_mask[index], self.grid, self.input_size, cached)


@dataclass
class IntrOutput:
    logits: Tensor            # [B, C'] for the classes asked for, in that order
    attention: Tensor | None  # [layers, B, heads, C', h, w], the weights on pixels (sum 1 - null_attention)
    classes: list[int]        # indices into model.class_names of the C' columns
    input_size: tuple[int, int]
    # Shortlist decoding: how many candidate classes the first pass scored (the decoder saw
    # only `classes`); None when every candidate was decoded.
    candidates: int | None = None
    # [B, C'] first-pass scores of the decoded classes, when asked for (training the head).
    first_pass_logits: Tensor | None = None
    # The 0-based decoder layers whose maps `attention` holds, in order along its first axis.
    attention_layers: list[int] | None = None
    # [B, C', D] the decoder's output z_out per class (what the presence vector scores, Eq. 6),
    # float32; NaN where an image's decoder did not run (shortlist). The open-set score's feature.
    features: Tensor | None = None
    # [layers, B, heads, C']: each map's weight on the learned null keys (IntrConfig.null_keys), the
    # share of the head that "looks at nothing" here; never part of `attention`. None without null keys.
    null_attention: Tensor | None = None

    def probabilities(self) -> Tensor:
        return self.logits.softmax(dim=-1)


class INTR(nn.Module):
    def __init__(self, config: IntrConfig, class_names: Sequence[str] | None = None):
        super().__init__()
        self.config = config
        self.backbone = build_backbone(config)
        self.input_proj = nn.Conv2d(self.backbone.num_channels, config.hidden_dim, kernel_size=1)
        self.transformer = Transformer(config)
        self.query_embed = nn.Embedding(config.num_classes, config.hidden_dim)  # Z_in, one per class
        self.presence_vector = nn.Linear(config.hidden_dim, 1)  # w in Eq. 6
        self.shortlist_head = ShortlistHead(config.hidden_dim) if config.shortlist_head else None
        self.class_names = [normal_name(str(name)) for name in class_names] if class_names is not None else [
            f"class {i}" for i in range(config.num_classes)]
        if len(self.class_names) != config.num_classes:
            raise ValueError(f"the model has {config.num_classes} classes but {len(self.class_names)} "
                             "class names were given; give one name per class")
        self._class_labels: list[str] | None = None
        # The open-set threshold and conformal quantile (napari_intr.calibration.Calibration), from
        # the checkpoint; None: not calibrated, every image is named as one of the classes.
        self.calibration = None
        # napari_intr.inference.InferencePath (set by prepare_for_inference, as load_model does):
        # batch norm folded, channels-last, bf16 autocast where native. None: the model as it is.
        self.inference = None

    def inference_path(self):
        """The inference path when it applies (eval mode, no autograd), else None."""
        if self.inference is None or self.training or torch.is_grad_enabled():
            return None
        return self.inference

    def inference_precision(self):
        """Autocast of the inference path (bf16 where chosen) when it applies, else a no-op."""
        path = self.inference_path()
        return nullcontext() if path is None else path.autocast(self.device)

    @property
    def class_labels(self) -> list[str]:
        """The classes as their list writes them ("001.Black_footed_Albatross"), for exports;
        the names (`class_names`) are what people read. Without a list of labels, the names."""
        labels = self._class_labels
        return list(labels) if labels is not None and len(labels) == len(self.class_names) else list(self.class_names)

    @class_labels.setter
    def class_labels(self, labels: Sequence[str] | None) -> None:
        if labels is not None and len(labels) != len(self.class_names):
            raise ValueError(f"{len(labels)} class labels for {len(self.class_names)} classes")
        self._class_labels = None if labels is None else [normal_name(str(label)) for label in labels]

    @property
    def device(self) -> torch.device:
        return self.query_embed.weight.device

    @property
    def feature_stride(self) -> int:
        return self.backbone.stride

    def preprocess(self, image: np.ndarray, notes: list[str] | None = None) -> Tensor:
        """A numpy image (H×W, H×W×3, H×W×4; uint8, uint16 or float) -> normalised [1, 3, H', W'];
        what preprocessing had to decide (e.g. a robust intensity stretch) is appended to `notes`."""
        return to_model_input(image, self.config.short_side, self.config.max_side, notes).to(self.device)

    def encode(self, images: Tensor, mask: Tensor | None = None) -> EncodedImages:
        """Backbone and encoder: images [B, 3, H, W] (normalised), mask [B, H, W] True on padding."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W], got {list(images.shape)}")
        images = self._checked_images(images)
        height, width = images.shape[-2:]
        if min(height, width) < MIN_IMAGE_SIZE:
            raise ValueError(f"image is {height}×{width} px; INTR needs at least "
                             f"{MIN_IMAGE_SIZE} px on each side")
        if mask is None:
            mask = torch.zeros(images.shape[0], height, width, dtype=torch.bool, device=images.device)
        elif mask.shape != (images.shape[0], height, width) or mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor [B, H, W] = {[images.shape[0], height, width]}, "
                             f"got {mask.dtype} {list(mask.shape)}")
        path = self.inference_path()
        if path is None:
            features, feature_mask, pos = self.backbone(images, mask)
            return self.encode_features(features, feature_mask, (height, width), pos)
        with path.autocast(self.device):
            features, feature_mask = path.backbone(self.backbone[0])(path.images(images), mask)
            encoded = self.encode_features(features, feature_mask, (height, width))
        encoded.memory = encoded.memory.float()  # kept across decodes; callers may decode without autocast
        return encoded

    def _checked_images(self, images: Tensor) -> Tensor:
        """Normalised images of any real floating type, in the model's type; anything else refused
        with what encode needs (integers are pixels, not normalised values: converting them
        silently would give a confident wrong answer)."""
        if not torch.is_floating_point(images):
            raise ValueError(f"encode takes normalised floating-point images (float32, float64, float16 or "
                             f"bfloat16), got {images.dtype}; napari_intr.preprocess.to_model_input makes "
                             "them from pixels of any type")
        bad = (~torch.isfinite(images)).sum().item()
        if bad:
            raise ValueError(f"the images hold {bad} NaN or infinite values (of {images.numel()}); replace "
                             "them (e.g. torch.nan_to_num) before encoding")
        return images.to(next(self.parameters()).dtype)

    def encode_features(self, features: Tensor, feature_mask: Tensor,
                        input_size: tuple[int, int] | None = None, pos: Tensor | None = None) -> EncodedImages:
        """Projection and encoder on backbone feature maps [B, C, h, w] (mask [B, h, w], True on
        padding): the second half of `encode`, for features computed earlier (a frozen backbone's
        cache in training)."""
        if pos is None:
            pos = self.backbone[1](feature_mask).to(features.dtype)
        src = self.input_proj(features)
        grid = tuple(src.shape[-2:])
        src, pos = src.flatten(2).transpose(1, 2), pos.flatten(2).transpose(1, 2)  # [B, hw, D]
        padding_mask = feature_mask.flatten(1)
        local = local_attention_mask(grid, self.config.encoder_window, src.device, padding_mask)
        # a local mask holds the padding too (local_attention.py: no token is left without keys)
        memory = self.transformer.encoder(src, _mask_if_padded(padding_mask) if local is None else None, pos, local)
        if input_size is None:
            input_size = (grid[0] * self.feature_stride, grid[1] * self.feature_stride)
        return EncodedImages(memory, padding_mask, grid, input_size)

    def decode(self, encoded: EncodedImages, classes: Iterable[int | str] | None = None,
               mode: str = "drop", return_attention: bool = True, shortlist: int | None = None,
               shortlist_context: bool = True, attention_layers: Iterable[int] | None = None) -> IntrOutput:
        """Decoder and presence vector for the candidate classes only, in the order given.

        mode "drop": only the candidates' queries enter the decoder (they attend among
        themselves). mode "zero": all queries enter, the others' embeddings set to zero
        vectors, as the paper's Fig. 6.
        shortlist K: the first pass (model/shortlist.py) scores every candidate, and the decoder
        runs in drop mode on each image's top K only, kept in the candidates' order; with
        K >= the number of candidates this is the plain drop-mode decode. Images of a batch
        whose shortlists differ are decoded apart; the output's columns are then the union of
        the shortlists, with logit -inf (and zero maps) where an image's decoder did not run.
        shortlist_context: in layer 2 the decoded classes' query self-attention also attends to
        every other candidate's layer-1 output (which the first pass computes anyway): layer 2
        then sees exactly what it sees in the full decode. Layers 3 and up attend among the
        shortlist only, as drop mode. A 2-layer decoder thus gives the full decode's logits and
        maps for the shortlisted classes. False: plain drop mode on the shortlist.
        attention_layers: with return_attention, the decoder layers (Python indices, -1 = the
        last) whose maps are computed and returned, e.g. the one shown; the other layers run the
        fused attention without materialising weights. None: every layer.
        """
        if mode not in DECODE_MODES:
            raise ValueError(f"mode must be one of {DECODE_MODES}, got {mode!r}")
        indices = self.class_indices(classes)
        layers = self.decoder_layers(attention_layers) if return_attention else None
        with self.inference_precision():
            if shortlist is not None:
                output = self._decode_shortlist(encoded, indices, mode, layers, shortlist, shortlist_context)
            else:
                output = self._decode(encoded, indices, mode, layers)
        if self.inference_path() is not None:  # bf16 autocast: the results in float32
            output.logits = output.logits.float()
            output.features = None if output.features is None else output.features.float()
            output.attention = None if output.attention is None else output.attention.float()
            output.null_attention = None if output.null_attention is None else output.null_attention.float()
        if output.attention is not None:
            output.attention_layers = layers
        return output

    def decoder_layers(self, layers: Iterable[int] | None = None) -> list[int]:
        """Python indices of decoder layers (-1 = the last) -> sorted 0-based indices; None: all."""
        count = self.config.dec_layers
        if layers is None:
            return list(range(count))
        if isinstance(layers, (int, np.integer)):
            layers = [layers]
        chosen = set()
        for layer in layers:
            if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not -count <= layer < count:
                raise ValueError(f"decoder layer {layer!r} is out of range: the decoder has {count} layers "
                                 f"(0..{count - 1}, or -1 for the last)")
            chosen.add(int(layer) % count)
        if not chosen:
            raise ValueError("attention_layers is empty: name at least one decoder layer, or None for all")
        return sorted(chosen)

    def _decode(self, encoded: EncodedImages, indices: list[int], mode: str, layers: list[int] | None,
                context: tuple[Tensor, Tensor] | None = None) -> IntrOutput:
        index_tensor = torch.as_tensor(indices, device=self.device)
        queries = self.query_embed.weight
        if mode == "drop":
            queries = queries[index_tensor]
        else:
            keep = torch.zeros(len(queries), 1, dtype=queries.dtype, device=self.device)
            keep[index_tensor] = 1
            queries = queries * keep
        batch = encoded.memory.shape[0]
        key_values = self._cached_key_values(encoded)
        z_out, weights = self.transformer.decoder(
            queries.unsqueeze(0).expand(batch, -1, -1), encoded.memory, _mask_if_padded(encoded.padding_mask),
            layers is not None, key_values, context, layers)
        logits = self.presence(z_out)  # Eq. 6: w^T z_out per class
        if mode == "zero":
            logits = logits[:, index_tensor]
            z_out = z_out[:, index_tensor]
            weights = None if weights is None else weights[:, :, :, index_tensor]
        attention = nothing = None
        if weights is not None:
            pixels = encoded.grid[0] * encoded.grid[1]
            attention = weights[..., :pixels].unflatten(-1, encoded.grid)
            if self.config.null_keys:
                nothing = weights[..., pixels:].sum(dim=-1)
        return IntrOutput(logits, attention, indices, encoded.input_size, features=z_out, null_attention=nothing)

    def presence(self, z_out: Tensor) -> Tensor:
        """Eq. 6's logits [B, C'] from the decoder's output [B, C', D]. On the inference path in
        float32 even under bf16 autocast: a dot product per class is cheap, and bf16's 8-bit
        mantissa would round nearly tied logits together (a different top-1)."""
        if self.inference_path() is None:
            return self.presence_vector(z_out).squeeze(-1)
        with torch.autocast(self.device.type, enabled=False):
            return self.presence_vector(z_out.float()).squeeze(-1)

    def _cached_key_values(self, encoded: EncodedImages) -> list | None:
        if torch.is_grad_enabled():
            return None
        if encoded.cross_key_values is None:
            encoded.cross_key_values = self.transformer.decoder.cross_key_values(encoded.memory)
        return encoded.cross_key_values

    def first_pass(self, encoded: EncodedImages, classes: Iterable[int | str] | None = None,
                   states: list | None = None) -> Tensor:
        """The shortlist's cheap score of each class: [B, C'] for the classes given (default all).
        states: a list that receives every class's layer-1 output [B, C', D]."""
        index = torch.as_tensor(self.class_indices(classes), device=self.device)
        with self.inference_precision():
            key_values = self._cached_key_values(encoded)
            scores = first_pass_scores(self.transformer.decoder, self.presence_vector, self.shortlist_head,
                                       self.query_embed.weight[index], encoded.memory, encoded.padding_mask,
                                       None if key_values is None else key_values[0], states=states)
        return scores if self.inference_path() is None else scores.float()

    def _decode_shortlist(self, encoded: EncodedImages, indices: list[int], mode: str, layers: list[int] | None,
                          shortlist: int, with_context: bool = True) -> IntrOutput:
        if isinstance(shortlist, bool) or not isinstance(shortlist, (int, np.integer)) or shortlist < 1:
            raise ValueError(f"shortlist must be a whole number of classes, at least 1, got {shortlist!r}")
        if mode != "drop":
            raise ValueError("a shortlist is decoded in drop mode (the other classes' queries are left out); "
                             f"mode {mode!r} would run every class's query")
        states = [] if with_context else None
        scores = self.first_pass(encoded, indices, states)
        top = scores.topk(min(int(shortlist), len(indices)), dim=-1).indices.sort(dim=-1).values.tolist()
        groups: dict[tuple[int, ...], list[int]] = {}
        for row, positions in enumerate(top):
            groups.setdefault(tuple(positions), []).append(row)

        def context(positions: tuple[int, ...], rows: list[int]) -> tuple[Tensor, Tensor] | None:
            """The layer-1 outputs and queries of the candidates left out of this decode."""
            if not with_context or len(positions) == len(indices):
                return None
            left_out = torch.ones(len(indices), dtype=torch.bool)
            left_out[list(positions)] = False
            where = left_out.nonzero().squeeze(1).to(self.device)
            rows_t = torch.as_tensor(rows, device=self.device)
            queries = self.query_embed.weight[torch.as_tensor(indices, device=self.device)[where]]
            return states[0][rows_t][:, where], queries.unsqueeze(0).expand(len(rows), -1, -1)

        if len(groups) == 1:
            positions, rows = next(iter(groups.items()))
            output = self._decode(encoded, [indices[p] for p in positions], mode, layers,
                                  context(positions, rows))
            output.candidates = len(indices)
            return output
        union = sorted({p for positions in groups for p in positions})
        column = {p: c for c, p in enumerate(union)}
        batch = encoded.memory.shape[0]
        logits = encoded.memory.new_full((batch, len(union)), float("-inf"))
        features = encoded.memory.new_full((batch, len(union), encoded.memory.shape[-1]), float("nan"))
        attention = nothing = None
        for positions, rows in groups.items():
            part = self._decode(encoded.select(rows), [indices[p] for p in positions], mode, layers,
                                context(positions, rows))
            rows_t = torch.as_tensor(rows, device=logits.device)
            columns = torch.as_tensor([column[p] for p in positions], device=logits.device)
            logits[rows_t[:, None], columns] = part.logits
            features[rows_t[:, None], columns] = part.features.to(features.dtype)
            if part.attention is not None:
                if attention is None:
                    shape = list(part.attention.shape)
                    shape[1], shape[3] = batch, len(union)
                    attention = part.attention.new_zeros(shape)
                # advanced indices on dims 1 and 3 move to the front: [rows, columns, layers, heads, h, w]
                attention[:, rows_t[:, None], :, columns] = part.attention.permute(1, 3, 0, 2, 4, 5)
            if part.null_attention is not None:
                if nothing is None:
                    nothing = part.null_attention.new_zeros(attention.shape[:4])
                nothing[:, rows_t[:, None], :, columns] = part.null_attention.permute(1, 3, 0, 2)
        return IntrOutput(logits, attention, [indices[p] for p in union], encoded.input_size, len(indices),
                          features=features, null_attention=nothing)

    def forward(self, images: Tensor, mask: Tensor | None = None, return_attention: bool = True,
                choose_classes: Callable[[INTR, EncodedImages], list[int]] | None = None,
                first_pass: bool = False, from_features: bool = False) -> IntrOutput:
        """The whole model. choose_classes(model, encoded) -> the classes to decode (drop mode;
        default all): sampled-query training picks them from the encoder memory. first_pass: also
        return the first-pass scores of the decoded classes (training the shortlist head).
        from_features: `images` are backbone feature maps and `mask` theirs (`encode_features`)."""
        encoded = self.encode_features(images, mask) if from_features else self.encode(images, mask)
        classes = None if choose_classes is None else choose_classes(self, encoded)
        output = self.decode(encoded, classes, return_attention=return_attention)
        if first_pass:
            output.first_pass_logits = self.first_pass(encoded, output.classes)
        return output

    def class_indices(self, classes: Iterable[int | str] | None) -> list[int]:
        """Class names or indices -> indices, with a clear message for anything unknown."""
        if classes is None:
            return list(range(self.config.num_classes))
        if isinstance(classes, (str, int, np.integer)):
            classes = [classes]
        indices = []
        for item in classes:
            if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
                if not 0 <= item < self.config.num_classes:
                    raise ValueError(f"class index {item} is out of range: the model has "
                                     f"{self.config.num_classes} classes (0..{self.config.num_classes - 1})")
                indices.append(int(item))
            elif isinstance(item, str):
                indices.append(self._index_of_name(item))
            else:
                raise TypeError(f"classes must be names or indices, got {item!r}")
        if not indices:
            raise ValueError("no candidate classes given: name at least one class")
        return without_repeats(indices, "the candidate classes", lambda index: self.class_names[index])

    def _index_of_name(self, name: str) -> int:
        """Exact (after NFC), then the label, then loose ("black footed albatross",
        "Black_footed_Albatross"); a loose name that fits several classes is refused with them."""
        name = normal_name(name)
        for known in (self.class_names, self.class_labels):
            if name in known:
                return known.index(name)
        loose = {index for known in (self.class_labels, self.class_names)
                 for index, candidate in enumerate(known) if _loose(candidate) == _loose(name)}
        if len(loose) > 1:
            raise ValueError(f"class {name!r} is ambiguous: it matches {', '.join(repr(self.class_names[i]) for i in sorted(loose))} "
                             "when case, spaces and underscores are ignored; give the name exactly")
        if loose:
            return loose.pop()
        close = difflib.get_close_matches(name, self.class_names, n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown class {name!r}: the model has no class of that name{hint}")


def _loose(name: str) -> str:
    return " ".join(name.replace("_", " ").replace("-", " ").casefold().split())


def _mask_if_padded(padding_mask: Tensor) -> Tensor | None:
    """None when nothing is padding: attention then runs without a mask, which lets
    scaled_dot_product_attention take its fused kernels (several times faster on the CPU)."""
    return padding_mask if bool(padding_mask.any()) else None


def build_model(config: IntrConfig, class_names: Sequence[str] | None = None) -> INTR:
    return INTR(config, class_names)
