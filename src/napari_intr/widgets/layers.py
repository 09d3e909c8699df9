"""The napari layers that show explanations, and the pickers of the viewer's own layers.

LiveLayerSet: the Explorer's live attention layers of one explained image, one per head in rank
order plus the mean. Switching class, decoder layer or display option rewrites these layers in
place (same layer objects; name, data, scale and translate replaced). `keep()` renames the set
with a " (kept N)" suffix and lets go of it, so the next update creates new live layers.
KeyedLayers: the Compare and Edit docks' attention grids, keyed by what they show and updated in
place. Nothing here ever touches an input image layer or removes a layer."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from magicgui.widgets import ComboBox
from qtpy.QtWidgets import QComboBox

from napari_intr.explanation import head_number, image_tags, layer_name, min_max

from .gui_turns import turns
from .qt_helpers import fit_layer_list
from .state import ImageSource

OPACITY = 0.5
ATTENTION_TAG = "napari_intr_attention"  # metadata key marking our layers (not inputs)


@dataclass(frozen=True)
class DisplayOptions:
    normalization: str = "per_map"  # or "shared"
    upsample: bool = False          # False: feature grid placed with scale/translate
    colormap: str = "inferno"


@dataclass(frozen=True)
class LayerView:
    """What one live layer shows."""
    name: str
    data: np.ndarray
    scale: tuple[float, float]
    translate: tuple[float, float]
    visible_by_default: bool  # the mean only: additive heads on top of it wash the image out
    metadata: dict


def layer_views(explanation, source: ImageSource, class_name: str, layer: int,
                options: DisplayOptions) -> list[LayerView]:
    """Mean first, then heads in Explanation.head_order (by evidence, flagged heads last)."""
    image, layer_number = source.label, explanation.layer_number(layer)
    maps = explanation.head_maps(class_name, layer, options.normalization)
    mean = scaled_mean(explanation, class_name, layer, options.normalization)
    order = explanation.head_order(class_name, layer)
    if options.upsample:  # image-sized maps sit exactly on the plane
        maps, mean = explanation.upsample(maps), explanation.upsample(mean)
        scale, translate = tuple(map(float, source.plane_scale)), tuple(map(float, source.plane_translate))
    else:
        scale, translate = grid_placement(explanation, source.plane_scale, source.plane_translate)
    common = {ATTENTION_TAG: True, "image": source.name, "class": class_name, "decoder_layer": layer_number,
              "model": explanation.model_name, "normalization": options.normalization,
              "probability": float(explanation.probabilities[explanation.column(class_name)]),
              "rank": explanation.rank_of(class_name)}
    views = [LayerView(layer_name(image, class_name, layer_number, None), mean.astype(np.float32),
                       scale, translate, True, {**common, "head": "mean"})]
    for rank, head in enumerate(order, start=1):
        views.append(LayerView(layer_name(image, class_name, layer_number, head_number(head)),
                               maps[head].astype(np.float32), scale, translate, False,
                               {**common, "head": head_number(head), "head_rank": rank}))
    return views


def image_label(viewer, name: str) -> str:
    """`name`'s tag among the viewer's image layers (image_tags)."""
    return image_tags([*(layer.name for layer in viewer.layers if is_image(layer)), name])[name]


def scaled_mean(explanation, class_name: str, layer: int, normalization: str) -> np.ndarray:
    """per_map: min-max to [0, 1]; shared: on the heads' common scale (their largest weight)."""
    mean = explanation.mean_map(class_name, layer)
    if normalization == "shared":
        peak = explanation.head_maps(class_name, layer, "none").max()
        return mean / peak if peak > 0 else np.zeros_like(mean)
    return min_max(mean)


class LiveLayerSet:
    """Live attention layers per image name, in a viewer.

    A new set (a new image, another head count, after Keep) is added one layer per turn of the
    event loop (gui_turns: each napari layer costs 100-400 ms to add here), the visible mean first;
    `show` during that build rewrites the layers added so far and hands the rest the newest maps.
    Existing sets are rewritten in place within one turn."""

    def __init__(self, viewer):
        # napari hands plugins a proxy that checks every attribute access (~0.2 ms each, ~120 per
        # update): the layers are driven through the viewer itself
        self.viewer = getattr(viewer, "__wrapped__", viewer)
        self._live: dict[str, list] = {}
        self._building: dict[str, _Build] = {}
        self._kept = 0

    def live_layers(self, image: str) -> list:
        return [layer for layer in self._live.get(image, []) if layer in self.viewer.layers]

    def building(self, image: str | None = None) -> bool:
        """Whether layers of `image` (of any image: None) are still being added."""
        return bool(self._building) if image is None else image in self._building

    def show(self, views: list[LayerView], image: str, colormap: str) -> list:
        """Show `views` as the live set of `image`; returns the layers that exist so far."""
        build = self._building.get(image)
        if build is not None and len(build.views) != len(views):  # another head count: start again
            del self._building[image]
            self._freeze(build.layers)
        elif build is not None:  # still adding: rewrite the added ones, the rest are added with these maps
            build.views, build.colormap = views, colormap
            for layer, view in zip(build.layers, views):
                self._rewrite(layer, view, colormap)
            fit_layer_list(self.viewer, [view.name for view in views])
            return list(build.layers)
        layers = self._live.get(image, [])
        if len(layers) != len(views) or any(layer not in self.viewer.layers for layer in layers):
            if layers:  # another head count (new model) or a layer deleted by hand: keep the rest
                self._freeze(layers)
            self._live.pop(image, None)
            self._building[image] = build = _Build(views, colormap)
            fit_layer_list(self.viewer, [view.name for view in views])
            queue = turns()
            for _ in views:
                queue.queue(lambda: self._add_next(image, build))
            return []
        renamed = [self._rewrite(layer, view, colormap) for layer, view in zip(layers, views)]
        if any(renamed):
            fit_layer_list(self.viewer, [view.name for view in views])
        return layers

    def finish(self) -> None:
        """Add every layer still waiting for its turn now (e.g. before Keep freezes the set)."""
        if self._building:
            turns().run_all()

    def keep(self, image: str) -> list:
        """Freeze the live set of `image`; returns the kept layers (empty if none)."""
        self.finish()
        layers = self.live_layers(image)
        self._live.pop(image, None)
        if layers:
            self._freeze(layers)
        return layers

    def _add_next(self, image: str, build: _Build) -> None:
        """One turn's work: add the next layer of a set (at most LAYERS_PER_TURN)."""
        if self._building.get(image) is not build:  # superseded or finished
            return
        index = len(build.layers)
        view = build.views[index]
        layer = _image_layer(view, build.colormap)
        # final order: the mean on top, then the heads strongest first (the list's end is its top)
        anchor = build.layers[-1] if build.layers else None
        layers = self.viewer.layers
        position = layers.index(anchor) if anchor is not None and anchor in layers else len(layers)
        with _selection_kept(layers):
            layers.insert(position, layer)
        build.layers.append(layer)
        if len(build.layers) == len(build.views):
            del self._building[image]
            self._live[image] = build.layers

    def _rewrite(self, layer, view: LayerView, colormap: str) -> bool:
        """Show `view` in `layer`; returns whether its name changed."""
        # Everything here runs on the GUI thread: set only what changed. Replacing `data`
        # costs napari a full reset (dims, extent, thumbnail: ~16 ms a layer, most of an
        # Explain's stall); maps of the same shape are copied into the layer's own array
        # (created by `astype` in layer_views, shared with nothing) and refreshed once.
        in_place = (layer.data.shape == view.data.shape and layer.data.dtype == view.data.dtype
                    and layer.data.flags.writeable)
        if in_place:
            layer.data[...] = view.data
        else:
            layer.data = view.data
        if not (np.allclose(layer.scale, view.scale) and np.allclose(layer.translate, view.translate)):
            layer.scale, layer.translate = view.scale, view.translate
        if layer.colormap.name != colormap:
            layer.colormap = colormap
        if tuple(layer.contrast_limits) != (0.0, 1.0):
            layer.contrast_limits = (0.0, 1.0)
        renamed = layer.name != view.name
        if renamed:
            layer.name = view.name
        if layer.metadata != view.metadata:
            layer.metadata = dict(view.metadata)
        if in_place:
            layer.refresh()
        return renamed

    def _freeze(self, layers) -> None:
        self._kept += 1
        for layer in layers:
            if layer in self.viewer.layers:
                layer.name = f"{layer.name} (kept {self._kept})"


LAYERS_PER_TURN = 1  # LiveLayerSet adds one layer per turn of the event loop (tested)


@dataclass
class _Build:
    """A live set being added: the newest maps, and the layers added so far."""
    views: list[LayerView]
    colormap: str
    layers: list = field(default_factory=list)


@contextmanager
def _selection_kept(layer_list):
    """napari makes an inserted layer the selected one, which also rebuilds the layer-controls
    panel: about a third of an attention layer's cost to add. Our layers come in without taking
    the user's selection (`_activate_on_insert` is napari's own switch; where it is missing,
    napari's default stays)."""
    if not hasattr(layer_list, "_activate_on_insert"):
        yield
        return
    before, layer_list._activate_on_insert = layer_list._activate_on_insert, False
    try:
        yield
    finally:
        layer_list._activate_on_insert = before


def _image_layer(view: LayerView, colormap: str):
    """An attention layer: contrast limits given (napari would otherwise scan the data for them)."""
    from napari.layers import Image
    return Image(view.data, name=view.name, scale=view.scale, translate=view.translate, colormap=colormap,
                 blending="additive", opacity=OPACITY, contrast_limits=(0.0, 1.0),
                 visible=view.visible_by_default, metadata=dict(view.metadata))


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
            fit_layer_list(self.viewer, [name])
            return layer
        layer.data = data
        layer.scale, layer.translate = scale, translate
        layer.name, layer.metadata = name, metadata
        layer.colormap = colormap
        layer.contrast_limits = limits
        return layer


def camera_of(viewer):
    """The viewer's camera: `viewer.scene.camera` since napari 0.9 (`viewer.camera` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def bring_into_view(viewer, layer) -> None:
    """Fit the view to `layer` unless the view is already over it (the camera's centre on it):
    after Explain the canvas shows the explained image, not, say, the other image of a pair,
    while a view zoomed into a detail of that image is left as the user set it."""
    low, high = (np.asarray(corner, dtype=float)[-2:] for corner in np.asarray(layer.extent.world))
    camera = camera_of(viewer)
    centre = np.asarray(camera.center, dtype=float)[-2:]
    if np.all(centre >= low - 0.5) and np.all(centre <= high + 0.5):
        return
    try:
        viewer.fit_to_view(layers=[layer])  # napari >= 0.9
    except (AttributeError, TypeError):
        centre = list(camera.center)
        centre[-2:] = (low + high) / 2
        camera.center = tuple(centre)


def is_image(layer) -> bool:
    # napari hands plugins proxy layers: compare class names, not types
    return layer.__class__.__name__ == "Image" and ATTENTION_TAG not in layer.metadata


def is_labels(layer) -> bool:
    return layer.__class__.__name__ == "Labels"


class LayerPicker(ComboBox):
    """A magicgui dropdown of the viewer's layers that `accept` lets in (by default image layers
    that are not our attention maps). It follows the layer list by itself: added, removed, moved
    and renamed layers. Put `picker.native` in a Qt layout; `picker.value` is the chosen layer."""

    def __init__(self, viewer, accept=is_image, tooltip: str = "", follow_selection: bool = False):
        self._viewer, self._accept = viewer, accept
        super().__init__(choices=self._layers, tooltip=tooltip or None)
        self.native.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.native.setMinimumContentsLength(12)
        events = viewer.layers.events
        self._events = [events.inserted, events.removed, events.reordered, events.renamed]
        if follow_selection:  # choosing a layer in napari's layer list chooses it here too
            self._events.append(viewer.layers.selection.events.active)
        for event in self._events:
            event.connect(self._layers_changed)
        # the viewer outlives its docks: a deleted picker must not be called
        self.native.destroyed.connect(lambda *_, events=tuple(self._events), slot=self._layers_changed:
                                      [event.disconnect(slot) for event in events])
        self._follow_selection = follow_selection
        self._layers_changed()

    def layer(self):
        """The chosen layer, or None when there is none to choose."""
        return self.value

    def choose(self, name: str) -> None:
        self.reset_choices()
        for label, layer in self._layers():
            if label == name:
                self.value = layer
                return
        raise ValueError(f"no layer named {name!r} to choose here")

    def _layers(self, *_) -> list:
        return [(layer.name, layer) for layer in self._viewer.layers if self._accept(layer)]

    def _layers_changed(self, *_) -> None:
        self.reset_choices()
        active = self._viewer.layers.selection.active
        if self._follow_selection and active is not None and self._accept(active):
            self.value = active
