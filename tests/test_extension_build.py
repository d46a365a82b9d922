# SPDX-License-Identifier: GPL-3.0-or-later
"""``aware3d extension build``: the zip's layout, the manifest, validation by Blender's tool, and the rule that
the add-on imports nothing heavy."""

from __future__ import annotations

import argparse
import ast
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from backend.cli import extension_cmd

ROOT = Path(__file__).resolve().parents[1]
ALLOWED_ADDON_IMPORTS = {"bpy", "bpy_extras", "mathutils", "numpy"}


def _stdlib(name: str) -> bool:
    return name.split(".")[0] in sys.stdlib_module_names


def test_addon_imports_nothing_heavy() -> None:
    for path in sorted((ROOT / "addon").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for n in names:
                assert _stdlib(n) or n.split(".")[0] in ALLOWED_ADDON_IMPORTS, f"{path.name} imports {n}"


def test_client_and_protocol_do_not_need_bpy() -> None:
    for name in ("client.py", "protocol.py"):
        tree = ast.parse((ROOT / "addon" / name).read_text())
        mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module} | {
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not {m for m in mods if m.split(".")[0] in ALLOWED_ADDON_IMPORTS}, name


def test_manifest() -> None:
    import backend

    m = tomllib.loads((ROOT / "blender_manifest.toml").read_text())
    assert m["id"] == "aware3d" and m["type"] == "add-on" and m["schema_version"] == "1.0.0"
    assert m["version"] == backend.__version__
    assert m["license"] == ["SPDX:GPL-3.0-or-later"]
    assert tuple(int(x) for x in m["blender_version_min"].split(".")) >= (4, 2, 0)
    assert set(m["permissions"]) == {"files", "network"}
    for reason in [*m["permissions"].values(), m["tagline"]]:
        assert 0 < len(reason) <= 64 and not reason.endswith((".", "!", "?"))


def test_cli_parses() -> None:
    parser = argparse.ArgumentParser()
    extension_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["extension", "build", "--out", "x"])
    assert args.func is extension_cmd.run and args.out == Path("x")


def test_requirements_are_pinned() -> None:
    lines = [ln for ln in extension_cmd.requirements_text(ROOT).splitlines() if ln and not ln.startswith("#")]
    assert any(ln.startswith("torch==") for ln in lines) and all("==" in ln for ln in lines)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("bpy", reason="Blender's extension tool ships in the bpy wheel")
    return extension_cmd.build(tmp_path_factory.mktemp("dist"))


@pytest.mark.blender
def test_zip_layout(built: Path) -> None:
    with zipfile.ZipFile(built) as z:
        names = z.namelist()
        assert z.read("protocol.py") == (ROOT / "backend" / "server" / "protocol.py").read_bytes()
        assert tomllib.loads(z.read("blender_manifest.toml").decode())["id"] == "aware3d"
        reqs = z.read("backend_requirements.txt").decode()
    for required in ("__init__.py", "api.py", "client.py", "session.py", "scene_import.py", "LICENSE",
                     "blender_manifest.toml", "backend/__init__.py", "backend/server/__main__.py",
                     "backend/server/server.py", "backend/mesh/pipeline.py", "cuda/aware3d_mc.py"):
        assert required in names, required
    assert "torch==" in reqs
    bad = [n for n in names if "__pycache__" in n or n.endswith(".pyc") or n.startswith(("tests/", "addon/", "."))
           or "/." in n]
    assert not bad, bad
    shipped = {n.split("/")[-1] for n in names if n.startswith("assets/models/")}
    # every bundled model a panel uses, with its card; nothing a panel cannot use (issue 16)
    assert shipped == {"aware3d-heads.safetensors", "aware3d-heads.md", "aware3d-heads.directions.safetensors",
                       "aware3d-encoder64.safetensors", "aware3d-encoder64.md",
                       "aware3d-views-cond.safetensors", "aware3d-views-cond.md"}, shipped
    models = sum((ROOT / "assets" / "models" / n).stat().st_size for n in shipped)
    assert built.stat().st_size < 3 * 2**20 + models  # small: sources, licence, bundled models


@pytest.mark.blender
def test_blender_tool_rejects_a_bad_manifest(tmp_path: Path) -> None:
    from backend.errors import Aware3DError

    pytest.importorskip("bpy")
    src = extension_cmd.stage(ROOT, tmp_path / "aware3d", with_models=False)
    manifest = (src / "blender_manifest.toml").read_text()
    (src / "blender_manifest.toml").write_text(manifest.replace('tagline = "', 'tagline = "' + "x" * 70))
    with pytest.raises(Aware3DError):
        extension_cmd._run_tool([*extension_cmd._tool_cmd(None), "validate", str(src)])
