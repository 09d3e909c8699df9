"""Rules 2 and 9 (README "Limits"): names are compared after NFC everywhere, loose matching never
guesses, text files are read by their byte-order mark; repeats in user lists are removed with a note."""
import os
import unicodedata

import pytest

from hostile_corpus_2 import (
    LOOSE_NAMES,
    NAME_LISTS,
    REPEATED_NAMES,
    REPEATED_PAIRS,
)
from hostile_rules_support import (
    NFC_NAMES,
    cub_parts,
    make_named_checkpoints,
    nfd,
    run_cli,
)


@pytest.fixture(scope="module")
def named_checkpoint(tmp_path_factory):
    return make_named_checkpoints(tmp_path_factory.mktemp("names"))


@pytest.mark.parametrize("stored", ["nfc", "nfd"])
@pytest.mark.parametrize("asked", ["nfc", "nfd"])
def test_names_in_either_normal_form_meet_in_the_api_and_the_cli(stored, asked, named_checkpoint, tmp_path,
                                                                 capsys):
    from PIL import Image

    from napari_intr.loading import load_model
    model = load_model(named_checkpoint[stored], device="cpu")
    assert model.class_names == NFC_NAMES
    name = NFC_NAMES[0] if asked == "nfc" else nfd(NFC_NAMES[0])
    assert model.class_indices([name]) == [0]
    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "a.png")
    code, text = run_cli(["explain", tmp_path / "a.png", "--model", named_checkpoint[stored], "--out",
                          tmp_path / "out", "--classes", f"{name},{NFC_NAMES[1]}"], capsys)
    assert code == 0, text
    assert NFC_NAMES[0] in (tmp_path / "out" / "predictions.csv").read_text(encoding="utf-8")


@pytest.mark.parametrize("folder_form", ["nfc", "nfd"])
def test_folder_scans_compare_names_after_nfc(folder_form, named_checkpoint, tmp_path):
    from PIL import Image

    from napari_intr.atlas.run import collection_images
    from napari_intr.collection.scan import scan_collection
    from napari_intr.loading import load_model
    for name in NFC_NAMES:
        folder = tmp_path / "data" / (name if folder_form == "nfc" else nfd(name))
        folder.mkdir(parents=True)
        for index in range(2):
            Image.new("RGB", (40, 40), (index * 90, 20, 20)).save(folder / f"{index}.png")
    collection = scan_collection(tmp_path / "data", 0.5)
    assert collection.class_names == sorted(NFC_NAMES)  # the same order whichever form the folders have
    items, warnings = collection_images(tmp_path / "data", load_model(named_checkpoint["nfc"], device="cpu"), None)
    assert len(items) == 6 and not [w for w in warnings if "does not know" in w]


def test_nfc_and_nfd_folders_of_one_name_are_refused_as_one_class(tmp_path):
    from PIL import Image

    from napari_intr.collection.scan import scan_collection
    for name in (NFC_NAMES[0], nfd(NFC_NAMES[0]), "other"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (40, 40)).save(tmp_path / name / "a.png")
    if len({p.name for p in tmp_path.iterdir()}) < 3:
        pytest.skip("this file system normalises names itself")
    with pytest.raises(ValueError, match="both give the class name"):
        scan_collection(tmp_path, 0.5)


@pytest.mark.parametrize("asked,outcome", LOOSE_NAMES)
def test_loose_matching_never_guesses(asked, outcome, named_checkpoint, capsys, tmp_path):
    from PIL import Image

    from napari_intr.loading import load_model
    model = load_model(named_checkpoint["case"], device="cpu")
    Image.new("RGB", (64, 64)).save(tmp_path / "a.png")
    if outcome == "ambiguous":
        with pytest.raises(ValueError, match=r"ambiguous.*'Foo', 'foo'"):
            model.class_indices([asked])
        code, text = run_cli(["explain", tmp_path, "--model", named_checkpoint["case"], "--out", tmp_path / "o",
                              "--classes", asked], capsys)
        assert code == 2 and "ambiguous" in text and "'Foo', 'foo'" in text
    else:
        assert model.class_indices([asked]) == [outcome]


NAMES_FILES = {
    "utf-8": lambda text: text.encode("utf-8"),
    "utf-8-bom": lambda text: b"\xef\xbb\xbf" + text.encode("utf-8"),
    "utf-16-le-bom": lambda text: text.encode("utf-16"),
    "utf-16-be-bom": lambda text: b"\xfe\xff" + text.encode("utf-16-be"),
    "utf-32-bom": lambda text: text.encode("utf-32"),
    "nfd": lambda text: nfd(text).encode("utf-8"),
    "crlf": lambda text: text.replace("\n", "\r\n").encode("utf-8"),
}


BAD_NAMES_FILES = {
    "utf-16-le-no-bom": (lambda text: text.encode("utf-16-le"), "NUL bytes"),
    "utf-16-be-no-bom": (lambda text: text.encode("utf-16-be"), "NUL bytes"),
    "latin-1": (lambda text: text.encode("latin-1"), "not UTF-8"),
    "nul-in-name": (lambda text: text.replace("Noël", "No\x00ël").encode("utf-8"), "NUL"),
    "control-in-name": (lambda text: text.replace("Noël", "No\x07ël").encode("utf-8"), "control characters"),
}


@pytest.mark.parametrize("encoding", NAMES_FILES)
def test_class_names_files_are_decoded_by_their_byte_order_mark(encoding, tmp_path):
    from napari_intr.class_names import read_class_names
    path = tmp_path / "names.txt"
    path.write_bytes(NAMES_FILES[encoding]("\n".join(NFC_NAMES) + "\n"))
    assert read_class_names(path) == NFC_NAMES


@pytest.mark.parametrize("encoding", BAD_NAMES_FILES)
def test_class_names_files_that_are_not_clean_text_are_refused(encoding, tmp_path, named_checkpoint, capsys):
    from napari_intr.class_names import read_class_names
    write, message = BAD_NAMES_FILES[encoding]
    path = tmp_path / "names.txt"
    path.write_bytes(write("\n".join(NFC_NAMES) + "\n"))
    with pytest.raises(ValueError, match=message):
        read_class_names(path)
    from PIL import Image
    Image.new("RGB", (64, 64)).save(tmp_path / "a.png")
    code, text = run_cli(["explain", tmp_path, "--model", named_checkpoint["nfc"], "--out", tmp_path / "o",
                          "--class-names", path], capsys)
    assert code == 2 and "names.txt" in text


@pytest.mark.parametrize("given,expected", NAME_LISTS)
def test_names_holding_commas_or_colons_can_be_given(given, expected):
    from napari_intr.class_names import parse_names
    assert parse_names(given, "--classes") == expected


def test_names_and_pairs_can_come_from_a_file(tmp_path):
    from napari_intr.class_names import parse_names, parse_pairs
    (tmp_path / "classes.txt").write_text("Tit, great\nWren: winter\n", encoding="utf-16")
    assert parse_names(f"@{tmp_path / 'classes.txt'}", "--classes") == ["Tit, great", "Wren: winter"]
    (tmp_path / "pairs.txt").write_text('"Tit, great":"Wren: winter"\nA:B\n', encoding="utf-8")
    assert parse_pairs(f"@{tmp_path / 'pairs.txt'}", "--pairs") == [("Tit, great", "Wren: winter"), ("A", "B")]
    assert parse_pairs('"A:x":B, C:"D,y"', "--pairs") == [("A:x", "B"), ("C", "D,y")]


def test_undecodable_or_control_folder_names_are_refused_with_the_folder(tmp_path, capsys):
    from PIL import Image

    from hostile_corpus import FAST
    data = tmp_path / "data"
    for name in (b"bad\xffname", b"good"):
        folder = os.path.join(os.fsencode(data), name)
        os.makedirs(folder)
        Image.new("RGB", (64, 64)).save(os.path.join(folder, b"a.png").decode("utf-8", "surrogateescape"))
    code, text = run_cli(["train", "--data", data, "--out", tmp_path / "run", *FAST], capsys)
    assert code == 2 and "bad\\udcffname" in text and "rename it" in text


@pytest.mark.parametrize("given", REPEATED_PAIRS)
def test_repeated_pairs_are_removed_with_a_note(given):
    from napari_intr.class_names import RepeatedNames, parse_pairs
    with pytest.warns(RepeatedNames, match="A:B more than once"):
        assert parse_pairs(given, "--pairs") == [("A", "B")]


@pytest.mark.parametrize("given", REPEATED_NAMES)
def test_repeated_names_are_removed_with_a_note(given):
    from napari_intr.class_names import RepeatedNames, parse_names
    with pytest.warns(RepeatedNames, match="Wren more than once"):
        assert parse_names(given, "--classes")[0] == "Wren"


def test_repeats_in_cli_lists_are_noted_once_and_rows_are_not_doubled(named_checkpoint, tmp_path, capsys):
    from PIL import Image
    Image.new("RGB", (64, 64)).save(tmp_path / "a.png")
    name = NFC_NAMES[0]
    code, text = run_cli(["explain", tmp_path / "a.png", "--model", named_checkpoint["nfc"], "--out",
                          tmp_path / "out", "--classes", f"{name},{nfd(name)},{NFC_NAMES[1]}"], capsys)
    assert code == 0 and "more than once" in text
    header = (tmp_path / "out" / "predictions.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header.count("top3") == 0  # two distinct candidates, not three
    from napari_intr.loading import load_model
    model = load_model(named_checkpoint["nfc"], device="cpu")
    with pytest.warns(UserWarning, match="more than once"):
        assert model.class_indices([0, name, 1]) == [0, 1]


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-32"])
@pytest.mark.parametrize("form", ["nfc", "nfd"])
def test_boxes_files_are_read_by_their_bom_and_meet_images_after_nfc(encoding, form, tmp_path):
    from PIL import Image

    from napari_intr.regions import read_boxes
    on_disk = nfd("Café tray.png") if form == "nfc" else "Café tray.png"  # the CSV names it the other way
    Image.new("RGB", (64, 64)).save(tmp_path / on_disk)
    named = unicodedata.normalize("NFC" if form == "nfc" else "NFD", "Café tray.png")
    (tmp_path / "boxes.csv").write_text(f"image,x0,y0,x1,y1\n{named},0,0,40,40\n", encoding=encoding)
    boxes = read_boxes(tmp_path / "boxes.csv")
    assert list(boxes) == [tmp_path / on_disk]


def test_a_cub_parts_file_meets_images_after_nfc(tmp_path):
    from napari_intr.atlas.parts import PartSource
    parts = cub_parts(tmp_path / "cub", [nfd("001.Café/a.jpg")])
    assert PartSource(parts).matching([tmp_path / "data" / "001.Café" / "a.jpg"]) == 1
