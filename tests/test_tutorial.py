"""docs/tutorial.md and the script that takes its screenshots stay in step with the GUI."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = (ROOT / "docs" / "tutorial.md").read_text()


def test_every_picture_of_the_tutorial_exists_and_the_readme_links_it():
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", TUTORIAL)
    assert len(pictures) == 6
    for picture in pictures:
        assert (ROOT / "docs" / picture).is_file(), picture
    assert "(docs/tutorial.md)" in (ROOT / "README.md").read_text()


@pytest.mark.slow
def test_the_screenshot_script_drives_every_dock(tmp_path):
    """Every step of docs/make_screenshots.py in a real window (pytest-xvfb's display), so that a
    change to a dock that breaks the script fails here (two steps only once let three break)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(ROOT / "docs" / "make_screenshots.py"),
                             "--out", str(tmp_path / "pictures"), "--work", str(tmp_path / "work")],
                            capture_output=True, text=True, timeout=600, env=env, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    from PIL import Image
    pictures = sorted(re.findall(r"\(screenshots/tutorial/([^)]+)\)", TUTORIAL))
    assert sorted(path.name for path in (tmp_path / "pictures").iterdir()) == pictures
    for name in pictures:
        with Image.open(tmp_path / "pictures" / name) as picture:
            assert picture.size[0] >= 1000 and picture.size[1] >= 700
