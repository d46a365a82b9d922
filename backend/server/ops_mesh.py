# SPDX-License-Identifier: GPL-3.0-or-later
"""The ``mesh`` operation: one seed → a coloured mesh in Blender coordinates, plus the generator's camera.

Why the server converts to Blender coordinates (metres, Z up, the face towards −Y) and writes flat arrays
(``mesh.npz``: float32 vertices, int32 faces, ...) rather than leaving it to the add-on: the add-on imports no
backend code, and bulk ``foreach_set`` on ready arrays is the fastest way into Blender. The camera is written
the same way (``camera.json``: a Blender ``matrix_world`` relative to the head's origin, lens and sensor), so
the add-on only has to copy numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from backend.errors import Aware3DError
from backend.server.jobs import JobContext, JobResult
from backend.server.ops_core import load_model
from backend.server.ops_sample import check_truncation, chunked
from backend.validate import within

MESH_FORMATS = ("glb", "obj", "ply")
COLOUR_MODES = ("vertex", "texture", "none")


def check_mesh_output_args(a: dict[str, Any], colour_modes: tuple[str, ...] = COLOUR_MODES) -> None:
    """Colour mode, formats, face count, grid resolution and level: shared by every operation that returns a
    mesh, and checked before any model is loaded (``backend.validate.BOUNDS``)."""
    if a["colour_mode"] not in colour_modes:
        raise Aware3DError(f"unknown colour mode {a['colour_mode']!r}", f"use one of {', '.join(colour_modes)}")
    formats = a["formats"]
    bad = [f for f in formats if f not in MESH_FORMATS]
    if bad:
        raise Aware3DError(f"unknown mesh format(s) {bad[:5]}", f"use any of {', '.join(MESH_FORMATS)}")
    if len(set(formats)) != len(formats):  # each would be written again: a long list is a cheap DoS
        raise Aware3DError(f"formats lists a format more than once: {formats[:10]}", "list each format once")
    within("faces", a["faces"], "target faces", "0 keeps every face, e.g. 50000")
    within("mesh_resolution", a["resolution"], "mesh resolution")
    if a["level"] is not None:  # None: the model's own level
        within("mesh_level", a["level"], "level", "the density of the surface; EG3D's is 10")


def requested_level(a: dict[str, Any]) -> float | None:
    """The requested mesh level; None leaves the model's own (``GeneratorConfig.mesh_level``)."""
    return None if a["level"] is None else float(a["level"])


def check_mesh_args(a: dict[str, Any]) -> None:
    check_mesh_output_args(a)
    within("seed", a["seed"], "seed")
    check_truncation(a["truncation"])
    if a["colour_mode"] == "texture":
        within("mesh_texture_size", a["texture_size"], "texture size")


def blender_camera_dict(cfg: Any, label: np.ndarray) -> dict[str, Any]:
    """The generator's (frontal) camera as a Blender camera, relative to the head's origin."""
    from backend import cameras

    c2w, K = cameras.split_label(label)
    cam = cameras.eg3d_to_blender_camera(c2w, float(K[0, 0]), float(K[0, 2]), float(K[1, 2]))
    return {"matrix_world": cam.matrix_world.tolist(), "lens_mm": cam.lens_mm,
            "sensor_width_mm": cam.sensor_width_mm, "sensor_fit": cam.sensor_fit, "shift_x": cam.shift_x,
            "shift_y": cam.shift_y, "resolution": int(cfg.img_resolution), "label": [float(x) for x in label],
            "convention": "Blender world relative to the head object's origin (metres, Z up, face towards -Y)"}


def blender_arrays(mesh: Any) -> dict[str, np.ndarray]:
    """Mesh arrays converted to Blender's axes and metres; UVs in Blender's convention (origin bottom-left)."""
    from backend import cameras

    out = {"vertices": cameras.eg3d_to_blender_points(mesh.vertices).astype(np.float32),
           "faces": np.ascontiguousarray(mesh.faces, dtype=np.int32)}
    if mesh.normals is not None:
        out["normals"] = cameras.eg3d_to_blender_normals(mesh.normals).astype(np.float32)
    if mesh.colours is not None:
        out["colours"] = np.clip(np.asarray(mesh.colours, dtype=np.float32), 0.0, 1.0)
    if mesh.uvs is not None:
        uv = np.asarray(mesh.uvs, dtype=np.float32).copy()
        uv[:, 1] = 1.0 - uv[:, 1]  # glTF (v down from the top) -> Blender (v up from the bottom)
        out["uvs"] = uv
    return out


def op_mesh(ctx: JobContext) -> JobResult:
    from backend.fileio import atomic_path, write_json, write_png
    from backend.mesh.export import save_mesh
    from backend.mesh.field import GeneratorField
    from backend.mesh.pipeline import MeshSettings, extract_mesh
    from backend.sampling import camera_label, make_latent, render_view

    a = ctx.args
    check_mesh_args(a)
    mode = a["colour_mode"]
    ctx.plan({"load": 1, "planes": 1, "grid": 12, "marching_cubes": 1, "cleanup": 3, "colours": 1,
              "texture": 4 if mode == "texture" else 0, "write": 1, "preview": 2 if a["preview"] else 0})
    model, _ = load_model(ctx, a["model"], a["device"])
    G = model.generator
    ctx.progress("planes", 0, 1, f"seed {a['seed']}")
    latent = make_latent(G, int(a["seed"]), float(a["truncation"]))
    ctx.progress("planes", 1, 1)
    settings = MeshSettings(resolution=int(a["resolution"]), target_faces=int(a["faces"]) or None,
                            level=requested_level(a),
                            colours=mode != "none", texture=mode == "texture",
                            texture_size=int(a["texture_size"])).validate()
    mesh = extract_mesh(GeneratorField(G, latent.planes), settings,
                        progress=lambda stage, frac: ctx.progress(stage, round(frac * 1000), 1000))
    ctx.progress("write", 0, 1)
    files: dict[str, Path] = {}
    arrays = blender_arrays(mesh)
    files["mesh"] = ctx.job_dir / "mesh.npz"
    with atomic_path(files["mesh"], suffix=".npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    if mesh.texture is not None:
        files["texture"] = ctx.job_dir / "texture.png"
        write_png(files["texture"], np.ascontiguousarray(mesh.texture, dtype=np.uint8))
    label = camera_label(G.cfg)
    if a["camera"]:
        files["camera"] = ctx.job_dir / "camera.json"
        write_json(files["camera"], blender_camera_dict(G.cfg, label))
    for fmt in a["formats"]:
        for p in save_mesh(mesh, ctx.job_dir / f"head.{fmt}", axes="blender"):
            files[p.name if p.suffix[1:] != fmt else fmt] = p
    ctx.progress("write", 1, 1)
    if a["preview"]:
        res = G.cfg.neural_rendering_resolution
        view = render_view(G, latent, label, None, chunked(res, int(a["seed"])),
                           on_progress=ctx.callback("preview"))
        files["preview"] = ctx.job_dir / "preview.png"
        write_png(files["preview"], view.image)
        ctx.progress("preview", 1, 1, preview=files["preview"])
    v = arrays["vertices"]
    data = {"model": model.name, "config": G.cfg.name, "seed": int(a["seed"]), "truncation": float(a["truncation"]),
            "vertices": len(v), "faces": len(arrays["faces"]), "colour_mode": mode,
            "bounds_m": [v.min(axis=0).tolist(), v.max(axis=0).tolist()] if len(v) else None,
            "seconds": {k: round(t, 3) for k, t in mesh.stats.get("seconds", {}).items()}}
    if not len(v):
        raise Aware3DError("the mesh is empty", "try another seed or a higher resolution")
    return JobResult(data=data, files=files)
