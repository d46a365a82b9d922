# SPDX-License-Identifier: GPL-3.0-or-later
"""Add-on preferences and where the backend comes from.

The backend interpreter is, in order: ``$AWARE3D_BACKEND_PYTHON`` (scripts, CI, tests); a remote server
(address and token); an existing interpreter chosen by the user (e.g. the project's venv); or the managed
environment that "Set up backend" creates in the extension's user folder. Every preference read has a
default, because a bpy-module session or a half-registered add-on has no preferences entry.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty

from . import protocol as P

PACKAGE = __package__ or "aware3d"
ENV_PYTHON = "AWARE3D_BACKEND_PYTHON"

DEVICES = [("auto", "Auto", "CUDA when available, else the CPU"), ("cpu", "CPU", "Always the CPU"),
           ("cuda", "CUDA", "An NVIDIA GPU (fails clearly when there is none)")]
MODES = [
    ("MANAGED", "Managed environment", "An environment in the extension's user folder, made by Set up backend"),
    ("PYTHON", "Existing Python", "Any Python interpreter with the backend's requirements (e.g. a venv)"),
    ("REMOTE", "Remote server", "A backend started with 'aware3d serve --port' (address and token)"),
]
HEAD_LINK, HEAD_PACK = "LINK", "PACK"
HEAD_FILES = [
    (HEAD_LINK, "Link files", "Avatar and texture files stay in the avatars folder; the .blend refers to them "
                              "relative to itself (copy the folder with the .blend)"),
    (HEAD_PACK, "Pack into .blend", "Avatar and textures inside the .blend (one file to send; the avatar is "
                                    "written back to the avatars folder when a command needs it)"),
]
TORCH_CHANNELS = [("cpu", "CPU only", "Small download; no GPU"), ("cu128", "CUDA 12.8", "NVIDIA GPUs (incl. RTX 50)"),
                  ("default", "Default (PyPI)", "Whatever PyPI's torch is on this platform")]


class AWARE3D_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = PACKAGE

    backend_mode: EnumProperty(name="Backend", items=MODES, default="MANAGED")
    python_path: StringProperty(name="Python", subtype="FILE_PATH", default="",
                                description="Interpreter that runs the backend (needs torch and the requirements)")
    remote_host: StringProperty(name="Address", default="127.0.0.1")
    remote_port: IntProperty(name="Port", default=8765, min=1, max=65535)
    remote_token: StringProperty(name="Token", subtype="PASSWORD", default="")
    device: EnumProperty(name="Device", items=DEVICES, default="auto")
    backend_threads: IntProperty(name="Backend threads", default=0, min=0, max=1024,
                                 description="CPU threads the backend's PyTorch uses (0: automatic, one per core; "
                                             "one less than the cores leaves Blender a core). Changing it restarts "
                                             "the backend; a remote backend uses its own 'aware3d serve --threads'")
    models_dir: StringProperty(name="Models folder", subtype="DIR_PATH", default="",
                               description="Extra models are read from here (empty: the folder the 'aware3d' "
                                           "command uses, so both see the same models)")
    torch_channel: EnumProperty(name="PyTorch build", items=TORCH_CHANNELS, default="cpu")
    keep_failed_jobs: BoolProperty(name="Keep failed job folders", default=False,
                                   description="Keep the backend's folder of a failed job (for a bug report); "
                                               "finished and cancelled jobs' folders are always removed")
    avatars_dir: StringProperty(name="Avatars folder", subtype="DIR_PATH", default="",
                                description="Where Photo to 3D saves avatar files (empty: an 'avatars' folder "
                                            "next to the .blend; for an unsaved file, the extension's user "
                                            "folder)")
    head_files: EnumProperty(name="Head files", items=HEAD_FILES, default=HEAD_LINK,
                             description="How a new head from a photo keeps its avatar and textures (Pack / "
                                         "Unpack in the Photo to 3D panel switches an existing head)")

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        s = backend_settings(context)
        if os.environ.get(ENV_PYTHON):
            layout.label(text=f"{ENV_PYTHON} overrides the interpreter: {os.environ[ENV_PYTHON]}", icon="INFO")
        layout.prop(self, "backend_mode")
        if self.backend_mode == "PYTHON":
            layout.prop(self, "python_path")
        elif self.backend_mode == "REMOTE":
            row = layout.row()
            row.prop(self, "remote_host")
            row.prop(self, "remote_port")
            layout.prop(self, "remote_token")
        else:
            row = layout.row()
            row.prop(self, "torch_channel")
            row.operator("aware3d.setup_backend", icon="IMPORT")
            if not bpy.app.online_access:
                layout.label(text="Set up needs online access (Preferences > System > Network)", icon="ERROR")
        layout.label(text=f"Uses: {s.describe()}")
        layout.prop(self, "device")
        if self.backend_mode != "REMOTE" or os.environ.get(ENV_PYTHON):
            layout.prop(self, "backend_threads")
        layout.prop(self, "models_dir")
        layout.prop(self, "avatars_dir")
        layout.prop(self, "head_files")
        layout.prop(self, "keep_failed_jobs")
        row = layout.row()
        row.operator("aware3d.doctor", icon="CHECKMARK")
        row.operator("aware3d.free_backend", icon="X")


def preferences(context: bpy.types.Context | None = None) -> AWARE3D_AP_preferences | None:
    ctx = context or bpy.context
    try:
        return ctx.preferences.addons[PACKAGE].preferences
    except (KeyError, AttributeError):
        return None


def _pref(name: str, default: object, context: bpy.types.Context | None = None) -> object:
    p = preferences(context)
    return getattr(p, name, default) if p is not None else default


def user_dir(name: str) -> Path:
    """A writable folder of ours: the extension's user folder (kept across upgrades), else Blender's."""
    try:
        path = bpy.utils.extension_path_user(PACKAGE, path=name, create=True)
    except (ValueError, TypeError, AttributeError):
        path = bpy.utils.user_resource("DATAFILES", path=os.path.join("aware3d", name), create=True)
    return Path(path)


def keep_failed_jobs(context: bpy.types.Context | None = None) -> bool:
    return bool(_pref("keep_failed_jobs", False, context))


def avatars_dir(context: bpy.types.Context | None = None) -> tuple[Path, str]:
    """Where avatar files are saved, and how to say so: the preference's folder, else ``avatars`` next to the
    saved .blend, else (an unsaved file) the extension's user folder ``avatars``."""
    chosen = str(_pref("avatars_dir", "", context))
    if chosen:
        return Path(bpy.path.abspath(chosen)), "the avatars folder preference"
    if bpy.data.filepath:
        return Path(bpy.data.filepath).parent / "avatars", "next to the .blend"
    return user_dir("avatars"), "the extension's user folder (the .blend is not saved)"


def head_files(context: bpy.types.Context | None = None) -> str:
    """``LINK`` or ``PACK``: how a new head keeps its files (see ``storage``)."""
    mode = str(_pref("head_files", HEAD_LINK, context))
    return mode if mode in (HEAD_LINK, HEAD_PACK) else HEAD_LINK


def package_root() -> Path:
    """The extension's folder: it holds the bundled ``backend`` package the child process imports."""
    return Path(__file__).resolve().parent


def managed_env_dir() -> Path:
    return user_dir("backend-env")


def env_python(env_dir: Path) -> Path:
    return env_dir / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


@dataclass(frozen=True)
class BackendSettings:
    kind: str  # 'pipe' | 'tcp'
    python: str = ""
    host: str = ""
    port: int = 0
    token: str = ""
    device: str = "auto"
    models_dir: str = ""
    source: str = ""
    threads: int = 0  # the backend's PyTorch CPU threads (--threads); 0: automatic

    def describe(self) -> str:
        if self.kind == "tcp":
            return f"remote backend {self.host}:{self.port}"
        return f"{self.python or '(no interpreter)'} [{self.source}]"

    @property
    def key(self) -> tuple[object, ...]:
        """What forces a new backend when it changes (the device is per request)."""
        return (self.kind, self.python, self.host, self.port, self.token, self.models_dir, self.threads)


def backend_settings(context: bpy.types.Context | None = None) -> BackendSettings:
    device = str(_pref("device", "auto", context))
    models = str(_pref("models_dir", "", context))
    models = bpy.path.abspath(models) if models else ""
    threads = max(0, int(_pref("backend_threads", 0, context)))  # type: ignore[call-overload]
    env = os.environ.get(ENV_PYTHON)
    if env:
        return BackendSettings("pipe", python=env, device=device, models_dir=models, source=ENV_PYTHON,
                               threads=threads)
    mode = str(_pref("backend_mode", "MANAGED", context))
    if mode == "REMOTE":
        return BackendSettings("tcp", host=str(_pref("remote_host", "127.0.0.1", context)),
                               port=int(_pref("remote_port", 8765, context)),  # type: ignore[call-overload]
                               token=str(_pref("remote_token", "", context)), device=device, models_dir=models,
                               source="remote")
    if mode == "PYTHON":
        path = str(_pref("python_path", "", context))
        return BackendSettings("pipe", python=bpy.path.abspath(path) if path else "", device=device,
                               models_dir=models, source="preferences", threads=threads)
    return BackendSettings("pipe", python=str(env_python(managed_env_dir())), device=device, models_dir=models,
                           source="managed environment", threads=threads)


def check_settings(s: BackendSettings) -> None:
    """Raise a clear error before trying to start a backend that cannot work."""
    from .client import BackendError

    if s.kind == "tcp":
        if s.host not in ("127.0.0.1", "localhost", "::1") and not bpy.app.online_access:
            raise BackendError(P.OFFLINE, f"a remote backend at {s.host} needs online access",
                               "enable Preferences > System > Network > Allow Online Access, or use 127.0.0.1")
        return
    if not s.python:
        raise BackendError(P.BACKEND_DIED, "no backend interpreter is set",
                           "Preferences > Add-ons > Aware3D: pick a Python, or Set up backend")
    if not Path(s.python).is_file():
        hint = ("press Set up backend in the add-on preferences (needs online access), or choose an existing "
                "Python" if s.source == "managed environment" else "check the interpreter path")
        raise BackendError(P.BACKEND_DIED, f"backend interpreter not found: {s.python}", hint)
