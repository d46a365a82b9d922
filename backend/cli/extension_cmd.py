# SPDX-License-Identifier: GPL-3.0-or-later
"""``aware3d extension build [--out DIR]``: assemble and validate the Blender extension zip.

Layout of the zip (what Blender installs as ``bl_ext.<repo>.aware3d``): the add-on's files at the root, the
manifest (``blender_manifest.toml``, the source of truth, from the repository root), ``protocol.py`` (copied
from ``backend/server/protocol.py``), the ``backend`` and ``cuda`` packages that the add-on starts as a child
process, the bundled models the panels use (``assets/models``, see :data:`SHIPPED_KINDS`; about 17 MB),
``backend_requirements.txt`` (the pinned dependencies from
pyproject.toml, used by "Set up backend") and the licence. Caches and tests never go in.

The zip is made and checked by Blender's own extension tool (``blender_ext.py`` from the bpy wheel, run with
this Python), or ``blender --command extension`` when a Blender binary is given.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

SOURCE_SUFFIXES = (".py", ".json", ".cu", ".cuh")
MODEL_SUFFIXES = (".safetensors", ".md")
TOOL_REL = Path("scripts/addons_core/bl_pkg/cli/blender_ext.py")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("extension", help="build the Blender extension zip",
                       description="Build the Blender extension (add-on + bundled backend + default model) "
                                   "and validate it with Blender's extension tool.")
    act = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = act.add_parser("build", help="assemble and validate the extension zip")
    b.add_argument("--out", type=Path, default=Path("dist"), help="output folder (default: dist)")
    b.add_argument("--blender", default=None,
                   help="a Blender binary to build and validate with (default: the bpy wheel's blender_ext.py)")
    b.add_argument("--no-models", action="store_true", help="leave the bundled models out")
    b.set_defaults(func=run)


def repo_root() -> Path:
    root = Path(__file__).resolve().parents[2]
    if not (root / "blender_manifest.toml").is_file() or not (root / "addon").is_dir():
        from backend.errors import Aware3DError

        raise Aware3DError(f"no blender_manifest.toml and addon/ next to the backend in {root}",
                           "build the extension from a source checkout of Aware3D")
    return root


def find_blender_ext() -> Path:
    """``blender_ext.py`` inside the installed bpy wheel (``$AWARE3D_BLENDER_EXT`` overrides)."""
    from backend.errors import Aware3DError

    env = os.environ.get("AWARE3D_BLENDER_EXT")
    if env:
        return Path(env)
    spec = importlib.util.find_spec("bpy")
    for base in (spec.submodule_search_locations or []) if spec else []:
        for version_dir in sorted(Path(base).glob("[0-9]*.[0-9]*"), reverse=True):
            tool = version_dir / TOOL_REL
            if tool.is_file():
                return tool
    raise Aware3DError("Blender's extension tool was not found (it ships in the bpy wheel)",
                       "pip install bpy==5.0.1, or pass --blender /path/to/blender")


def _copy_sources(src: Path, dest: Path) -> None:
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if any(part == "__pycache__" or part.startswith(".") for part in rel.parts):
            continue
        if path.is_file() and path.suffix in SOURCE_SUFFIXES:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest / rel)


def requirements_text(root: Path) -> str:
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    return "# Pinned backend requirements (from pyproject.toml), installed by 'Set up backend'.\n" + \
        "".join(f"{d}\n" for d in deps)


def stage(root: Path, dest: Path, with_models: bool = True) -> Path:
    """Lay out the extension's files in ``dest`` (the zip's root)."""
    import backend

    manifest = tomllib.loads((root / "blender_manifest.toml").read_text())
    if manifest.get("version") != backend.__version__:
        from backend.errors import Aware3DError

        raise Aware3DError(f"blender_manifest.toml says version {manifest.get('version')}, the backend "
                           f"{backend.__version__}", "bump both together")
    dest.mkdir(parents=True, exist_ok=True)
    for path in sorted((root / "addon").glob("*.py")):
        shutil.copy2(path, dest / path.name)
    shutil.copy2(root / "backend" / "server" / "protocol.py", dest / "protocol.py")  # one protocol module
    shutil.copy2(root / "blender_manifest.toml", dest / "blender_manifest.toml")
    if (root / "LICENSE").is_file():
        shutil.copy2(root / "LICENSE", dest / "LICENSE")
    for pkg in ("backend", "cuda"):
        if (root / pkg).is_dir():
            _copy_sources(root / pkg, dest / pkg)
    models = root / "assets" / "models"
    if with_models and models.is_dir():
        for path in sorted(models.iterdir()):
            if (path.is_file() and path.suffix in MODEL_SUFFIXES and not path.name.startswith(".")
                    and _ships(path)):
                (dest / "assets" / "models").mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dest / "assets" / "models" / path.name)
    (dest / "backend_requirements.txt").write_text(requirements_text(root))
    return dest


SHIPPED_KINDS = ("gan", "directions", "encoder", "diffusion-cond")
"""What the panels use: the head generator (Generate), its attribute directions (avatar edits), the photo
encoder (Photo to 3D's first head) and the conditional view model (Novel-view textures' diffusion
generator). Left out, since no panel uses them: the unconditional view model (``aware3d views`` draws a
first view from it; texturing conditions every view on the mesh), the monocular depth model (a training
loss only) and the evaluation feature network."""


def _ships(path: Path) -> bool:
    """A model file of a kind in :data:`SHIPPED_KINDS`, or the model card (``NAME.md``) of one."""
    from backend.checkpoints.model_file import read_header
    from backend.errors import Aware3DError

    if path.suffix == ".md":
        weights = path.with_suffix(".safetensors")
        return weights.is_file() and _ships(weights)
    try:
        return read_header(path).kind in SHIPPED_KINDS
    except Aware3DError:
        return False


def _tool_cmd(blender: str | None) -> list[str]:
    if blender:
        return [blender, "--factory-startup", "--command", "extension"]
    return [sys.executable, str(find_blender_ext())]


def _run_tool(cmd: list[str]) -> str:
    from backend.errors import Aware3DError

    proc = subprocess.run(cmd, capture_output=True, text=True)
    out = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0 or "error" in out.lower():
        raise Aware3DError(f"Blender's extension tool failed: {out[-800:]}",
                           "fix blender_manifest.toml or the files it names")
    return out


def build(out_dir: Path, blender: str | None = None, with_models: bool = True) -> Path:
    """Stage, build the zip with Blender's tool, validate it; returns the zip's path."""
    root = repo_root()
    manifest = tomllib.loads((root / "blender_manifest.toml").read_text())
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{manifest['id']}-{manifest['version']}.zip"
    with tempfile.TemporaryDirectory(prefix="aware3d-ext-") as tmp:
        src = stage(root, Path(tmp) / manifest["id"], with_models)
        tool = _tool_cmd(blender)
        _run_tool([*tool, "build", "--source-dir", str(src), "--output-filepath", str(target)])
        _run_tool([*tool, "validate", str(target)])
    return target


def run(args: argparse.Namespace) -> int:
    path = build(args.out, args.blender, not args.no_models)
    print(f"{path} ({path.stat().st_size / 2**20:.2f} MiB), validated", file=sys.stderr)
    print(path)
    return 0
