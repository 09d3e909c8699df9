"""What the rule tests (test_rules_*.py) share: running the `intr` command, small inputs built
once per module, and the hostile edits they make to them."""
import os
import shutil
import unicodedata

from intr_training import cli
from napari_intr import synth

TWO = synth.SHOWCASE_PAIR  # two look-alike species of the sample model


def make_small_collection(root):
    """Two look-alike species, two images each, 48 px (the sample model's classes), no masks."""
    root = root / "data"
    synth.write_collection(root, per_class=2, size=48, seed=3)
    for entry in root.iterdir():
        if entry.is_dir() and entry.name not in TWO:
            shutil.rmtree(entry)
    return root


def make_named_checkpoints(root):
    """Tiny checkpoints whose class names are in NFC, in NFD, and differ only in case."""
    from hostile_corpus import write_ours
    return {"nfc": write_ours(root / "nfc.safetensors", names=NFC_NAMES),
            "nfd": write_ours(root / "nfd.safetensors", names=[nfd(n) for n in NFC_NAMES]),
            "case": write_ours(root / "case.safetensors", names=["Foo", "foo", "Bar"])}


def run_cli(argv, capsys):
    try:
        code = cli.main([str(arg) for arg in argv])
    except SystemExit as exit:
        code = exit.code
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "Traceback" not in text
    return code, text


def files_of(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def replace_image(path, seed):
    """Another specimen under the same name (as a user re-exporting a photo would)."""
    from PIL import Image
    image, _ = synth.render(synth.SPECIES[-1].name, synth.sample_pose(synth.image_rng(seed, "x", 0), 48), 48)
    Image.fromarray(image).save(path)


def explain_rows(out):
    import csv
    with open(out / "predictions.csv", newline="", encoding="utf-8") as stream:
        return {row["file"]: row for row in csv.DictReader(stream)}


RESUMABLE = {
    "explain": lambda data, out: ["explain", data, "--out", out],
    "atlas": lambda data, out: ["atlas", "--data", data, "--out", out, "--per-head", "1"],
}


NFC_NAMES = ["Café alba", "Ångström nigra", "Noël rubra"]


def nfd(name):
    return unicodedata.normalize("NFD", name)


def name_bytes(path):
    return len(os.fsencode(path.name))


def cub_parts(root, image_paths):
    """A CUB-style parts/part_locs.txt with images.txt two folders up."""
    (root / "parts").mkdir(parents=True)
    (root / "images.txt").write_text("".join(f"{i} {p}\n" for i, p in enumerate(image_paths, 1)))
    (root / "parts" / "parts.txt").write_text("1 beak\n")
    (root / "parts" / "part_locs.txt").write_text("".join(f"{i} 1 10 10 1\n" for i in range(1, len(image_paths) + 1)))
    return root / "parts" / "part_locs.txt"


def write_bad_mask(kind, path, shape):
    import numpy as np
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "truncated":
        Image.fromarray(np.full(shape, 255, np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[:30])
    elif kind == "text":
        path.write_text("not a mask")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "wrong-size":
        Image.fromarray(np.full((shape[0] // 2, shape[1] + 3), 255, np.uint8)).save(path)


def animated(path, frames=3, **options):
    import numpy as np
    from PIL import Image
    images = [Image.fromarray(np.full((48, 48, 3), 40 * i, np.uint8)) for i in range(frames)]
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=100, **options)
    return path
