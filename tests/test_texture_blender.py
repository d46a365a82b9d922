# SPDX-License-Identifier: GPL-3.0-or-later
"""Issue 16 in real Blender (bpy 5.0.1): the zip from ``aware3d extension build`` (with its bundled models)
textures a generated head with the bundled diffusion view model from Blender's default 1920×1080 camera and
from a portrait camera with lens shift, says which generator ran, and leaves no camera ring behind after a
cancel or a failure.

The scenario runs in a fresh Python process (this file is also the script: ``python tests/test_texture_blender.py
ZIP OUT.json``), with an empty user models folder, so the view model can only come from the zip.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

PKG = "bl_ext.user_default.aware3d"
STEPS = 2  # diffusion steps: the test checks the frame and the plumbing, not the picture


def _aim(bpy: Any, cam: Any, eye: tuple[float, float, float], target: Any) -> None:
    from mathutils import Vector

    cam.location = eye
    cam.rotation_euler = (target - Vector(eye)).to_track_quat("-Z", "Y").to_euler()
    bpy.context.view_layer.update()


def _per_vertex(me: Any, name: str) -> Any:
    import numpy as np

    data = np.empty(2 * len(me.loops), np.float32)
    me.attributes[name].data.foreach_get("vector", data)
    lv = np.empty(len(me.loops), np.int32)
    me.loops.foreach_get("vertex_index", lv)
    out = np.zeros((len(me.vertices), 2), np.float32)
    out[lv] = data.reshape(-1, 2)
    return out


def _check_projection(bpy: Any, obj: Any, cam: Any) -> dict[str, Any]:
    """The camera's projected UV layer is Blender's own projection; its view image has the render's aspect."""
    import numpy as np
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    scene, me = bpy.context.scene, obj.data
    co = np.empty(3 * len(me.vertices), np.float32)
    me.vertices.foreach_get("co", co)
    mw = np.array(obj.matrix_world)
    world = co.reshape(-1, 3) @ mw[:3, :3].T + mw[:3, 3]
    ref = np.array([world_to_camera_view(scene, cam, Vector(p))[:2] for p in world])
    uv = _per_vertex(me, f"A3D_uv_{cam.name}")
    w = np.empty(4 * len(me.vertices), np.float32)
    me.color_attributes[f"A3D_w_{cam.name}"].data.foreach_get("color", w)
    img = bpy.data.images[f"A3D {obj.name} {cam.name}"]
    r = scene.render
    out = {"uv_max_err": float(np.abs(uv - ref).max()), "seen_fraction": float((w[0::4] > 0).mean()),
           "image": list(img.size), "render": [r.resolution_x, r.resolution_y]}
    assert out["uv_max_err"] < 2e-3, out
    assert out["seen_fraction"] > 0.05, out
    assert abs(img.size[0] / img.size[1] - r.resolution_x / r.resolution_y) < 0.03, out
    return out


def _texture(bpy: Any, api: Any, head: Any, cam: Any, generator: str) -> dict[str, Any]:
    wm = bpy.context.window_manager
    t0 = time.perf_counter()
    fut = api.texture_object_async(head, cameras=[cam], generator=generator)
    obj = fut.result(900)
    text = wm.aware3d_views.result_text
    assert text.startswith(f"{head.name}: 1 views (diffusion aware3d-views-cond)"), text
    assert fut.data["generator"] == "diffusion" and fut.data["generator_note"] is None, fut.data
    assert obj.data.materials[0]["aware3d_mode"] == "views"
    return {"seconds": time.perf_counter() - t0, "result_text": text, **_check_projection(bpy, obj, cam)}


def _ring_left(bpy: Any, head: Any) -> list[str]:
    return [o.name for o in bpy.data.objects if o.type == "CAMERA" and o.name.startswith(f"{head.name}_yaw")] + \
        [c.name for c in bpy.data.collections if c.name.startswith("Aware3D Cameras")]


def scenario(zip_path: str) -> dict[str, Any]:
    import importlib

    import bpy

    assert bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default",
                                                    enable_on_install=True) == {"FINISHED"}
    api = importlib.import_module(f"{PKG}.api")
    scene, wm = bpy.context.scene, bpy.context.window_manager
    out: dict[str, Any] = {}
    assert (scene.render.resolution_x, scene.render.resolution_y) == (1920, 1080)  # Blender's default scene
    bpy.data.objects.remove(bpy.data.objects["Cube"])
    s = scene.aware3d_views
    s.size, s.texture_size, s.steps, s.generator = 64, 128, STEPS, "AUTO"
    t0 = time.perf_counter()
    head = api.generate(seed=1, resolution=64, faces=4000, colour_mode="vertex", camera=False,
                        location=(0.0, 0.0, 0.0), timeout=900)
    out["generate_s"] = time.perf_counter() - t0
    corners = [head.matrix_world @ v.co for v in head.data.vertices]
    from mathutils import Vector

    centre = sum(corners, Vector()) / len(corners)

    # 1. The default scene's camera (16:9, 1920×1080, AUTO fit), Auto generator: the bundled diffusion model.
    cam = bpy.data.objects["Camera"]
    _aim(bpy, cam, (centre.x + 0.2, centre.y - 0.9, centre.z + 0.1), centre)
    out["landscape"] = _texture(bpy, api, head, cam, "auto")

    # 2. A portrait render (1080×1920) with a portrait camera: vertical fit, lens shift.
    scene.render.resolution_x, scene.render.resolution_y = 1080, 1920
    data = bpy.data.cameras.new("Portrait")
    data.sensor_fit, data.sensor_height, data.lens, data.shift_y = "VERTICAL", 24.0, 35.0, 0.04
    tall = bpy.data.objects.new("Portrait", data)
    scene.collection.objects.link(tall)
    _aim(bpy, tall, (centre.x - 0.3, centre.y - 0.9, centre.z), centre)
    out["portrait"] = _texture(bpy, api, head, tall, "diffusion")

    # 3. Cancel during the views: the ring the job made is removed (the user's cameras stay).
    for o in bpy.context.selected_objects:
        o.select_set(False)
    cancelled: list[bool] = []

    def cancel_in_views(f: Any) -> None:
        if f.handle.stage == "views" and not cancelled:
            cancelled.append(True)
            f.cancel()

    fut = api.texture_object_async(head, ring=3, generator="diffusion", steps=200, on_progress=cancel_in_views)
    assert len(_ring_left(bpy, head)) == 4  # 3 cameras and their collection, while the job runs
    try:
        fut.result(900)
        raise AssertionError("expected the cancel to stop the job")
    except Exception as exc:  # BackendError('Cancelled')
        out["cancel_error"] = str(exc)
    assert cancelled and fut.cancelled, (cancelled, fut.handle.state)
    assert _ring_left(bpy, head) == [], _ring_left(bpy, head)
    assert bpy.data.objects.get("Camera") is not None and bpy.data.objects.get("Portrait") is not None

    # 4. A job that fails (no such diffusion model) removes its ring too.
    fut = api.texture_object_async(head, ring=2, generator="diffusion", model="/nonexistent/views.safetensors")
    try:
        fut.result(300)
        raise AssertionError("expected an error")
    except Exception as exc:
        out["failure_error"] = str(exc)
    assert "not found" in out["failure_error"], out["failure_error"]
    assert _ring_left(bpy, head) == [], _ring_left(bpy, head)
    assert "not found" in wm.aware3d.last_error
    # No job folder is left: textured, cancelled and failed jobs all cleaned up (the default preference).
    jobs = importlib.import_module(f"{PKG}.prefs").user_dir("jobs")
    left = sorted(p.name for p in jobs.iterdir() if p.is_dir() and p.name != "remote")
    assert not left, left

    heavy = sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "backend")))
    assert not heavy, heavy[:5]  # the add-on never imports the backend or torch
    importlib.import_module(f"{PKG}.session").free()
    return out


if __name__ != "__main__":
    import pytest

    pytestmark = pytest.mark.blender

    def test_zip_textures_a_head_from_any_camera(tmp_path: Path) -> None:
        import zipfile

        from backend.cli.extension_cmd import build
        from tests.support.blender_session import run_scenario

        zip_path = build(tmp_path / "ext")
        with zipfile.ZipFile(zip_path) as z:
            assert "assets/models/aware3d-views-cond.safetensors" in z.namelist()
        print(run_scenario(__file__, [str(zip_path)], tmp_path, tmp_path / "models", timeout=1800))
else:
    result = scenario(sys.argv[1])
    Path(sys.argv[2]).write_text(json.dumps(result, indent=2, default=str))
