"""One image's explanation: predictions plus each class query's cross-attention maps (Qt-free).

`Explainer.encode` runs the backbone and encoder once; `Explainer.decode` runs only the decoder,
so switching the class shown, the layer, or the candidate set never repeats the expensive part.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import torch

from .model import INTR, EncodedImages
from .preprocess import MIN_IMAGE_SIZE, TYPE_RANGES, dtype_problem, layout_problem, resized_shape

NORMALIZATIONS = ("per_map", "shared", "none")
# Images this many times larger (per side) than the model input are block-averaged in numpy
# first: converting a 20 000 px RGB image to float32 in one go needs gigabytes.
SHRINK_FACTOR_THRESHOLD = 2
_SHRINK_BAND_ROWS = 64  # output rows per block-averaging pass, bounds the temporary memory


def layer_name(image: str, class_name: str, layer: int, head: int | None) -> str:
    """Layer and file names, 1-based as in the paper (L6 is the last of 6 layers)."""
    what = "mean" if head is None else f"H{head}"
    return f"{image} · {class_name} · L{layer} {what}"


@dataclass(eq=False)  # holds tensors: identity, not element-wise, comparison
class EncodedImage:
    """Encoder memory of one image plus what is needed to place its maps on the original image."""
    encoded: EncodedImages
    image_name: str
    image_shape: tuple[int, int]  # (H, W) of the original image
    input_shape: tuple[int, int]  # (H', W') fed to the model
    notes: list[str] = field(default_factory=list)


@dataclass(eq=False)  # holds arrays: identity, not element-wise, comparison
class Explanation:
    image_name: str
    class_names: list[str]     # the decoded classes, in decode order
    class_indices: list[int]   # their indices in model.class_names
    logits: np.ndarray         # [C'] float32
    probabilities: np.ndarray  # [C'] softmax over the decoded classes
    attention: np.ndarray      # [layers, heads, C', h, w] float32, each map sums to 1 (see attention_layers)
    image_shape: tuple[int, int]
    input_shape: tuple[int, int]
    feature_stride: int
    mode: str
    model_name: str
    notes: list[str] = field(default_factory=list)
    class_labels: list[str] | None = None  # as exports write them ("001.Black_footed_Albatross")
    # Shortlist decoding: how many candidate classes the first pass scored; only the
    # `class_names` were decoded (probabilities are over those). None: every candidate decoded.
    candidates: int | None = None
    # The 0-based decoder layers on attention's first axis, when only some were computed (the
    # layer shown or saved), and how many layers the decoder has. None: every layer, in order.
    attention_layers: list[int] | None = None
    decoder_layers: int | None = None

    def labels(self) -> list[str]:
        """The decoded classes' labels for files (their names when the model has no labels)."""
        return list(self.class_labels) if self.class_labels is not None else list(self.class_names)

    @property
    def undecoded(self) -> int:
        """Candidate classes the decoder did not run on (shortlist decoding), 0 otherwise."""
        return 0 if self.candidates is None else self.candidates - len(self.class_names)

    @property
    def num_layers(self) -> int:
        """The decoder's layers (whether or not this explanation holds all their maps)."""
        return self.attention.shape[0] if self.decoder_layers is None else self.decoder_layers

    def computed_layers(self) -> list[int]:
        """The 0-based decoder layers whose maps this explanation holds."""
        return list(range(self.num_layers)) if self.attention_layers is None else list(self.attention_layers)

    def layer_maps(self, layer: int = -1) -> np.ndarray:
        """[heads, C', h, w]: every decoded class's maps at a decoder layer (Python index)."""
        index = self.layer_index(layer)
        held = self.computed_layers()
        if index not in held:
            kept = ", ".join(f"L{layer_number(i)}" for i in held)
            raise ValueError(f"the maps of decoder layer L{layer_number(index)} were not computed for this explanation "
                             f"(it holds {kept}); explain again asking for that layer")
        return self.attention[held.index(index)]

    @property
    def num_heads(self) -> int:
        return self.attention.shape[1]

    def order(self) -> list[int]:
        """Columns sorted by probability, highest first."""
        return [int(i) for i in np.argsort(-self.probabilities, kind="stable")]

    def top_class(self) -> str:
        return self.class_names[self.order()[0]]

    def rank_of(self, class_name: str) -> int:
        """1-based rank of a decoded class: 1 means the model picks it."""
        return self.order().index(self.column(class_name)) + 1

    def head_maps(self, class_name: str, layer: int = -1, normalization: str = "per_map") -> np.ndarray:
        """[heads, h, w]. per_map: each map min-max scaled to [0, 1], as the paper's figures;
        shared: divided by the largest weight of any head (compares heads); none: raw weights."""
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        maps = self.layer_maps(layer)[:, self.column(class_name)]
        if normalization == "none":
            return maps.copy()
        if normalization == "shared":
            peak = maps.max()
            return maps / peak if peak > 0 else np.zeros_like(maps)
        low = maps.min(axis=(1, 2), keepdims=True)
        span = maps.max(axis=(1, 2), keepdims=True) - low
        return np.divide(maps - low, span, out=np.zeros_like(maps), where=span > 0)

    def mean_map(self, class_name: str, layer: int = -1) -> np.ndarray:
        return self.layer_maps(layer)[:, self.column(class_name)].mean(axis=0)

    def head_order(self, class_name: str, layer: int = -1) -> list[int]:
        """Heads by their peak attention weight, highest first (the paper's "top maps")."""
        peaks = self.layer_maps(layer)[:, self.column(class_name)].max(axis=(1, 2))
        return [int(i) for i in np.argsort(-peaks, kind="stable")]

    def cell_size(self) -> tuple[float, float]:
        """Original-image pixels covered by one attention cell, per axis."""
        (height, width), (input_height, input_width) = self.image_shape, self.input_shape
        return (self.feature_stride * height / input_height, self.feature_stride * width / input_width)

    def grid_to_image(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """napari (scale, translate) placing an [h, w] map on the original image's pixel grid.

        napari puts pixel centres at integer coordinates, so the centre of a cell covering k
        image pixels sits at (k - 1) / 2."""
        cell = self.cell_size()
        return cell, tuple((k - 1) / 2 for k in cell)

    def upsample(self, maps: np.ndarray) -> np.ndarray:
        """[..., h, w] -> [..., H, W] bilinear on the original grid, consistent with grid_to_image.

        For large images prefer showing the [h, w] map with grid_to_image's scale/translate."""
        maps = np.asarray(maps, dtype=np.float32)
        rows = _interpolation_matrix(self.image_shape[0], maps.shape[-2], self.cell_size()[0])
        cols = _interpolation_matrix(self.image_shape[1], maps.shape[-1], self.cell_size()[1])
        return np.einsum("Yy,...yx,Xx->...YX", rows, maps, cols, optimize=True)

    def table(self) -> list[dict]:
        return [{"rank": rank, "name": self.class_names[column],
                 "probability": float(self.probabilities[column]), "logit": float(self.logits[column]),
                 "index": self.class_indices[column]}
                for rank, column in enumerate(self.order(), start=1)]

    def column(self, class_name: str) -> int:
        """Where a decoded class sits in class_names, probabilities and the attention's class axis."""
        try:
            return self.class_names.index(class_name)
        except ValueError:
            raise ValueError(f"{class_name!r} is not among the decoded classes "
                             f"({', '.join(self.class_names[:10])}{', …' if len(self.class_names) > 10 else ''}); "
                             "decode it as a candidate first") from None

    def layer_index(self, layer: int) -> int:
        """The 0-based decoder layer of a Python index (-1 = the last); ValueError when out of range."""
        return layer_index(layer, self.num_layers)

    def layer_number(self, layer: int) -> int:
        """The decoder layer of a Python index as people count it (L1 = the first)."""
        return layer_number(layer, self.num_layers)


# Decoder layers: 0-based Python indices inside (negative from the end), numbered from 1 for
# people (CLI options, layer names, reports, "L6"). These three functions convert between them.

def layer_index(layer: int, num_layers: int) -> int:
    """The 0-based decoder layer of a Python index (-1 = the last); ValueError when out of range."""
    if not -num_layers <= layer < num_layers:
        raise ValueError(f"layer {layer} is out of range: the decoder has {num_layers} layers "
                         f"(0..{num_layers - 1}, or -1 for the last)")
    return layer % num_layers


def layer_number(layer: int, num_layers: int | None = None) -> int:
    """A decoder layer as people count it (1 = the first) from a Python index; without
    `num_layers` the index must already be 0-based (e.g. a stored `layer_index`)."""
    if num_layers is None:
        if layer < 0:
            raise ValueError(f"layer {layer}: give the number of layers to count from the end")
        return layer + 1
    return layer_index(layer, num_layers) + 1


def layer_from_number(number: int | None, num_layers: int, option: str = "layer") -> int:
    """The 0-based decoder layer of `number` as people count it (1 = the first; -1 or None = the last)."""
    if number is None or number == -1:
        return num_layers - 1
    if not 1 <= number <= num_layers:
        raise ValueError(f"{option} {number} is out of range: the model's decoder has {num_layers} layers "
                         f"(1..{num_layers})")
    return number - 1


def _interpolation_matrix(size: int, cells: int, cell: float) -> np.ndarray:
    """[size, cells] linear-interpolation weights: pixel y sits at (y + 0.5) / cell - 0.5 in cells."""
    position = np.clip((np.arange(size) + 0.5) / cell - 0.5, 0, cells - 1)
    lower = np.floor(position).astype(int)
    upper = np.minimum(lower + 1, cells - 1)
    fraction = (position - lower).astype(np.float32)
    matrix = np.zeros((size, cells), dtype=np.float32)
    np.add.at(matrix, (np.arange(size), lower), 1 - fraction)
    np.add.at(matrix, (np.arange(size), upper), fraction)
    return matrix


def shrink_huge_image(image: np.ndarray, short_side: int, max_side: int) -> tuple[np.ndarray, str | None]:
    """Block-average an image far larger than the model input, band by band; returns (image, note).

    uint8/uint16/bool are scaled to [0, 1] floats as preprocessing would; other types keep their
    values (preprocessing stretches them to [0, 1] anyway)."""
    image = np.asarray(image)
    if layout_problem(image.shape, min_size=0) or dtype_problem(image.dtype):
        return image, None  # preprocessing explains what is wrong with the image
    height, width = image.shape[:2]
    if min(height, width) < SHRINK_FACTOR_THRESHOLD * MIN_IMAGE_SIZE:
        return image, None
    target_height, target_width = resized_shape(height, width, short_side, max_side)
    factor = min(height // target_height, width // target_width)
    if factor < SHRINK_FACTOR_THRESHOLD:
        return image, None
    scale = TYPE_RANGES.get(image.dtype, 1.0)
    out_height, out_width = height // factor, width // factor
    shrunk = np.empty((out_height, out_width, *image.shape[2:]), dtype=np.float32)
    for start in range(0, out_height, _SHRINK_BAND_ROWS):
        stop = min(start + _SHRINK_BAND_ROWS, out_height)
        band = image[start * factor: stop * factor, : out_width * factor]
        blocks = band.reshape(stop - start, factor, out_width, factor, *image.shape[2:])
        # float64 sums: float32 ones overflow on extreme values (e.g. a -3.4e38 no-data fill)
        shrunk[start:stop] = blocks.mean(axis=(1, 3), dtype=np.float64) / scale
    note = (f"image is {height}×{width} px: block-averaged {factor}× to {out_height}×{out_width} "
            "before the model's resize, to save memory")
    return shrunk, note


class Explainer:
    """Runs a model for explanations; caches nothing, callers keep the EncodedImage they want."""

    def __init__(self, model: INTR, model_name: str = "model"):
        self.model = model.eval()
        self.model_name = model_name

    def encode(self, image: np.ndarray, name: str = "image") -> EncodedImage:
        """Preprocess (the model's resize policy) and run backbone + encoder."""
        image = np.asarray(image)
        problem = layout_problem(image.shape, min_size=0)  # the size is checked after shrinking
        if problem:
            raise ValueError(problem)
        config = self.model.config
        shrunk, note = shrink_huge_image(image, config.short_side, config.max_side)
        notes = [note] if note else []
        with torch.inference_mode():
            inputs = self.model.preprocess(shrunk, notes)
            encoded = self.model.encode(inputs)
        return EncodedImage(encoded, name, tuple(image.shape[:2]), tuple(inputs.shape[-2:]), notes)

    def encode_many(self, images: list[np.ndarray], names: list[str]) -> list[EncodedImage | Exception]:
        """`encode` for several images, those of the same model-input size as one batch (what a
        GPU wants; napari_intr.batch says what the CPU wants). An image that cannot be explained
        gets its exception in its place; the others go on."""
        config, prepared, results = self.model.config, {}, [None] * len(images)
        with torch.inference_mode():
            for index, image in enumerate(images):
                try:
                    image = np.asarray(image)
                    problem = layout_problem(image.shape, min_size=0)
                    if problem:
                        raise ValueError(problem)
                    shrunk, note = shrink_huge_image(image, config.short_side, config.max_side)
                    notes = [note] if note else []
                    prepared[index] = (self.model.preprocess(shrunk, notes), tuple(image.shape[:2]), notes)
                except (ValueError, RuntimeError, MemoryError) as error:
                    results[index] = error
            groups: dict[tuple, list[int]] = {}
            for index, (inputs, _, _) in prepared.items():
                groups.setdefault(tuple(inputs.shape), []).append(index)
            for indices in groups.values():
                try:
                    encoded = self.model.encode(torch.cat([prepared[i][0] for i in indices]))
                except (ValueError, RuntimeError, MemoryError) as error:
                    for i in indices:  # one at a time: each image gets its own error, if any
                        try:
                            results[i] = self.encode(images[i], names[i]) if len(indices) > 1 else error
                        except (ValueError, RuntimeError, MemoryError) as own:
                            results[i] = own
                    continue
                for row, i in enumerate(indices):
                    inputs, shape, notes = prepared[i]
                    results[i] = EncodedImage(encoded.select([row]), names[i], shape, tuple(inputs.shape[-2:]), notes)
        return results

    def decode(self, encoded: EncodedImage, classes: Iterable[int | str] | None = None,
               mode: str = "drop", shortlist: int | None = None,
               layers: Iterable[int] | None = None) -> Explanation:
        """Decoder only (no backbone pass): for class, layer and candidate-set switches.
        shortlist K: decode only the first pass's top K candidates (see INTR.decode).
        layers: the decoder layers (Python indices) whose maps are computed and kept, e.g. the
        one shown or saved; the others run without materialising weights. None: every layer."""
        with torch.inference_mode():
            output = self.model.decode(encoded.encoded, classes, mode=mode, return_attention=True,
                                       shortlist=shortlist, attention_layers=layers)
        logits = output.logits[0].float()
        labels = getattr(self.model, "class_labels", self.model.class_names)
        notes = list(encoded.notes)
        if output.candidates is not None and output.candidates > len(output.classes):
            notes.append(shortlist_note(len(output.classes), output.candidates))
        return Explanation(
            image_name=encoded.image_name,
            class_names=[self.model.class_names[i] for i in output.classes],
            class_indices=list(output.classes),
            logits=logits.cpu().numpy(),
            probabilities=logits.softmax(-1).cpu().numpy(),
            attention=output.attention[:, 0].float().cpu().numpy(),  # [layers, heads, C', h, w]
            image_shape=encoded.image_shape,
            input_shape=encoded.input_shape,
            feature_stride=self.model.feature_stride,
            mode=mode,
            model_name=self.model_name,
            class_labels=[labels[i] for i in output.classes],
            notes=notes,
            candidates=output.candidates,
            attention_layers=None if layers is None else list(output.attention_layers),
            decoder_layers=None if layers is None else self.model.config.dec_layers,
        )

    def explain(self, image: np.ndarray, name: str = "image", classes: Iterable[int | str] | None = None,
                mode: str = "drop", shortlist: int | None = None,
                layers: Iterable[int] | None = None) -> Explanation:
        return self.decode(self.encode(image, name), classes, mode, shortlist, layers)


def shortlist_note(decoded: int, candidates: int) -> str:
    return (f"shortlist: the decoder ran on the first pass's top {decoded:,} of {candidates:,} classes; "
            f"the other {candidates - decoded:,} were not decoded (no probability, no maps)")
