"""Shared test configuration: marker handling and small fixtures."""

from __future__ import annotations

import importlib.util
import os

import pytest


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    has_cuda = _has_cuda()
    has_bpy = importlib.util.find_spec("bpy") is not None
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (run through the device tool)")
    skip_blender = pytest.mark.skip(reason="needs the bpy module (pip install bpy==5.0.1)")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)
        if "blender" in item.keywords and not has_bpy:
            item.add_marker(skip_blender)


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep tests away from the real user model folder."""
    if "AWARE3D_MODELS" not in os.environ:
        monkeypatch.setenv("AWARE3D_MODELS", str(tmp_path_factory.mktemp("user_models")))
