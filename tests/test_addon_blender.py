# SPDX-License-Identifier: GPL-3.0-or-later
"""The extension in real Blender (bpy 5.0.1): install the built zip, generate, cancel, kill, render.

bpy cannot be reloaded and keeps state between tests, so each scenario runs in a fresh Python process: this
file is also the scenario script (``python tests/test_addon_blender.py SCENARIO ZIP OUT.json``). Blender's
user folders point into a temporary directory (``BLENDER_USER_RESOURCES``), the backend interpreter is this
test environment's Python (``AWARE3D_BACKEND_PYTHON``) and the models folder holds the head-shaped tiny model
from ``test_server.head_model``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the scenario also runs as a script in Blender

from tests.support.blender_session import install_extension, pump_until
from tests.support.fake_layout import FakeLayout

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"
PKG = "bl_ext.user_default.aware3d"
MODEL = "head-tiny"


# ----------------------------------------------------------------------------------------------------------
# Scenarios (run inside the bpy subprocess)
# ----------------------------------------------------------------------------------------------------------


def _install(zip_path: str) -> tuple[Any, Any, Any]:
    import importlib

    import bpy

    t0 = time.perf_counter()
    install_extension(zip_path, PKG)
    api = importlib.import_module(f"{PKG}.api")
    session = importlib.import_module(f"{PKG}.session")
    print(f"installed in {time.perf_counter() - t0:.2f}s")
    return bpy, api, session


def _check_head(obj: Any, location: tuple[float, float, float]) -> dict[str, Any]:
    me = obj.data
    dims = tuple(obj.dimensions)
    assert len(me.vertices) > 100 and len(me.polygons) > 100
    assert tuple(round(v, 5) for v in obj.location) == tuple(round(v, 5) for v in location)
    assert 0.1 < max(dims) < 0.6 and dims[2] >= dims[1] * 0.9, dims  # metres, upright
    assert len(me.materials) == 1 and me.materials[0].node_tree is not None
    return {"vertices": len(me.vertices), "faces": len(me.polygons), "dimensions": dims}


class _WithLayout:
    """The real preferences, seen through a fake ``layout``."""

    def __init__(self, real: Any, layout: FakeLayout) -> None:
        self._real, self.layout = real, layout

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _draw_all(bpy: Any) -> list[str]:
    """Run every Aware3D panel's and the preferences' draw() against :class:`FakeLayout`."""
    import types

    calls: list[str] = []
    layout = FakeLayout(calls)
    for name in ("VIEW3D_PT_aware3d", "VIEW3D_PT_aware3d_model", "VIEW3D_PT_aware3d_generate",
                 "VIEW3D_PT_aware3d_backend"):
        cls = getattr(bpy.types, name)
        cls.draw(types.SimpleNamespace(layout=layout), bpy.context)
    prefs = bpy.context.preferences.addons[PKG].preferences
    for mode in ("MANAGED", "PYTHON", "REMOTE"):
        prefs.backend_mode = mode
        type(prefs).draw(_WithLayout(prefs, layout), bpy.context)
    prefs.backend_mode = "MANAGED"
    return calls


def scenario_generate(zip_path: str) -> dict[str, Any]:
    import signal

    bpy, api, session = _install(zip_path)
    wm, scene = bpy.context.window_manager, bpy.context.scene
    out: dict[str, Any] = {}
    assert hasattr(bpy.types, "VIEW3D_PT_aware3d") and hasattr(bpy.types, "VIEW3D_PT_aware3d_generate")
    assert scene.aware3d.seed == 0 and wm.aware3d.status
    calls = _draw_all(bpy)
    assert "op:aware3d.generate" in calls and "prop_search:model" in calls and "op:aware3d.setup_backend" in calls

    # 1. The operator (background mode: it waits), head at the 3D cursor with a vertex-colour material.
    scene.cursor.location = (0.3, -0.2, 1.1)
    t0 = time.perf_counter()
    assert bpy.ops.aware3d.generate(seed=3, model=MODEL, resolution=64, faces=4000) == {"FINISHED"}
    out["operator_s"] = time.perf_counter() - t0
    head = bpy.data.objects["Aware3D_3"]
    out["operator"] = _check_head(head, (0.3, -0.2, 1.1))
    assert head.data.color_attributes.get("Color") is not None
    assert any(n.bl_idname == "ShaderNodeVertexColor" for n in head.data.materials[0].node_tree.nodes)
    cams = [c for c in head.children if c.type == "CAMERA"]
    assert len(cams) == 1 and cams[0].data.lens > 100  # FFHQ: 4.2647 image widths · 36 mm
    assert head["aware3d"]["seed"] == 3 and head["aware3d"]["model"] == MODEL
    assert scene.aware3d.seed == 0  # an operator argument does not change the panel's settings

    # 2. The scripting API, with a texture, at a given location, without a camera.
    obj = api.generate(seed=4, model=MODEL, resolution=64, faces=3000, colour_mode="texture", camera=False,
                       location=(2.0, 0.0, 0.0))
    out["api"] = _check_head(obj, (2.0, 0.0, 0.0))
    assert obj.name == "Aware3D_4" and not obj.children and obj.data.uv_layers.get("UVMap") is not None
    tex = [n for n in obj.data.materials[0].node_tree.nodes if n.bl_idname == "ShaderNodeTexImage"]
    assert tex and tex[0].image.packed_file is not None and tex[0].image.size[0] == 1024

    # 3. Asynchronous, with tick() driven as the timer would: the backend's work never runs on the main thread
    # (the job advances between ticks, through its stages), and the scene import is one step, in the tick that
    # receives the result. How long a tick takes is measured by benchmarks/blender_generate.py, not asserted.
    scene.cursor.location = (0.0, 0.0, 0.0)
    seen: dict[str, Any] = {"stages": set(), "eta": False, "busy": False, "callback": None, "progress_calls": 0}

    def on_progress(f: Any) -> None:
        seen["progress_calls"] += 1

    fut = api.generate_async(seed=5, model=MODEL, resolution=512, faces=20000, on_progress=on_progress,
                             on_done=lambda f: seen.__setitem__("callback", f.object_name))
    ticks = []
    progress_per_tick = []  # (stage, step) the panel knew after each tick
    while not fut.done():
        assert "Aware3D_5" not in bpy.data.objects  # nothing was imported in an earlier tick
        t = time.perf_counter()
        session.tick()
        ticks.append(time.perf_counter() - t)
        progress_per_tick.append((fut.handle.stage, fut.handle.step))
        if wm.aware3d.busy and "progress" not in seen:
            seen["progress"] = _draw_all(bpy)  # the panel while a job runs: a progress bar and Cancel
        seen["stages"].add(wm.aware3d.stage)
        seen["eta"] |= bool(wm.aware3d.eta)
        seen["busy"] |= wm.aware3d.busy
        time.sleep(session.TICK_S)
    assert fut.error is None, fut.error
    out["async"] = {"ticks": len(ticks), "max_tick_ms": 1000 * max(ticks),
                    "mean_tick_ms": 1000 * sum(ticks) / len(ticks),
                    "max_tick_before_import_ms": 1000 * max(ticks[:-1]), "import_tick_ms": 1000 * ticks[-1],
                    "stages": sorted(s for s in seen["stages"] if s), "eta_seen": seen["eta"]}
    assert len(set(progress_per_tick[:-1])) >= 3, progress_per_tick  # seen moving while ticks returned
    assert "Aware3D_5" in bpy.data.objects  # imported by the last tick
    assert "progress" in seen["progress"] and "op:aware3d.cancel" in seen["progress"]
    assert seen["busy"] and seen["callback"] == "Aware3D_5" and seen["progress_calls"] > 0, seen
    assert seen["eta"], out["async"]
    assert "Grid" in seen["stages"] and len(seen["stages"]) >= 3, seen["stages"]
    assert not wm.aware3d.busy and "Aware3D_5" in wm.aware3d.last_result
    _check_head(fut.object, (0.0, 0.0, 0.0))

    # 4. Cancel mid-job: it stops within a step and nothing is added.
    n_objects = len(bpy.data.objects)
    fut = api.generate_async(seed=6, model=MODEL, resolution=384, faces=0)
    pump_until(session, lambda: fut.handle.stage == "grid")
    t0 = time.perf_counter()
    fut.cancel()
    pump_until(session, fut.done, timeout=30)
    out["cancel_s"] = time.perf_counter() - t0
    # Within a step: the job never left the grid stage it was cancelled in.
    assert fut.cancelled and fut.handle.stage == "grid", (fut.handle.stage, fut.handle.step)
    assert len(bpy.data.objects) == n_objects and not wm.aware3d.last_error

    # 5. Kill the backend mid-job: the error shows; the next request starts a new backend.
    client = session._client
    pid = client.server_info["pid"]
    fut = api.generate_async(seed=7, model=MODEL, resolution=384, faces=0)
    pump_until(session, lambda: fut.handle.stage == "grid")
    os.kill(pid, signal.SIGKILL)
    pump_until(session, fut.done, timeout=30)
    assert fut.error is not None and fut.error.type == "BackendDied", fut.error
    assert wm.aware3d.last_error and "new backend" in wm.aware3d.last_hint
    out["killed_error"] = [wm.aware3d.last_error, wm.aware3d.last_hint]
    obj = api.generate(seed=8, model=MODEL, resolution=48, faces=2000)
    assert client.starts == 2 and client.server_info["pid"] != pid and obj.name == "Aware3D_8"
    assert not wm.aware3d.last_error

    # 6. Errors reach the panel with a hint; network actions respect online access (off in bpy).
    try:
        api.generate(seed=1, model="no-such-model")
        raise AssertionError("expected an error")
    except api.BackendError as exc:
        assert "no-such-model" in exc.message and wm.aware3d.last_error == exc.message and wm.aware3d.last_hint
    assert not bpy.app.online_access
    assert not bpy.ops.aware3d.add_model_url.poll() and not bpy.ops.aware3d.setup_backend.poll()
    try:
        api.download_model("http://127.0.0.1:9/x.safetensors")
        raise AssertionError("expected an error")
    except api.BackendError as exc:
        assert exc.type == "OnlineAccessDisabled"
    names = [m["name"] for m in api.list_models()]
    assert MODEL in names and MODEL in [m.name for m in wm.aware3d.models]

    # 7. Blender's process never imported torch or the backend; Free ends the process.
    heavy = sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "backend")))
    assert not heavy, heavy[:5]
    ext_dir = Path(sys.modules[PKG].__file__).parent
    assert (ext_dir / "backend" / "server" / "server.py").is_file()
    assert not list((ext_dir / "backend").rglob("__pycache__"))  # the backend never writes into the extension
    pid = session._client.server_info["pid"]
    proc = session._client.transport.proc
    api.free()
    assert session._client is None and proc.poll() is not None
    out["freed_pid"] = pid
    bpy.ops.preferences.addon_disable(module=PKG)
    assert not hasattr(bpy.types, "VIEW3D_PT_aware3d")
    return out


def scenario_render(zip_path: str, png: str) -> dict[str, Any]:
    import math

    import numpy as np

    bpy, api, _ = _install(zip_path)
    scene = bpy.context.scene
    for o in list(bpy.data.objects):
        if o.type == "MESH":
            bpy.data.objects.remove(o)
    obj = api.generate(seed=0, model=MODEL, resolution=128, faces=20000, camera=True, location=(0, 0, 1.5))
    cam = obj.children[0]
    scene.camera = cam
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 16
    scene.render.resolution_x = scene.render.resolution_y = 256
    scene.render.filepath = png
    sun = bpy.data.objects.new("Key", bpy.data.lights.new("Key", "SUN"))
    sun.data.energy = 3.0
    sun.rotation_euler = (math.radians(60), 0.0, math.radians(-30))
    scene.collection.objects.link(sun)
    background = (0.3, 0.3, 0.35)
    scene.world.node_tree.nodes["Background"].inputs[0].default_value = (*background, 1.0)
    t0 = time.perf_counter()
    bpy.ops.render.render(write_still=True)
    render_s = time.perf_counter() - t0
    # A second view, three-quarter from the front-left and a little above, for a person to judge the shape.
    from mathutils import Vector

    target = obj.matrix_world @ Vector(obj["aware3d_centre"])  # the generator centre, not the base of the neck
    eye = target + Vector((-0.9, -1.3, 0.35))
    view = bpy.data.objects.new("ThreeQuarter", bpy.data.cameras.new("ThreeQuarter"))
    view.data.lens = 150
    view.location = eye
    view.rotation_euler = (target - eye).to_track_quat("-Z", "Y").to_euler()
    scene.collection.objects.link(view)
    scene.camera = view
    scene.render.filepath = png.replace(".png", "_three_quarter.png")
    bpy.ops.render.render(write_still=True)
    img = bpy.data.images.load(png)
    px = np.array(img.pixels[:], dtype=np.float32).reshape(img.size[1], img.size[0], 4)[..., :3]
    bg = px[2, 2]  # a corner: the world colour
    head = np.abs(px - bg).sum(-1) > 0.08
    centre = px[96:160, 96:160]
    return {"png": png, "render_s": render_s, "head_fraction": float(head.mean()),
            "centre_mean": float(centre.mean()), "centre_is_head": float(head[96:160, 96:160].mean()),
            "corner": bg.tolist()}


def _main(argv: list[str]) -> int:
    name, zip_path, out_json = argv[:3]
    if name == "generate":
        out = scenario_generate(zip_path)
    elif name == "render":
        out = scenario_render(zip_path, argv[3])
    else:
        raise SystemExit(f"unknown scenario {name}")
    Path(out_json).write_text(json.dumps(out, indent=2, default=str))
    return 0


# ----------------------------------------------------------------------------------------------------------
# The tests (each scenario in a fresh process)
# ----------------------------------------------------------------------------------------------------------

if __name__ != "__main__":
    import pytest

    pytestmark = pytest.mark.blender

    @pytest.fixture(scope="module")
    def extension_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
        from backend.cli.extension_cmd import build

        return build(tmp_path_factory.mktemp("ext"))

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
                     timeout: float = 600) -> dict[str, Any]:
        env = dict(os.environ)
        env.update({"BLENDER_USER_RESOURCES": str(tmp / "blender"), "AWARE3D_BACKEND_PYTHON": sys.executable,
                    "AWARE3D_MODELS": str(models)})
        out = tmp / f"{name}.json"
        proc = subprocess.run([sys.executable, __file__, name, str(zip_path), str(out), *extra], env=env,
                              cwd=tmp, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
        return json.loads(out.read_text())

    def test_install_generate_cancel_kill(extension_zip: Path, models_dir: Path, tmp_path: Path) -> None:
        out = run_scenario("generate", extension_zip, models_dir, tmp_path)
        print(json.dumps(out, indent=2))
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "blender_generate.json").write_text(json.dumps(out, indent=2))
        assert out["async"]["ticks"] > 3 and out["freed_pid"]

    def test_render_with_cycles(extension_zip: Path, models_dir: Path, tmp_path: Path) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        png = ARTIFACTS / "blender_render.png"
        png.unlink(missing_ok=True)
        out = run_scenario("render", extension_zip, models_dir, tmp_path, str(png))
        print(json.dumps(out, indent=2))
        assert png.is_file()
        assert 0.2 < out["head_fraction"] < 0.95  # the head fills much of the generator's framing
        assert out["centre_is_head"] > 0.9 and out["centre_mean"] > 0.15  # visible and lit, not black

else:
    sys.exit(_main(sys.argv[1:]))
