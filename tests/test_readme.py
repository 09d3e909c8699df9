"""The README's promises: its API example runs, and its set-up commands are the ones CI runs."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_the_api_example_runs_on_the_bundled_sample():
    example = README.split("## INTR in a few lines", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    result = subprocess.run([sys.executable, "-c", example], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("Heliconia synthetica-alba")


def test_the_readme_starts_with_the_two_setup_commands_and_ci_runs_the_second():
    commands = re.findall(r"<!-- setup:(\w+) -->\n```bash\n(.+)\n```", README)
    assert [name for name, _ in commands] == ["demo", "tests"]
    assert commands[0][1].endswith("intr demo") and commands[1][1].endswith("pytest")
    assert "setup:tests" in (ROOT / ".ci" / "run").read_text()
