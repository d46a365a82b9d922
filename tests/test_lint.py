"""The tree is kept ruff-clean (README, Development): CI runs the README's test command only, so the lint
runs here, with the ruff version the dev extra pins and the rules in pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_check_is_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"ruff check . found problems:\n{result.stdout}{result.stderr}"
