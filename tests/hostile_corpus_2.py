"""The second hostile corpus: kinds of input that no earlier corpus (hostile_corpus.py) held,
each built by the tests themselves, small enough that the whole corpus runs in seconds.

Two parts:
- FILES: image files with hostile names or formats (animations, long and odd names, names in
  NFD or not text at all, images too small, stems that collide). test_hostile_2.py puts them all
  in one folder and runs each through every entry point that reads an image: the Python API
  (`io.read_image`, what the docks read through), `intr explain` (one batch for all of them, then
  a re-run), the training scan and the atlas's scan.
- VALUES: hostile values of other inputs (environment variables, numbers, label images, tensors,
  name lists, class-name files, foreign files in a synth folder, damaged caches, masks, part
  files). test_rules_*.py runs them through their entry points, one rule at a time.

test_hostile_2.py counts the inputs of each kind, here and in the rule tests' parameters, and
holds the corpus to its size.
"""
from __future__ import annotations

import os
import unicodedata
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class FileInput:
    kind: str
    name: bytes                 # the file name as bytes (some are not text)
    frames: int = 1             # > 1: an animation of that many frames
    size: tuple[int, int] = (48, 40)  # height, width
    refused: str | None = None  # what the message must say when it is refused; None: it is explained

    @property
    def id(self) -> str:
        text = self.name.decode("utf-8", "backslashreplace")
        return f"{self.kind}:{text[:30]}" + (f"…{zlib.crc32(self.name):08x}" if len(text) > 30 else "")

    def write(self, folder: Path) -> Path:
        """The file in `folder` (its path as Python names it: undecodable bytes as surrogates)."""
        path = Path(os.fsdecode(os.path.join(os.fsencode(folder), self.name)))
        shade = sum(self.name) % 200
        frames = [Image.fromarray(np.full((*self.size, 3), (shade + 30 * i) % 256, np.uint8)) for i in range(self.frames)]
        suffix = path.suffix.lower()
        options = {"format": {".jpg": "JPEG", ".png": "PNG", ".gif": "GIF", ".webp": "WEBP", ".tif": "TIFF"}[suffix]}
        if self.frames > 1:
            options.update(save_all=True, append_images=frames[1:], duration=100)
        frames[0].save(path, **options)
        return path


def _name(text: str) -> bytes:
    return text.encode("utf-8")


def _stack(kind: str, suffix: str, frames: int, shown: str) -> FileInput:
    return FileInput(kind, _name(f"{kind}-{frames}{suffix}"), frames,
                     refused=f"stack of {frames} planes along time (the frames of an animated {shown})")


FILES: list[FileInput] = [
    *[_stack("animated-gif", ".gif", n, "GIF") for n in (2, 3, 7)],
    *[_stack("animated-webp", ".webp", n, "WEBP") for n in (2, 4)],
    *[_stack("animated-png", ".png", n, "APNG") for n in (2, 5)],
    *[FileInput("single-frame-animation-format", _name(f"still{s}")) for s in (".gif", ".webp")],
    *[FileInput("long-ascii-name", _name("s" * n + ".png")) for n in (200, 230, 246, 251)],
    *[FileInput("long-utf8-name", _name(c * n + ".png")) for c, n in (("é", 100), ("é", 125), ("ü", 118))],
    *[FileInput("long-cjk-or-astral-name", _name(c * n + ".png")) for c, n in (("蝶", 70), ("蝶", 83), ("𝔅", 62))],
    *[FileInput("long-names-sharing-their-start", _name("p" * 240 + c + ".png")) for c in "abc"],
    *[FileInput("nfd-name", _name(unicodedata.normalize("NFD", t))) for t in ("Café.png", "Noël é.png")],
    FileInput("nfc-twin-of-an-nfd-name", _name("Café.png")),
    *[FileInput("undecodable-name", n) for n in (b"\xff\xfe.png", b"caf\xe9.png", b"\x80.jpg")],
    *[FileInput("control-character-name", _name(t)) for t in ("bell\x07.png", "tab\there.png", "new\nline.png",
                                                               "cr\rname.png", "esc\x1b[31m.png")],
    *[FileInput("punctuation-name", _name(t)) for t in ("a,b.png", "a:b.png", 'quote".png', "semi;colon.png",
                                                         "#hash.png", "-dash.png", " lead.png", "trail .png",
                                                         "%20url.png", "$(rm).png")],
    *[FileInput("too-small-image", _name(f"small-{h}x{w}.png"), size=(h, w), refused="at least 32 px")
      for h, w in ((31, 64), (64, 31), (1, 1), (16, 16))],
    *[FileInput("stems-differing-in-case", _name(t)) for t in ("Moth.png", "moth.png", "MOTH.jpg")],
    *[FileInput("one-stem-several-formats", _name(f"wing{s}")) for s in (".png", ".jpg", ".tif")],
]

# -- values for test_rules_*.py -----------------------------------------------------------------

BAD_DECODE_BUDGETS = ["abc", "8X", "-1", "1e308", "nan", "0", "12 bytes", "8G8", "0x10"]
GOOD_DECODE_BUDGETS = {"8G": 8 * 10**9, "512M": 512 * 10**6, "8GiB": 8 * 2**30, "8589934592": 8589934592,
                       "1.5 GB": 15 * 10**8, "": 8 * 2**30}
BAD_OTHER_VARIABLES = [("WORLD_SIZE", "two"), ("WORLD_SIZE", "-3"), ("LOCAL_RANK", "x"), ("NAPARI_INTR_CACHE", " ")]
BAD_MARGINS = ["1e308%", "1e308", "inf", "-1", "nan%", "1001%", "3e9", "10%%", "1e-400x"]
BAD_COORDINATES = ["1e308", "-1e308", "3e9", "inf"]
LABEL_IDS = [("uint64", 2**63), ("uint64", 2**64 - 1), ("int64", 2**62), ("int8", 5), ("uint16", 65535), ("int32", 1)]
ENCODE_FLOATS = ["float64", "float16", "bfloat16", "float32"]
ENCODE_REFUSED = ["int64", "uint8", "bool", "nan", "inf", "complex"]
BAD_COUNTS = [("--top-k", "99999999999999999999"), ("--top-k", "1e3"), ("--top-k", "nan")]
NAME_LISTS = [('"Tit, great",Wren', ["Tit, great", "Wren"]), ('"A:b" , Wren', ["A:b", "Wren"]),
              ("Wren,,Robin,", ["Wren", "Robin"]),
              (unicodedata.normalize("NFD", "Café alba") + ",Robin", ["Café alba", "Robin"])]
REPEATED_PAIRS = ["A:B,A:B", "A:B, A : B", 'A:B,"A":"B"']
REPEATED_NAMES = ["Wren,Wren", "Wren, Wren ,Robin", "Wren," + unicodedata.normalize("NFD", "Wren")]
LOOSE_NAMES = [("FOO", "ambiguous"), ("foo", 1), ("Foo", 0), (" bar", 2), ("BAR", 2), ("fOo", "ambiguous")]
MASK_DAMAGE = ["truncated", "text", "empty", "wrong-size"]
STACK_FORMATS = {"gif": "GIF", "webp": "WEBP", "png": "APNG"}
LONG_STEMS = {"ascii-246": "s" * 246, "utf8-2byte-123": "é" * 123, "cjk-81": "蝶" * 81,
              "shared-start-a": "p" * 240 + "a", "shared-start-b": "p" * 240 + "b"}



def file_kinds() -> Counter:
    """Inputs per kind among the files (test_hostile_2.py adds the kinds of the rule tests)."""
    return Counter(item.kind for item in FILES)
