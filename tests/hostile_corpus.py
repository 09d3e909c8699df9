"""A generated corpus of hostile inputs: each case builds its input under a temporary folder and
returns the `intr` command line that meets it, the exit code it must give, the name the
message must mention and what else the message must say (regular expressions).

Cases are small (a few KB each, bombs are headers that claim huge sizes) so the whole corpus
runs in seconds on a CPU. test_hostile.py runs every case through `intr_training.cli.main`.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image


@contextmanager
def lock_holder(out: Path, command: str = "intr train") -> Iterator[subprocess.Popen]:
    """Another process holding OUT's run lock as a running `command` does, for the with-block;
    then it is killed, leaving its lock stale."""
    holder = subprocess.Popen(
        [sys.executable, "-c", ("import sys; from napari_intr.collection.run_lock import RunLock\n"
                                f"lock = RunLock({str(out)!r}, {command!r}).acquire()\n"
                                "print('locked', flush=True); sys.stdin.read()")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.kill()
        holder.wait()


@dataclass
class Case:
    id: str
    build: Callable[[Path], tuple[list[str], str]]  # tmp folder -> (argv, the input's name)
    code: int
    says: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()  # files (relative to the temporary folder) that must not exist after


CASES: list[Case] = []


def case(id: str, code: int, *says: str, absent: tuple[str, ...] = ()):
    def register(build):
        CASES.append(Case(id, build, code, says, absent))
        return build
    return register


# -- builders -------------------------------------------------------------------------------------

def specimen(size=(48, 64)) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (*size, 3), dtype=np.uint8)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def rgb_png(path: Path, width: int, height: int, data: bytes, interlaced: bool = False) -> Path:
    """A PNG of width × height 8-bit RGB pixels whose image data (IDAT) is `data`."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, int(interlaced))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data)
                     + png_chunk(b"IEND", b""))
    return path


def bomb_png(path: Path, width: int, height: int, interlaced: bool = False) -> Path:
    """A valid PNG header claiming width × height RGB pixels, with a few bytes of pixel data."""
    return rgb_png(path, width, height, zlib.compress(bytes(4096)), interlaced)


def blank_png(path: Path, width: int, height: int) -> Path:
    """A complete, valid black RGB PNG (a real decompression bomb: a 10 000² px one is 300 KB)."""
    compressor, row = zlib.compressobj(1), bytes(3 * width + 1)
    return rgb_png(path, width, height, b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush())


def explain(tmp: Path, image: Path, *extra: str) -> list[str]:
    return ["explain", str(image), "--out", str(tmp / "out"), *extra]


def image_case(id, code, *says, suffix=".png"):
    """A case whose input is one image file, met by `intr explain`."""
    def register(write):
        def build(tmp: Path):
            path = tmp / f"{id}{suffix}"
            write(path)
            return explain(tmp, path), path.name
        CASES.append(Case(f"image-{id}", build, code, says))
        return write
    return register


@image_case("strip-40x20000", 2, r"40×20000 px", "crop")
def _(path):
    Image.fromarray(np.full((40, 20000), 128, np.uint8)).save(path)


@image_case("strip-20000x40", 2, r"20000×40 px", "crop")
def _(path):
    Image.fromarray(np.full((20000, 40), 128, np.uint8)).save(path)


# Past the decode budget intr explain reads a PNG row by row (napari_intr.large_images): a bomb's
# few bytes of data end long before its rows do.
@image_case("bomb-46000", 2, "cannot read", r"ends after 0 of 46000 rows \(truncated")
def _(path):
    bomb_png(path, 46000, 46000)


@image_case("bomb-over-2^31-pixels", 2, "cannot read", r"ends after 0 of 60000 rows \(truncated")
def _(path):
    bomb_png(path, 60000, 60000)


@image_case("bomb-interlaced", 2, r"46000×46000 px", "decoding it whole needs", "interlaced", "vips tiffsave")
def _(path):
    bomb_png(path, 46000, 46000, interlaced=True)


@image_case("zero-bytes", 2, "empty file")
def _(path):
    path.write_bytes(b"")


@image_case("truncated", 2, "cannot read", "truncated")
def _(path):
    Image.fromarray(specimen((200, 200))).save(path)
    path.write_bytes(path.read_bytes()[:400])


@image_case("random-bytes", 2, "cannot read", suffix=".jpg")
def _(path):
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes())


@image_case("text-as-tiff", 2, "cannot read", suffix=".tif")
def _(path):
    path.write_text("not a tiff at all\n")


@image_case("imagej-zyx-3", 2, "stack of 3 planes", "ZYX", "one plane at a time", suffix=".tif")
def _(path):
    tifffile.imwrite(path, np.zeros((3, 48, 48), np.uint8), imagej=True, metadata={"axes": "ZYX"})


@image_case("imagej-zyx-4", 2, "stack of 4 planes", "ZYX", suffix=".tif")
def _(path):
    tifffile.imwrite(path, np.zeros((4, 48, 48), np.uint16), imagej=True, metadata={"axes": "ZYX"})


@image_case("imagej-tyx-3", 2, "stack of 3 planes", "time", suffix=".tif")
def _(path):
    tifffile.imwrite(path, np.zeros((3, 48, 48), np.uint8), imagej=True, metadata={"axes": "TYX"})


@image_case("two-channels", 2, "2 channels", "CYX", suffix=".tif")
def _(path):
    tifffile.imwrite(path, np.zeros((2, 48, 48), np.uint16), imagej=True, metadata={"axes": "CYX"})


@image_case("float-extremes", 0, "percentiles", "clipped", suffix=".tif")
def _(path):
    image = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    image[0, 0], image[-1, -1] = -3.4e38, 3.4e38
    tifffile.imwrite(path, image)


@image_case("float-nodata-pixel", 0, "percentiles", "no-data", suffix=".tif")
def _(path):
    image = np.linspace(100, 4000, 64 * 64, dtype=np.float32).reshape(64, 64)
    image[5, 5] = -3.4e38
    tifffile.imwrite(path, image)


@image_case("float-nan", 2, "NaN", suffix=".tif")
def _(path):
    image = np.ones((64, 64), np.float32)
    image[3, 3] = np.nan
    tifffile.imwrite(path, image)


@image_case("complex", 2, "unsupported data type", suffix=".tif")
def _(path):
    tifffile.imwrite(path, np.ones((64, 64), np.complex64))


@image_case("too-small", 2, "at least 32 px")
def _(path):
    Image.fromarray(specimen((10, 10))).save(path)


@case("image-formula-name", 0, "explained 1 of 1")
def _(tmp):
    path = tmp / "=HYPERLINK(1).png"
    Image.fromarray(specimen()).save(path)
    return explain(tmp, path), "predictions.csv"


# -- checkpoints ----------------------------------------------------------------------------------

def tiny_state(names=("a", "b", "c")):
    import torch

    from napari_intr.model import IntrConfig, build_model
    torch.manual_seed(0)
    model = build_model(IntrConfig.tiny(len(names)), list(names))
    return model, {key: value.detach().clone().contiguous() for key, value in model.state_dict().items()}


def write_ours(path: Path, config=None, names=("a", "b", "c"), change=None, state=None, **extra) -> Path:
    """One of our .safetensors checkpoints with its metadata (or weights) altered."""
    from safetensors.torch import save_file
    model, weights = tiny_state(names)
    if change is not None:
        change(weights)
    config_values = json.loads(model.config.to_json())
    config_values.update(config or {})
    metadata = {"format": "napari-intr", "format_version": "1", "config": json.dumps(config_values),
                "class_names": json.dumps(list(names)), "provenance": "{}", **extra}
    save_file(state if state is not None else weights, str(path), metadata=metadata)
    return path


def checkpoint_case(id, code, *says, suffix=".safetensors"):
    def register(write):
        def build(tmp: Path):
            image = tmp / "specimen.png"
            Image.fromarray(specimen()).save(image)
            path = tmp / f"{id}{suffix}"
            write(path)
            return explain(tmp, image, "--model", str(path)), path.name
        CASES.append(Case(f"checkpoint-{id}", build, code, says))
        return write
    return register


for field_name, value, message in [
    ("nheads", 4.0, "nheads must be a whole number"), ("nheads", "4", "nheads must be a whole number"),
    ("hidden_dim", "64", "hidden_dim must be a whole number"), ("nheads", 0, "nheads must be at least 1"),
    ("dec_layers", -1, "dec_layers must be at least 1"), ("dropout", 2.0, "dropout must be"),
    ("dropout", "0.1", "dropout must be a number"), ("backbone", 50, "backbone must be text"),
    ("short_side", True, "short_side must be a whole number"), ("num_classes", None, "num_classes must be"),
]:
    checkpoint_case(f"config-{field_name}-{value!r}", 2, message)(
        lambda path, f=field_name, v=value: write_ours(path, {f: v}))


@checkpoint_case("config-not-object", 2, "not a JSON object")
def _(path):
    from safetensors.torch import save_file
    _, weights = tiny_state()
    save_file(weights, str(path), metadata={"format": "napari-intr", "config": "[1, 2]", "class_names": "[]"})


@checkpoint_case("names-repeat", 2, "class names repeat", "metadata")
def _(path):
    write_ours(path, names=("a", "a", "b"))


@checkpoint_case("names-empty", 2, "empty", "metadata")
def _(path):
    write_ours(path, names=("a", " ", "b"))


@checkpoint_case("names-not-text", 2, "not a list of text names")
def _(path):
    write_ours(path, class_names=json.dumps({"a": 1}))


@checkpoint_case("weights-nan", 2, "NaN or infinite weights", "diverged")
def _(path):
    write_ours(path, change=lambda w: w["query_embed.weight"].fill_(float("nan")))


@checkpoint_case("weights-inf", 2, "NaN or infinite weights", "presence_vector")
def _(path):
    write_ours(path, change=lambda w: w["presence_vector.weight"].fill_(float("inf")))


@checkpoint_case("truncated", 2, "truncated")
def _(path):
    write_ours(path)
    path.write_bytes(path.read_bytes()[:2000])


@checkpoint_case("zero-bytes", 2, "empty file", suffix=".pth")
def _(path):
    path.write_bytes(b"")


def official(path: Path, args=None, change=None, protocol=None) -> Path:
    """An official-style INTR .pth: {"model": state, "args": Namespace}."""
    import torch
    _, weights = tiny_state()
    if change is not None:
        change(weights)
    data = {"model": weights, "args": args if args is not None else tiny_args()}
    if protocol is None:
        torch.save(data, path)
    else:
        with open(path, "wb") as stream:
            pickle.dump(data, stream, protocol=protocol)
    return path


def tiny_args(**changes):
    values = {"backbone": "tiny", "hidden_dim": 64, "nheads": 4, "enc_layers": 2, "dec_layers": 2,
              "dim_feedforward": 256}
    values.update(changes)
    return argparse.Namespace(**values)


for id, args, message in [
    ("args-nheads-0", tiny_args(nheads=0), "args.nheads must be at least 1"),
    ("args-hidden-dim-text", tiny_args(hidden_dim="64"), "args.hidden_dim must be a whole number"),
    ("args-nheads-float", tiny_args(nheads=4.5), "args.nheads must be a whole number"),
    ("args-dilation", tiny_args(dilation=True), "dilated backbone"),
    ("args-dict-nheads-0", dict(vars(tiny_args(nheads=0))), "args.nheads must be at least 1"),
]:
    checkpoint_case(f"official-{id}", 2, message, suffix=".pth")(lambda path, a=args: official(path, a))


@checkpoint_case("official-non-tensor-weight", 2, "not weight tensors", "list", suffix=".pth")
def _(path):
    official(path, change=lambda w: w.__setitem__("presence_vector.bias", [0.0]))


@checkpoint_case("official-nan", 2, "NaN or infinite weights", suffix=".pth")
def _(path):
    official(path, change=lambda w: w["query_embed.weight"].fill_(float("nan")))


@checkpoint_case("official-pickle-protocol-4", 2, "plain Python pickle", "protocol 4", suffix=".pth")
def _(path):
    official(path, protocol=4)


class Exploit:
    def __reduce__(self):
        import os
        return os.system, ("echo pwned",)


@checkpoint_case("official-code-injection", 2, "refused", "could run code", suffix=".pth")
def _(path):
    import torch
    torch.save({"model": {"x": Exploit()}}, path)


# -- class-name files ------------------------------------------------------------------------------

def names_case(id, code, *says):
    def register(write):
        def build(tmp: Path):
            checkpoint = write_ours(tmp / "model.safetensors")
            data = tmp / "data"
            for name in ("a", "b", "c"):
                (data / name).mkdir(parents=True)
                Image.fromarray(specimen()).save(data / name / "1.png")
            path = tmp / f"{id}.txt"
            write(path)
            return ["eval", "--model", str(checkpoint), "--data", str(data), "--class-names", str(path),
                    "--workers", "0"], path.name
        CASES.append(Case(f"class-names-{id}", build, code, says))
        return write
    return register


@names_case("folder", 2, "is a folder")
def _(path):
    path.mkdir()


@names_case("repeat", 2, "class names repeat")
def _(path):
    path.write_text("a\nb\na\n")


@names_case("empty", 2, "empty")
def _(path):
    path.write_text("\n \n")


@names_case("latin-1", 2, "not UTF-8")
def _(path):
    path.write_bytes("Mésange\nb\nc\n".encode("latin-1"))


@names_case("too-few", 2, "2 class names", "3 classes")
def _(path):
    path.write_text("a\nb\n")


@names_case("missing", 2, "does not exist")
def _(path):
    pass


# -- command-line values -----------------------------------------------------------------------------

FAST = ["--backbone", "tiny", "--image-size", "64", "--batch-size", "4", "--workers", "0", "--seed", "0"]


def training_folder(root: Path, per_class: int = 2) -> Path:
    for index, name in enumerate(("red", "blue")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = specimen((64, 64))
            image[16:48, 16:48] = (220, 40, 40) if index == 0 else (40, 90, 220)
            Image.fromarray(image).save(root / name / f"{i}.png")
    return root


def train_argv(tmp: Path, data: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--out", str(tmp / "run"), "--epochs", "1", *FAST, *extra]


for option, value, message in [
    ("--size", "30000", "between 32 and 2048"), ("--size", "0", "between 32 and 2048"),
    ("--per-class", "0", "between 1 and"), ("--seed", "-1", "between 0 and"),
    ("--seed", "1e20", "whole number"), ("--seed", "100000000000000000000", "between 0 and"),
]:
    case(f"synth{option}={value}", 2, message, absent=("synth",))(
        lambda tmp, o=option, v=value: (["synth", "--out", str(tmp / "synth"), o, v], o))

for option, value, message in [
    ("--lr", "-1", "above 0"), ("--lr", "0", "above 0"), ("--lr", "nan", "finite"), ("--lr", "inf", "finite"),
    ("--lr-backbone", "-1", "between 0 and"), ("--batch-size", "0", "between 1 and"),
    ("--image-size", "10", "between 32 and 4096 px"), ("--image-size", "100000", "between 32 and 4096 px"),
    ("--epochs", "0", "at least 1"), ("--val-split", "1.5", "between 0 and 0.9"),
    ("--workers", "-1", "between 0 and 64"), ("--accumulate", "0", "at least 1"), ("--seed", "2.5", "whole number"),
]:
    case(f"train{option}={value}", 2, message, absent=("run",))(
        lambda tmp, o=option, v=value: (train_argv(tmp, training_folder(tmp / "data"), o, v), o))


@case("eval--batch-size=0", 2, "between 1 and")
def _(tmp):
    return ["eval", "--model", "sample", "--data", str(tmp), "--batch-size", "0"], "--batch-size"


@case("explain--top-k=-3", 2, "at least 1", absent=("out",))
def _(tmp):
    image = tmp / "specimen.png"
    Image.fromarray(specimen()).save(image)
    return explain(tmp, image, "--top-k", "-3"), "--top-k"


# -- training folders ----------------------------------------------------------------------------------

@case("folder-all-truncated", 2, "none of the 2 training images", "could be used", "truncated",
      absent=("run/model.safetensors", "run/last.safetensors", "run/training_state.pt"))
def _(tmp):
    data = training_folder(tmp / "broken-data")
    for path in data.rglob("*.png"):
        path.write_bytes(path.read_bytes()[:300])
    return train_argv(tmp, data), "broken-data"


@case("folder-with-a-bomb", 0, "skipped", "decoding it needs")
def _(tmp):
    data = training_folder(tmp / "data")
    bomb_png(data / "red" / "bomb.png", 46000, 46000)
    return train_argv(tmp, data), "bomb.png"


@case("folder-with-a-strip", 0, "skipped", "40×20000 px", "crop")
def _(tmp):
    data = training_folder(tmp / "data")
    Image.fromarray(np.full((40, 20000, 3), 90, np.uint8)).save(data / "blue" / "strip.png")
    return train_argv(tmp, data), "strip.png"


@case("folder-with-an-empty-file", 0, "skipped", "empty file")
def _(tmp):
    data = training_folder(tmp / "data")
    (data / "red" / "zero.png").write_bytes(b"")
    return train_argv(tmp, data), "zero.png"


@case("folder-is-a-file", 2, "does not exist", absent=("run",))
def _(tmp):
    (tmp / "data.png").write_bytes(b"x")
    return train_argv(tmp, tmp / "data.png"), "data.png"


@case("out-is-a-file", 2, "is a file")
def _(tmp):
    (tmp / "run").write_text("notes")
    return train_argv(tmp, training_folder(tmp / "data")), "run"


@case("init-with-nan-weights", 2, "NaN or infinite weights", absent=("run",))
def _(tmp):
    checkpoint = write_ours(tmp / "diverged.safetensors", names=("red", "blue"),
                            change=lambda w: w["query_embed.weight"].fill_(float("nan")))
    return train_argv(tmp, training_folder(tmp / "data"), "--init", str(checkpoint)), "diverged.safetensors"
