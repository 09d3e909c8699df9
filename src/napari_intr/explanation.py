"""One image's explanation: predictions plus each class query's cross-attention maps (Qt-free).

`Explainer.encode` runs the backbone and encoder once; `Explainer.decode` runs only the decoder,
so switching the class shown, the layer, or the candidate set never repeats the expensive part.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import torch

from .calibration import SUBSET_NOTE, CalibratedPrediction, judge
from .head_evidence import HeadEvidence, LayerEvidence, rival_of
from .model import INTR, EncodedImages
from .preprocess import MIN_IMAGE_SIZE, TYPE_RANGES, dtype_problem, layout_problem, resized_shape

NORMALIZATIONS = ("per_map", "shared", "none")
# Images this many times larger (per side) than the model input are block-averaged in numpy
# first: converting a 20 000 px RGB image to float32 in one go needs gigabytes.
SHRINK_FACTOR_THRESHOLD = 2
# Classes whose heads are ranked by evidence (head_evidence.py) at each layer held: the likeliest
# this many decoded classes (the one shown first); the others by peak weight. Each more class
# costs about as much again (benchmarks/RESULTS.md, issue 21: 1.24x the explain time for 1 class,
# 1.42x for 3, bundled model, loaded 2-core CPU); callers that show another class ask for it.
EVIDENCE_CLASSES = 1
_SHRINK_BAND_ROWS = 64  # output rows per block-averaging pass, bounds the temporary memory


def short_class_name(name: str) -> str:
    """A class name as short as it can be without losing what tells look-alikes apart, for layer
    names, drop-downs and canvas labels (the full name goes into tooltips and files). A binomial
    ("Heliconia synthetica-rubra") drops its genus, which relatives share, and keeps the epithet
    ("synthetica-rubra"); other names ("Black-footed Albatross", "012") stay whole."""
    genus, _, epithet = name.strip().partition(" ")
    if genus[:1].isupper() and genus.isalpha() and epithet[:1].islower():
        return epithet
    return name


def layer_name(image: str, class_name: str, layer: int, head: int | None) -> str:
    """The name of a layer that shows `class_name`'s query attending over `image`, 1-based as in the
    paper (L6 is the last of 6 layers): "alba_0004 ◂ query synthetica-rubra · L2 H4". The image
    comes first and the query is marked, so a map of rubra's query on the alba image never reads
    as a map of the rubra image; the class is shortened so the end that differs stays in view."""
    what = "mean" if head is None else f"H{head}"
    return f"{image} ◂ query {short_class_name(class_name)} · L{layer} {what}"


_WORD = re.compile(r"[^\W_]+")  # letters and digits; spaces, "-", "_", "." and brackets separate


def image_tags(names) -> dict[str, str]:
    """For each image name, the part that tells it from the other names, for layer names that
    napari's narrow layer list elides: the words it shares at its start and at its end with a
    related image are dropped ("Heliconia synthetica-alba (synthetic)" beside "... -rubra
    (synthetic)" is "alba"; "heliconia-synthetica-alba_0004" beside "..._0005" and "...-rubra_0002"
    is "alba_0004"; "... -rubra (synthetic) (edited)" is "rubra (edited)"). An image that shares
    no first (last) word with any other keeps its start (end); one whose part would be the same
    as another's keeps its whole name."""
    names = list(dict.fromkeys(names))
    spans = {name: [match.span() for match in _WORD.finditer(name)] for name in names}
    tags = {}
    for name in names:
        words = [name[a:b].casefold() for a, b in spans[name]]
        starts, ends = [], []
        for other in names:
            if other == name:
                continue
            others = [other[a:b].casefold() for a, b in spans[other]]
            shortest = min(len(words), len(others))
            lead = next((i for i in range(shortest) if words[i] != others[i]), None)
            if lead is None:  # one name extends the other ("x", "x copy"): nothing shared to drop
                continue
            trail = next((i for i in range(shortest - lead) if words[-1 - i] != others[-1 - i]), shortest - lead)
            if lead:
                starts.append(lead)
            if trail:
                ends.append(len(words) - trail)
        start, end = min(starts, default=0), max(ends, default=len(words))
        if start >= end:
            tags[name] = name
            continue
        begin = 0 if start == 0 else spans[name][start][0]
        finish = len(name) if end == len(words) else spans[name][end - 1][1]
        tags[name] = name[begin:finish]
    for name in sorted(names, key=len):  # "X (edited)" beside X: X's part and what was added ("rubra (edited)")
        base = max((other for other in names if other != name and name.startswith(other)), key=len, default=None)
        if base is not None and tags[base] != base:
            tags[name] = tags[base] + name[len(base):]
    repeated = {tag for tag in tags.values() if list(tags.values()).count(tag) > 1}
    return {name: name if tag in repeated else tag for name, tag in tags.items()}


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
    attention: np.ndarray      # [layers, heads, C', h, w] float32, pixels only (see attention_layers, looks_at_nothing)
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
    # Known species or "none of the N species", and the conformal prediction set, when the model
    # is calibrated and every class was a candidate (napari_intr.calibration); None otherwise.
    calibrated: CalibratedPrediction | None = None
    # [layers, heads, C'] (the layers of `attention`): each map's weight on the model's learned null
    # keys, the share of the head that "looks at nothing" in this image; a map then sums to 1 minus
    # it. Never drawn as a pixel. None: the model has no null keys (every map sums to 1).
    looks_at_nothing: np.ndarray | None = None

    @property
    def rejected(self) -> bool:
        """True when a calibrated model finds none of its species in the image."""
        return self.calibrated is not None and not self.calibrated.known

    # The heads' evidence (head_evidence.py) per (0-based layer, class column), where it was
    # measured (Explainer.decode: the likeliest classes at each layer held); head_order ranks by it.
    evidence: dict = field(default_factory=dict)
    # The layers whose evidence is measured when first asked for (head_evidence); None: none left.
    unmeasured: LayerEvidence | None = field(default=None, repr=False)
    # The decoder layers left out (Explainer.decode(layers=[…])): decoded when first asked for
    # (every_layer); None: every layer is held, or nothing is left to decode them from.
    other_layers: OtherLayers | None = field(default=None, repr=False)

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

    def holding(self, layer: int = -1) -> Explanation | None:
        """An explanation of this image and class set that holds `layer`'s maps, without decoding:
        this one, or its every_layer() once that was decoded; None otherwise."""
        if self.layer_index(layer) in self.computed_layers():
            return self
        other = self.other_layers
        return None if other is None else other.decoded

    def every_layer(self) -> Explanation:
        """This image and class set with every decoder layer's maps: this explanation when it
        holds them all, else one decode of every layer on the same encoder memory (the numbers
        Explainer.decode(layers=None) gives), run the first time it is asked for, then kept.
        A decoder call: run it on a worker, never on the GUI thread."""
        if self.attention_layers is None:
            return self
        if self.other_layers is None:
            raise ValueError("this explanation holds only some decoder layers and nothing to decode the others "
                             "from; explain the image again with every layer")
        return self.other_layers.decode()

    def evidence_pending(self, class_name: str, layer: int = -1) -> bool:
        """Whether head_evidence(class_name, layer) would run a decoder call (not measured yet)."""
        unmeasured = self.unmeasured
        return (unmeasured is not None and self.column(class_name) in unmeasured.columns
                and self.layer_index(layer) in unmeasured.pending)

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
        return min_max(maps, axis=(1, 2))

    def mean_map(self, class_name: str, layer: int = -1) -> np.ndarray:
        return self.layer_maps(layer)[:, self.column(class_name)].mean(axis=0)

    def head_order(self, class_name: str, layer: int = -1) -> list[int]:
        """Heads as they are shown, first to last ("strongest first"): by their evidence for the
        class (head_evidence.rank_heads: what hiding each head's attended region costs the class
        against its rival; flagged heads last). For a class whose evidence was not measured (not
        among the likeliest decoded), by peak attention weight, highest first."""
        found = self.head_evidence(class_name, layer)
        if found is not None:
            return found.order()
        peaks = self.layer_maps(layer)[:, self.column(class_name)].max(axis=(1, 2))
        return [int(i) for i in np.argsort(-peaks, kind="stable")]

    def head_evidence(self, class_name: str, layer: int = -1) -> HeadEvidence | None:
        """The evidence of a class's heads at a layer, or None where it is not measured (a class
        not ranked by evidence); a layer Explainer.decode left for later is measured now, once."""
        column, unmeasured = self.column(class_name), self.unmeasured
        if unmeasured is not None and column in unmeasured.columns:
            self.measure_evidence([layer])
        return self.evidence.get((self.layer_index(layer), column))

    def measure_evidence(self, layers: Iterable[int] | None = None) -> None:
        """Measure the evidence of these decoder layers (Python indices; None: every layer held)
        where Explainer.decode left it for later. Each layer is measured once."""
        unmeasured = self.unmeasured  # another thread (a save job) may finish it meanwhile
        if unmeasured is not None:
            wanted = self.computed_layers() if layers is None else [self.layer_index(layer) for layer in layers]
            unmeasured.measure(self, wanted)
            if not unmeasured.pending:
                self.unmeasured = None  # lets the model and the encoder memory go

    def nothing_share(self, class_name: str, layer: int = -1) -> np.ndarray | None:
        """[heads]: the share of each head's attention on the null keys ("looks at nothing here"),
        for a model with null keys; None otherwise. Never part of the maps."""
        if self.looks_at_nothing is None:
            return None
        self.layer_maps(layer)  # refuses a layer that was not computed
        held = self.computed_layers().index(self.layer_index(layer))
        return self.looks_at_nothing[held][:, self.column(class_name)]

    def ranking_basis(self, class_name: str, layer: int = -1) -> str:
        """How head_order ranked this class's heads, in words for tooltips and exports."""
        found = self.head_evidence(class_name, layer)
        if found is None:
            return "peak attention weight (evidence not measured for this class)"
        rival = "" if found.rival is None else f" against {self.model_class_name(found.rival)}"
        return f"evidence: fall of the class's logit{rival} when the head's attended region is hidden"

    def model_class_name(self, index: int) -> str:
        """A model class index's name, where it was decoded; else 'class <index>'."""
        return self.class_names[self.class_indices.index(index)] if index in self.class_indices else f"class {index}"

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


def min_max(values: np.ndarray, axis: int | tuple[int, ...] | None = None) -> np.ndarray:
    """Scaled to [0, 1] (over `axis`: per map with axis=(1, 2) of [heads, h, w]); all zeros where
    the values are flat. The one rule for every map people see as "min-max" (per_map maps, the
    mean map, exported heat maps)."""
    values = np.asarray(values, dtype=np.result_type(values, np.float32))
    low = values.min(axis=axis, keepdims=True)
    span = values.max(axis=axis, keepdims=True) - low
    return np.divide(values - low, span, out=np.zeros_like(values), where=span > 0)


# Decoder layers and heads: 0-based Python indices inside (layers negative from the end), numbered
# from 1 for people (CLI options, layer names, reports, "L6 H3"). These functions convert between them.

def head_number(head: int) -> int:
    """A head as people count it (H1 = the first) from its 0-based index."""
    return head + 1


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
        GPU wants; napari_intr.collection.explain says what the CPU wants). An image that cannot be explained
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
               layers: Iterable[int] | None = None, evidence: int | Iterable[int | str] = EVIDENCE_CLASSES,
               evidence_layers: Iterable[int] | None = None) -> Explanation:
        """Decoder only (no backbone pass): for class, layer and candidate-set switches.
        shortlist K: decode only the first pass's top K candidates (see INTR.decode).
        layers: the decoder layers (Python indices) whose maps are computed and kept, e.g. the
        one shown or saved; the others run without materialising weights. None: every layer.
        evidence: rank the heads of the likeliest this many decoded classes by their evidence
        (head_evidence.py; 0: none), or of the classes named.
        evidence_layers: the layers whose evidence is measured now, e.g. the one shown (a masked
        decoder call each); the other layers' when first asked for (Explanation.head_evidence),
        the same numbers. None: every layer held, now."""
        # iterated again for the other layers (OtherLayers); one name or index stays as it is
        if classes is not None and not isinstance(classes, (str, int, np.integer)):
            classes = list(classes)
        if not isinstance(evidence, (str, int, np.integer)):
            evidence = list(evidence)
        with torch.inference_mode():
            output = self.model.decode(encoded.encoded, classes, mode=mode, return_attention=True,
                                       shortlist=shortlist, attention_layers=layers)
        logits = output.logits[0].float()
        labels = getattr(self.model, "class_labels", self.model.class_names)
        notes = list(encoded.notes)
        if output.candidates is not None and output.candidates > len(output.classes):
            notes.append(shortlist_note(len(output.classes), output.candidates))
        calibrated = self.judge(output.classes, logits, output.candidates, output.features[0])
        if calibrated is None and getattr(self.model, "calibration", None) is not None:
            notes.append(SUBSET_NOTE)
        explanation = Explanation(
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
            calibrated=calibrated,
            looks_at_nothing=None if output.null_attention is None else output.null_attention[:, 0].float().cpu().numpy(),
        )
        explanation.unmeasured = self._evidence(encoded, explanation, evidence)
        if layers is not None and explanation.attention_layers != list(range(explanation.num_layers)):
            explanation.other_layers = OtherLayers(lambda: self.decode(encoded, classes, mode, shortlist, None,
                                                                       evidence, evidence_layers=()))
        explanation.measure_evidence(evidence_layers)
        return explanation

    def _evidence(self, encoded: EncodedImage, explanation: Explanation, wanted) -> LayerEvidence | None:
        """The evidence to measure, layer by layer, for the classes `wanted` (a count of the
        likeliest, or names); None when no class is ranked by evidence."""
        if isinstance(wanted, (int, np.integer)) and not isinstance(wanted, bool):
            columns = explanation.order()[:max(int(wanted), 0)]
        else:
            columns = [explanation.column(self.model.class_names[i]) for i in self.model.class_indices(wanted)]
        columns = [c for c in columns if np.isfinite(explanation.logits[c])]  # a shortlist may leave some out
        if not columns:
            return None
        rivals = [rival_of(explanation.logits, column) for column in columns]
        targets = [(explanation.class_indices[c], None if r is None else explanation.class_indices[r])
                   for c, r in zip(columns, rivals)]
        # one decoder call per layer, [K, heads, h, w] each: a layer's evidence (and so its order)
        # never depends on which other layers were computed, nor when (a batch's size changes the last bits)
        return LayerEvidence(self.model, encoded.encoded, columns, targets, explanation.computed_layers())

    def judge(self, classes: list[int], logits: torch.Tensor, candidates: int | None,
              features: torch.Tensor) -> CalibratedPrediction | None:
        """The calibrated verdict when every class of the model was a candidate (a shortlist's
        undecoded classes count with no probability). features: [C', D] decoder outputs."""
        names = self.model.class_names
        if len(classes) != len(names) and candidates != len(names):
            return None
        index = torch.as_tensor(classes)
        full = torch.full((len(names),), float("-inf"))
        full[index] = logits.cpu()
        full_features = torch.full((len(names), features.shape[-1]), float("nan"))
        full_features[index] = features.float().cpu()
        return judge(getattr(self.model, "calibration", None), full.numpy(), names, full_features.numpy())

    def explain(self, image: np.ndarray, name: str = "image", classes: Iterable[int | str] | None = None,
                mode: str = "drop", shortlist: int | None = None,
                layers: Iterable[int] | None = None, evidence: int | Iterable[int | str] = EVIDENCE_CLASSES,
                evidence_layers: Iterable[int] | None = None) -> Explanation:
        return self.decode(self.encode(image, name), classes, mode, shortlist, layers, evidence, evidence_layers)


class OtherLayers:
    """The maps of the decoder layers an explanation left out: one decode of every layer on the
    same encoder memory and class set (its evidence measured when asked for, as always), the first
    time they are asked for, then kept. Thread-safe: a layer switch's job and a save job may ask
    at once; the second waits for the first's decode. Lives as long as its explanation."""

    def __init__(self, decode):
        self._decode = decode  # () -> Explanation of every layer; dropped once run
        self._lock = threading.Lock()
        self.decoded: Explanation | None = None

    def decode(self) -> Explanation:
        with self._lock:
            if self.decoded is None:
                self.decoded, self._decode = self._decode(), None
            return self.decoded


def shortlist_note(decoded: int, candidates: int) -> str:
    return (f"shortlist: the decoder ran on the first pass's top {decoded:,} of {candidates:,} classes; "
            f"the other {candidates - decoded:,} were not decoded (no probability, no maps)")
