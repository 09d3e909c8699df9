"""Which head to show first: the one whose attended region the class's score depends on most.

A head's map is an explanation only if what it looks at counts for the class. The peak weight
says where the head looks, not whether that matters: heads that park their mass on one token of
the background (an attention sink) have the highest peaks and point at nothing. So heads are
ranked by their *evidence*: hide the region a head attends (its peak cell and the cells around
it, MASK_RADIUS each way) from the cross-attention keys and measure how much the class's logit
falls against its rival's (the likeliest other decoded class). It is the masking test of the
trait atlas's pair view, per image. Heads whose region costs the class nothing (drop <= 0), or
that put their mass on registers rather than pixels, are flagged and never ranked first.

`rank_heads` is the one ordering rule: the Explorer, the Compare dock, the TIFF's `top_heads`,
`intr eval --explanations` and the atlas all use it.

Each decoder layer's evidence costs a masked decoder call (as much as the decode itself, or
more), so an explanation measures a layer's evidence when it is first asked for
(`LayerEvidence`): the Explorer measures the layer it shows, the others when the user switches to
them; files get the layers they write.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

from .model import INTR, EncodedImages

MASK_RADIUS = 1       # cells hidden around a head's peak, each way (the atlas's masking test)
NO_EVIDENCE = "no evidence"             # hiding its region does not lower the class against the rival
ON_REGISTERS = "on registers"           # most of its mass on register tokens, not on pixels
OFF_SPECIMEN = "off the specimen"       # its peak is not on the specimen (where a specimen mask is known)
REGISTER_SHARE_FLAG = 0.5


@dataclass(frozen=True)
class HeadEvidence:
    """One class's heads at one decoder layer, for one image."""
    drops: np.ndarray            # [heads] fall of logit(class) - logit(rival) with the head's region hidden
    rival: int | None            # model class index of the rival (None: the class was decoded alone)
    flags: tuple[str | None, ...]  # per head: why it is never shown first, or None

    def order(self) -> list[int]:
        return rank_heads(self.drops, self.flags)


def rank_heads(drops, flags=None) -> list[int]:
    """Heads, shown first to last: unflagged heads by their drop (largest first), then the flagged
    ones by their drop; ties by head number."""
    drops = np.asarray(drops, dtype=np.float64)
    flags = [None] * len(drops) if flags is None else list(flags)
    if len(flags) != len(drops):
        raise ValueError(f"{len(flags)} flags for {len(drops)} heads")
    keyed = [(flags[h] is not None, -drops[h] if np.isfinite(drops[h]) else np.inf, h) for h in range(len(drops))]
    return [h for *_, h in sorted(keyed)]


def flags_of(drops, register_share=None, on_specimen=None) -> tuple[str | None, ...]:
    """Each head's flag (see module doc); register_share [heads] in [0, 1] for models with
    registers, on_specimen [heads] bool where a specimen mask is known."""
    drops = np.asarray(drops, dtype=np.float64)
    flags: list[str | None] = []
    for head, drop in enumerate(drops):
        if register_share is not None and register_share[head] > REGISTER_SHARE_FLAG:
            flags.append(ON_REGISTERS)
        elif on_specimen is not None and not on_specimen[head]:
            flags.append(OFF_SPECIMEN)
        elif not drop > 0:
            flags.append(NO_EVIDENCE)
        else:
            flags.append(None)
    return tuple(flags)


def peak_regions(maps: np.ndarray, radius: int = MASK_RADIUS) -> np.ndarray:
    """[heads, h, w] maps -> [heads, h·w] bool: the (2r+1)² cells around each map's peak."""
    maps = np.asarray(maps)
    heads, rows, cols = maps.shape
    peak_rows, peak_cols = np.divmod(maps.reshape(heads, -1).argmax(axis=1), cols)
    regions = np.zeros((heads, rows, cols), dtype=bool)
    for head, (row, col) in enumerate(zip(peak_rows, peak_cols)):
        regions[head, max(row - radius, 0): row + radius + 1, max(col - radius, 0): col + radius + 1] = True
    return regions.reshape(heads, -1)


def rival_of(logits: np.ndarray, column: int) -> int | None:
    """The column of the likeliest other decoded class (None when only one was decoded)."""
    logits = np.asarray(logits, dtype=np.float64)
    if len(logits) < 2:
        return None
    others = np.where(np.arange(len(logits)) == column, -np.inf, logits)
    return int(np.argmax(others))


def masking_drops(model: INTR, encoded: EncodedImages, targets: list[tuple[int, int | None]],
                  maps: np.ndarray, radius: int = MASK_RADIUS) -> np.ndarray:
    """[K, heads]: for each target (class index, rival index or None) and each head, how much
    logit(class) - logit(rival) falls when that head's peak region (from `maps` [K, heads, h, w],
    the target class's maps) is hidden from the keys; without a rival, the fall of the class's
    logit. One image (`encoded` holds one). The targets and rivals are decoded together (drop
    mode), once as they are and once per (target, head), in one decoder call."""
    if encoded.memory.shape[0] != 1:
        raise ValueError(f"masking_drops explains one image at a time, got a batch of {encoded.memory.shape[0]}")
    maps = np.asarray(maps)
    if maps.ndim != 4 or len(maps) != len(targets):
        raise ValueError(f"maps must be [targets, heads, h, w] for {len(targets)} targets, got {maps.shape}")
    classes = list(dict.fromkeys(i for pair in targets for i in pair if i is not None))
    regions = np.concatenate([peak_regions(target_maps, radius) for target_maps in maps])  # [K·heads, h·w]
    rows = len(regions) + 1
    hidden = torch.from_numpy(np.concatenate([np.zeros_like(regions[:1]), regions])).to(model.device)
    padding = encoded.padding_mask.expand(rows, -1) | hidden
    padding[padding.all(dim=1)] = False  # nothing left to attend to: no test (drop 0)
    cached = None if encoded.cross_key_values is None else [
        (k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in encoded.cross_key_values]
    batch = EncodedImages(encoded.memory.expand(rows, -1, -1), padding, encoded.grid, encoded.input_size, cached)
    with torch.inference_mode():
        logits = model.decode(batch, classes, "drop", return_attention=False).logits.float().cpu().numpy()
    heads = maps.shape[1]
    drops = np.empty((len(targets), heads))
    for k, (target, rival) in enumerate(targets):
        margins = logits[:, classes.index(target)] - (logits[:, classes.index(rival)] if rival is not None else 0.0)
        drops[k] = margins[0] - margins[1 + k * heads: 1 + (k + 1) * heads]
    return drops


def head_evidence(model: INTR, encoded: EncodedImages, targets: list[tuple[int, int | None]], maps: np.ndarray,
                  register_share=None, on_specimen=None) -> list[HeadEvidence]:
    """The evidence of each target's heads (`maps` [K, heads, h, w] at one decoder layer) on one
    image; register_share / on_specimen: per target, per head, where known (see flags_of)."""
    drops = masking_drops(model, encoded, targets, maps)
    return [HeadEvidence(d, rival, flags_of(d, None if register_share is None else register_share[k],
                                            None if on_specimen is None else on_specimen[k]))
            for k, (d, (_, rival)) in enumerate(zip(drops, targets))]


class LayerEvidence:
    """The evidence of an explanation's ranked classes, measured one decoder layer at a time, the
    first time a layer is asked for (Explanation.head_evidence), then kept in the explanation's
    `evidence`. Each layer is its own decoder call, so a layer's evidence is the same whether it
    was measured first, last or alone. Thread-safe: a save job and the GUI may ask at once. Lives
    as long as its explanation: a new image or a new class set is a new explanation."""

    def __init__(self, model: INTR, encoded: EncodedImages, columns: list[int],
                 targets: list[tuple[int, int | None]], layers: list[int]):
        self.model, self.encoded = model, encoded
        self.columns, self.targets = columns, targets  # class columns of the explanation; (class, rival) indices
        self.pending = set(layers)  # 0-based decoder layers held but not measured yet
        self._lock = threading.Lock()

    def measure(self, explanation, layers) -> None:
        """Measure these 0-based layers of `explanation` (an Explanation) where still pending."""
        with self._lock:
            for layer in layers:
                if layer not in self.pending:
                    continue
                held = explanation.computed_layers().index(layer)
                maps = explanation.layer_maps(layer)[:, self.columns].transpose(1, 0, 2, 3)  # [K, heads, h, w]
                nothing = explanation.looks_at_nothing
                # heads that mostly look at nothing (null keys) are flagged, never shown first
                shares = None if nothing is None else nothing[held][:, self.columns].T  # [K, heads]
                measured = head_evidence(self.model, self.encoded, self.targets, maps, register_share=shares)
                explanation.evidence.update(((layer, column), found) for column, found in zip(self.columns, measured))
                self.pending.discard(layer)
