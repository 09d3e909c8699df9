"""CSV output: formula-safe cells (OWASP), RFC 4180 quoting, UTF-8, one header row, atomic files."""
import csv

import numpy as np
import pytest

from napari_intr.csv_output import escape_cell, open_csv, unescape_cell, write_csv

HOSTILE = ["=HYPERLINK(\"http://x\",\"y\")", "+1+1", "-2+3", "@SUM(A1)", "\tcmd", "\r=1",
           "a,=b", 'quote " inside', "line\nbreak", "Mésange à tête noire", "", "plain"]


def read(path):
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.reader(stream))


@pytest.mark.parametrize("text", HOSTILE)
def test_text_cells_round_trip_and_never_start_a_formula(tmp_path, text):
    path = write_csv(tmp_path / "t.csv", ["name", "value"], [[text, 1]])
    header, (name, value) = read(path)
    assert header == ["name", "value"]
    assert not name.startswith(("=", "+", "-", "@", "\t", "\r"))
    assert unescape_cell(name) == text and value == "1"


def test_numbers_stay_numbers_and_nan_is_empty(tmp_path):
    row = [-0.25, np.float32(0.5), np.int64(-3), 7, None, float("nan"), True]
    _, written = read(write_csv(tmp_path / "n.csv", list("abcdefg"), [row]))
    assert written == ["-0.25", "0.5", "-3", "7", "", "", "True"]
    assert escape_cell("-0.25") == "'-0.25"  # text that looks like a number is still text


def test_header_names_are_escaped_too_and_file_is_plain_utf8(tmp_path):
    path = write_csv(tmp_path / "h.csv", ["true \\ predicted", "=evil", "Ünïcode"], [])
    raw = path.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf") and raw.endswith(b"\r\n")
    assert read(path) == [["true \\ predicted", "'=evil", "Ünïcode"]]


def test_rows_by_column_name_and_wrong_rows_refused(tmp_path):
    with open_csv(tmp_path / "d.csv", ["file", "error"]) as table:
        table.write({"file": "@x.png"})
        with pytest.raises(ValueError, match="not in the header"):
            table.write({"nope": 1})
        with pytest.raises(ValueError, match="3 cells for 2 columns"):
            table.write([1, 2, 3])
    assert read(tmp_path / "d.csv") == [["file", "error"], ["'@x.png", ""]]


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    path = write_csv(tmp_path / "keep.csv", ["a"], [[1]])

    def rows():
        yield [2]
        raise RuntimeError("crash while writing")

    with pytest.raises(RuntimeError):
        write_csv(path, ["a"], rows())
    assert read(path) == [["a"], ["1"]] and [p.name for p in tmp_path.iterdir()] == ["keep.csv"]


def test_batch_explain_escapes_hostile_file_and_class_names(tmp_path):
    import torch
    from PIL import Image

    from napari_intr.collection.explain import PREDICTIONS_FILE, explain_folder
    from napari_intr.model import IntrConfig, build_model
    names = ["=cmd|' /C calc'!A0", "+Heliconius", "-melpomene", "@danaus"]
    torch.manual_seed(0)
    model = build_model(IntrConfig.tiny(len(names)), names).eval()
    folder = tmp_path / "in"
    folder.mkdir()
    for stem in ("=HYPERLINK(1)", "@SUM(1)", "-x"):
        Image.fromarray(np.full((40, 40, 3), 120, np.uint8)).save(folder / f"{stem}.png")
    (folder / "+broken.png").write_bytes(b"not a png")
    explain_folder(model, [folder], tmp_path / "out", top_k=4)
    with open(tmp_path / "out" / PREDICTIONS_FILE, newline="", encoding="utf-8") as stream:
        rows = list(csv.reader(stream))
    cells = [cell for row in rows for cell in row]
    assert not any(cell.startswith(("=", "+", "-", "@")) for cell in cells)
    assert {unescape_cell(cell) for cell in cells} >= set(names)
    assert sorted(unescape_cell(row[0]).rsplit("/", 1)[-1] for row in rows[1:]) == [
        "+broken.png", "-x.png", "=HYPERLINK(1).png", "@SUM(1).png"]
