"""The inference path (napari_intr.inference): folded batch norm, channels-last, bf16 where native.

fp32 on the path must equal the model as it is (maps within 1e-4, the same top-1); bf16 must
rank and place like fp32; the faithfulness randomisation check must mean what it meant."""
import copy

import numpy as np
import pytest
import torch

from napari_intr.explanation import Explainer
from napari_intr.inference import InferencePath, prepare_for_inference, resolve_precision
from napari_intr.loading import load_model
from napari_intr.model import IntrConfig, build_model


def _plain(model):
    """The same weights without the inference path: today's model as it is."""
    plain = copy.deepcopy(model)
    plain.inference = None
    return plain


def _same(got, expected) -> bool:
    """Maps and logits equal to the issue's 1e-4, and to 0.1 % of each map's largest weight
    (random models' maps are near uniform: ~1 / cells each)."""
    maps = np.abs(got.attention - expected.attention).max()
    return bool(maps < 1e-4 and maps < 1e-3 * expected.attention.max()
                and np.abs(got.logits - expected.logits).max() < 1e-4)


def _differ(got, expected) -> bool:
    return bool(np.abs(got.attention - expected.attention).max() > 0.02 * expected.attention.max())


def _trained_like(model):
    """Batch-norm statistics and affine far from identity, as a trained network's are: folding
    that ignored them (or folded twice) would show."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, tensor in model.backbone.state_dict().items():
            if "running_var" in name or (".bn" in name or "downsample.1" in name) and name.endswith("weight"):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator))
            elif "running_mean" in name or name.endswith("bias") and ("bn" in name or "downsample.1" in name):
                tensor.copy_(0.2 * torch.randn(tensor.shape, generator=generator))
    return model.eval()


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (96 + 8 * i, 128, 3), dtype=np.uint8) for i in range(3)]


@pytest.mark.parametrize("backbone", ["tiny", "resnet18"])
def test_fp32_folded_equals_the_model_as_it_is(backbone, images):
    torch.manual_seed(0)
    config = IntrConfig.for_backbone(backbone, 12, **({} if backbone == "tiny" else dict(
        hidden_dim=64, nheads=4, enc_layers=1, dec_layers=2, dim_feedforward=128, short_side=96, max_side=160)))
    model = _trained_like(build_model(config))
    fast = prepare_for_inference(_plain(model), "fp32")
    for image in images:
        expected, got = Explainer(model).explain(image), Explainer(fast).explain(image)
        assert _same(got, expected)
        assert got.top_class() == expected.top_class()
    # the folding happened on a copy: the model's batch norms and state are untouched
    folded = fast.inference.backbone(fast.backbone[0])
    assert not any(isinstance(m, torch.nn.BatchNorm2d) or type(m).__name__ == "FrozenBatchNorm2d"
                   for m in folded.modules())
    assert fast.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(fast.state_dict().values(), model.state_dict().values()))


def test_bf16_ranks_and_places_like_fp32_on_the_sample_model():
    from napari_intr.image_files import read_image
    from napari_intr.loading import sample_data_dir
    fp32, bf16 = load_model("sample", device="cpu", precision="fp32"), load_model("sample", device="cpu",
                                                                                     precision="bf16")
    from scipy.stats import spearmanr
    for path in sorted((sample_data_dir() / "specimens").glob("*.png")):
        image = read_image(path)
        a, b = Explainer(fp32).explain(image), Explainer(bf16).explain(image)
        assert b.attention.dtype == np.float32 and b.logits.dtype == np.float32
        assert a.top_class() == b.top_class()
        column = a.column(a.top_class())
        rho = spearmanr(a.attention[-1, :, column].ravel(), b.attention[-1, :, column].ravel()).statistic
        assert rho > 0.99


def test_the_fold_follows_the_weights():
    """Weights changed in place (an edit, a re-initialisation, a load) are folded again."""
    torch.manual_seed(0)
    model = prepare_for_inference(_trained_like(build_model(IntrConfig.tiny(4))), "fp32")
    image = np.random.default_rng(1).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    before = Explainer(model).explain(image)
    first = model.inference.backbone(model.backbone[0])
    assert model.inference.backbone(model.backbone[0]) is first  # reused while nothing changes
    with torch.no_grad():
        model.backbone[0].body[0][0].weight.mul_(-1)
    after = Explainer(model).explain(image)
    assert model.inference.backbone(model.backbone[0]) is not first
    expected = Explainer(_plain(model)).explain(image)
    assert _same(after, expected) and _differ(after, before)


def test_gradients_and_training_run_the_model_as_it_is():
    model = prepare_for_inference(build_model(IntrConfig.tiny(3)), "bf16")
    assert model.inference_path() is None  # autograd on: Grad-CAM hooks the real backbone
    with torch.no_grad():
        assert model.inference_path() is model.inference
        model.train()
        assert model.inference_path() is None


def test_the_randomisation_check_randomises_the_weights_it_meant(images):
    """On a model on the inference path the cascade randomises the unfolded weights (batch-norm
    statistics kept, as before) and its explanations are those of the randomised model as it is."""
    from napari_intr.faithfulness.sanity import cascade
    torch.manual_seed(0)
    model = prepare_for_inference(_trained_like(build_model(IntrConfig.tiny(5))), "fp32")
    trained = Explainer(model).explain(images[0])
    for stage, randomised in cascade(model, seed=3):
        assert isinstance(randomised.inference, InferencePath)
        fast, plain = Explainer(randomised).explain(images[0]), Explainer(_plain(randomised)).explain(images[0])
        assert _same(fast, plain) and _differ(fast, trained), stage
    # the caller's model and its fold are untouched
    assert np.abs(Explainer(model).explain(images[0]).attention - trained.attention).max() == 0


@pytest.mark.parametrize(("capabilities", "expected"), [({}, "fp32"), ({"avx512_bf16": True}, "bf16"),
                                                        ({"amx_bf16": True}, "bf16")])
def test_auto_precision_follows_the_cpu_flags(monkeypatch, capabilities, expected):
    import platform
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_f": True, **capabilities}, raising=False)
    assert resolve_precision("auto", torch.device("cpu")) == expected
    assert resolve_precision(None, "cpu") == expected
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    assert prepare_for_inference(build_model(IntrConfig.tiny(2))).inference.precision == expected


def test_cuda_computes_bf16_and_mps_fp32():
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"
    assert resolve_precision("auto", torch.device("mps")) == "fp32"
    assert InferencePath("bf16").channels_last(torch.device("cuda"))
    assert InferencePath("fp32").channels_last(torch.device("cpu"))
    assert not InferencePath("fp32").channels_last(torch.device("mps"))


def test_a_bad_precision_is_named():
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, got 'fp16'"):
        load_model("sample", device="cpu", precision="fp16")


def test_the_cli_takes_precision(tmp_path, images):
    from PIL import Image

    from intr_training.cli import main
    Image.fromarray(images[0]).save(tmp_path / "a.png")
    assert main(["explain", str(tmp_path / "a.png"), "--out", str(tmp_path / "out"), "--precision", "fp32",
                 "--device", "cpu"]) == 0
    assert (tmp_path / "out" / "predictions.csv").is_file()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_model_panel_loads_in_the_precision_chosen(monkeypatch, precision):
    """The Model panel's Precision reaches the model through its load job (Qt-free here)."""
    import threading

    from napari_intr.widgets.workers.jobs import Result, load_model_job
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the suite's thread count stays
    loaded = [m.value for m in load_model_job("sample", None, "cpu", precision, threading.Event())
              if isinstance(m, Result)]
    assert loaded[0].inference.precision == precision


def test_the_next_image_is_read_while_this_one_is_explained(tmp_path):
    """napari_intr.read_ahead: in order, on a worker thread, errors raised where the image is asked for."""
    import threading

    from napari_intr.read_ahead import ReadAhead
    paths = [tmp_path / name for name in ("a", "b", "b", "bad", "c")]
    threads, release = {}, threading.Event()

    def read(path):
        threads[path.name] = threading.current_thread().name
        if path.name == "c":
            release.wait(5)
        if path.name == "bad":
            raise OSError("bad is damaged")
        return path.name.upper()

    reader = ReadAhead(paths, read)
    assert reader(paths[0]) == "A" and threads["a"] == threading.current_thread().name  # the first: at once
    assert reader(paths[1]) == "B" and threads["b"].startswith("napari-intr-read-ahead")  # read ahead
    with pytest.raises(OSError, match="bad is damaged"):
        reader(paths[3])
    release.set()
    assert reader(paths[4]) == "C" and threads["c"].startswith("napari-intr-read-ahead")
    reader.close()


def test_images_of_one_size_are_encoded_as_one_batch(monkeypatch):
    """Explainer.encode_many: same-size images in one backbone pass, each explanation equal to its
    own (fp32); a bad image gets its error in its place and the others go on."""
    model = load_model("sample", device="cpu", precision="fp32")
    explainer = Explainer(model)
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in
              [(128, 192, 3), (128, 192, 3), (4, 4, 3), (160, 128, 3), (128, 192, 3)]]
    batches = []
    encode = type(model).encode
    monkeypatch.setattr(type(model), "encode", lambda self, x, *a: batches.append(len(x)) or encode(self, x, *a))
    encoded = explainer.encode_many(images, [f"i{n}" for n in range(5)])
    assert sorted(batches) == [1, 3]  # the three 128x192 images together, the 160x128 one alone
    assert isinstance(encoded[2], ValueError) and "px" in str(encoded[2])
    monkeypatch.undo()
    for n in (0, 1, 3, 4):
        assert encoded[n].image_name == f"i{n}"
        assert _same(explainer.decode(encoded[n]), explainer.explain(images[n]))


def test_a_folder_explained_in_batches_equals_one_at_a_time(monkeypatch, tmp_path):
    """explain_folder with batches of 3 (as on a GPU): the same rows as one at a time, a damaged
    file among them reported alone, and a stop between records leaves no unrecorded TIFF."""
    from PIL import Image

    from napari_intr.collection import explain as batch
    model = load_model("sample", device="cpu", precision="fp32")
    rng = np.random.default_rng(5)
    folder = tmp_path / "images"
    folder.mkdir()
    for n in range(5):
        Image.fromarray(rng.integers(0, 256, (128, 160, 3), dtype=np.uint8)).save(folder / f"s{n}.png")
    (folder / "s2b.png").write_bytes(b"not a png")
    one = batch.explain_folder(model, [folder], tmp_path / "one")
    monkeypatch.setitem(batch.BATCH_IMAGES, "cpu", 3)
    three = batch.explain_folder(model, [folder], tmp_path / "three")
    assert one["done"] == three["done"] == 5 and [s[0] for s in three["skipped"]] == [str(folder / "s2b.png")]
    assert (tmp_path / "one" / "predictions.csv").read_text() == (tmp_path / "three" / "predictions.csv").read_text()
    done = []
    stopped = batch.explain_folder(model, [folder], tmp_path / "stop", progress=lambda *_: done.append(1),
                                   should_stop=lambda: len(done) >= 2)
    assert stopped["cancelled"] and stopped["done"] == 2
    assert len(list((tmp_path / "stop").glob("*.tif"))) == 2
