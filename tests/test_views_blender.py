# SPDX-License-Identifier: GPL-3.0-or-later
"""The "Novel-view textures" panel in real Blender (bpy 5.0.1) with a real backend subprocess: texture a moved,
rotated, vertex-coloured sphere from two selected cameras (per-camera UV maps, weights and images in a blend
material; projected UVs checked against Blender's own camera projection), bake to one texture from a camera
ring made because no camera was selected, and a clear report when no mesh is active.

Like tests/test_invert_blender.py the scenario runs in a fresh Python process (this file is also the script:
``python tests/test_views_blender.py ZIP OUT.json``). The projection generator needs no model.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the scenario also runs as a script in Blender

from tests.support.blender_session import install_extension, run_scenario
from tests.support.fake_layout import draw_panel

PKG = "bl_ext.user_default.aware3d"


def _draw(bpy: Any) -> list[str]:
    return draw_panel("VIEW3D_PT_aware3d_views")


def _sphere(bpy: Any) -> Any:
    """A vertex-coloured ico sphere away from the origin, rotated and scaled (the frame must follow)."""
    import math

    import numpy as np

    bpy.ops.mesh.primitive_ico_sphere_add(subdivisions=3, radius=0.12, location=(0.4, 0.3, 1.1),
                                          rotation=(0.2, 0.0, math.radians(30)))
    obj = bpy.context.active_object
    obj.name = "Ball"
    obj.scale = (1.0, 1.0, 1.3)
    me = obj.data
    co = np.empty(3 * len(me.vertices), np.float32)
    me.vertices.foreach_get("co", co)
    p = co.reshape(-1, 3) / 0.12
    rgba = np.ones((len(p), 4), np.float32)
    rgba[:, :3] = 0.5 + 0.4 * np.sin(np.stack([3 * p[:, 0], 2.5 * p[:, 1] + 1, 2 * p[:, 2] - 0.5], 1))
    attr = me.color_attributes.new("Color", "BYTE_COLOR", "POINT")
    attr.data.foreach_set("color_srgb", rgba.ravel())
    bpy.context.view_layer.update()
    return obj


def _camera(bpy: Any, name: str, eye: tuple[float, float, float], target: Any) -> Any:
    from mathutils import Vector

    cam = bpy.data.objects.new(name, bpy.data.cameras.new(name))
    cam.data.lens = 120
    bpy.context.scene.collection.objects.link(cam)
    cam.location = eye
    cam.rotation_euler = (target - Vector(eye)).to_track_quat("-Z", "Y").to_euler()
    return cam


def _pixels(img: Any) -> Any:
    import numpy as np

    w, h = img.size
    px = np.empty(w * h * img.channels, np.float32)
    img.pixels.foreach_get(px)
    return px.reshape(h, w, img.channels)[..., :3]  # row 0 = bottom (Blender's image origin)


def _sample(img: Any, uv: Any) -> Any:
    """Nearest pixel at Blender image UVs (origin bottom-left), sRGB values as stored in the PNG."""
    import numpy as np

    px = _pixels(img)
    h, w = px.shape[:2]
    x = np.clip((uv[:, 0] * w).astype(int), 0, w - 1)
    y = np.clip((uv[:, 1] * h).astype(int), 0, h - 1)
    return px[y, x]


def _srgb_colours(me: Any) -> Any:
    import numpy as np

    c = np.empty(4 * len(me.vertices), np.float32)
    me.color_attributes["Color"].data.foreach_get("color_srgb", c)
    return c.reshape(-1, 4)[:, :3]


def _per_vertex(me: Any, name: str) -> Any:
    """A FLOAT2 corner attribute back to per-vertex values (the add-on writes per-vertex values per loop)."""
    import numpy as np

    data = np.empty(2 * len(me.loops), np.float32)
    me.attributes[name].data.foreach_get("vector", data)
    lv = np.empty(len(me.loops), np.int32)
    me.loops.foreach_get("vertex_index", lv)
    out = np.zeros((len(me.vertices), 2), np.float32)
    out[lv] = data.reshape(-1, 2)
    return out


def scenario(zip_path: str) -> dict[str, Any]:
    import importlib

    import bpy
    import numpy as np
    from bpy_extras.object_utils import world_to_camera_view

    install_extension(zip_path)
    panel = importlib.import_module(f"{PKG}.panel_views")
    api = importlib.import_module(f"{PKG}.api")
    assert hasattr(bpy.types, "VIEW3D_PT_aware3d_views")
    out: dict[str, Any] = {}
    scene, wm = bpy.context.scene, bpy.context.window_manager
    for o in list(bpy.data.objects):
        bpy.data.objects.remove(o)
    scene.render.resolution_x, scene.render.resolution_y = 80, 64
    s = scene.aware3d_views
    s.generator, s.size, s.texture_size, s.ring_count = "PROJECTION", 32, 128, 3

    # 1. No active mesh: a clear report, nothing sent.
    try:
        bpy.ops.aware3d.texture_views()
        raise AssertionError("expected an error")
    except RuntimeError as exc:  # an operator's ERROR report raises in background mode
        assert "no active object" in str(exc), exc
    assert "no active object" in wm.aware3d.last_error and wm.aware3d.last_hint
    ball = _sphere(bpy)
    target = ball.matrix_world.translation.copy()
    cams = [_camera(bpy, "Front", (0.4, -1.6, 1.25), target), _camera(bpy, "Left", (-1.4, 0.0, 1.1), target)]
    cams[0].select_set(True)
    bpy.context.view_layer.objects.active = cams[0]
    try:
        bpy.ops.aware3d.texture_views()
        raise AssertionError("expected an error")
    except RuntimeError as exc:
        assert "not a mesh" in str(exc), exc
    calls = _draw(bpy)
    assert "op:aware3d.texture_views" in calls and "op:aware3d.add_camera_ring" in calls and "prop:bake" in calls

    # 2. Two selected cameras, the blend material.
    for c in cams:
        c.select_set(True)
    ball.select_set(True)
    bpy.context.view_layer.objects.active = ball
    assert "label:2 selected camera(s)" in _draw(bpy)
    t0 = time.perf_counter()
    assert bpy.ops.aware3d.texture_views() == {"FINISHED"}
    out["operator_s"] = time.perf_counter() - t0
    me = ball.data
    mat = me.materials[0]
    assert mat.name.startswith("Aware3D views Ball") and mat["aware3d_mode"] == "views"
    nodes = mat.node_tree.nodes
    images = {n.image.name for n in nodes if n.bl_idname == "ShaderNodeTexImage"}
    assert images == {"A3D Ball Front", "A3D Ball Left", "A3D Ball baked"}, images
    uv_maps = {n.uv_map for n in nodes if n.bl_idname == "ShaderNodeUVMap"}
    assert uv_maps == {"A3D_uv_Front", "A3D_uv_Left", "Aware3D_baked"} and all(me.uv_layers.get(u) for u in uv_maps)
    weights = {n.attribute_name for n in nodes if n.bl_idname == "ShaderNodeAttribute"}
    assert weights == {"A3D_w_Front", "A3D_w_Left"} and all(me.color_attributes.get(w) for w in weights)
    assert any(n.bl_idname == "ShaderNodeMix" for n in nodes) and bpy.data.images["A3D Ball Front"].packed_file
    assert ball["aware3d_views"]["cameras"] == ["Front", "Left"]  # selection sorted by name
    assert me.color_attributes.render_color_index == me.color_attributes.find("Color")
    # The projected UVs are Blender's own camera projection of the vertices (frame, axes, lens, aspect).
    co = np.empty(3 * len(me.vertices), np.float32)
    me.vertices.foreach_get("co", co)
    mw = np.array(ball.matrix_world)
    world = co.reshape(-1, 3) @ mw[:3, :3].T + mw[:3, 3]
    colours = _srgb_colours(me)
    out["views"] = {}
    for cam in cams:
        from mathutils import Vector

        ref = np.array([world_to_camera_view(scene, cam, Vector(p))[:2] for p in world])
        uv = _per_vertex(me, f"A3D_uv_{cam.name}")
        w = np.empty(4 * len(me.vertices), np.float32)
        me.color_attributes[f"A3D_w_{cam.name}"].data.foreach_get("color", w)
        w = w.reshape(-1, 4)[:, 0]
        err = float(np.abs(uv - ref).max())
        seen = w > 0.3
        # The view image at those UVs shows the vertex's own colour (the projection generator's views).
        colour_err = float(np.abs(_sample(bpy.data.images[f"A3D Ball {cam.name}"], uv[seen]) - colours[seen]).mean())
        out["views"][cam.name] = {"uv_max_err": err, "seen_fraction": float((w > 0).mean()),
                                  "colour_err": colour_err}
        assert err < 2e-3, out["views"]
        assert 0.2 < (w > 0).mean() < 0.6 and colour_err < 0.08, out["views"]
    assert st_text(wm).startswith("Ball: 2 views (projection)")

    # 3. No camera selected: a ring of 3 cameras is made (real cameras in a collection); bake to one texture.
    for o in bpy.context.selected_objects:
        o.select_set(False)
    s.bake = True
    assert "label:No camera selected: a ring of 3 is made" in _draw(bpy)
    seen: list[tuple[int, int, str]] = []

    def on_progress(f: Any) -> None:
        h = f.handle
        if h.stage == "views" and h.preview and (not seen or seen[-1][0] != h.step):
            seen.append((h.step, h.total, Path(h.preview).name))
            assert wm.aware3d_views.preview_image == panel.PREVIEW_IMAGE  # the panel shows the latest view

    fut = api.texture_object_async(ball, texture_size=256, on_progress=on_progress)
    assert len(fut.cameras) == 3
    obj = fut.result(300)
    assert seen == [(1, 3, "cam_00.png"), (2, 3, "cam_01.png"), (3, 3, "cam_02.png")], seen
    ring = bpy.data.collections["Aware3D Cameras Ball"]
    assert sorted(c.name for c in ring.objects) == sorted(fut.cameras) and all(c.type == "CAMERA" for c in ring.objects)
    assert fut.cameras[0] == "Ball_yaw+000" and fut.data["cameras"] == fut.cameras
    mat = fut.material
    assert obj == ball and mat["aware3d_mode"] == "baked" and me.materials[0] == mat
    tex = [n for n in mat.node_tree.nodes if n.bl_idname == "ShaderNodeTexImage"]
    assert len(tex) == 1 and tex[0].image.name.startswith("A3D Ball baked") and tex[0].image.size[0] == 256
    assert [n.uv_map for n in mat.node_tree.nodes if n.bl_idname == "ShaderNodeUVMap"] == ["Aware3D_baked"]
    # The baked texture at the baked UVs is the mesh's own colour (the corner UVs follow Blender's loops).
    baked = _per_vertex(me, "Aware3D_baked")
    out["baked_colour_err"] = float(np.abs(_sample(tex[0].image, baked) - colours).mean())
    assert out["baked_colour_err"] < 0.08, out["baked_colour_err"]
    front = ring.objects["Ball_yaw+000"]
    d = front.matrix_world.translation - ball.matrix_world.translation
    assert d.y < -abs(d.x) and 1.0 < d.length < 5.0  # in front of the ball (−Y turned by its 30° yaw)
    # A second ring replaces the first; the operator selects the new cameras.
    bpy.context.view_layer.objects.active = ball
    assert bpy.ops.aware3d.add_camera_ring() == {"FINISHED"}
    assert len(ring.objects) == 3 and len(bpy.context.selected_objects) == 3

    # A generated head's ring is the generator's orbit (compared with the backend's ring outside Blender).
    me = bpy.data.meshes.new("head")
    me.from_pydata([(0, 0, 0), (0.1, 0, 0), (0, 0.1, 0)], [], [(0, 1, 2)])
    head = bpy.data.objects.new("Head", me)
    scene.collection.objects.link(head)
    head["aware3d"] = {"seed": 1}
    head_ring = api.make_camera_ring(head, 8, 10.0)
    out["head_ring"] = [{"name": c.name, "matrix_world": [list(r) for r in c.matrix_world], "lens": c.data.lens}
                        for c in head_ring]

    heavy = sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "backend")))
    assert not heavy, heavy[:5]
    importlib.import_module(f"{PKG}.session").free()
    assert not list(importlib.import_module(f"{PKG}.prefs").user_dir("texture").glob("*.glb"))  # inputs removed
    bpy.ops.preferences.addon_disable(module=PKG)
    assert not hasattr(bpy.types, "VIEW3D_PT_aware3d_views") and not hasattr(bpy.types.Scene, "aware3d_views")
    return out


def st_text(wm: Any) -> str:
    return wm.aware3d_views.result_text


if __name__ != "__main__":
    import pytest

    pytestmark = pytest.mark.blender

    def test_novel_view_texture_panel(tmp_path: Path) -> None:
        from backend.cli.extension_cmd import build

        zip_path = build(tmp_path / "ext", with_models=False)
        text = run_scenario(__file__, [str(zip_path)], tmp_path, tmp_path / "models")
        print(text)
        import numpy as np

        from backend.texture.cameras_io import camera_to_dict, ring

        got = json.loads(text)["head_ring"]
        for cam, (name, ref) in zip(got, ring(8, 10.0, 64), strict=True):
            b = camera_to_dict(name, ref)["blender"]
            assert cam["name"] == f"Head_{name}" and abs(cam["lens"] - b["lens"]) < 1e-3
            assert np.allclose(cam["matrix_world"], b["matrix_world"], atol=1e-5), name
else:
    result = scenario(sys.argv[1])
    Path(sys.argv[2]).write_text(json.dumps(result, indent=2, default=str))
