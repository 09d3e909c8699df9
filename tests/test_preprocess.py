"""Image -> model input: layouts, data types, the resize policy, refusals, padding."""
import numpy as np
import pytest
import torch

from napari_intr.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MIN_IMAGE_SIZE,
    pad_batch,
    resized_shape,
    to_float_rgb,
    to_model_input,
)

SHORT, LONG = 128, 224


def unnormalize(tensor: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return tensor * std + mean


def expected_shape(height, width):
    """The policy written out: short side to SHORT unless the long side would pass LONG."""
    short, long = min(height, width), max(height, width)
    scale = min(SHORT / short, LONG / long)
    return height * scale, width * scale


@pytest.mark.parametrize("shape", [(100, 150), (150, 100), (64, 64), (300, 1000), (1000, 300),
                                   (100, 300), (32, 144), (480, 640), (40, 41)])
def test_resize_policy(shape):
    out = to_model_input(np.zeros(shape, np.uint8), SHORT, LONG)
    height, width = out.shape[-2:]
    assert max(height, width) <= LONG  # the long side never passes its cap
    ideal_h, ideal_w = expected_shape(*shape)
    # within one pixel of the exact scaled size (rounding down to respect the cap)
    assert abs(height - ideal_h) <= 1.5 and abs(width - ideal_w) <= 1.5 * max(1, width / height)
    if max(shape) / min(shape) * SHORT <= LONG:
        assert min(height, width) == SHORT
    # orientation kept
    assert (height >= width) == (shape[0] >= shape[1])


def test_resize_policy_detr_sizes():
    assert resized_shape(480, 640, 800, 1333) == (800, 1066)
    assert resized_shape(640, 480, 800, 1333) == (1066, 800)
    assert resized_shape(500, 2000, 800, 1333) == (333, 1332)
    # a strip too long to keep 32 px on its short side within the long-side cap is refused
    assert min(resized_shape(32, 224, SHORT, LONG)) == MIN_IMAGE_SIZE
    with pytest.raises(ValueError, match=r"4000.*crop"):
        resized_shape(32, 4000, SHORT, LONG)


def grey_ramp(dtype, high):
    ramp = np.linspace(0, high, 80 * 120).reshape(80, 120)
    return ramp.astype(dtype)


@pytest.mark.parametrize("image", [
    grey_ramp(np.uint8, 255), grey_ramp(np.uint16, 65535), grey_ramp(np.float32, 1.0),
    grey_ramp(np.float64, 1.0), grey_ramp(np.float32, 4000.0), grey_ramp(np.int32, 70000),
    grey_ramp(np.uint8, 255)[..., None],
], ids=["uint8", "uint16", "float32", "float64", "float-4000", "int32", "HxWx1"])
def test_grey_images_of_any_dtype(image):
    out = to_model_input(image, SHORT, LONG)
    assert out.shape == (1, 3, 128, 192) and out.dtype == torch.float32
    rgb = unnormalize(out[0])
    # grey: the three channels are the same image; full range maps to [0, 1]
    torch.testing.assert_close(rgb[0], rgb[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(rgb[0], rgb[2], atol=1e-5, rtol=0)
    assert rgb.min() >= -1e-5 and rgb.max() <= 1 + 1e-5
    assert rgb[0, 0, :].mean() < 0.05 and rgb[0, -1, :].mean() > 0.95  # a top-to-bottom ramp


def test_intensity_scaling_by_dtype():
    def value(image):
        return unnormalize(to_model_input(image, SHORT, LONG)[0]).mean(dim=(1, 2))

    torch.testing.assert_close(value(np.full((64, 64), 255, np.uint8)), torch.ones(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(value(np.full((64, 64), 51, np.uint8)), torch.full((3,), 0.2), atol=1e-5, rtol=0)
    torch.testing.assert_close(value(np.full((64, 64), 65535, np.uint16)), torch.ones(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(value(np.full((64, 64), 0.25, np.float32)), torch.full((3,), 0.25),
                               atol=1e-5, rtol=0)
    assert to_float_rgb(np.zeros((40, 40), bool)).max() == 0


def test_rgb_and_rgba():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (90, 60, 3), dtype=np.uint8)
    out = to_model_input(rgb, SHORT, LONG)
    assert out.shape == (1, 3, 192, 128)
    # channel order kept: a red image is red
    red = np.zeros((64, 64, 3), np.uint8)
    red[..., 0] = 255
    channels = unnormalize(to_model_input(red, SHORT, LONG)[0]).mean(dim=(1, 2))
    torch.testing.assert_close(channels, torch.tensor([1.0, 0.0, 0.0]), atol=1e-5, rtol=0)
    # alpha is dropped, whatever it holds
    rgba = np.concatenate([rgb, rng.integers(0, 256, (90, 60, 1), dtype=np.uint8)], axis=-1)
    torch.testing.assert_close(to_model_input(rgba, SHORT, LONG), out)


def test_channel_first_is_refused_with_advice():
    with pytest.raises(ValueError, match=r"channel-first.*moveaxis"):
        to_model_input(np.zeros((3, 64, 64), np.uint8), SHORT, LONG)
    with pytest.raises(ValueError, match=r"channel-first"):
        to_model_input(np.zeros((4, 100, 80), np.float32), SHORT, LONG)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused(bad):
    image = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    image[10, 20, 1] = bad
    with pytest.raises(ValueError, match=r"NaN or infinite"):
        to_model_input(image, SHORT, LONG)


@pytest.mark.parametrize("shape", [(31, 64), (64, 31), (16, 16, 3), (20, 200, 4)])
def test_images_below_32_px_are_refused(shape):
    with pytest.raises(ValueError, match=r"at least 32 px"):
        to_model_input(np.zeros(shape, np.uint8), SHORT, LONG)


@pytest.mark.parametrize("shape", [(64, 64, 2), (64, 64, 5), (2, 64, 64, 3), (64,)])
def test_other_layouts_are_refused(shape):
    with pytest.raises(ValueError, match=r"grey, RGB or RGBA"):
        to_model_input(np.zeros(shape, np.uint8), SHORT, LONG)


def test_non_numeric_images_are_refused():
    with pytest.raises(ValueError, match="data type"):
        to_model_input(np.full((64, 64), "a"), SHORT, LONG)


def test_pad_batch():
    first, second = torch.rand(3, 40, 50), torch.rand(3, 64, 33)
    batch, mask = pad_batch([first, second])
    assert batch.shape == (2, 3, 64, 50) and mask.shape == (2, 64, 50) and mask.dtype == torch.bool
    assert torch.equal(batch[0, :, :40, :50], first) and torch.equal(batch[1, :, :64, :33], second)
    assert (batch[0, :, 40:] == 0).all() and (batch[1, :, :, 33:] == 0).all()
    expected = torch.ones(2, 64, 50, dtype=torch.bool)
    expected[0, :40, :50] = False
    expected[1, :, :33] = False
    assert torch.equal(mask, expected)
    single, single_mask = pad_batch([first])
    assert torch.equal(single[0], first) and not single_mask.any()


def test_pad_batch_refuses_bad_input():
    with pytest.raises(ValueError, match="at least one image"):
        pad_batch([])
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        pad_batch([torch.rand(3, 40, 40), torch.rand(1, 40, 40)])
