"""The README's plugin and its test pass as written, in a fresh project, in either
pytest-asyncio mode: what a plugin author copies must work on the first try."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = (Path(__file__).parents[2] / "README.md").read_text()


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    return README[start : README.index("\n## ", start + 1)]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def fresh_project(root: Path, asyncio_mode: str) -> None:
    """The README's step (the class, then its ``identity_headers`` method) and test, plus
    the least configuration a project has: warnings are errors, as in this repository."""
    step, identity_headers = python_blocks(section("Writing a step or an auth plugin"))[:2]
    (root / "my_package.py").write_text(step + "\n" + identity_headers)
    (root / "test_my_package.py").write_text(python_blocks(section("Testing kit"))[0])
    (root / "pyproject.toml").write_text(
        "[tool.pytest.ini_options]\n"
        f'asyncio_mode = "{asyncio_mode}"\n'
        'asyncio_default_fixture_loop_scope = "function"\n'
        'filterwarnings = ["error"]\n'
        'pythonpath = ["."]\n'
    )


@pytest.mark.parametrize("asyncio_mode", ["strict", "auto"])
def test_the_readme_plugin_test_passes_as_written(tmp_path: Path, asyncio_mode: str) -> None:
    fresh_project(tmp_path, asyncio_mode)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
