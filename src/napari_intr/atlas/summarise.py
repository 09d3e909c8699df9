"""The model pass: one image -> one small JSON record of what every head of its classes did.

Each image is encoded once (backbone + encoder, `Explainer.encode`). One decode of all classes
gives the prediction and the maps of its true class's query and of its predicted class's query.
For look-alike pairs the same encoding is decoded again with just the two queries (A, B), once
as it is and once per head of A's query with the region that head attends on the image (around its
peak, at most MASK_RADIUS cells each way) masked out of the keys (the padding mask), all in one
decoder call: the drop in A's logit against B's is what that region contributed.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import torch

from napari_intr.calibration import judge
from napari_intr.explanation import Explainer
from napari_intr.image_files import read_image

from .geometry import Footprint, HeadLook, looks, masked_cells
from .parts import ImageParts, PartSource

RUNNER_UPS = 3  # other classes' probabilities kept per image (for the soft confusion of pairs)
DEFAULT_PARTNERS = 2  # without --pairs, each image is compared with its this many likeliest other classes
# The masking test hides the head's attended region up to (2r+1)² cells around its peak: a diffuse
# head's "region" is half the image, and hiding half the image costs any class; at equal area the
# drops of different heads compare what their peaks saw.
MASK_RADIUS = 1


def head_record(found: HeadLook, footprint: Footprint, parts: ImageParts | None) -> dict:
    """What the statistics need of one head's look (records stay small: a collection may be huge)."""
    record = {"peak": float(f"{found.peak:.6g}"), "box": [round(v, 2) for v in found.box]}
    if parts is None:
        return record
    record["spread"] = float(f"{found.spread:.6g}")
    if parts.has_parts:
        record["part"] = parts.part_at(found, footprint)
        record["covers"] = parts.covers(found.box)
    on_specimen = parts.on_specimen(found, footprint)
    if on_specimen is not None:
        record["on_specimen"] = on_specimen
    return record


def pack(value) -> str:
    """Per-head details as one compact JSON string: the sharded job keeps every image's record in
    memory while it merges, and a string costs its length where nested dicts cost ~5× more."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def unpack(text: str):
    return json.loads(text)


def encode_vector(vector: np.ndarray) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f2").tobytes()).decode("ascii")


def decode_vector(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f2").astype(np.float64)


class ImageSummariser:
    """Summarises images one at a time for a model, a decoder layer and a pair plan.

    partners: class index -> the classes its images are decoded against in pairs (from --pairs);
    None: each image against its DEFAULT_PARTNERS likeliest other classes among `candidates`."""

    def __init__(self, model, layer: int, candidates: list[int], partners: dict[int, list[int]] | None,
                 parts: PartSource):
        self.model = model.eval()
        self.explainer = Explainer(self.model)
        self.layer = layer
        self.candidates = candidates
        self.partners = partners
        self.parts = parts
        self._features = None
        # The features under a peak (for consistency without part annotations) are the backbone's,
        # after the model's 1×1 input projection: captured on the way, never computed twice.
        self._hook = self.model.input_proj.register_forward_hook(self._keep_features)

    def _keep_features(self, module, inputs, output) -> None:
        self._features = output.detach()

    def close(self) -> None:
        self._hook.remove()

    def load(self, path: Path) -> tuple[np.ndarray, ImageParts]:
        """The file work of one image (its pixels and its annotations), apart from the model's, so
        that a worker thread can read the next image while the model runs on this one."""
        image = read_image(path)
        return image, self.parts.for_image(path, image.shape[:2])

    def __call__(self, path: Path, true_index: int, loaded: tuple[np.ndarray, ImageParts] | None = None) -> dict:
        """One image's record; `loaded`: what `load(path)` returned, if it ran already."""
        model = self.model
        image, parts = self.load(path) if loaded is None else loaded
        encoded = self.explainer.encode(image, path.stem)
        features = self._features[0]  # [D, h, w]
        footprint = Footprint.of(encoded.encoded.grid, encoded.image_shape, encoded.input_shape,
                                 model.feature_stride)
        with torch.inference_mode():
            output = model.decode(encoded.encoded, None, return_attention=True, attention_layers=[self.layer])
        probabilities = output.logits[0].float().softmax(-1).cpu().numpy()
        predicted = int(np.argmax(probabilities))
        maps = output.attention[0, 0].float().cpu().numpy()  # [heads, C, h, w] of self.layer only
        if parts.masks and any(mask.shape != footprint.image_shape for mask in parts.masks.values()):
            raise ValueError(f"the mask of {path.name} is not the size of the image")
        others = [int(i) for i in np.argsort(-probabilities, kind="stable") if i != true_index]
        record = {
            "class": model.class_names[true_index], "predicted": model.class_names[predicted],
            "probability": float(probabilities[predicted]), "true_probability": float(probabilities[true_index]),
            "others": [[model.class_names[i], float(probabilities[i])] for i in others[:RUNNER_UPS]],
            "shape": list(footprint.image_shape),
        }
        verdict = judge(getattr(model, "calibration", None), output.logits[0].float().cpu().numpy(), model.class_names,
                        output.features[0].float().cpu().numpy())
        if verdict is not None:  # a calibrated model: rejected images are listed apart, not summarised
            record.update(known=verdict.known, open_set_score=verdict.score)
        own_looks = looks(maps[:, true_index], footprint)
        record["true"] = pack([self._head(found, footprint, parts, features) for found in own_looks])
        if predicted != true_index:
            record["predicted_heads"] = pack([head_record(found, footprint, None)
                                              for found in looks(maps[:, predicted], footprint)])
        partners = self._partners_of(true_index, others)
        if partners:
            record["pairs"] = pack(self._pairs(encoded.encoded, true_index, partners, own_looks, footprint, parts))
        return record

    def _head(self, found: HeadLook, footprint, parts, features) -> dict:
        entry = head_record(found, footprint, parts)
        if not parts.has_parts:
            vector = features[:, found.cell[0], found.cell[1]].float().cpu().numpy()
            norm = float(np.linalg.norm(vector))
            entry["feature"] = encode_vector(vector / norm if norm > 0 else vector)
        return entry

    def _partners_of(self, true_index: int, others: list[int]) -> list[int]:
        if self.partners is not None:
            return list(self.partners.get(true_index, []))
        allowed = set(self.candidates)
        return [i for i in others if i in allowed][:DEFAULT_PARTNERS]

    def _pairs(self, encoded, a: int, partners: list[int], own_looks: list[HeadLook], footprint: Footprint,
               parts: ImageParts) -> dict:
        """Decode (A, B) for every partner B as it is, and once per head of A with the region that
        head attends on this image (`own_looks`, from the decode of all classes) hidden from the
        keys: one decoder call, one row per (partner, masked head)."""
        model, decoder = self.model, self.model.transformer.decoder
        heads, count = len(own_looks), len(partners)
        hidden = np.stack([masked_cells(encoded.grid, found.cell, min(found.radius, MASK_RADIUS))
                           for found in own_looks])  # [heads, h·w]
        with torch.inference_mode(), model.inference_precision():  # as INTR.decode computes
            if encoded.cross_key_values is None:
                encoded.cross_key_values = decoder.cross_key_values(encoded.memory)
            pairs = model.query_embed.weight[torch.tensor([[a, b] for b in partners], device=model.device)]
            queries = torch.cat([pairs, pairs.repeat_interleave(heads, dim=0)])  # [P + P·heads, 2, D]
            masks = torch.from_numpy(np.concatenate([np.zeros_like(hidden[:1]).repeat(count, 0),
                                                     np.tile(hidden, (count, 1))])).to(model.device)
            padding = encoded.padding_mask.expand(len(masks), -1) | masks
            everything_hidden = padding.all(dim=1).cpu().numpy()
            padding[torch.from_numpy(everything_hidden).to(model.device)] = False  # no keys left: no test
            logits, weights = _decode_rows(model, encoded, queries, padding, need_weights=True,
                                           weight_layers=model.decoder_layers([self.layer]))
            margins = (logits[:, 0] - logits[:, 1]).cpu().numpy()
            maps = weights[0, :count].unflatten(-1, encoded.grid).float().cpu().numpy()  # [P, heads, 2, h, w]
        drops = margins[:count].repeat(heads) - margins[count:]
        drops = [None if hidden_all else float(f"{d:.6g}") for d, hidden_all in zip(drops, everything_hidden[count:])]
        result = {}
        for p, b in enumerate(partners):
            result[model.class_names[b]] = {
                "margin": float(f"{margins[p]:.6g}"),
                "a": [head_record(found, footprint, parts) for found in looks(maps[p, :, 0], footprint)],
                "b": [head_record(found, footprint, None) for found in looks(maps[p, :, 1], footprint)],
                "drop": drops[p * heads:(p + 1) * heads],
            }
        return result


def _decode_rows(model, encoded, queries: torch.Tensor, padding: torch.Tensor, need_weights: bool,
                 weight_layers: list[int] | None = None):
    """Decoder and presence vector for one image, with its own query set and key mask per row.

    queries [R, Q, D], padding [R, h·w] -> logits [R, Q], weights [layers, R, heads, Q, h·w]
    (only the 0-based `weight_layers`, when given)."""
    rows = queries.shape[0]
    memory = encoded.memory.expand(rows, -1, -1)
    key_values = [(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in encoded.cross_key_values]
    z_out, weights = model.transformer.decoder(queries, memory, padding, need_weights, key_values,
                                               weight_layers=weight_layers)
    return model.presence(z_out).float(), weights
