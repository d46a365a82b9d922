"""Shared test configuration: marker handling, the skip policy and small fixtures.

Skip policy. A skipped test is a claim nobody checked, so skips are allowed only where the machine cannot run
the test, and some never in CI:

- ``gpu`` tests skip on a machine without a CUDA GPU (CI has none); they run on a GPU machine set up with the
  ``gpu`` extra.
- ``blender`` (real Blender through ``bpy``) and ``cuda_compile(COMPILER)`` (nvcc or NVRTC compiles the
  kernels; no GPU needed) tests must run in CI. A skip of one of them is turned into a failure when the run
  is in CI (the ``CI`` environment variable is set to anything but ``""``, ``0`` or ``false``, as CI runners
  including this project's set it) or when its prerequisite is installed here (``bpy`` imports; the
  compiler is found), because then the skip hides a broken test rather than a missing tool. Both
  prerequisites come with the dev extra or the CI machine (bpy and NVIDIA's NVRTC wheel are in the dev extra;
  nvcc is on the CI machine), so on CI nothing of this kind can skip.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Generator
from pathlib import Path

import pytest

from tests.support.cuda_toolchain import find_nvcc, load_nvrtc

# What each must-run marker needs; a marker's argument picks the compiler for ``cuda_compile``.
PREREQUISITES: dict[str, Callable[[], bool]] = {
    "blender": lambda: importlib.util.find_spec("bpy") is not None,
    "nvcc": lambda: find_nvcc() is not None,
    "nvrtc": lambda: load_nvrtc() is not None,
}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def must_run(item: pytest.Item) -> str | None:
    """The prerequisite a test needs if it is one that must not skip (in CI, or where that is installed)."""
    if item.get_closest_marker("blender") is not None:
        return "blender"
    marker = item.get_closest_marker("cuda_compile")
    if marker is not None:
        compiler = marker.args[0] if marker.args else "nvcc"
        if compiler not in PREREQUISITES:
            raise pytest.UsageError(f"{item.nodeid}: cuda_compile({compiler!r}) names no known compiler")
        return str(compiler)
    return None


def pytest_configure(config: pytest.Config) -> None:
    """Give each pytest-xdist worker its share of the cores: the suite runs in parallel (``-n 2`` in
    pyproject.toml) and torch's default of one thread per core in every worker would oversubscribe them."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not workers or "OMP_NUM_THREADS" in os.environ:
        return
    share = max(1, len(os.sched_getaffinity(0)) // max(1, int(workers)))
    os.environ["OMP_NUM_THREADS"] = str(share)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(share)


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    has_cuda = _has_cuda()
    has_bpy = PREREQUISITES["blender"]()
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (run through the device tool)")
    skip_blender = pytest.mark.skip(reason="needs the bpy module (pip install bpy==5.0.1)")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)
        if "blender" in item.keywords and not has_bpy:
            item.add_marker(skip_blender)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, object, object]:
    """Turn a forbidden skip (see the module docstring) into a failure that says why."""
    report = yield
    assert isinstance(report, pytest.TestReport)
    if not report.skipped or hasattr(report, "wasxfail"):
        return report
    need = must_run(item)
    if need is None:
        return report
    installed = PREREQUISITES[need]()
    if not (in_ci() or installed):
        return report
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    reason = reason.removeprefix("Skipped: ")
    why = "this is CI" if in_ci() else f"{need} is installed here"
    report.outcome = "failed"
    report.longrepr = f"{item.nodeid} must not skip ({why}), but it skipped: {reason}"
    return report


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep tests away from the real user model folder."""
    if "AWARE3D_MODELS" not in os.environ:
        monkeypatch.setenv("AWARE3D_MODELS", str(tmp_path_factory.mktemp("user_models")))


@pytest.fixture(scope="session")
def tiny_head_zips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 16-px synthetic-head zip (12 images, depth and latents) and its 1-head test split, built once: the
    diffusion training and view tests share it (building one takes seconds)."""
    from train.synthetic.writer import build_dataset

    d = tmp_path_factory.mktemp("tinyheads")
    summary = build_dataset(d / "heads.zip", count=12, res=16, seed=7, test_heads=1, workers=1, progress=False)
    return {"train": d / "heads.zip", "test": Path(summary["test_out"])}
