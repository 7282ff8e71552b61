"""The project's contract: the README's two commands are what CI runs; docs examples run."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_readme_commands_are_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = _bash_blocks(quick)
    assert len(blocks) == 2, "the quick start must have exactly two commands: install+run, and test"
    install, test = (b.strip() for b in blocks)
    ci = (ROOT / ".ci" / "run").read_text()
    pip_step = re.search(r"pip install [^&]+", install).group(0).strip()
    assert pip_step in ci
    test_step = test.split("&&")[-1].strip()
    assert test_step in ci
    assert "python3 -m venv" in install and "python3 -m venv" in ci
    assert "torch==2.13.0" in (ROOT / "requirements.txt").read_text()


def test_slow_tests_are_registered_and_ci_runs_them():
    import tomllib

    markers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
    assert any(m.startswith("slow:") for m in markers)
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^python -m pytest$", ci, flags=re.M) and "not slow" not in ci  # the app tests still run in CI


def test_readme_python_example_runs(tmp_path):
    readme = (ROOT / "README.md").read_text()
    code = re.findall(r"```python\n(.*?)```", readme, flags=re.S)[0]
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "| 1 km |" in r.stdout


def test_cli_help_lists_commands():
    r = subprocess.run([sys.executable, "-m", "geosurge", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0
    assert "partition" in r.stdout
