"""The evented state the docks of one viewer share: its model and its current explanation.

Each viewer has its own (`shared_state(viewer)`), so two viewers never share a model or an
explanation. Widgets read and write it on the GUI thread only (workers return plain values, the
widget that started them publishes the result here). Other widgets, e.g. Fine-tune's "Use in
Explorer", publish a model with `publish_model`; the viewer's Explorer follows.
"""
from __future__ import annotations

import operator
import weakref
from dataclasses import dataclass
from typing import Any

from psygnal import evented


@dataclass(frozen=True)
class ImageSource:
    """Where the explained 2-D plane sits in the viewer: attention layers are placed with it."""
    layer: Any                         # the napari Image layer (never modified)
    name: str                          # "<layer>" or "<layer> [5]" for a slice of a stack
    plane_scale: tuple[float, float]   # world units per pixel of the explained plane
    plane_translate: tuple[float, float]
    notes: tuple[str, ...] = ()
    # what layer names call it: the part of `name` that tells it from the other open images
    # ("alba" for "Heliconia synthetica-alba (synthetic)" beside rubra; see layers.image_tags)
    label: str = ""

    def __post_init__(self):
        if not self.label:
            object.__setattr__(self, "label", self.name)


@evented(equality_operators={"model": operator.is_, "encoded": operator.is_,
                             "explanation": operator.is_, "source": operator.is_},
         connect_child_events=False)
@dataclass
class ExplorerState:
    model: Any = None                  # napari_intr.model.INTR in eval mode, or None
    model_name: str = ""               # "sample", a zoo name or a checkpoint path
    class_names: tuple[str, ...] = ()
    device: str = ""
    source: ImageSource | None = None  # the image of the current explanation
    encoded: Any = None                # napari_intr.explanation.EncodedImage (encoder memory)
    explanation: Any = None            # napari_intr.explanation.Explanation

    def publish_model(self, model, name: str) -> None:
        """Make `model` the shared model; the old explanation belonged to the old model."""
        self.clear_explanation()
        self.model_name = name
        self.class_names = tuple(model.class_names)
        self.device = str(model.device)
        self.model = model  # last: listeners of `model` see the name, classes and device set

    def clear_explanation(self) -> None:
        self.explanation = None
        self.encoded = None
        self.source = None


_STATES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def shared_state(viewer) -> ExplorerState:
    """The state of `viewer`'s docks (created empty on first use, gone with the viewer)."""
    viewer = getattr(viewer, "__wrapped__", viewer)  # napari hands plugins a proxy of the viewer
    state = _STATES.get(viewer)
    if state is None:
        state = _STATES[viewer] = ExplorerState()
    return state


def publish_model(viewer, model, name: str) -> None:
    """For other widgets (Fine-tune's "Use in Explorer"): share `model` with `viewer`'s docks."""
    shared_state(viewer).publish_model(model, name)


def follow(signal, slot, owner) -> None:
    """Connect a state signal to a widget's slot for as long as the widget (a QObject) lives:
    the state outlives every widget, and a deleted widget must not be called."""
    signal.connect(slot)
    owner.destroyed.connect(lambda *_: signal.disconnect(slot, missing_ok=True))
