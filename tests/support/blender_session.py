"""Installing the add-on and driving its poller in background-mode Blender, where timers never fire (shared
by the bpy scenario scripts)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

PACKAGE = "bl_ext.user_default.aware3d"  # the add-on's module once its zip is installed from disk


def install_extension(zip_path: str, package: str = PACKAGE) -> None:
    """Install and enable the built extension zip in this bpy session, as a user installs one from disk (the
    ``user_default`` repository), and check that the add-on is enabled."""
    import bpy

    result = bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default",
                                                      enable_on_install=True)
    assert result == {"FINISHED"}, result
    assert package in bpy.context.preferences.addons, list(bpy.context.preferences.addons.keys())


def pump_until(session: Any, cond: Callable[[], bool], timeout: float = 120.0, interval: float = 0.02) -> None:
    """Call ``session.tick()`` as Blender's timer would until ``cond()`` holds. ``timeout`` only bounds a hang
    (it is no speed claim: speeds are measured in benchmarks/)."""
    deadline = time.monotonic() + timeout
    while not cond():
        session.tick()
        if time.monotonic() > deadline:
            raise AssertionError(f"no result within {timeout:.0f} s")
        time.sleep(interval)


def run_scenario(script: str, args: Sequence[str], tmp_path: Path, models: Path, timeout: float = 900) -> str:
    """Run a bpy scenario script (``script ARGS... OUT``) in a fresh interpreter, as Blender would load the
    add-on: its backend is this Python, its models ``models``, its user folder under ``tmp_path``. Returns the
    text of the JSON the scenario writes to OUT; a failure shows the ends of its output."""
    env = dict(os.environ)
    env.update({"BLENDER_USER_RESOURCES": str(tmp_path / "blender"), "AWARE3D_BACKEND_PYTHON": sys.executable,
                "AWARE3D_MODELS": str(models), "OMP_NUM_THREADS": "1"})
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, script, *args, str(out)], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return out.read_text()


def photo_to_3d_setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    """What a Photo to 3D scenario needs (pytest side): the head-shaped tiny model in ``tmp_path/models``, the
    extension zip without bundled models, and the demo photo. Returns (zip, models folder, photo)."""
    from backend.cli.extension_cmd import build
    from backend.invert.demo_photo import write_photo
    from tests.test_server import head_model

    models = tmp_path / "models"
    head_model(models)
    return build(tmp_path / "ext", with_models=False), models, write_photo(tmp_path / "person.jpg")
