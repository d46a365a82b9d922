# SPDX-License-Identifier: GPL-3.0-or-later
"""The "Gallery" panel in real Blender (bpy 5.0.1) with a real backend subprocess and the head-shaped tiny model:
**Show Page** fills a page of previews (one per seed, the model's image size), Next and Previous move by a page,
the job folder is gone and only the shown page's copies stay, and the button under a thumbnail (drawn by the
panel) generates that seed's head with the thumbnail's truncation through the existing Generate operator.

Like tests/test_views_blender.py the scenario runs in a fresh Python process (this file is also the script:
``python tests/test_gallery_blender.py ZIP OUT.json``).
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the scenario also runs as a script in Blender

from tests.support.blender_session import install_extension, run_scenario
from tests.support.fake_layout import FakeLayout

PKG = "bl_ext.user_default.aware3d"
MODEL = "head-tiny"


class GalleryLayout(FakeLayout):
    """FakeLayout with ``grid_flow`` and operator buttons whose properties the panel sets (what a click runs)."""

    buttons: list[tuple[str, types.SimpleNamespace]]

    def grid_flow(self, **k: Any) -> GalleryLayout:
        return self

    def operator(self, idname: str, **k: Any) -> types.SimpleNamespace:
        super().operator(idname, **k)
        props = types.SimpleNamespace()
        self.buttons.append((idname, props))
        return props


def _draw(bpy: Any) -> GalleryLayout:
    calls: list[str] = []
    layout = GalleryLayout(calls)
    layout.buttons = []
    bpy.types.VIEW3D_PT_aware3d_gallery.draw(types.SimpleNamespace(layout=layout), bpy.context)
    return layout


def scenario(zip_path: str) -> dict[str, Any]:
    import importlib
    import time

    import bpy

    install_extension(zip_path)
    gallery = importlib.import_module(f"{PKG}.panel_gallery")
    assert hasattr(bpy.types, "VIEW3D_PT_aware3d_gallery")
    scene, wm = bpy.context.scene, bpy.context.window_manager
    scene.aware3d.model = MODEL
    g = scene.aware3d_gallery
    g.start, g.count, g.truncation = 3, 4, 0.6
    out: dict[str, Any] = {}
    assert not gallery.thumbnails() and "op:aware3d.gallery_page" in _draw(bpy).calls

    t0 = time.perf_counter()
    assert bpy.ops.aware3d.gallery_page(step="SHOW") == {"FINISHED"}
    out["first_page_s"] = time.perf_counter() - t0  # backend start and model load included
    thumbs = gallery.thumbnails()
    assert [t.seed for t in thumbs] == [3, 4, 5, 6] and all(abs(t.truncation - 0.6) < 1e-6 for t in thumbs)
    assert wm.aware3d_gallery.seeds == "3,4,5,6" and "seeds 3–6" in wm.aware3d_gallery.page_text
    for t in thumbs:
        assert tuple(gallery.preview(t).image_size) == (64, 64), t
    first_files = [Path(t.path) for t in thumbs]
    assert all(p.is_file() for p in first_files)
    prefs = importlib.import_module(f"{PKG}.prefs")
    out["job_folders_left"] = [p.name for p in prefs.user_dir("jobs").iterdir() if p.is_dir()]
    assert not out["job_folders_left"]  # removed when the page arrived (the PNGs were copied out first)

    t0 = time.perf_counter()
    assert bpy.ops.aware3d.gallery_page(step="NEXT") == {"FINISHED"}
    out["warm_page_s"] = time.perf_counter() - t0
    assert g.page == 1 and [t.seed for t in gallery.thumbnails()] == [7, 8, 9, 10]
    assert not any(p.exists() for p in first_files)  # the previous page's copies are gone
    assert bpy.ops.aware3d.gallery_page(step="PREVIOUS") == {"FINISHED"}
    assert g.page == 0 and [t.seed for t in gallery.thumbnails()] == [3, 4, 5, 6]

    # The panel's grid: a preview and a Generate button per thumbnail, carrying its seed and truncation.
    layout = _draw(bpy)
    assert layout.calls.count("template_icon") == 4
    picks = [p for idname, p in layout.buttons if idname == "aware3d.generate"]
    assert [p.seed for p in picks] == [3, 4, 5, 6]
    assert [p.truncation for p in picks] == [t.truncation for t in thumbs]
    click = picks[2]
    t0 = time.perf_counter()
    assert bpy.ops.aware3d.generate(seed=click.seed, truncation=click.truncation, resolution=64,
                                    faces=3000) == {"FINISHED"}
    out["generate_s"] = time.perf_counter() - t0
    head = bpy.data.objects["Aware3D_5"]
    assert head["aware3d"]["seed"] == 5 and abs(head["aware3d"]["truncation"] - 0.6) < 1e-6
    assert len(head.data.vertices) > 100

    # A page past the generate operator's seed range is refused before any work, in one line.
    g.start, g.page = 2**31 - 2, 0
    try:
        bpy.ops.aware3d.gallery_page(step="SHOW")
        raise AssertionError("a page past the seed range was not refused")
    except RuntimeError as exc:  # an operator's ERROR report, raised by bpy.ops in background mode
        assert "past" in str(exc)
    out["refused"] = wm.aware3d.last_error
    assert "past" in out["refused"] and "\n" not in out["refused"]
    return out


if __name__ != "__main__":
    import pytest

    pytestmark = pytest.mark.blender

    def test_gallery_panel(tmp_path: Path) -> None:
        from test_server import head_model

        from backend.cli.extension_cmd import build

        zip_path = build(tmp_path / "ext", with_models=False)
        head_model(tmp_path / "models")
        text = run_scenario(__file__, [str(zip_path)], tmp_path, tmp_path / "models")
        print(text)
        got = json.loads(text)
        assert got["warm_page_s"] < got["first_page_s"]  # the backend and its model are warm
else:
    result = scenario(sys.argv[1])
    Path(sys.argv[2]).write_text(json.dumps(result, indent=2, default=str))
