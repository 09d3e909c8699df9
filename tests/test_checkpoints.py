"""Our .safetensors checkpoints: round trip, atomic writes, no code on load, bad files, class names."""
import json
import os
import pickle
import stat

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import napari_intr
from _intr_reference import one_torch_thread, seeded_model  # noqa: F401 (an autouse fixture)
from napari_intr import checkpoints, loading
from napari_intr.checkpoints import CheckpointError, read_metadata, save_model
from napari_intr.class_names import clean_class_name, read_class_list, read_class_names
from napari_intr.loading import load_model
from napari_intr.model import IntrConfig

NAMES = ["Black footed Albatross", "Laysan Albatross", "Sooty Albatross", "Groove billed Ani", "Crested Auklet"]


def make_model(seed=0, names=NAMES):
    return seeded_model(IntrConfig.tiny(len(names), enc_layers=1, dec_layers=2), names, seed)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = make_model()
    path = tmp_path_factory.mktemp("checkpoint") / "model.safetensors"
    assert save_model(model, path, dataset="synthetic", epochs=2, seed=7) == path
    return model, path


@pytest.fixture(scope="module")
def image():
    return torch.randn(1, 3, 64, 80, generator=torch.Generator().manual_seed(0))


def as_trained(model):
    """The loaded model without its inference path (napari_intr.inference: folded batch norm,
    bf16): the arithmetic the model was saved with, which a round trip must keep exactly."""
    model.inference = None
    return model


def outputs(model, image):
    with torch.no_grad():
        return model(image)


def test_round_trip(saved, image):
    model, path = saved
    loaded = as_trained(load_model(path, device="cpu"))
    assert not loaded.training
    assert loaded.config == model.config
    assert loaded.class_names == NAMES
    original, again = outputs(model, image), outputs(loaded, image)
    # same weights; only memory alignment of the loaded tensors may change the last bit
    torch.testing.assert_close(again.logits, original.logits, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(again.attention, original.attention, rtol=1e-6, atol=1e-7)
    assert all(tensor.device.type == "cpu" for tensor in loaded.state_dict().values())
    assert loaded.provenance["package_version"] == napari_intr.__version__
    assert loaded.provenance["dataset"] == "synthetic" and loaded.provenance["seed"] == 7
    info = read_metadata(path)
    assert info["config"] == model.config and info["class_names"] == NAMES
    assert info["provenance"]["epochs"] == 2
    # the public names are the same objects
    assert napari_intr.save_model is save_model and napari_intr.load_model is load_model


def test_saved_files_get_the_usual_permissions(saved):
    # a temporary file from mkstemp is 0600; the renamed checkpoint must be readable like any file
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(saved[1].stat().st_mode) == 0o666 & ~umask


def test_the_bundled_sample_model_loads(monkeypatch, tmp_path):
    model = load_model("sample", device="cpu")
    assert model.config.backbone == "tiny" and len(model.class_names) == model.config.num_classes
    with torch.no_grad():
        out = model(model.preprocess(np.zeros((96, 120, 3), np.uint8)))
    assert out.logits.shape == (1, model.config.num_classes)
    monkeypatch.setattr(loading, "sample_model_path", lambda: tmp_path / "gone.safetensors")
    with pytest.raises(CheckpointError, match="sample model is missing.*reinstall"):
        load_model("sample", device="cpu")


def test_a_folder_with_model_safetensors_loads(saved, tmp_path):
    model, path = saved
    assert load_model(path.parent, device="cpu").class_names == NAMES
    with pytest.raises(FileNotFoundError, match="without model.safetensors"):
        load_model(tmp_path, device="cpu")


def test_loading_never_unpickles(saved, image, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a .safetensors checkpoint must load without unpickling")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    model, path = saved
    loaded = as_trained(load_model(path, device="cpu"))
    torch.testing.assert_close(outputs(loaded, image).logits, outputs(model, image).logits)


def test_a_failed_write_leaves_the_previous_file_intact(saved, tmp_path, monkeypatch, image):
    model, _ = saved
    path = tmp_path / "model.safetensors"
    save_model(model, path)
    before = path.read_bytes()

    def write_half_then_fail(tensors, filename, metadata=None):
        with open(filename, "wb") as stream:
            stream.write(before[: len(before) // 2])
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpoints, "save_file", write_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        save_model(make_model(seed=1), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]  # no temporary left
    # a first write that fails leaves nothing at all
    with pytest.raises(OSError):
        save_model(model, tmp_path / "new" / "other.safetensors")
    assert list((tmp_path / "new").iterdir()) == []

    monkeypatch.undo()  # a successful write replaces the file
    other = make_model(seed=1)
    save_model(other, path)
    assert path.read_bytes() != before
    torch.testing.assert_close(outputs(as_trained(load_model(path, device="cpu")), image).logits,
                               outputs(other, image).logits)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "new"]


def test_truncated_checkpoint(saved, tmp_path):
    data = saved[1].read_bytes()
    for cut in (5, 100, len(data) // 2, len(data) - 1):
        path = tmp_path / f"cut{cut}.safetensors"
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=r"truncated"):
            load_model(path, device="cpu")


@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
                                     b"species,count\nHeliconius erato,3\n", b""],
                         ids=["png", "text", "empty"])
def test_files_that_are_not_checkpoints(tmp_path, content):
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"not a readable \.safetensors file"):
        load_model(path, device="cpu")


def test_safetensors_without_our_metadata(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file({"query_embed.weight": torch.zeros(3, 64)}, str(path))
    with pytest.raises(CheckpointError, match=r"not a napari-intr checkpoint"):
        load_model(path, device="cpu")
    # also recognised by content, whatever the file is called
    renamed = tmp_path / "weights.bin"
    renamed.write_bytes(path.read_bytes())
    with pytest.raises(CheckpointError, match=r"not a napari-intr checkpoint"):
        load_model(renamed, device="cpu")


def test_damaged_metadata_and_weights(saved, tmp_path):
    model, _ = saved
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": "napari-intr", "format_version": "1", "config": model.config.to_json(),
                "class_names": json.dumps(NAMES), "provenance": "{}"}

    newer = dict(metadata, config=json.dumps({**json.loads(metadata["config"]), "colour": "red"}))
    save_file(state, str(tmp_path / "newer.safetensors"), metadata=newer)
    with pytest.raises(CheckpointError, match=r"newer napari-intr"):
        load_model(tmp_path / "newer.safetensors", device="cpu")

    broken = dict(metadata, class_names="[not json")
    save_file(state, str(tmp_path / "broken.safetensors"), metadata=broken)
    with pytest.raises(CheckpointError, match=r"damaged"):
        load_model(tmp_path / "broken.safetensors", device="cpu")

    incomplete = {k: v for k, v in state.items() if k != "presence_vector.bias"}
    incomplete["input_proj.weight"] = torch.zeros(64, 64, 1, 1)
    save_file(incomplete, str(tmp_path / "incomplete.safetensors"), metadata=metadata)
    with pytest.raises(CheckpointError, match=r"missing keys: presence_vector\.bias.*mis-shaped keys: "
                                              r"input_proj\.weight \[64, 64, 1, 1\] \(expected \[64, 128, 1, 1\]\)"):
        load_model(tmp_path / "incomplete.safetensors", device="cpu")


def test_class_names_override_and_wrong_count(saved, tmp_path):
    _, path = saved
    names_file = tmp_path / "classes.txt"
    names_file.write_text("\n".join(f"species {i}" for i in range(5)) + "\n\n")
    assert load_model(path, class_names=names_file, device="cpu").class_names == [f"species {i}" for i in range(5)]
    assert load_model(path, class_names=list("abcde"), device="cpu").class_names == list("abcde")

    names_file.write_text("a\nb\nc\n")
    with pytest.raises(ValueError, match=r"classes\.txt: 3 class names were given but the model has 5 classes"):
        load_model(path, class_names=names_file, device="cpu")
    with pytest.raises(ValueError, match=r"6 class names were given but the model has 5 classes"):
        load_model(path, class_names=list("abcdef"), device="cpu")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(path, class_names=tmp_path / "missing.txt", device="cpu")


def test_cub_style_class_names(tmp_path):
    assert clean_class_name("001.Black_footed_Albatross") == "Black-footed Albatross"
    assert clean_class_name("1 001.Black_footed_Albatross") == "Black-footed Albatross"
    assert clean_class_name("159.Black_and_white_Warbler") == "Black-and-white Warbler"
    assert clean_class_name("187.American_Three_toed_Woodpecker") == "American Three-toed Woodpecker"
    assert clean_class_name("012.Heliconius_erato_petiverana") == "Heliconius erato petiverana"  # a trinomial
    assert clean_class_name("  200.Common_Yellowthroat \r") == "Common Yellowthroat"
    assert clean_class_name("Danaus_plexippus") == "Danaus_plexippus"  # no CUB prefix: left alone

    folders = tmp_path / "folders.txt"
    folders.write_text("001.Black_footed_Albatross\n002.Laysan_Albatross\n003.Sooty_Albatross\n")
    classes_txt = tmp_path / "classes.txt"  # CUB_200_2011/classes.txt, with a BOM and CRLF
    classes_txt.write_bytes("\ufeff1 001.Black_footed_Albatross\r\n2 002.Laysan_Albatross\r\n"
                            "3 003.Sooty_Albatross\r\n".encode("utf-8"))
    expected = ["Black-footed Albatross", "Laysan Albatross", "Sooty Albatross"]
    assert read_class_names(folders) == expected
    assert read_class_names(classes_txt) == expected
    assert read_class_names(str(classes_txt)) == expected
    assert read_class_list(classes_txt).labels == ["001.Black_footed_Albatross", "002.Laysan_Albatross",
                                                   "003.Sooty_Albatross"]


def test_class_name_files_that_cannot_be_used(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(ValueError, match="empty"):
        read_class_names(empty)
    repeated = tmp_path / "repeated.txt"
    repeated.write_text("001.Black_footed_Albatross\nBlack-footed Albatross\nLaysan Albatross\n")
    with pytest.raises(ValueError, match="repeat: Black-footed Albatross"):
        read_class_names(repeated)
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00\x81 not text")
    with pytest.raises(ValueError, match="not UTF-8"):
        read_class_names(binary)
