# SPDX-License-Identifier: GPL-3.0-or-later
""""Set up backend": a Python environment in the extension's user folder with the backend's pinned
requirements (``backend_requirements.txt``, written into the extension by ``aware3d extension build``).

Why a separate environment and not Blender's site-packages: torch's wheels, Blender's Python version and
Windows' DLL and path-length limits do not mix (the user complaints in the spec); an isolated, pinned
environment started as a child process avoids all of that. This is an explicit, permission-gated action:
it refuses to run unless Blender's online access is on. The steps run in a worker thread as plain
subprocesses (no ``bpy`` there); the panel shows the last line of pip's output.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import bpy

from . import prefs

REQUIREMENTS = "backend_requirements.txt"
TORCH_INDEX = {"cpu": "https://download.pytorch.org/whl/cpu", "cu128": "https://download.pytorch.org/whl/cu128"}


class SetupError(Exception):
    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


def base_python() -> str:
    """The interpreter that creates the environment: Blender's own Python (same version as Blender's)."""
    return sys.executable


def steps(env_dir: Path, requirements: Path, channel: str) -> list[list[str]]:
    py = str(prefs.env_python(env_dir))
    install = [py, "-m", "pip", "install", "--disable-pip-version-check", "-r", str(requirements)]
    if channel in TORCH_INDEX:
        install += ["--extra-index-url", TORCH_INDEX[channel]]
    return [[base_python(), "-m", "venv", str(env_dir)],
            [py, "-m", "pip", "install", "--disable-pip-version-check", "--upgrade", "pip"],
            install]


class SetupTask:
    """Runs the set-up steps in a thread; ``poll()`` (main thread) reports whether it is still running."""

    def __init__(self, commands: list[list[str]], log_path: Path) -> None:
        self.commands = commands
        self.log_path = log_path
        self.stage = "Setting up the backend"
        self.message = ""
        self.fraction = 0.0
        self.error: str | None = None
        self._done = threading.Event()
        threading.Thread(target=self._run, daemon=True, name="aware3d-setup").start()

    def _run(self) -> None:
        try:
            with open(self.log_path, "a", encoding="utf-8") as log:
                for i, cmd in enumerate(self.commands):
                    self.fraction = i / len(self.commands)
                    log.write("$ " + " ".join(cmd) + "\n")
                    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                            bufsize=1)
                    assert proc.stdout is not None
                    for line in proc.stdout:
                        log.write(line)
                        if line.strip():
                            self.message = line.strip()[:120]
                    if proc.wait() != 0:
                        self.error = f"step failed ({' '.join(cmd[:4])} …); see {self.log_path}"
                        return
            self.fraction = 1.0
            self.message = "Backend ready"
        except OSError as exc:
            self.error = str(exc)
        finally:
            self._done.set()

    def poll(self) -> bool:
        if not self._done.is_set():
            return True
        from . import session
        from .client import BackendError

        if self.error:
            session.record_error(BackendError("SetupFailed", self.error, "check the log and your connection"))
        else:
            session.record_result("Backend environment ready")
        return False


def start(channel: str = "cpu") -> SetupTask:
    if not bpy.app.online_access:
        raise SetupError("setting up the backend downloads packages, which needs online access",
                         "Preferences > System > Network > Allow Online Access")
    requirements = prefs.package_root() / REQUIREMENTS
    if not requirements.is_file():
        raise SetupError(f"{REQUIREMENTS} is missing from this build",
                         "install a release built with 'aware3d extension build', or choose an existing Python")
    env_dir = prefs.managed_env_dir()
    return SetupTask(steps(env_dir, requirements, channel), prefs.user_dir("logs") / "setup.log")
