"""The README's Quick start has exactly two commands, and CI runs the second one."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quick_start_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def test_quick_start_has_two_commands_and_ci_runs_the_second() -> None:
    commands = quick_start_commands()
    assert len(commands) == 2
    assert all("\n" not in c for c in commands), "each Quick start command is one line"
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci == commands[1]
    assert "aware3d sample" in commands[0] and "pytest" in commands[1]


def test_default_model_is_bundled() -> None:
    from backend.registry import DEFAULT_MODEL, bundled_models_dir

    assert (bundled_models_dir() / f"{DEFAULT_MODEL}.safetensors").is_file()
    assert (bundled_models_dir() / f"{DEFAULT_MODEL}.md").is_file(), "every bundled model has a model card"


def test_security_section_quotes_the_bounds_table() -> None:
    """The README's limits table is the one the code enforces (``python -m backend.validate`` prints it)."""
    from backend.validate import bounds_markdown

    assert bounds_markdown().strip() in (ROOT / "README.md").read_text()
