# SPDX-License-Identifier: GPL-3.0-or-later
"""A Cycles render of a head textured in real Blender, from the front and from behind (issue 16's picture).

Why a script and not a hand-made render: the picture in docs/blender.md is evidence of what the extension
does out of the box, so it must come from the same path an artist takes — the zip from ``aware3d extension
build`` installed in real Blender (bpy 5.0), ``api.generate`` with the bundled GAN, ``api.texture_object``
with the bundled diffusion view model (the add-on's default: the camera blend, not a bake) — and anyone must
be able to make it again with one command.

The script has two halves. The outer one (no bpy) builds the zip (or takes ``--zip``), runs the inner half in
a fresh Python process with an empty user models folder (so every model comes from the zip), a throw-away
Blender user folder and this interpreter as the backend, then writes the report with the command and the
machine state (``benchmarks/record.py``). The inner half (``--scene``) imports bpy, installs the zip,
generates the head at the 3D cursor on the floor, textures it from a ring of ``--views`` cameras, adds a key/
fill/rim light setup and renders with Cycles on the CPU from the head's own orbit: the ring's frontal camera,
and the same camera turned 180° around the head's vertical axis. Running bpy and the backend in separate
processes is also what Blender does (the add-on never imports torch).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/blender_render.py --images docs

``--out`` is the report (as in every benchmark script: tests/test_benchmark_results.py checks that the
command stored in a results file writes that file); the pictures go to ``--images``.

Defaults (8 views, 25 diffusion steps: the panel's; a 128³ grid, 20 000 faces; 400×400, 32 samples, OIDN
denoise) take about 2 minutes on 2 CPU cores shared with a training run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PKG = "bl_ext.user_default.aware3d"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "blender_render_cpu.json"


# ----------------------------------------------------------------------------------------------------------
# Inner half: runs inside bpy
# ----------------------------------------------------------------------------------------------------------


def _area_light(bpy: Any, name: str, energy: float, size: float, colour: tuple[float, float, float],
                eye: Any, target: Any) -> Any:
    """An area light at ``eye`` aimed at ``target`` (area lights shine along their local −Z)."""
    light = bpy.data.lights.new(name, "AREA")
    light.energy, light.size, light.color = energy, size, colour
    obj = bpy.data.objects.new(name, light)
    obj.location = eye
    obj.rotation_euler = (target - eye).to_track_quat("-Z", "Y").to_euler()
    bpy.context.scene.collection.objects.link(obj)
    return obj


def _lights(bpy: Any, centre: Any, front: Any, world: tuple[float, float, float]) -> list[str]:
    """Three-point lighting relative to the head's front, so the back view is lit by the rim and the fill.

    The key is high on the head's left-front, the fill low on its right-front and dimmer, the rim behind and
    above; the world colour gives the shadows some ambient light (a plain grey studio)."""
    from mathutils import Matrix, Vector

    def around(yaw: float, dist: float, height: float) -> Any:
        d = Matrix.Rotation(math.radians(yaw), 3, "Z") @ front
        return centre + dist * d + Vector((0.0, 0.0, height))

    _area_light(bpy, "Key", 120.0, 1.0, (1.0, 0.96, 0.9), around(-40.0, 1.6, 0.9), centre)
    _area_light(bpy, "Fill", 45.0, 1.5, (0.9, 0.95, 1.0), around(55.0, 1.8, 0.1), centre)
    _area_light(bpy, "Rim", 90.0, 0.8, (1.0, 1.0, 1.0), around(180.0, 1.5, 1.0), centre)
    bg = bpy.context.scene.world.node_tree.nodes["Background"]
    bg.inputs[0].default_value = (*world, 1.0)
    bg.inputs[1].default_value = 1.0
    return ["Key", "Fill", "Rim"]


def _render(bpy: Any, cam: Any, png: Path) -> float:
    """Render the scene through ``cam`` to ``png``; returns the seconds."""
    scene = bpy.context.scene
    scene.camera = cam
    scene.render.filepath = str(png)
    t0 = time.perf_counter()
    bpy.ops.render.render(write_still=True)
    return time.perf_counter() - t0


def scene_main(zip_path: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """Install, generate, texture, light and render; returns the timings and what ran."""
    import importlib

    import bpy
    from mathutils import Matrix, Vector

    assert bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default",
                                                    enable_on_install=True) == {"FINISHED"}
    api = importlib.import_module(f"{PKG}.api")
    scene = bpy.context.scene
    for o in list(bpy.data.objects):  # the default cube, camera and light
        bpy.data.objects.remove(o)
    scene.cursor.location = (0.0, 0.0, 0.0)  # the floor
    # The render's aspect is every texturing camera's aspect: square, like the view model's views.
    scene.render.resolution_x = scene.render.resolution_y = cfg["size"]
    scene.render.resolution_percentage = 100
    out: dict[str, Any] = {}

    t0 = time.perf_counter()
    head = api.generate(seed=cfg["seed"], resolution=cfg["resolution"], faces=cfg["faces"], timeout=1800)
    out["generate_s"] = round(time.perf_counter() - t0, 2)
    low = min((head.matrix_world @ v.co).z for v in head.data.vertices)
    out["head"] = {"name": head.name, "vertices": len(head.data.vertices), "faces": len(head.data.polygons),
                   "lowest_vertex_z_m": round(low, 4), "dimensions_m": [round(d, 4) for d in head.dimensions],
                   "meta": head["aware3d"].to_dict() if "aware3d" in head else {}}

    if cfg["generator"] == "none":  # the mesh's own vertex colours (the generator's colour field)
        cameras = [c.name for c in api.make_camera_ring(head, count=cfg["views"])]
        out["texture"] = {"generator": "none: the mesh's vertex colours", "cameras": cameras,
                          "material": head.data.materials[0].name if head.data.materials else None}
    else:
        t0 = time.perf_counter()
        fut = api.texture_object_async(head, ring=cfg["views"], generator=cfg["generator"], steps=cfg["steps"],
                                       seed=cfg["seed"])
        head = fut.result(1800)
        cameras = list(fut.cameras)
        out["texture_s"] = round(time.perf_counter() - t0, 2)
        mat = head.data.materials[0]
        out["texture"] = {"result_text": bpy.context.window_manager.aware3d_views.result_text,
                          "generator": fut.data.get("generator"), "generator_label": fut.data.get("generator_label"),
                          "generator_note": fut.data.get("generator_note"), "psnr_seen": fut.data.get("psnr_seen"),
                          "cameras": cameras, "material": mat.name, "mode": mat.get("aware3d_mode"),
                          "view_size": scene.aware3d_views.size, "texture_size": scene.aware3d_views.texture_size}

    # The head's own orbit: the ring's frontal camera, and that camera turned 180° about the vertical axis
    # through the orbit centre (same distance, height, lens), which faces the back of the head.
    front_cam = bpy.data.objects[cameras[0]]
    centre = head.matrix_world @ Vector(tuple(head["aware3d_centre"]))
    turn = Matrix.Translation(centre) @ Matrix.Rotation(math.pi, 4, "Z") @ Matrix.Translation(-centre)
    back_cam = bpy.data.objects.new("Render back", front_cam.data.copy())
    back_cam.matrix_world = turn @ front_cam.matrix_world
    scene.collection.objects.link(back_cam)
    front = front_cam.matrix_world.translation - centre
    front.z = 0.0
    out["lights"] = _lights(bpy, centre, front.normalized(), (0.18, 0.18, 0.2))

    scene.render.engine = "CYCLES"
    cy = scene.cycles
    cy.device = "CPU"
    cy.samples = cfg["samples"]
    cy.use_adaptive_sampling = True
    try:
        import _cycles

        denoise = bool(getattr(_cycles, "with_openimagedenoise", False))
    except ImportError:
        denoise = False
    cy.use_denoising = denoise
    if denoise:
        cy.denoiser = "OPENIMAGEDENOISE"
    scene.view_settings.view_transform = "AgX"
    img = scene.render.image_settings
    img.file_format, img.color_mode, img.color_depth, img.compression = "PNG", "RGB", "8", 100
    out_dir = Path(cfg["out"])
    out["render_s"] = {"front": round(_render(bpy, front_cam, out_dir / f"{cfg['name']}_front.png"), 2),
                       "back": round(_render(bpy, back_cam, out_dir / f"{cfg['name']}_back.png"), 2)}
    out["render"] = {"engine": "CYCLES", "device": "CPU", "samples": cfg["samples"], "denoise": denoise,
                     "denoiser": cy.denoiser if denoise else None, "size": [cfg["size"], cfg["size"]],
                     "threads": scene.render.threads, "cameras": {"front": front_cam.name, "back": back_cam.name},
                     "camera_lens_mm": round(front_cam.data.lens, 2),
                     "camera_distance_m": round((front_cam.matrix_world.translation - centre).length, 3)}
    out["blender"] = bpy.app.version_string
    importlib.import_module(f"{PKG}.session").free()
    return out


# ----------------------------------------------------------------------------------------------------------
# Outer half: build, run the scene in a fresh process, report
# ----------------------------------------------------------------------------------------------------------


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (defaults sized for a loaded 2-core CPU: the whole run in a few minutes)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(DEFAULT_OUT), help="the JSON report (settings, timings, environment)")
    p.add_argument("--images", default="docs", help="folder for NAME_front.png and NAME_back.png")
    p.add_argument("--name", default="textured_head", help="the pictures' file name stem (default textured_head)")
    p.add_argument("--generator", default="diffusion", choices=("diffusion", "projection", "none"),
                   help="texture views from the bundled diffusion view model (the panel's default), the "
                        "projection baseline, or none: the mesh's own vertex colours")
    p.add_argument("--zip", default=None, help="an extension zip; default: build one into a temporary folder")
    p.add_argument("--seed", type=int, default=3, help="generator seed (also the diffusion seed)")
    p.add_argument("--resolution", type=int, default=128, help="density grid per axis for the mesh")
    p.add_argument("--faces", type=int, default=20000, help="target face count of the mesh")
    p.add_argument("--views", type=int, default=8, help="ring cameras used for texturing (panel default)")
    p.add_argument("--steps", type=int, default=25, help="diffusion steps per view (panel default)")
    p.add_argument("--samples", type=int, default=32, help="Cycles samples per pixel")
    p.add_argument("--size", type=int, default=400, help="render width = height, px")
    p.add_argument("--scene", default=None, help=argparse.SUPPRESS)  # inner half: a JSON config file
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Build (or take) the zip, run the bpy half in a fresh process, write and return the report."""
    args = parse(argv)
    from benchmarks.record import Run

    record = Run(__file__, argv)
    out_dir = Path(args.images).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    report_path = Path(args.out)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    cfg = {"out": str(out_dir), "seed": args.seed, "resolution": args.resolution, "faces": args.faces,
           "views": args.views, "steps": args.steps, "samples": args.samples, "size": args.size,
           "generator": args.generator, "name": args.name}
    with tempfile.TemporaryDirectory(prefix="aware3d-render-") as tmp_s:
        tmp = Path(tmp_s)
        t0 = time.perf_counter()
        if args.zip:
            zip_path = Path(args.zip).resolve()
        else:
            from backend.cli.extension_cmd import build

            zip_path = build(tmp / "ext")
        build_s = time.perf_counter() - t0
        (tmp / "cfg.json").write_text(json.dumps(cfg))
        env = dict(os.environ)
        env.update({"BLENDER_USER_RESOURCES": str(tmp / "blender"), "AWARE3D_BACKEND_PYTHON": sys.executable,
                    "AWARE3D_MODELS": str(tmp / "models"), "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1")})
        proc = subprocess.run([sys.executable, __file__, "--scene", str(tmp / "cfg.json"), "--zip", str(zip_path),
                               "--out", str(tmp / "scene.json")], env=env, cwd=tmp, capture_output=True,
                              text=True, timeout=3600)
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
            raise SystemExit(f"the Blender half failed (exit {proc.returncode})")
        scene = json.loads((tmp / "scene.json").read_text())
    what = ("textured with the bundled diffusion view model" if args.generator == "diffusion" else
            "with its own vertex colours" if args.generator == "none" else "textured by the projection baseline")
    result = {"what": f"Cycles render of a generated head {what}, from the front and from behind (the head's "
                      "own orbit)",
              "settings": cfg, "zip": None if not args.zip else str(zip_path), "build_s": round(build_s, 2),
              **scene, "images": [str(out_dir / f"{args.name}_front.png"), str(out_dir / f"{args.name}_back.png")]}
    return record.finish(result, report_path)


if __name__ == "__main__":
    _args = parse()
    if _args.scene:
        _res = scene_main(_args.zip, json.loads(Path(_args.scene).read_text()))
        Path(_args.out).write_text(json.dumps(_res, indent=2, default=str))
    else:
        print(json.dumps(main(), indent=2, default=str))
