"""The one evented object the plugin's widgets share.

Widgets read and write `shared_state()` on the GUI thread only (workers return plain values,
the widget that started them publishes the result here). Other widgets, e.g. a fine-tuning
widget's "Use in Explorer", publish a model with `publish_model`; every Explorer follows.
"""
from __future__ import annotations

import operator
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


_STATE = ExplorerState()


def shared_state() -> ExplorerState:
    return _STATE


def publish_model(model, name: str) -> None:
    """For other widgets (fine-tuning's "Use in Explorer"): share `model` with every Explorer."""
    _STATE.publish_model(model, name)


def follow(signal, slot, owner) -> None:
    """Connect a state signal to a widget's slot for as long as the widget (a QObject) lives:
    the state outlives every widget, and a deleted widget must not be called."""
    signal.connect(slot)
    owner.destroyed.connect(lambda *_: signal.disconnect(slot, missing_ok=True))
