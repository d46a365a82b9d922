# SPDX-License-Identifier: GPL-3.0-or-later
"""Which generator a texture run really used is said, never guessed: no silent fallback from Auto (issue 16)."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.texture import generators


def test_auto_with_the_bundled_model_is_diffusion() -> None:
    kind, path = generators.choose_generator("auto")
    assert kind == "diffusion" and path is not None and path.name == "aware3d-views-cond.safetensors"
    assert generators.describe_generator("auto", kind, path) == ("diffusion aware3d-views-cond", None)


def test_auto_without_a_model_says_it_fell_back(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "aware3d-views-cond.safetensors"
    monkeypatch.setattr(generators, "default_diffusion_model", lambda: missing)
    kind, path = generators.choose_generator("auto")
    label, note = generators.describe_generator("auto", kind, path)
    assert (kind, label) == ("projection", "projection")
    assert note is not None and "Auto found no diffusion view model" in note and missing.name in note


def test_asked_for_projection_needs_no_note() -> None:
    assert generators.describe_generator("projection", "projection", None) == ("projection", None)
