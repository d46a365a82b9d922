# SPDX-License-Identifier: GPL-3.0-or-later
"""Where results land in real Blender (bpy 5.0.1): heads standing on the 3D cursor, origin and scale options.

Like tests/test_addon_blender.py, every scenario runs in a fresh Python process (this file is also the
scenario script: ``python tests/test_addon_scene_blender.py SCENARIO ZIP OUT.json``), with the extension zip
built without bundled models, this environment's Python as the backend and the tiny head model, so a test
takes seconds of generation (48³ grids).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the scenario also runs as a script in Blender

from tests.support.blender_session import install_extension, pump_until

ROOT = Path(__file__).resolve().parents[1]
PKG = "bl_ext.user_default.aware3d"
MODEL = "head-tiny"
SMALL = {"model": MODEL, "resolution": 48, "faces": 2000}


# ----------------------------------------------------------------------------------------------------------
# Scenarios (run inside the bpy subprocess)
# ----------------------------------------------------------------------------------------------------------


def _install(zip_path: str) -> tuple[Any, Any, Any]:
    import importlib

    import bpy

    install_extension(zip_path, PKG)
    return bpy, importlib.import_module(f"{PKG}.api"), importlib.import_module(f"{PKG}.session")


def _world_bounds(obj: Any) -> tuple[Any, Any]:
    """(min, max) of the object's vertices in world space."""
    import bpy
    import numpy as np

    bpy.context.view_layer.update()  # matrix_world after the import set location and scale
    co = np.empty(3 * len(obj.data.vertices), dtype=np.float64)
    obj.data.vertices.foreach_get("co", co)
    co = co.reshape(-1, 3)
    mw = np.array(obj.matrix_world, dtype=np.float64)
    world = co @ mw[:3, :3].T + mw[:3, 3]
    return world.min(axis=0), world.max(axis=0)


def scenario_place(zip_path: str) -> dict[str, Any]:
    """Default: the lowest vertex at the cursor's height (± 1 mm), centred over it; the generator-centre origin
    as before; head height and factor scales; the generator's camera keeps framing the head."""
    import numpy as np

    bpy, api, session = _install(zip_path)
    scene = bpy.context.scene
    cursor = (0.4, -0.3, 0.75)
    scene.cursor.location = cursor
    assert scene.aware3d.origin == "BASE" and scene.aware3d.scale_mode == "METRIC"
    out: dict[str, Any] = {}

    head = api.generate(seed=3, **SMALL)
    lo, hi = _world_bounds(head)
    out["base"] = {"lowest_z": float(lo[2]), "centre_xy": [float((lo[i] + hi[i]) / 2) for i in (0, 1)]}
    assert abs(lo[2] - cursor[2]) <= 1e-3, (lo, cursor)
    assert np.allclose([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2], cursor[:2], atol=1e-3), (lo, hi)
    assert tuple(round(v, 5) for v in head.location) == cursor and head["aware3d"]["origin"] == "BASE"
    centre = np.array(head["aware3d_centre"])
    assert centre[2] > 0.05, centre  # the generator's centre is well above the base of the neck

    same = api.generate(seed=3, origin="centre", location=(0.0, 0.0, 0.0), **SMALL)
    lo2, hi2 = _world_bounds(same)
    assert tuple(same["aware3d_centre"]) == (0.0, 0.0, 0.0)
    out["centre_lowest_z"] = float(lo2[2])
    assert lo2[2] < -0.05, lo2  # the old behaviour: the head hangs below its origin
    # Same head, only moved: its generator centre is where the other's origin is, and so is the camera.
    assert np.allclose(lo - (np.array(cursor) + centre), lo2, atol=1e-4), (lo, lo2, centre)
    cam, cam2 = head.children[0], same.children[0]
    bpy.context.view_layer.update()
    rel = np.array(cam.matrix_world.translation) - (np.array(cursor) + centre)
    assert np.allclose(rel, np.array(cam2.matrix_world.translation), atol=1e-4), (rel, cam2.matrix_world)
    # A camera ring for novel-view textures orbits the generator's centre, whatever the origin option.
    ring = [np.array(c.matrix_world.translation) for c in api.make_camera_ring(head, 4, 0.0)]
    ring2 = [np.array(c.matrix_world.translation) for c in api.make_camera_ring(same, 4, 0.0)]
    for a, b in zip(ring, ring2, strict=True):
        assert np.allclose(a - (np.array(cursor) + centre), b, atol=1e-4), (a, b, centre)
    metric = hi2 - lo2

    tall = api.generate(seed=3, head_height=0.5, camera=False, **SMALL)
    lo3, hi3 = _world_bounds(tall)
    out["head_height"] = float(hi3[2] - lo3[2])
    assert abs((hi3[2] - lo3[2]) - 0.5) < 1e-4 and abs(lo3[2] - cursor[2]) <= 1e-3, (lo3, hi3)

    scene.aware3d.scale_mode, scene.aware3d.scale_factor = "FACTOR", 2.0
    big = api.generate(seed=3, camera=False, **SMALL)
    lo4, hi4 = _world_bounds(big)
    assert np.allclose(hi4 - lo4, 2 * metric, rtol=1e-4) and abs(lo4[2] - cursor[2]) <= 1e-3, (lo4, hi4, metric)

    scene.aware3d.scale_mode, scene.aware3d.origin = "METRIC", "CENTRE"
    assert bpy.ops.aware3d.generate(seed=4, origin="BASE", **SMALL) == {"FINISHED"}  # the operator's argument
    assert abs(_world_bounds(bpy.data.objects["Aware3D_4"])[0][2] - cursor[2]) <= 1e-3
    for bad in ({"origin": "top"}, {"head_height": 0.0}):
        try:
            api.generate(seed=5, **SMALL, **bad)
            raise AssertionError(f"expected a ValueError for {bad}")
        except ValueError as exc:
            out.setdefault("refused", []).append(str(exc))
    session.free()
    return out


def scenario_files(zip_path: str, tmp: str) -> dict[str, Any]:
    """Job folders go when a job ends (done, cancelled, failed; a failed one stays with the preference);
    images still read from a job folder are packed first; avatars move next to the .blend (or the chosen
    folder, or the user folder for an unsaved file)."""
    import importlib

    import numpy as np

    bpy, api, session = _install(zip_path)
    client = importlib.import_module(f"{PKG}.client")
    prefs = bpy.context.preferences.addons[PKG].preferences
    jobs = session.prefs.user_dir("jobs")
    out: dict[str, Any] = {}

    def gone(fut: Any) -> bool:
        return not any(p.exists() for p in session.job_folders(fut.handle))

    fut = api.generate_async(seed=1, colour_mode="texture", texture_size=64, **SMALL)
    head = fut.result(120)
    img = next(n.image for n in head.data.materials[0].node_tree.nodes if n.bl_idname == "ShaderNodeTexImage")
    assert gone(fut) and img.packed_file is not None and img.pixels[0] >= 0.0  # pixels survive the folder

    fut = api.generate_async(seed=2, model=MODEL, resolution=384, faces=0)
    pump_until(session, lambda: fut.handle.stage == "grid")
    assert any(p.is_dir() for p in session.job_folders(fut.handle))  # it exists while the job runs
    fut.cancel()
    pump_until(session, fut.done, timeout=60)
    assert fut.cancelled and gone(fut)

    fut = api.generate_async(seed=3, model="no-such-model")
    pump_until(session, fut.done, timeout=60)
    assert fut.error is not None and gone(fut), fut.error
    prefs.keep_failed_jobs = True
    fut = api.generate_async(seed=3, model="no-such-model")
    pump_until(session, fut.done, timeout=60)
    assert fut.error is not None and not gone(fut)
    prefs.keep_failed_jobs = False
    out["jobs_left"] = sorted(p.name for p in jobs.iterdir())

    # An image loaded by path from a job folder is packed before the folder goes.
    folder = jobs / "by-path-test"
    folder.mkdir()
    png = bpy.data.images.new("px", 4, 4)
    png.pixels[:] = np.full(64, 0.5, dtype=np.float32)
    png.filepath_raw, png.file_format = str(folder / "px.png"), "PNG"
    png.save()
    by_path = bpy.data.images.load(str(folder / "px.png"))
    h = client.JobHandle("by-path-test", "mesh", {})
    h._finish("done", result={"data": {}, "files": {}, "job_dir": str(folder)})
    session.remove_job_folders(h)
    assert not folder.exists() and by_path.packed_file is not None and png.packed_file is not None

    # Avatars: unsaved file → the user folder; saved → next to the .blend; the preference wins.
    def avatar(name: str) -> str:
        src = jobs / "avatar-job" / name
        src.parent.mkdir(exist_ok=True)
        src.write_bytes(b"avatar")
        return str(src)

    kept, where = session.keep_avatar(avatar("me.avatar.safetensors"))
    assert Path(kept).parent == session.prefs.user_dir("avatars") and "not saved" in where, (kept, where)
    blend = Path(tmp) / "scene" / "shot.blend"
    blend.parent.mkdir()
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    kept, where = session.keep_avatar(avatar("me.avatar.safetensors"))
    kept2, _ = session.keep_avatar(avatar("me.avatar.safetensors"))
    assert Path(kept) == blend.parent / "avatars" / "me.avatar.safetensors" and where == "next to the .blend"
    assert Path(kept2).name == "me-1.avatar.safetensors" and Path(kept2).read_bytes() == b"avatar"
    prefs.avatars_dir = str(Path(tmp) / "chosen")
    kept, where = session.keep_avatar(avatar("you.avatar.safetensors"))
    assert Path(kept) == Path(tmp) / "chosen" / "you.avatar.safetensors" and "preference" in where
    assert not list((jobs / "avatar-job").iterdir())  # moved, not copied
    out["avatar"] = kept
    session.free()
    return out


def scenario_bind(zip_path: str, tmp: str) -> dict[str, Any]:
    """A job started in one .blend whose result arrives after another was loaded is discarded with a notice;
    the next job lands in the file now open."""
    bpy, api, session = _install(zip_path)
    first, other = Path(tmp) / "first.blend", Path(tmp) / "other.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(other))
    bpy.ops.wm.save_as_mainfile(filepath=str(first))
    fut = api.generate_async(seed=11, **SMALL)
    assert bpy.data.filepath == str(first)
    bpy.ops.wm.open_mainfile(filepath=str(other))
    pump_until(session, fut.done, timeout=120)
    wm = bpy.context.window_manager
    assert fut.error is not None and fut.error.type == "FileChanged", fut.error
    assert "Aware3D_11" not in bpy.data.objects and "discarded" in wm.aware3d.last_error, wm.aware3d.last_error
    assert not any(p.exists() for p in session.job_folders(fut.handle))
    out = {"notice": [wm.aware3d.last_error, wm.aware3d.last_hint]}
    head = api.generate(seed=12, **SMALL)  # a job started in this file lands here
    assert head.name == "Aware3D_12" and bpy.data.filepath == str(other)
    bpy.ops.wm.save_as_mainfile(filepath=str(Path(tmp) / "renamed.blend"))  # Save As keeps the binding
    fut = api.generate_async(seed=13, **SMALL)
    bpy.ops.wm.save_as_mainfile(filepath=str(Path(tmp) / "renamed-again.blend"))
    assert fut.result(120).name == "Aware3D_13"
    session.free()
    return out


SCENARIOS = {"place": scenario_place, "files": scenario_files, "bind": scenario_bind}


# ----------------------------------------------------------------------------------------------------------
# The tests (each scenario in a fresh process)
# ----------------------------------------------------------------------------------------------------------

if __name__ != "__main__":
    import pytest

    pytestmark = pytest.mark.blender

    @pytest.fixture(scope="module")
    def extension_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
        from backend.cli.extension_cmd import build

        return build(tmp_path_factory.mktemp("ext"), with_models=False)

    @pytest.fixture(scope="module")
    def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
        sys.path.insert(0, str(Path(__file__).parent))
        try:
            from test_server import head_model
        finally:
            sys.path.pop(0)
        folder = tmp_path_factory.mktemp("models")
        head_model(folder)
        return folder

    def run_scenario(name: str, zip_path: Path, models: Path, tmp: Path, *extra: str,
                     env_extra: dict[str, str] | None = None) -> dict[str, Any]:
        env = dict(os.environ)
        env.update({"BLENDER_USER_RESOURCES": str(tmp / "blender"), "AWARE3D_BACKEND_PYTHON": sys.executable,
                    "AWARE3D_MODELS": str(models), "OMP_NUM_THREADS": "1", **(env_extra or {})})
        out = tmp / f"{name}.json"
        proc = subprocess.run([sys.executable, __file__, name, str(zip_path), str(out), *extra], env=env,
                              cwd=tmp, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
        return json.loads(out.read_text())

    def test_head_stands_on_cursor(extension_zip: Path, models_dir: Path, tmp_path: Path) -> None:
        out = run_scenario("place", extension_zip, models_dir, tmp_path)
        print(json.dumps(out, indent=2))
        assert abs(out["base"]["lowest_z"] - 0.75) <= 1e-3 and len(out["refused"]) == 2

    def test_job_folders_removed_and_avatars_kept(extension_zip: Path, models_dir: Path, tmp_path: Path) -> None:
        out = run_scenario("files", extension_zip, models_dir, tmp_path, str(tmp_path))
        print(json.dumps(out, indent=2))
        assert len(out["jobs_left"]) == 1  # the failed job kept with the preference on

    def test_job_bound_to_its_file(extension_zip: Path, models_dir: Path, tmp_path: Path) -> None:
        out = run_scenario("bind", extension_zip, models_dir, tmp_path, str(tmp_path))
        print(json.dumps(out, indent=2))
        assert "another .blend" in out["notice"][0]

else:
    _name, _zip, _out, *_extra = sys.argv[1:]
    Path(_out).write_text(json.dumps(SCENARIOS[_name](_zip, *_extra), indent=2, default=str))
