"""Image collections in ImageFolder layout: find classes and readable images, split them.

A collection is `ROOT/<class>/<image>` (a seeded, stratified validation split is drawn from
it) or `ROOT/train/<class>/…` plus `ROOT/val/<class>/…`. Hidden files and folders (".masks",
".ipynb_checkpoints") are ignored, and so are files that are not images. Images whose header
cannot be read, or whose pixels would not fit in memory, are skipped with their reason when the
collection is scanned (training's datasets skip images that fail to decode later:
intr_training/data.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import image_files
from ..class_names import clean_class_name, name_problem, normal_name
from ..image_files import IMAGE_SUFFIXES
from ..preprocess import MIN_IMAGE_SIZE, to_float_rgb
from ..provenance import Changes, earlier_outputs, earlier_outputs_note, outputs_note, outside

Sample = tuple[Path, int]  # (image path, class index)


@dataclass
class Collection:
    root: Path
    class_names: list[str]
    train: list[Sample]
    val: list[Sample]
    skipped: list[str] = field(default_factory=list)  # unreadable images, one message each
    warnings: list[str] = field(default_factory=list)
    exclude: Path | None = None  # a job's output folder: never scanned as input (napari_intr.provenance)

    def unusable_reasons(self, shown: int = 5) -> str:
        """The images found but not usable, with their reasons, for a message that says none was."""
        if not self.skipped:
            return ""
        more = f"\n  … and {len(self.skipped) - shown} more" if len(self.skipped) > shown else ""
        return (f"; {len(self.skipped)} images were found but none could be used:\n  "
                + "\n  ".join(self.skipped[:shown]) + more)


def is_visible(path: Path) -> bool:
    return not path.name.startswith(".")


def read_image(path: str | Path) -> np.ndarray:
    """Any PNG/JPEG/TIFF (8/16-bit, grey, RGB, RGBA) -> float32 H×W×3 in [0, 1], read exactly
    as batch explain and the plugin read it (napari_intr.image_files), so EXIF rotation etc. agree."""
    return to_float_rgb(image_files.read_image(path))


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the file header, without decoding the pixels."""
    header = image_files.read_header(path)
    return header.height, header.width


def unreadable_reason(path: Path) -> str | None:
    """Why an image cannot be used, from its header alone (damaged, a stack, too small, or too
    large to decode in the memory there is); None if it looks usable."""
    try:
        header = image_files.read_header(path)
        image_files.check_decodable(path, header)
    except (ValueError, OSError) as error:
        return image_files.reason(error)
    if min(header.height, header.width) < MIN_IMAGE_SIZE:
        return f"it is {header.height}×{header.width} px; INTR needs at least {MIN_IMAGE_SIZE} px on each side"
    return None


def class_images(folder: Path, collection: Collection) -> dict[str, list[Path]]:
    """Class name -> readable images, for the class folders directly under `folder`."""
    classes: dict[str, list[Path]] = {}
    # in the order of the names' NFC form: a copy whose folders are written in NFD (macOS) keeps the order
    class_dirs, _ = outside(sorted((p for p in folder.iterdir() if p.is_dir() and is_visible(p)),
                                   key=lambda p: normal_name(p.name)), collection.exclude)
    class_dirs, earlier = earlier_outputs(class_dirs, [folder])  # e.g. DATA/results of an intr explain
    if earlier:
        collection.warnings.append(earlier_outputs_note(sum(1 for d in earlier for p in d.rglob("*") if p.is_file()),
                                                        earlier))
    for class_dir in class_dirs:
        problem = name_problem(class_dir.name)
        if problem:
            raise ValueError(f"the class folder {str(class_dir)!r} has a name that {problem}; rename it "
                             "(its name becomes the class name in every file the model writes)")
        name = clean_class_name(class_dir.name)
        if name in classes:
            raise ValueError(f"class folders {class_dir.name!r} and another one both give the class name "
                             f"{name!r} in {folder}; rename one of them")
        images = []
        candidates, inside_out = outside(sorted(p for p in class_dir.rglob("*") if p.is_file()), collection.exclude)
        if inside_out:
            collection.warnings.append(outputs_note(inside_out, collection.exclude))
        found = len(candidates)
        candidates, earlier = earlier_outputs(candidates, [folder])
        if earlier:
            collection.warnings.append(earlier_outputs_note(found - len(candidates), earlier))
        for path in candidates:
            relative = path.relative_to(class_dir).parts
            if not all(part[0] != "." for part in relative) or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            reason = unreadable_reason(path)
            if reason:
                collection.skipped.append(f"{path} skipped: {reason}")
            else:
                images.append(path)
        if images:
            classes[name] = images
        else:
            collection.warnings.append(f"class folder {class_dir} has no readable images; class {name!r} "
                                       "is left out")
    return classes


def stratified_split(classes: dict[str, list[Path]], fraction: float, seed: int
                     ) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    """Per class, a seeded random `fraction` of the images for validation: at least one where a
    class has two or more images, and never all of them."""
    rng = np.random.default_rng(seed)
    train, val = {}, {}
    for name, images in classes.items():
        order = rng.permutation(len(images))
        count = int(round(fraction * len(images)))
        if fraction > 0 and len(images) >= 2:
            count = min(max(count, 1), len(images) - 1)
        count = min(count, len(images) - 1)
        val[name] = sorted(images[i] for i in order[:count])
        train[name] = sorted(images[i] for i in order[count:])
    return train, val


def scan_collection(root: str | Path, val_split: float = 0.1, seed: int = 0, exclude: Path | None = None
                    ) -> Collection:
    """Classes, train and validation samples of the collection at `root` (leaving out the files
    under `exclude`, the output folder of the job, if it lies inside `root`)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist; give a folder with one subfolder "
                                "of images per class")
    if not 0 <= val_split < 1:
        raise ValueError(f"--val-split must be at least 0 and below 1, got {val_split}")
    collection = Collection(root, [], [], [], exclude=exclude)
    if (root / "train").is_dir() and (root / "val").is_dir():
        train = class_images(root / "train", collection)
        val = class_images(root / "val", collection)
        for name in sorted(set(val) - set(train)):
            collection.warnings.append(f"validation class {name!r} has no training images; its "
                                       "validation images are left out")
            del val[name]
    else:
        train, val = stratified_split(class_images(root, collection), val_split, seed)
    names = list(train)
    if not names:
        raise ValueError(f"{root} has no class folders with images; expected {root}/<class name>/<image> "
                         "(PNG, JPEG or TIFF)" + collection.unusable_reasons())
    if len(names) < 2:
        raise ValueError(f"{root} has only one class with images ({names[0]!r}); a classifier needs at "
                         "least two class folders")
    collection.class_names = names
    collection.train = [(path, index) for index, name in enumerate(names) for path in train[name]]
    collection.val = [(path, index) for index, name in enumerate(names) for path in val.get(name, [])]
    return collection


def split_record(collection: Collection) -> dict:
    """The split as saved with a training run: per image its path relative to the root, class
    index, size and modification time (napari_intr.provenance: a resumed run says what changed)."""
    def relative(samples):
        entries = []
        for path, label in samples:
            try:
                status = path.stat()
                stamp = [status.st_size, status.st_mtime_ns]
            except OSError:  # gone since the scan: the next resume reports it
                stamp = [None, None]
            entries.append([path.relative_to(collection.root).as_posix(), label, *stamp])
        return entries
    return {"train": relative(collection.train), "val": relative(collection.val)}


def keep_split(collection: Collection, saved: dict, rescan: bool) -> str | None:
    """Put the saved run's split back on a fresh scan (a resumed run never redraws it): its
    images still there keep their side; images gone are dropped; images added since join
    training only with `rescan`. Returns the one line that says what changed, or None."""
    found = {path.relative_to(collection.root).as_posix(): (path, label)
             for path, label in collection.train + collection.val}
    saved_entries = [entry for side in ("train", "val") for entry in saved[side]]
    saved_names = {entry[0] for entry in saved_entries}
    changes = Changes(vanished=sorted(name for name in saved_names if name not in found),
                      added=sorted(name for name in found if name not in saved_names))
    for name, _, *stamp in saved_entries:
        if name in found and len(stamp) == 2:
            status = found[name][0].stat()
            if [status.st_size, status.st_mtime_ns] != stamp:
                changes.changed.append(name)
    collection.train = [found[entry[0]] for entry in saved["train"] if entry[0] in found]
    collection.val = [found[entry[0]] for entry in saved["val"] if entry[0] in found]
    if rescan:
        collection.train += [found[name] for name in changes.added]
    note = ": they join training (--rescan)" if rescan else ": not used (add --rescan to train on them)"
    return changes.line("images", note, "trained on as they are now")
