"""Which 2-D image the Explorer explains, given a napari layer and the viewer's current slice."""
from __future__ import annotations

import numpy as np
from napari.layers import Image, Labels

from napari_intr.preprocess import layout_problem

from ..layers import image_label
from ..state import ImageSource


class InputError(ValueError):
    """The layer cannot be explained; the message says what to choose instead."""


def explainable_plane(layer, viewer) -> tuple[np.ndarray, ImageSource]:
    """(plane, source): the 2-D grey/RGB(A) array to explain and where it sits in the world.

    RGB(A) layers give H×W×3/4; grey layers H×W. Stacks (more dims than the image plane) give
    the plane at the viewer's current slice. A non-RGB (3, H, W) layer is read as channel-first
    RGB, since a 3-plane stack is far more often colour channels than a 3-slice volume; the
    note says how to explain a single plane instead.
    """
    if layer is None:
        raise InputError("no image layer to explain: open an image (File ▸ Open Sample ▸ "
                         "napari-intr has specimens) and choose it in the Image list")
    if isinstance(layer, Labels) or not isinstance(layer, Image):
        raise InputError(f"'{layer.name}' is a {layer.__class__.__name__} layer; INTR explains image "
                         "layers: choose an Image layer (photo, grey or RGB)")
    notes: list[str] = []
    data, level_factor = _pick_level(layer, notes)
    sliders = layer.ndim - 2  # napari's ndim leaves out an RGB(A) layer's channels
    name = layer.name
    if not layer.rgb and data.ndim == 3 and data.shape[0] == 3:
        plane = np.moveaxis(np.asarray(data), 0, -1)
        notes.append(f"'{layer.name}' has shape {tuple(data.shape)}: its 3 planes were read as red, "
                     "green, blue (channel-first). To explain one plane alone, split the stack "
                     "(right-click the layer ▸ Split Stack) and choose a plane")
    elif sliders > 0:
        index = current_index(layer, viewer, sliders, data.shape)
        plane = np.asarray(data[index])
        name = f"{layer.name} [{', '.join(str(i) for i in index)}]"
        notes.append(f"'{layer.name}' has {sliders} slider dimension(s): explained "
                     f"the current slice {list(index)}; move the slider and Explain again for another")
    elif data.ndim < 2:
        raise InputError(f"'{layer.name}' has shape {tuple(data.shape)}; choose a 2-D image")
    else:
        plane = np.asarray(data)
    if not layer.multiscale:
        _frames_left_out(layer, sliders, notes)
    problem = layout_problem(plane.shape, f"'{layer.name}'")
    if problem:
        only_too_small = layout_problem(plane.shape, min_size=0) is None
        raise InputError(f"{problem}: choose a {'larger' if only_too_small else 'grey or RGB'} image")
    scale = np.asarray(layer.scale[-2:], dtype=float) * level_factor
    translate = np.asarray(layer.translate[-2:], dtype=float)
    label = image_label(viewer, layer.name) + name[len(layer.name):]  # with the slice, if any
    source = ImageSource(layer, name, tuple(scale), tuple(translate), tuple(notes), label)
    return plane, source


def _frames_left_out(layer, sliders: int, notes: list[str]) -> None:
    """The stack rule for a layer opened from an animation that napari read as fewer frames
    (an animated WebP as its first frame): say that one frame is explained, never only part silently."""
    from pathlib import Path

    from napari_intr.image_files import IMAGE_SUFFIXES, animation_frames
    path = getattr(getattr(layer, "source", None), "path", None)
    if not path or Path(path).suffix.lower() not in IMAGE_SUFFIXES or not Path(path).is_file():
        return
    frames, shown = animation_frames(path)
    in_layer = int(np.prod(layer.data.shape[:sliders])) if sliders else 1
    if frames > in_layer:
        notes.append(f"'{layer.name}' holds {in_layer} of the {frames} frames of the animated {shown} "
                     f"'{Path(path).name}' (napari's reader opened only {'the first' if in_layer == 1 else 'those'}): "
                     "explained the frame shown; to explain another, save it as its own PNG and open that")


def _pick_level(layer, notes: list[str]):
    """Multiscale: the coarsest level still at least 1024 px on its short side (level 0 otherwise)."""
    if not layer.multiscale:
        return layer.data, np.ones(2)
    levels = list(layer.data)
    chosen = 0
    for index, level in enumerate(levels):
        plane_shape = level.shape[-3:-1] if layer.rgb else level.shape[-2:]
        if min(plane_shape) >= 1024:
            chosen = index
    level = levels[chosen]
    base = levels[0]
    axes = slice(-3, -1) if layer.rgb else slice(-2, None)
    factor = np.asarray(base.shape[axes], dtype=float) / np.asarray(level.shape[axes], dtype=float)
    if chosen:
        notes.append(f"'{layer.name}' is multiscale: explained resolution level {chosen} "
                     f"({' × '.join(str(s) for s in level.shape[axes])} px)")
    return level, factor


def current_index(layer, viewer, count: int, shape) -> tuple[int, ...]:
    """Data indices of the leading (slider) dimensions at the viewer's current position."""
    position = layer.world_to_data(viewer.dims.point)
    index = np.round(np.asarray(position[:count], dtype=float)).astype(int)
    return tuple(int(np.clip(i, 0, size - 1)) for i, size in zip(index, shape[:count]))
