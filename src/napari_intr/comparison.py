"""Mimic comparison (the paper's Fig. 6): decode only a few candidate classes on cached memory.

With all C classes, each class query competes with every other one in the decoder's
self-attention; with the look-alike candidates only, the maps show what tells *them* apart.
`compare` runs the decoder twice at most (never the backbone) and keeps both explanations, so
a widget can show the candidates' maps side by side and, for the selected class, its maps with
all classes, with the candidates, and their difference.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from .explanation import EncodedImage, Explainer, Explanation

MIN_CANDIDATES = 2


def top_k_candidates(explanation: Explanation, k: int) -> list[str]:
    """Preset: the k most probable of the decoded classes, most probable first."""
    _check_k(k, len(explanation.class_names))
    return [explanation.class_names[column] for column in explanation.order()[:k]]


def most_confused_with(explanation: Explanation, class_name: str, k: int) -> list[str]:
    """Preset: `class_name` and the k - 1 classes the model most nearly confuses with it here.

    "Confused" is read off this image's logits: the classes whose logit is closest to the
    selected class's logit (ties go to the higher logit). When the selected class is the top-1,
    these are the runners-up; when it is not, they are the classes just above and below it —
    the ones a small change of the image would swap it with. Returns k names, selected first.
    """
    _check_k(k, len(explanation.class_names))
    selected = explanation.column(class_name)
    distance = np.abs(explanation.logits - explanation.logits[selected])
    others = [column for column in np.lexsort((-explanation.logits, distance)) if column != selected]
    return [explanation.class_names[selected]] + [explanation.class_names[c] for c in others[:k - 1]]


@dataclass(eq=False)  # holds arrays: identity, not element-wise, comparison
class Comparison:
    """The selected class decoded with all classes and with the candidates only (same memory)."""
    selected: str
    all_classes: Explanation  # every class of the model
    candidates: Explanation   # the candidates only, in the order given; probabilities sum to 1

    @property
    def candidate_names(self) -> list[str]:
        return self.candidates.class_names

    @property
    def mode(self) -> str:
        return self.candidates.mode

    def candidate_maps(self, layer: int = -1) -> np.ndarray:
        """[heads, C', h, w] raw attention of every candidate (a napari layer with a candidate axis)."""
        return self.candidates.layer_maps(layer).copy()

    def selected_maps_all(self, layer: int = -1) -> np.ndarray:
        """[heads, h, w] the selected class's raw maps when all classes were decoded."""
        return self.all_classes.head_maps(self.selected, layer, normalization="none")

    def selected_maps_candidates(self, layer: int = -1) -> np.ndarray:
        """[heads, h, w] the selected class's raw maps when only the candidates were decoded."""
        return self.candidates.head_maps(self.selected, layer, normalization="none")

    def difference(self, layer: int = -1) -> np.ndarray:
        """[heads, h, w] candidates − all classes; show with `symmetric_limits` (0 is white)."""
        return self.selected_maps_candidates(layer) - self.selected_maps_all(layer)

    def table(self) -> list[dict]:
        """Candidates by probability among themselves, with their probability among all classes."""
        among_all = dict(zip(self.all_classes.class_names, self.all_classes.probabilities.tolist()))
        return [{**row, "probability_all_classes": among_all[row["name"]]} for row in self.candidates.table()]


def compare(explainer: Explainer, encoded: EncodedImage, selected: str, candidates: Sequence[int | str],
            mode: str = "drop", all_classes: Explanation | None = None,
            layers: Iterable[int] | None = None) -> Comparison:
    """Decode the candidates (and, unless given, all classes) on the cached encoder memory.

    mode "drop" (default): only the candidates' queries enter the decoder; "zero": all queries
    enter, the others zeroed, as the paper describes. Pass `all_classes` when the all-classes
    explanation of this image is already at hand, to skip that decode (it must hold `layers`).
    layers: the decoder layers whose maps are decoded (Python indices), e.g. the one shown;
    None: every layer.
    """
    model = explainer.model
    if isinstance(candidates, (str, int, np.integer)):
        candidates = [candidates]
    # Unknown names fail here with the model's suggestions; names are normalised to the model's.
    names = [model.class_names[i] for i in model.class_indices(candidates)]
    if len(names) < MIN_CANDIDATES:
        raise ValueError(f"comparison needs at least two classes, got {len(names)} ({', '.join(names)}); "
                         "add the look-alike classes to compare with")
    selected_name = model.class_names[model.class_indices([selected])[0]]
    if selected_name not in names:
        raise ValueError(f"the selected class {selected_name!r} is not among the candidates "
                         f"({', '.join(names)}); add it to the candidates or select one of them")
    if all_classes is None:  # its heads' evidence is measured only if someone asks (head_evidence)
        all_classes = explainer.decode(encoded, layers=layers, evidence_layers=())
    elif all_classes.class_indices != list(range(len(model.class_names))):
        raise ValueError("all_classes must be an explanation of all the model's classes "
                         "(decode with classes=None)")
    # the Compare dock shows the selected class's strongest head at the last layer: rank that
    # class's heads by evidence there now, at other layers when asked for
    return Comparison(selected_name, all_classes,
                      explainer.decode(encoded, names, mode, layers=layers, evidence=[selected_name],
                                       evidence_layers=[-1]))


def symmetric_limits(differences: np.ndarray) -> np.ndarray:
    """Per map (leading axes kept, last two reduced) the largest |value|: colour limits (-l, l)
    that keep 0 at the centre of a diverging colormap. Never 0, so a flat map still displays."""
    limits = np.abs(differences).max(axis=(-2, -1))
    return np.where(limits > 0, limits, np.finfo(np.float32).tiny).astype(np.float32)


def _check_k(k: int, available: int) -> None:
    if not MIN_CANDIDATES <= k <= available:
        raise ValueError(f"k must be between {MIN_CANDIDATES} (comparison needs at least two classes) "
                         f"and {available} (the decoded classes), got {k}")
