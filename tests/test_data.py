"""Image collections for training: layout, split, reading, batching, transforms."""
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from intr_training.data import ImageFolderDataset, collate
from intr_training.transforms import eval_transform, train_transform, training_sizes
from napari_intr.collection.scan import read_image, scan_collection
from napari_intr.model import IntrConfig, build_model
from training_data import write_classes


def test_hidden_folders_and_other_files_are_not_classes(tmp_path):
    write_classes(tmp_path, {"b": 3, "a": 3})
    for hidden in (".masks/a", ".ipynb_checkpoints"):
        (tmp_path / hidden).mkdir(parents=True)
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / hidden / "x.png")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "a" / ".hidden.png").write_bytes(b"")
    collection = scan_collection(tmp_path, val_split=0.0)
    assert collection.class_names == ["a", "b"]
    assert len(collection.train) == 6 and not collection.val and not collection.skipped


def test_split_is_stratified_seeded_and_disjoint(tmp_path):
    counts = {"many": 20, "few": 2, "single": 1, "some": 7}
    write_classes(tmp_path, counts)
    collection = scan_collection(tmp_path, val_split=0.25, seed=3)
    names = collection.class_names
    val_counts = {name: sum(1 for _, label in collection.val if names[label] == name) for name in counts}
    assert val_counts == {"many": 5, "few": 1, "single": 0, "some": 2}
    train_paths = {path for path, _ in collection.train}
    val_paths = {path for path, _ in collection.val}
    assert not train_paths & val_paths and len(train_paths | val_paths) == sum(counts.values())
    again = scan_collection(tmp_path, val_split=0.25, seed=3)
    other = scan_collection(tmp_path, val_split=0.25, seed=4)
    assert again.val == collection.val
    assert other.val != collection.val


def test_train_and_val_folders_are_used_as_given(tmp_path):
    write_classes(tmp_path / "train", {"a": 3, "b": 3})
    write_classes(tmp_path / "val", {"a": 1, "b": 2, "stray": 1})
    collection = scan_collection(tmp_path, val_split=0.5)
    assert collection.class_names == ["a", "b"]
    assert len(collection.train) == 6 and len(collection.val) == 3
    assert any("stray" in message for message in collection.warnings)


def test_empty_class_folder_is_left_out_with_a_warning(tmp_path):
    write_classes(tmp_path, {"a": 2, "b": 2})
    (tmp_path / "empty").mkdir()
    collection = scan_collection(tmp_path)
    assert collection.class_names == ["a", "b"]
    assert any("empty" in message for message in collection.warnings)


def test_corrupt_images_are_skipped_and_counted(tmp_path):
    write_classes(tmp_path, {"a": 3, "b": 3})
    (tmp_path / "a" / "garbage.png").write_bytes(b"this is not a png")
    good = (tmp_path / "b" / "000.png").read_bytes()
    (tmp_path / "b" / "truncated.png").write_bytes(good[: len(good) // 2])  # header fine, pixels cut
    collection = scan_collection(tmp_path, val_split=0.0)
    assert len(collection.skipped) == 1 and "garbage.png" in collection.skipped[0]
    dataset = ImageFolderDataset(collection.train, eval_transform(IntrConfig.tiny(2, short_side=64)))
    items = [dataset[i] for i in range(len(dataset))]
    assert sum(item is None for item in items) == 1  # the truncated file fails only when decoded
    batch = collate(items)
    assert batch.skipped == 1 and len(batch.labels) == len(items) - 1 == batch.images.shape[0]
    empty = collate([None, None])
    assert empty.skipped == 2 and len(empty.labels) == 0


@pytest.mark.parametrize("pixels", [
    np.linspace(0, 65535, 64 * 80, dtype=np.uint16).reshape(64, 80),          # 16-bit grey
    np.full((64, 80, 4), 255, np.uint8),                                       # RGBA
    np.full((64, 80, 3), 65535, np.uint16),                                    # 16-bit RGB
    np.full((3, 64, 80), 255, np.uint8),                                       # channel-first RGB
], ids=["grey16", "rgba8", "rgb16", "channel-first"])
def test_tiff_variants_become_float_rgb(tmp_path, pixels):
    path = tmp_path / "image.tif"
    planar = pixels.shape[0] == 3
    tifffile.imwrite(path, pixels, photometric="rgb" if planar else None,
                     planarconfig="separate" if planar else None)
    image = read_image(path)
    assert image.shape == (64, 80, 3) and image.dtype == np.float32
    assert image.min() >= 0 and image.max() == pytest.approx(1.0)


def test_eval_transform_matches_model_preprocess():
    config = IntrConfig.tiny(3)
    model = build_model(config)
    image = (np.random.default_rng(0).random((90, 170, 3)) * 255).astype(np.uint8)
    from napari_intr.preprocess import to_float_rgb
    ours = eval_transform(config)(to_float_rgb(image))
    assert torch.equal(ours, model.preprocess(image)[0])


def test_training_sizes_are_stride_steps_up_to_the_short_side():
    assert training_sizes(800, 32) == [608, 640, 672, 704, 736, 768, 800]
    assert training_sizes(128, 8) == [96, 104, 112, 120, 128]
    config = IntrConfig.tiny(2)
    transform = train_transform(config, stride=8)
    image = np.random.default_rng(1).random((100, 150, 3)).astype(np.float32)
    torch.manual_seed(0)
    shapes = {tuple(transform(image).shape) for _ in range(30)}
    assert len(shapes) > 1
    assert all(max(shape[1:]) <= config.max_side and min(shape[1:]) <= config.short_side for shape in shapes)
