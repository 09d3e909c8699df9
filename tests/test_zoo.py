"""Zoo: cache location, hand-placed files, hash checks, offline errors, a real download over HTTP."""
import dataclasses
import functools
import hashlib
import http.server
import threading
from pathlib import Path

import pooch
import pytest
import requests
import torch

import napari_intr
from _intr_reference import (
    official_args,
    official_checkpoint,
    official_shapes,
    one_torch_thread,  # noqa: F401 (an autouse fixture)
    random_state,
)
from napari_intr import zoo
from napari_intr.checkpoints import CheckpointError
from napari_intr.devices import resolve_device
from napari_intr.loading import MissingClassNames, load_model
from napari_intr.zoo import ZooError


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(zoo.CACHE_ENV, str(folder))
    return folder


@pytest.fixture
def no_download(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pooch.retrieve was called, but the file was in the cache")

    monkeypatch.setattr(pooch, "retrieve", refuse)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def butterfly_checkpoint(path: Path, num_classes=65) -> Path:
    """An official-format INTR file (resnet18 and a one-layer transformer to stay small)."""
    args = official_args(backbone="resnet18", hidden_dim=32, nheads=8, enc_layers=1, dec_layers=1,
                         dim_feedforward=64, dataset_name="butterfly")
    shapes = official_shapes(num_classes, "resnet18", 32, 1, 1, 64)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(official_checkpoint(random_state(shapes), args), path)
    return path


def test_cache_folder_comes_from_the_environment(cache):
    assert zoo.cache_dir() == cache
    assert zoo.cached_path("intr-cub") == cache / "intr_checkpoint_cub_detr_r50.pth"


def test_a_hand_placed_file_is_used_without_download(cache, no_download):
    placed = cache / "intr_checkpoint_cub_detr_r50.pth"
    placed.parent.mkdir(parents=True)
    placed.write_bytes(b"copied by hand behind a firewall")
    assert zoo.fetch("intr-cub") == placed
    # its hash is recorded once it has loaded ...
    record = cache / "intr_checkpoint_cub_detr_r50.pth.sha256"
    assert not record.exists()
    zoo.trust(placed)
    assert record.read_text().strip() == sha256(placed)
    assert zoo.fetch("intr-cub") == placed
    # ... and a later change is caught
    placed.write_bytes(b"copied by hand behind a firewall, then damaged")
    with pytest.raises(ZooError, match=r"changed since it was first used.*Delete it and "
                                       r"intr_checkpoint_cub_detr_r50\.pth\.sha256"):
        zoo.fetch("intr-cub")


def test_a_wrong_copy_placed_by_hand_does_not_block_the_right_one(cache, no_download):
    """Behind a firewall a user copies the file by hand, as the offline message says; a first copy
    that is cut or is another file fails to load and must not be trusted (its hash recorded):
    the right file copied over it then loads."""
    placed = cache / "intr_checkpoint_butterfly_detr_r50.pth"
    placed.parent.mkdir(parents=True)
    placed.write_bytes(b"<html>proxy login</html>")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_model("intr-butterfly", device="cpu")
    butterfly_checkpoint(cache / "other" / "checkpoint.pth", num_classes=10).replace(placed)
    with pytest.raises(CheckpointError, match="has 10 classes, but intr-butterfly has 65"):
        load_model("intr-butterfly", device="cpu")
    assert not (cache / (placed.name + ".sha256")).exists()
    butterfly_checkpoint(placed)
    with pytest.warns(MissingClassNames):
        assert load_model("intr-butterfly", device="cpu").config.num_classes == 65
    assert (cache / (placed.name + ".sha256")).read_text().strip() == sha256(placed)


def test_detr_file_must_match_the_hash_in_its_name(cache, no_download, monkeypatch):
    placed = cache / "detr-r50-e632da11.pth"
    placed.parent.mkdir(parents=True)
    placed.write_bytes(b"not DETR")
    assert not sha256(placed).startswith("e632da11")
    with pytest.raises(ZooError, match=r"damaged: its sha256 does not start with e632da11"):
        zoo.fetch("detr-r50")
    # the same check passes a file whose hash does match (prefix set to this file's)
    monkeypatch.setitem(zoo.ZOO, "detr-r50", dataclasses.replace(zoo.ZOO["detr-r50"],
                                                                 sha256_prefix=sha256(placed)[:8]))
    assert zoo.fetch("detr-r50") == placed
    assert not (cache / "detr-r50-e632da11.pth.sha256").exists()  # the name is its record


@pytest.mark.parametrize("error", [requests.exceptions.ConnectionError("Max retries exceeded"),
                                   OSError("Network is unreachable")])
def test_offline_download_says_where_to_put_the_file(cache, monkeypatch, error):
    def offline(*args, **kwargs):
        raise error

    monkeypatch.setattr(pooch, "retrieve", offline)
    with pytest.raises(ZooError) as raised:
        zoo.fetch("intr-butterfly", progressbar=False)
    message = str(raised.value)
    assert "https://huggingface.co/imageomics/INTR/resolve/main/intr_checkpoint_butterfly_detr_r50.pth" in message
    assert f"copy the file to {cache / 'intr_checkpoint_butterfly_detr_r50.pth'}" in message
    assert str(error) in message
    assert not (cache / "intr_checkpoint_butterfly_detr_r50.pth").exists()


@pytest.fixture
def server(tmp_path):
    """A local HTTP server on 127.0.0.1 serving tmp_path/served."""
    served = tmp_path / "served"
    served.mkdir()

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=served))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_fetch_downloads_stores_and_verifies(cache, server, monkeypatch):
    served, url = server
    for name in ("NO_PROXY", "no_proxy"):  # a proxy must not intercept 127.0.0.1
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    source = butterfly_checkpoint(served / "intr_checkpoint_butterfly_detr_r50.pth")
    entry = zoo.ZOO["intr-butterfly"]
    monkeypatch.setitem(zoo.ZOO, "intr-butterfly", dataclasses.replace(entry, url=url + source.name))

    path = zoo.fetch("intr-butterfly", progressbar=False)
    assert path == cache / entry.filename
    assert path.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in cache.iterdir()) == [entry.filename]  # trusted once it loads
    zoo.trust(path)
    assert (cache / (entry.filename + ".sha256")).read_text().strip() == sha256(source)

    # a hash record left from a file since deleted describes nothing: a new download drops it
    path.unlink()
    (served / source.name).write_bytes(source.read_bytes() + b"new release")
    assert zoo.fetch("intr-butterfly", progressbar=False).read_bytes().endswith(b"new release")
    assert not (cache / (entry.filename + ".sha256")).exists()
    (served / source.name).write_bytes(source.read_bytes())
    path.unlink()
    zoo.fetch("intr-butterfly", progressbar=False)

    # the next use is offline: the stored file serves
    with monkeypatch.context() as offline:
        offline.setattr(pooch, "retrieve", lambda *a, **k: pytest.fail("downloaded twice"))
        assert load_model("intr-butterfly", device="cpu").config.num_classes == 65

    # a download whose content is not a DETR file fails the hash check and is named
    (served / "detr.pth").write_bytes(b"a proxy's error page")
    monkeypatch.setitem(zoo.ZOO, "detr-r50", dataclasses.replace(zoo.ZOO["detr-r50"], url=url + "detr.pth"))
    with pytest.raises(ZooError, match=r"download of detr-r50 from http://127\.0\.0\.1:\d+/detr\.pth is damaged "
                                       r"\(its sha256 does not start with e632da11\) and was removed"):
        zoo.fetch("detr-r50", progressbar=False)
    assert not (cache / "detr-r50-e632da11.pth").exists()  # the next try downloads again

    # and an HTTP error is reported with the URL
    monkeypatch.setitem(zoo.ZOO, "intr-cub", dataclasses.replace(zoo.ZOO["intr-cub"], url=url + "missing.pth"))
    with pytest.raises(ZooError, match=r"could not download intr-cub from http://127\.0\.0\.1:\d+/missing\.pth"):
        zoo.fetch("intr-cub", progressbar=False)


def test_load_model_with_a_hand_placed_official_file(cache, no_download, tmp_path):
    butterfly_checkpoint(cache / "intr_checkpoint_butterfly_detr_r50.pth")
    names = tmp_path / "butterflies.txt"
    names.write_text("".join(f"{i:03d}.Species_{i}\n" for i in range(1, 66)))
    model = load_model("intr-butterfly", class_names=names, device="cpu")
    assert not model.training
    assert model.config.num_classes == 65 and model.class_names[0] == "Species 1"
    with torch.no_grad():
        out = model(model.preprocess(torch.rand(70, 90, 3).numpy()), return_attention=True)
    assert out.logits.shape == (1, 65)
    assert torch.allclose(out.attention.flatten(-2).sum(-1), torch.ones(1), atol=1e-5)


def test_a_zoo_file_of_the_wrong_model_is_named(cache, no_download):
    butterfly_checkpoint(cache / "intr_checkpoint_butterfly_detr_r50.pth", num_classes=200)
    with pytest.raises(CheckpointError, match=r"has 200 classes, but intr-butterfly has 65"):
        load_model("intr-butterfly", device="cpu")


def test_detr_is_an_initialisation_not_a_classifier(cache, no_download):
    with pytest.raises(CheckpointError, match=r"not a classifier.*initialise training"):
        load_model("detr-r50", device="cpu")


def test_unknown_names_and_missing_paths(cache, no_download, tmp_path):
    with pytest.raises(ZooError, match=r"unknown zoo model 'intr-dogs'; known: intr-cub, intr-birds525, "
                                       r"intr-butterfly, detr-r50"):
        zoo.fetch("intr-dogs")
    with pytest.raises(FileNotFoundError, match=r"no model at intr-cubb.*zoo name.*Did you mean 'intr-cub'\?"):
        load_model("intr-cubb", device="cpu")
    missing = tmp_path / "nowhere" / "model.safetensors"
    with pytest.raises(FileNotFoundError, match=rf"no model at {missing}"):
        load_model(missing, device="cpu")


def test_devices(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    assert resolve_device(None) == resolve_device("auto")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"device 'cuda' was asked for but no CUDA GPU is available"):
        load_model("intr-cub", device="cuda")


def test_intr_cub_has_its_species_names_without_a_download(cache, no_download, tmp_path):
    """The bundled CUB list names the 200 classes; exports get the labels with their index."""
    butterfly_checkpoint(cache / "intr_checkpoint_cub_detr_r50.pth", num_classes=200)  # CUB's shapes
    model = load_model("intr-cub", device="cpu")
    assert len(model.class_names) == 200
    assert model.class_names[:2] == ["Black-footed Albatross", "Laysan Albatross"]
    assert model.class_names[158] == "Black-and-white Warbler" and model.class_names[199] == "Common Yellowthroat"
    assert model.class_labels[0] == "001.Black_footed_Albatross" and model.class_labels[199] == "200.Common_Yellowthroat"
    # people may name a class as they read it, by its label, or the old underscore way
    assert model.class_indices(["black-footed albatross", "002.Laysan_Albatross", "Groove billed Ani"]) == [0, 1, 3]
    # the labels survive a save (e.g. after fine-tuning) and a load
    path = napari_intr.save_model(model, tmp_path / "cub.safetensors")
    again = load_model(path, device="cpu")
    assert again.class_names == model.class_names and again.class_labels == model.class_labels
    # a list given by the user still wins
    names = tmp_path / "mine.txt"
    names.write_text("".join(f"bird {i}\n" for i in range(200)))
    mine = load_model("intr-cub", class_names=names, device="cpu")
    assert mine.class_names[0] == "bird 0" and mine.class_labels == mine.class_names


def test_zoo_models_without_a_published_list_say_where_to_get_one(cache, no_download):
    butterfly_checkpoint(cache / "intr_checkpoint_butterfly_detr_r50.pth")
    with pytest.warns(MissingClassNames, match=r"intr-butterfly: classes are shown as numbers; .*Cambridge "
                                               r"butterfly.*ImageFolder order"):
        model = load_model("intr-butterfly", device="cpu")
    assert model.class_names[:2] == ["class 0", "class 1"]
    assert "Birds-525" in zoo.ZOO["intr-birds525"].class_names_hint
