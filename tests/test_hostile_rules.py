"""Property tests of the input rules (README "Limits"), each across every entry point it concerns.
The corpus of hostile inputs that exercises them case by case is hostile_corpus_2.py."""
import os
import shutil

import pytest

from intr_training import cli, synth


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


# -- rule 6: nothing is deleted that the program did not write --------------------------------------

FOREIGN = {
    "png-added-to-species": lambda out: (out / synth.SPECIES[0].name / "mine.png", b"\x89PNG user"),
    "png-added-to-masks": lambda out: (out / ".masks" / synth.SPECIES[1].name / "mine.png", b"mask"),
    "synth-png-replaced": lambda out: (next((out / synth.SPECIES[2].name).glob("*.png")), b"edited"),
    "text-at-top": lambda out: (out / "notes.txt", b"field notes"),
    "new-folder": lambda out: (out / "my species" / "a.png", b"photo"),
    "hidden-file": lambda out: (out / synth.SPECIES[0].name / ".DS_Store", b"finder"),
}


@pytest.fixture(scope="module")
def synth_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "synth"
    synth.write_collection(out, per_class=1, size=32)
    return out


@pytest.mark.parametrize("kind", FOREIGN)
@pytest.mark.parametrize("entry", ["api", "cli"])
def test_synth_never_removes_what_it_did_not_write(kind, entry, synth_folder, tmp_path, capsys):
    out = tmp_path / "synth"
    shutil.copytree(synth_folder, out)
    path, data = FOREIGN[kind](out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    before = files_of(out)
    if entry == "api":
        with pytest.raises(ValueError) as refused:
            synth.write_collection(out, per_class=1, size=32)
        text = str(refused.value)
    else:
        code, text = run_cli(["synth", "--out", out, "--per-class", "1", "--size", "32"], capsys)
        assert code == 2
    assert str(path) in text and "nothing was removed" in text
    assert files_of(out) == before  # not one file lost, not even the synth's own


def test_synth_replaces_exactly_its_own_earlier_output(synth_folder, tmp_path, capsys):
    out = tmp_path / "synth"
    shutil.copytree(synth_folder, out)
    (out / "empty folder of mine").mkdir()
    code, _ = run_cli(["synth", "--out", out, "--per-class", "2", "--size", "32", "--seed", "1"], capsys)
    assert code == 0
    assert (out / "empty folder of mine").is_dir()  # not written by synth: kept
    assert len(list((out / synth.SPECIES[0].name).glob("*.png"))) == 2
    # a synth.json without its list of files (an older version, or edited) is refused
    summary = (out / "synth.json").read_text()
    (out / "synth.json").write_text(summary.replace('"files"', '"gone"'))
    before = files_of(out)
    code, text = run_cli(["synth", "--out", out, "--per-class", "1", "--size", "32"], capsys)
    assert code == 2 and "synth.json" in text and "nothing was removed" in text
    assert files_of(out) == before


def test_synth_refuses_a_symlink_it_did_not_write(synth_folder, tmp_path, capsys):
    out = tmp_path / "synth"
    shutil.copytree(synth_folder, out)
    precious = tmp_path / "precious.png"
    precious.write_bytes(b"data")
    os.symlink(precious, out / synth.SPECIES[0].name / "link.png")
    code, text = run_cli(["synth", "--out", out, "--per-class", "1", "--size", "32"], capsys)
    assert code == 2 and "link.png" in text
    assert precious.read_bytes() == b"data" and (out / synth.SPECIES[0].name / "link.png").is_symlink()
