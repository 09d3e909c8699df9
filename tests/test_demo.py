"""`intr demo` headless: the real order (viewer, then plugin and torch), then a screenshot."""
import os
import subprocess
import sys

import numpy as np


def intr(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "intr_training", "demo", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ})


def test_demo_explains_the_bundled_specimen_and_saves_a_screenshot(tmp_path):
    shot = tmp_path / "demo.png"
    result = intr("--screenshot", str(shot))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1. " in result.stdout and f"screenshot: {shot}" in result.stdout
    from PIL import Image
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape[0] > 500 and pixels.shape[1] > 800 and pixels.std() > 10


def test_demo_with_a_missing_image_says_so(tmp_path):
    result = intr("--image", str(tmp_path / "missing.png"), "--no-show", timeout=60)
    assert result.returncode == 2
    assert "no image at" in result.stderr and "Traceback" not in result.stderr


def test_demo_opens_another_image_headless(tmp_path):
    from napari_intr.widgets.samples import specimen_path
    image = tmp_path / "my specimen.png"
    image.write_bytes(specimen_path("Pseudotigris artefacta-flava").read_bytes())
    result = intr("--image", str(image), "--no-show")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1. " in result.stdout and "screenshot" not in result.stdout


def test_demo_shows_an_image_too_large_to_decode_whole_reduced_and_says_so(tmp_path):
    import tifffile
    image = tmp_path / "drawer.tif"
    pixels = np.random.default_rng(0).integers(0, 256, (700, 950, 3), dtype=np.uint8)
    tifffile.imwrite(image, pixels, compression="zlib", tile=(64, 64))
    result = subprocess.run([sys.executable, "-m", "intr_training", "demo", "--image", str(image), "--no-show"],
                            capture_output=True, text=True, timeout=180,
                            env={**os.environ, "INTR_MAX_DECODE_BYTES": "2000000"})  # as if a 50 000 px scan
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1. " in result.stdout and "Traceback" not in result.stderr
    assert "note: drawer.tif is 700×950 px" in result.stdout and "read reduced" in result.stdout
