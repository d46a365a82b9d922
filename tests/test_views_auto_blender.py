# SPDX-License-Identifier: GPL-3.0-or-later
"""The Novel-view textures panel says, before a run, what "Auto" will use (real Blender, bpy 5.0.1): not
checked until a backend listed its models, then diffusion with the view model it found, or projection when
there is none. No backend runs: the list is what ``list_models`` returns (``session.set_models``).

The scenario runs in a fresh Python process (this file is also the script:
``python tests/test_views_auto_blender.py ZIP OUT.json``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the scenario also runs as a script in Blender

from tests.support.blender_session import install_extension, run_scenario
from tests.support.fake_layout import FakeLayout

PKG = "bl_ext.user_default.aware3d"


def _labels(bpy: Any) -> list[str]:
    import types

    calls: list[str] = []
    bpy.types.VIEW3D_PT_aware3d_views.draw(types.SimpleNamespace(layout=FakeLayout(calls)), bpy.context)
    return [c for c in calls if c.startswith(("label:Auto", "op:aware3d.refresh_models"))]


def scenario(zip_path: str) -> dict[str, Any]:
    import importlib

    import bpy

    install_extension(zip_path)
    session = importlib.import_module(f"{PKG}.session")
    assert bpy.context.scene.aware3d_views.generator == "AUTO"
    out = {"before": _labels(bpy)}
    assert out["before"] == ["label:Auto: diffusion if its view model is installed (not checked yet)",
                             "op:aware3d.refresh_models"], out
    head = {"name": "aware3d-heads", "kind": "gan", "source": "bundled", "path": "/m/aware3d-heads.safetensors"}
    view = {"name": "aware3d-views-cond", "kind": "diffusion-cond", "source": "user",
            "path": "/u/aware3d-views-cond.safetensors"}
    session.set_models({"user_dir": "/u", "models": [head, view]})
    out["found"] = _labels(bpy)
    assert out["found"] == ["label:Auto: diffusion (aware3d-views-cond)"], out
    session.set_models({"user_dir": "/u", "models": [head]})
    out["none"] = _labels(bpy)
    assert out["none"] == ["label:Auto: no view model installed: projection (the mesh's own colours)"], out
    bpy.context.scene.aware3d_views.generator = "PROJECTION"
    assert _labels(bpy) == []
    return out


if __name__ != "__main__":
    import pytest

    pytestmark = pytest.mark.blender

    def test_views_panel_says_what_auto_will_use(tmp_path: Path) -> None:
        from backend.cli.extension_cmd import build

        zip_path = build(tmp_path / "ext", with_models=False)
        print(run_scenario(__file__, [str(zip_path)], tmp_path, tmp_path / "models"))
else:
    result = scenario(sys.argv[1])
    Path(sys.argv[2]).write_text(json.dumps(result, indent=2, default=str))
