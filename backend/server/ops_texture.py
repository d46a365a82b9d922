# SPDX-License-Identifier: GPL-3.0-or-later
"""The ``texture`` operation: camera-aligned textures for a mesh from generated views (docs/texture.md).

Registered with :func:`register` (``ops_texture.register(server)`` in ``Server.__init__``), like
``ops_invert``. The job runs :func:`backend.texture.texture_mesh` and writes
:func:`backend.texture.write_outputs` into its job folder; every finished view is reported as a progress
event whose ``preview`` is the view's PNG, so the add-on can show the views as they arrive.

Arguments
---------
``mesh``: a ``.glb`` (``axes`` says how it was written; default Blender's, as ``aware3d mesh`` and
Blender's own glTF exporter write it), a ``mesh.npz`` of an earlier ``mesh``/``invert`` job (Blender
arrays), that job's folder, or its request id (looked up in this server's jobs folder). ``mesh_b64``: the
GLB's bytes instead (a remote backend cannot read the client's files; at most ~700 KB).

``cameras``: a list of cameras in Blender form (``matrix_world`` 4×4 in the mesh's frame, ``lens``,
``sensor_width``, ``sensor_fit``, ``resolution_x``/``resolution_y``, ``name``; see
``backend.texture.cameras_io``) or generator form, or ``{"ring": N, "pitch": degrees}`` for the FFHQ orbit
ring the CLI's ``ring:N`` gives. A Blender-form camera without ``pivot`` gets the centre of the mesh's
bounding box as its pivot (the point its depth range is measured to), so any object placed in a scene
works, not only a head at the generator's origin.

``generator``: ``auto`` (the default: ``diffusion`` when the conditional view model
``aware3d-views-cond.safetensors`` is in the user or bundled models folder, else ``projection``),
``diffusion`` or ``projection``; ``model`` (a diffusion model path), ``steps``, ``seed``, ``device``. The
result says which ran: ``generator`` (the kind), ``generator_label`` (``diffusion <model>`` or
``projection``) and ``generator_note`` (why ``auto`` fell back to projection; null otherwise).
``size`` (view size, longer side), ``texture_size``, ``exponent``, ``max_angle``.

Result files: ``glb`` (textured.glb), ``texture``, ``projection`` (projection.npz), ``cameras``,
``report`` (texture.json), ``view_00``…, and ``baked_uv`` (``baked_uv.npz``: ``corner_uv`` [F, 3, 2]
float32, the baked texture's UVs per triangle corner of the *input* faces in Blender's convention, origin
bottom-left) so a client can put the baked texture on the mesh it sent without re-reading the GLB.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any

import numpy as np

from backend.errors import Aware3DError
from backend.server import protocol as P
from backend.server.jobs import JobContext, JobResult, _safe_name
from backend.validate import within

_NUM = (int, float)
GENERATORS = ("auto", "diffusion", "projection")
AXES = ("blender", "eg3d")
MAX_CAMERAS = 64
MESH_NAMES = ("mesh.npz", "textured.glb", "head.glb")

TEXTURE_SPEC = P.OpSpec(True, {
    "mesh": ((str, type(None)), None),
    "mesh_b64": ((str, type(None)), None),
    "cameras": ((list, dict), {"ring": 8, "pitch": 0.0}),
    "generator": ((str,), "auto"),
    "model": ((str, type(None)), None),
    "steps": ((int,), 25),
    "seed": ((int,), 0),
    "size": ((int,), 64),
    "texture_size": ((int,), 1024),
    "exponent": (_NUM, 3.0),
    "max_angle": (_NUM, 70.0),
    "axes": ((str,), "blender"),
    "device": P.DEVICE_ARG,
}, "camera-aligned texture for a mesh from generated views: textured GLB, views, projected UVs and weights")


def register(server: Any) -> None:
    """Add ``texture`` to a :class:`backend.server.server.Server`."""
    server.register_op("texture", TEXTURE_SPEC, op_texture)


# --------------------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------------------


def check_args(a: dict[str, Any]) -> None:
    """Cheap checks before any file is read (one clear line each)."""
    if a["generator"] not in GENERATORS:
        raise Aware3DError(f"unknown generator {a['generator']!r}", f"use one of {', '.join(GENERATORS)}")
    if a["axes"] not in AXES:
        raise Aware3DError(f"unknown axes {a['axes']!r}", f"use one of {', '.join(AXES)}")
    within("view_size", a["size"], "view size", "e.g. 64")
    within("texture_size", a["texture_size"], "texture size", "e.g. 1024")
    within("texture_exponent", a["exponent"], "the weight exponent", "e.g. 3")
    within("max_angle_deg", a["max_angle"], "max_angle", "e.g. 70")
    within("diffusion_steps", a["steps"], "steps", "e.g. 25")
    within("seed", a["seed"], "seed", "e.g. 0")
    if (a["mesh"] is None) == (a["mesh_b64"] is None):
        raise Aware3DError("give the mesh as 'mesh' (a .glb, a mesh.npz, or a mesh job's id or folder) or "
                           "'mesh_b64' (GLB bytes), not both or neither", 'e.g. {"mesh": "/path/head.glb"}')


def _find_mesh_file(spec: str, jobs_dir: Path | None) -> Path:
    """A mesh file for ``mesh``: the file itself, a job folder's mesh, or a job id's folder's mesh."""
    path = Path(spec).expanduser()
    candidates = [path]
    if jobs_dir is not None and spec and "/" not in spec and "\\" not in spec and not path.suffix:
        candidates.append(jobs_dir / _safe_name(spec))
    for p in candidates:
        if p.is_file():
            return p
        if p.is_dir():
            for name in MESH_NAMES:
                if (p / name).is_file():
                    return p / name
            glbs = sorted(p.glob("*.glb"))
            if glbs:
                return glbs[0]
            raise Aware3DError(f"the folder {str(p)!r} holds no mesh (mesh.npz or .glb)",
                               "give the .glb itself, or the folder of a finished mesh job")
    raise Aware3DError(f"mesh {spec!r} not found (not a file, a job folder or the id of a job here)",
                       "give a .glb path; jobs whose result was imported into Blender are deleted")


def _mesh_from_npz(path: Path) -> Any:
    """A ``mesh.npz`` (Blender arrays, see ``ops_mesh.blender_arrays``) -> a generator-world Mesh."""
    from backend import cameras
    from backend.mesh.data import Mesh

    try:
        with np.load(path) as z:
            verts, faces = np.asarray(z["vertices"], np.float64), np.asarray(z["faces"], np.int64)
            normals = z["normals"] if "normals" in z.files else None
            colours = z["colours"] if "colours" in z.files else None
    except (OSError, ValueError, KeyError) as exc:
        raise Aware3DError(f"cannot read the mesh arrays in {path.name}: {exc}",
                           "give a mesh.npz written by a mesh job, or a .glb") from None
    if verts.ndim != 2 or verts.shape[1:] != (3,) or faces.ndim != 2 or faces.shape[1:] != (3,):
        raise Aware3DError(f"{path.name}: vertices must be [V, 3] and faces [F, 3]", "give a .glb instead")
    return Mesh(cameras.blender_to_eg3d_points(verts).astype(np.float32), faces,
                None if normals is None else cameras.blender_to_eg3d_normals(normals).astype(np.float32),
                None if colours is None else np.clip(np.asarray(colours, np.float32)[:, :3], 0.0, 1.0))


def read_mesh(ctx: JobContext) -> tuple[Any, str]:
    """The input mesh in generator world, and a description of where it came from."""
    from backend.texture.glb_read import read_glb, read_glb_bytes

    a = ctx.args
    if a["mesh_b64"] is not None:
        try:
            data = base64.b64decode(a["mesh_b64"], validate=True)
        except (binascii.Error, ValueError):
            raise Aware3DError("mesh_b64 is not valid base64", "send the GLB file's bytes base64-encoded") from None
        return read_glb_bytes(data, a["axes"], "the mesh sent inline"), "(sent inline)"
    jobs_dir = getattr(getattr(ctx, "server", None), "work_dir", None)
    path = _find_mesh_file(a["mesh"], jobs_dir)
    if path.suffix.lower() == ".npz":
        return _mesh_from_npz(path), str(path)
    return read_glb(path, a["axes"]), str(path)


def read_cameras(value: Any, mesh: Any, size: int) -> list[tuple[str, Any]]:
    """``cameras`` -> [(name, Camera)] in generator world (module docstring)."""
    from backend.texture.cameras_io import parse_cameras, ring

    if isinstance(value, dict) and "ring" in value:
        unknown = sorted(set(value) - {"ring", "pitch"})
        n, pitch = value.get("ring"), value.get("pitch", 0.0)
        if unknown or isinstance(n, bool) or not isinstance(n, int) or isinstance(pitch, bool) \
                or not isinstance(pitch, _NUM):
            raise Aware3DError(f"bad camera ring {value!r}", 'use {"ring": N, "pitch": degrees}, e.g. {"ring": 8}')
        return ring(n, float(pitch), size)
    items = value.get("cameras") if isinstance(value, dict) else value
    if not isinstance(items, list) or not items:
        raise Aware3DError("cameras must be a non-empty list of cameras or {\"ring\": N, \"pitch\": deg}",
                           "select camera objects in Blender, or ask for a ring")
    if len(items) > MAX_CAMERAS:
        raise Aware3DError(f"{len(items)} cameras is too many (at most {MAX_CAMERAS})", "use fewer cameras")
    v = np.asarray(mesh.vertices, dtype=np.float64)
    centre = ((v.min(axis=0) + v.max(axis=0)) / 2).tolist()
    items = [dict(c, pivot=centre) if isinstance(c, dict) and "matrix_world" in c and "cam2world" not in c
             and "pivot" not in c else c for c in items]
    return parse_cameras(items, "cameras")


def corner_uvs(result: Any, input_faces: np.ndarray, input_verts: np.ndarray) -> np.ndarray:
    """The baked texture's UVs per corner of the input faces [F, 3, 2] (Blender convention).

    ``texture_mesh`` keeps the face order and the corner order (xatlas, or the mesh's own UVs); checked
    here on the positions so a future change cannot silently scramble the texture.
    """
    m = result.mesh
    fu = np.asarray(m.faces, dtype=np.int64)
    if fu.shape != input_faces.shape or not np.allclose(np.asarray(m.vertices)[fu], input_verts[input_faces],
                                                        atol=1e-5):
        raise Aware3DError("the textured mesh's faces do not follow the input's", "this is a bug; please report")
    uv = np.asarray(m.uvs, dtype=np.float32)[fu].copy()
    uv[..., 1] = 1.0 - uv[..., 1]  # glTF (origin top-left) -> Blender (bottom-left)
    return uv


# --------------------------------------------------------------------------------------------------------
# The operation
# --------------------------------------------------------------------------------------------------------


def op_texture(ctx: JobContext) -> JobResult:
    from backend.fileio import atomic_path
    from backend.texture.generators import choose_generator, describe_generator, load_generator
    from backend.texture.pipeline import TextureOptions, texture_mesh, write_outputs

    a = ctx.args
    check_args(a)
    ctx.plan({"read": 1, "load": 1, "views": 10, "write": 1})
    ctx.progress("read", 0, 1, "reading the mesh and cameras")
    mesh, source = read_mesh(ctx)
    named = read_cameras(a["cameras"], mesh, a["size"])
    kind, model_path = choose_generator(a["generator"], a["model"])
    label, note = describe_generator(a["generator"], kind, model_path)
    ctx.progress("read", 1, 1, f"{mesh.num_faces} faces, {len(named)} cameras")

    ctx.progress("load", 0, 1, f"view generator: {label}" + (f" ({note})" if note else ""))
    device = "cpu"
    if kind == "diffusion":
        from backend.devices import resolve_device

        device = str(resolve_device(a["device"]))
    _, generator = load_generator(kind, model_path, steps=a["steps"], seed=a["seed"], device=device)
    ctx.progress("load", 1, 1, f"view generator: {label}")

    n = len(named)

    def on_progress(done: int, total: int, message: str, preview: Path | None) -> None:
        ctx.progress("views", done, total, message, preview=preview)

    ctx.progress("views", 0, n, "starting")
    result = texture_mesh(mesh, [c for _, c in named], generator, size=a["size"], texture_size=a["texture_size"],
                          exponent=float(a["exponent"]), progress=on_progress, names=[nm for nm, _ in named],
                          options=TextureOptions(max_angle=float(a["max_angle"])), view_dir=ctx.job_dir / "views")
    ctx.progress("write", 0, 1, "writing the textured mesh")
    extra = {"mesh": source, "generator": kind, "generator_label": label, "generator_note": note,
             "diffusion_model": str(model_path) if model_path else None,
             "seed": a["seed"], "steps": a["steps"] if kind == "diffusion" else None}
    written = write_outputs(result, ctx.job_dir, axes=a["axes"], extra=extra)
    baked = ctx.job_dir / "baked_uv.npz"
    with atomic_path(baked, suffix=".npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, corner_uv=corner_uvs(result, np.asarray(mesh.faces, np.int64),
                                         np.asarray(mesh.vertices, np.float64)))
    ctx.check_cancel()

    roles = {"textured.glb": "glb", "texture.png": "texture", "projection.npz": "projection",
             "cameras.json": "cameras", "texture.json": "report"}
    files: dict[str, Path] = {}
    for p in written:
        rel = p.relative_to(ctx.job_dir)
        if rel.parent.name == "views":
            files[f"view_{p.stem.split('_')[-1]}"] = p
        elif p.name in roles:
            files[roles[p.name]] = p
    files["baked_uv"] = baked
    rep = result.report
    ctx.progress("write", 1, 1)
    data = {"generator": kind, "generator_label": label, "generator_note": note,
            "diffusion_model": str(model_path) if model_path else None,
            "cameras": result.names, "vertices": rep["vertices"], "faces": rep["faces"],
            "texture_size": rep["texture_size"], "uvs": rep["uvs"],
            "psnr_seen": [c.get("psnr_seen") for c in rep["cameras"]],
            "faces_seen_untextured": rep["faces_seen_untextured"],
            "seconds": rep["seconds"], "files": sorted(str(p.relative_to(ctx.job_dir)) for p in files.values())}
    return JobResult(data=data, files=files)
