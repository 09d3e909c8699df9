"""The second hostile corpus (hostile_corpus_2.py) through every entry point that reads an image:
the Python API (what the docks read through), `intr explain` (all files in one batch, then a
re-run), the training scan and the atlas's scan. No traceback, nothing silently wrong (every
file is explained or refused with its name and reason), no file lost or written over."""
import csv
import os
from collections import Counter

import pytest

from hostile_corpus import write_ours
from hostile_corpus_2 import FILES, file_kinds
from hostile_rules_support import run_cli

RULE_TEST_MODULES = ["test_rules_files", "test_rules_resume", "test_rules_values", "test_rules_names",
                     "test_rules_formats"]
# the kind of input each rule test meets (its cases are its parameters)
RULE_TEST_KINDS = {
    "synth_never_removes": "foreign-file-in-a-synth-folder", "synth_replaces_exactly": "synth-folder-rerun",
    "synth_refuses_a_symlink": "symlink-in-a-synth-folder", "manifest_naming_files_outside":
    "synth-manifest-naming-files-outside", "holding_the_inputs": "output-folder-holding-the-inputs", "rerun_redoes_changed": "input-replaced-or-gone-on-rerun",
    "outputs_inside_its_input": "output-folder-inside-the-inputs", "of_an_earlier_run_into_another_folder":
    "earlier-output-folder-inside-the-inputs", "resume_keeps_the_saved_split":
    "images-added-or-removed-before-resume", "damaged_feature_cache": "damaged-feature-cache",
    "same_size_and_time": "content-changed-keeping-size-and-time", "bad_environment_value": "bad-decode-budget",
    "importing_never_fails": "bad-environment-at-import", "documented_form": "decode-budget-forms",
    "other_variables": "bad-torchrun-or-cache-variable", "margins_out_of_range": "margin-out-of-range",
    "box_coordinates": "box-coordinate-out-of-range", "label_ids_of_any": "label-ids-of-any-integer-type",
    "negative_label": "negative-label-ids", "encode_takes_any": "encode-floating-types",
    "encode_names_what": "encode-refused-tensors", "counts_that_overflow": "count-overflowing-int32",
    "either_normal_form": "nfd-or-nfc-class-names", "folder_scans_compare": "nfd-class-folders",
    "nfc_and_nfd_folders": "nfc-and-nfd-twin-folders", "loose_matching": "loose-or-ambiguous-class-name",
    "decoded_by_their_byte_order": "class-names-file-encodings", "not_clean_text":
    "class-names-file-not-clean-text", "commas_or_colons": "names-holding-commas-or-colons",
    "pairs_can_come_from_a_file": "names-and-pairs-from-a-file", "undecodable_or_control_folder":
    "undecodable-class-folder", "repeated_pairs": "repeated-pairs", "repeated_names": "repeated-names",
    "repeats_in_cli_lists": "repeated-candidates", "long_image_names": "long-image-names-in-a-batch",
    "long_region_ids": "long-region-id", "every_export_of_the_docks": "long-stems-in-dock-exports",
    "long_and_colliding_class": "long-or-colliding-class-names", "output_cannot_be_written":
    "output-name-taken-by-a-folder", "bad_mask_is_named": "damaged-or-mis-sized-mask",
    "atlas_names_a_bad_mask": "mis-sized-specimen-mask-in-an-atlas", "matches_no_image":
    "parts-file-matching-no-image", "matches_runs_quietly": "parts-file-matching", "animated_images":
    "animated-image-at-every-entry-point", "single_frame_files": "single-frame-animation-format",
    "cached_image_replaced": "cached-image-replaced-under-its-name", "masks_changed": "mask-changed-before-rerun",
    "parts_file_changed": "parts-file-changed-before-rerun", "boxes_files_are_read": "boxes-file-encodings-and-nfd",
    "cub_parts_file_meets": "nfd-parts-file",
    "only_unusable_images": "folder-of-only-unusable-images", "faithfulness_evaluation_names":
    "mis-sized-masks-in-the-faithfulness-evaluation", "edit_docks_export": "long-layer-name-in-edit-exports",
}


def rule_test_kinds() -> Counter:
    """Cases per kind among the rule tests (the product of their parameter lists)."""
    import importlib
    counted = Counter()
    functions = [(name, function) for module in RULE_TEST_MODULES
                 for name, function in vars(importlib.import_module(module)).items() if name.startswith("test_")]
    for name, function in functions:
        kind = next(kind for part, kind in RULE_TEST_KINDS.items() if part in name)
        cases = 1
        for mark in getattr(function, "pytestmark", []):
            if mark.name == "parametrize":
                cases *= len(mark.args[1])
        counted[kind] += cases
    return counted


def test_the_corpus_holds_at_least_150_inputs_of_30_kinds():
    counted = file_kinds() + rule_test_kinds()
    assert sum(counted.values()) >= 150 and len(counted) >= 30, counted
    assert len({item.name for item in FILES}) == len(FILES)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Every file of the corpus in DATA/hostile/, and one plain image in DATA/plain/."""
    root = tmp_path_factory.mktemp("corpus2")
    folder = root / "data" / "hostile"
    folder.mkdir(parents=True)
    paths = {item.id: item.write(folder) for item in FILES}
    (root / "data" / "plain").mkdir()
    FILES[-1].write(root / "data" / "plain")
    return root, paths


def snapshot(root):
    return {path: path.stat().st_mtime_ns for path in root.rglob("*") if path.is_file()}


@pytest.fixture(scope="module")
def explainer():
    from napari_intr.explanation import Explainer
    from napari_intr.loading import load_model
    return Explainer(load_model("sample", device="cpu"), "sample")


@pytest.mark.parametrize("item", FILES, ids=[item.id for item in FILES])
def test_the_api_explains_or_refuses_each_file_naming_it(item, corpus, explainer):
    """io.read_image then Explainer.explain: what the Explorer dock and a script do."""
    from napari_intr.image_files import read_image
    path = corpus[1][item.id]
    if item.refused:
        with pytest.raises(ValueError) as refused:
            explainer.explain(read_image(path), path.stem)
        assert item.refused in str(refused.value)
        if "stack" in item.refused:  # refused while reading: the message names the file
            assert path.name in str(refused.value)
    else:
        explanation = explainer.explain(read_image(path), path.stem)
        assert explanation.image_shape == item.size and explanation.top_class()


def csv_cell(path) -> str:
    """How predictions.csv writes a file name (an undecodable one as its escaped bytes)."""
    text = str(path)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def test_one_explain_batch_explains_or_refuses_every_file_then_resumes(corpus, tmp_path, capsys):
    root, paths = corpus
    folder = root / "data" / "hostile"
    before = snapshot(root)
    out = tmp_path / "out"
    code, text = run_cli(["explain", folder, "--out", out], capsys)
    assert code == 0 and "Traceback" not in text
    from napari_intr.csv_output import unescape_cell  # "-dash.png" is written '-dash.png (not a formula)
    with open(out / "predictions.csv", newline="", encoding="utf-8") as stream:
        rows = {unescape_cell(row["file"]): {key: unescape_cell(value) for key, value in row.items()}
                for row in csv.DictReader(stream)}
    assert len(rows) == len(FILES)
    attention = set()
    for item in FILES:
        row = rows[csv_cell(paths[item.id])]
        if item.refused:
            assert item.refused in row["error"], (item.id, row["error"])
            assert f"skipped {paths[item.id]}: " in text, item.id  # named, with its reason
        else:
            assert not row["error"] and row["top1_class"], (item.id, row)
            written = out / row["attention_file"]
            assert written.is_file() and len(os.fsencode(written.name)) <= 255
            attention.add(row["attention_file"].casefold())
    assert len(attention) == sum(not item.refused for item in FILES), sorted(attention)  # none written over another
    assert snapshot(root) == before  # the inputs untouched
    code, again = run_cli(["explain", folder, "--out", out], capsys)
    assert code == 0 and f"({len(FILES) - sum(bool(i.refused) for i in FILES)} done by an earlier run)" in again
    assert "changed since" not in again and "no longer there" not in again


def test_the_training_and_atlas_scans_use_or_name_every_file(corpus, tmp_path):
    from napari_intr.atlas.run import collection_images
    from napari_intr.collection.scan import scan_collection
    from napari_intr.loading import load_model
    root, paths = corpus
    collection = scan_collection(root / "data", 0.2)
    used = {path for path, _ in collection.train + collection.val}
    model = load_model(write_ours(tmp_path / "two.safetensors", names=("hostile", "plain")), device="cpu")
    items, warnings = collection_images(root / "data", model, None)
    in_atlas = {path for path, _ in items.values()}
    for item in FILES:
        path = paths[item.id]
        if item.refused:
            said = [line for line in collection.skipped if str(path) in line]
            assert said and item.refused in said[0], item.id
            assert path not in in_atlas and [line for line in warnings if str(path) in line]
        else:
            assert path in used and path in in_atlas, item.id
