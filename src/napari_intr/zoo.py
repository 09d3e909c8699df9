"""Named, downloadable models. Files land in a user cache; a file copied there by hand is used
as it is (firewalls), and every file's sha256 is checked on each use."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from . import environment

CACHE_ENV = "NAPARI_INTR_CACHE"
_HF = "https://huggingface.co/imageomics/INTR/resolve/main/"


@dataclass(frozen=True)
class ZooEntry:
    filename: str
    url: str
    num_classes: int | None
    # "intr": a classifier; "detr": DETR's COCO weights, an initialisation for training; "backbone":
    # a foundation ViT's published weights (model/vit_backbone.py; napari_intr.backbone_weights)
    kind: str
    sha256_prefix: str | None = None  # DETR's file name carries its hash prefix
    class_list: str | None = None  # a bundled list of its class names (napari_intr/class_lists/)
    class_names_hint: str = ""  # where to get its class names when none is bundled


_IMAGEFOLDER_ORDER = ("one name per line, in the sorted order of the class folders it was trained on "
                      "(torchvision's ImageFolder order, e.g. `ls train/ > classes.txt`)")
ZOO = {
    "intr-cub": ZooEntry("intr_checkpoint_cub_detr_r50.pth", _HF + "intr_checkpoint_cub_detr_r50.pth", 200, "intr",
                         class_list="cub200.txt"),
    "intr-birds525": ZooEntry(
        "intr_checkpoint_bird_detr_r50.pth", _HF + "intr_checkpoint_bird_detr_r50.pth", 525, "intr",
        class_names_hint="no class names are published with this checkpoint: give a class-names file with "
        "the 525 species folder names of the Birds-525 data set (Piosenka 2023, 'BIRDS 525 SPECIES - IMAGE "
        f"CLASSIFICATION' on Kaggle), {_IMAGEFOLDER_ORDER}"),
    "intr-butterfly": ZooEntry(
        "intr_checkpoint_butterfly_detr_r50.pth", _HF + "intr_checkpoint_butterfly_detr_r50.pth", 65, "intr",
        class_names_hint="no class names are published with this checkpoint: give a class-names file with the "
        "65 species folder names of the Cambridge butterfly data set as INTR's authors prepared it (Heliconiine "
        "Butterfly Collection Records, University of Cambridge; Montejo-Kovacevich et al. 2020; see "
        f"github.com/Imageomics/INTR), {_IMAGEFOLDER_ORDER}"),
    "detr-r50": ZooEntry("detr-r50-e632da11.pth", "https://dl.fbaipublicfiles.com/detr/detr-r50-e632da11.pth",
                         None, "detr", sha256_prefix="e632da11"),
    # The backbones' published weights, under the backbone's name. No hash of them is published
    # with them, and we have not downloaded them: each is checked against the sha256 recorded when
    # it first loaded (`trust`), or against one the caller gives (fetch's `sha256`).
    **{f"dinov2-vit{size}14{suffix}": ZooEntry(
        f"dinov2_vit{size}14{tag}_pretrain.pth",
        f"https://dl.fbaipublicfiles.com/dinov2/dinov2_vit{size}14/dinov2_vit{size}14{tag}_pretrain.pth", None,
        "backbone") for size in ("s", "b") for suffix, tag in (("", ""), ("-reg", "_reg4"))},
    "bioclip2-vitl14": ZooEntry("bioclip-2_open_clip_model.safetensors",
                                "https://huggingface.co/imageomics/bioclip-2/resolve/main/open_clip_model.safetensors",
                                None, "backbone"),
}


class ZooError(RuntimeError):
    """A zoo file that could not be had or failed its check; the message says what to do."""


def cache_dir() -> Path:
    configured = environment.value(CACHE_ENV)
    if configured:
        return configured
    import pooch
    return Path(pooch.os_cache("napari-intr"))


def cached_path(name: str) -> Path:
    return cache_dir() / entry(name).filename


def entry(name: str) -> ZooEntry:
    if name not in ZOO:
        raise ZooError(f"unknown zoo model {name!r}; known: {', '.join(ZOO)}")
    return ZOO[name]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(name: str, path: Path, sha256: str | None = None) -> None:
    """DETR: hash prefix from its name. Others: `sha256` when the caller knows it, else the hash
    recorded when the file first loaded (`trust`) must still hold."""
    item, actual = entry(name), _sha256(path)
    if sha256 is not None:
        if actual != sha256.lower():
            raise ZooError(f"{path} is not the file expected for {name}: its sha256 is {actual}, not {sha256}. "
                           "Delete it and download again, or check the hash you gave")
        if not _record(path).exists():
            _record(path).write_text(actual + "\n")
        return
    if item.sha256_prefix is not None:
        if not actual.startswith(item.sha256_prefix):
            raise ZooError(f"{path} is damaged: its sha256 does not start with {item.sha256_prefix}. "
                           "Delete it and download again")
        return
    record = _record(path)
    if record.exists():
        expected = record.read_text().strip()
        if actual != expected:
            raise ZooError(f"{path} changed since it was first used (sha256 {actual[:12]}… ≠ recorded "
                           f"{expected[:12]}…). Delete it and {record.name}, then download again")


def trust(path: Path) -> None:
    """Record the hash of a zoo file that has just loaded, for `verify` to check on every later
    use. Only a file that loaded is trusted: a damaged or wrong file copied by hand (behind a
    firewall) is refused when it fails to load and does not block the right one copied after it."""
    record = _record(path)
    if not record.exists():
        record.write_text(_sha256(path) + "\n")


def _record(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def fetch(name: str, progressbar=True, sha256: str | None = None) -> Path:
    """Path of zoo file `name`, downloading it (with progress) only if it is not in the cache.
    sha256: the file's full hash, when the caller knows it (checked instead of the recorded one)."""
    item, target = entry(name), cached_path(name)
    if sha256 is not None and (len(sha256) != 64 or any(c not in "0123456789abcdefABCDEF" for c in sha256)):
        raise ZooError(f"sha256 for {name} must be 64 hexadecimal digits, got {sha256!r}")
    if target.exists():
        verify(name, target, sha256)
        return target
    import pooch
    target.parent.mkdir(parents=True, exist_ok=True)
    _record(target).unlink(missing_ok=True)  # it described a file that is gone
    try:
        pooch.retrieve(item.url, known_hash=None, fname=item.filename, path=target.parent,
                       progressbar=progressbar)
    except Exception as error:  # requests' and OS errors alike: offline, proxy, disk
        raise ZooError(f"could not download {name} from {item.url} ({type(error).__name__}: {error}). "
                       f"Offline or behind a firewall? Download that URL by other means and copy "
                       f"the file to {target}; it will be picked up from there") from error
    if item.sha256_prefix is not None and not _sha256(target).startswith(item.sha256_prefix):
        # a proxy's error page or a cut transfer: remove it so that the next try downloads again
        target.unlink(missing_ok=True)
        raise ZooError(f"the download of {name} from {item.url} is damaged (its sha256 does not start "
                       f"with {item.sha256_prefix}) and was removed. Try again, or download that URL by "
                       f"other means and copy the file to {target}")
    if sha256 is not None and _sha256(target) != sha256.lower():
        target.unlink(missing_ok=True)
        raise ZooError(f"the download of {name} from {item.url} does not have the sha256 {sha256} given, and "
                       f"was removed. Try again, or download that URL by other means and copy the file to {target}")
    verify(name, target, sha256)
    return target
