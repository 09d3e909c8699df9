"""Attention-grid layers for the Compare and Edit widgets: placed on the explained image like the
Explorer's maps, keyed by what they show and updated in place (never removed, never piling up)."""
from __future__ import annotations

import numpy as np

from .layer_set import ATTENTION_TAG, OPACITY

DIFFERENCE_OPACITY = 0.9
_DIFFERENCE_BASE = "PiYG"  # diverging: green where attention grew, pink where it shrank


def difference_colormap():
    """PiYG, see-through at 0 and opaque at the limits: with symmetric contrast limits the image
    shows where nothing changed, instead of being washed out by the colormap's white centre."""
    from napari.utils.colormaps import Colormap, ensure_colormap
    controls = np.linspace(0, 1, 65)
    colours = np.asarray(ensure_colormap(_DIFFERENCE_BASE).map(controls), dtype=np.float32)
    colours[:, 3] = np.abs(controls - 0.5) * 2
    return Colormap(colours, controls=controls, name=f"{_DIFFERENCE_BASE} (clear at 0)")


DIFFERENCE_COLORMAP = difference_colormap()


def grid_placement(explanation, plane_scale, plane_translate):
    """napari (scale, translate) of an [h, w] attention map over an image layer with the given
    2-D scale/translate (the Explorer's feature-grid placement)."""
    cell_scale, cell_translate = explanation.grid_to_image()
    scale = tuple(float(s * c) for s, c in zip(plane_scale, cell_scale))
    translate = tuple(float(t + s * c) for t, s, c in zip(plane_translate, plane_scale, cell_translate))
    return scale, translate


class KeyedLayers:
    """One image layer per key; `show` adds it the first time (or after the user deleted it) and
    rewrites it in place afterwards. Visibility is the user's once the layer exists."""

    def __init__(self, viewer):
        self.viewer = viewer
        self._layers: dict = {}

    def layer(self, key):
        layer = self._layers.get(key)
        return layer if layer is not None and layer in self.viewer.layers else None

    def show(self, key, name: str, data: np.ndarray, scale, translate, *, colormap: str,
             limits: tuple[float, float], metadata: dict, visible: bool = True, diverging: bool = False):
        """colormap: a napari colormap name or object; diverging: translucent, not additive."""
        data = np.asarray(data, dtype=np.float32)
        leading = data.ndim - len(scale)  # e.g. a candidate axis for napari's slider
        scale, translate = (1.0,) * leading + tuple(scale), (0.0,) * leading + tuple(translate)
        limits = (float(limits[0]), float(limits[1]) if limits[1] > limits[0] else float(limits[0]) + 1e-12)
        metadata = {ATTENTION_TAG: True, **metadata}
        layer = self.layer(key)
        if layer is None or layer.data.ndim != data.ndim:
            layer = self.viewer.add_image(
                data, name=name, scale=scale, translate=translate, colormap=colormap,
                contrast_limits=limits, visible=visible, metadata=metadata,
                blending="translucent" if diverging else "additive",
                opacity=DIFFERENCE_OPACITY if diverging else OPACITY)
            self._layers[key] = layer
            return layer
        layer.data = data
        layer.scale, layer.translate = scale, translate
        layer.name, layer.metadata = name, metadata
        layer.colormap = colormap
        layer.contrast_limits = limits
        return layer
