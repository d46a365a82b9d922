# SPDX-License-Identifier: GPL-3.0-or-later
"""Turning a finished ``mesh`` job into Blender data: mesh, colour attribute or texture, material, camera.

Why bulk ``foreach_set`` on numpy arrays (not ``from_pydata``): a 100k-triangle head imports in tens of
milliseconds, so applying a result never stalls Blender's main thread. The arrays are already in Blender's
axes and metres (the backend converted them), centred on the generator's centre. Why the origin is moved by
default (to the base of the neck: the lowest point, centred in x/y on the head): a head generated at a cursor
on the floor then stands on it instead of sinking 0.19 m into it. The generator's centre is kept on the
object (``obj["aware3d_centre"]``, object-local) for tools that need the generator's frame (camera rings).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import bpy
import numpy as np
from mathutils import Matrix, Vector

COLOUR_ATTRIBUTE = "Color"
UV_MAP = "UVMap"
ORIGIN_BASE = "BASE"  # the lowest point, centred in x/y: the head stands on the 3D cursor
ORIGIN_CENTRE = "CENTRE"  # the generator's centre (the mesh as the backend returned it)
CENTRE_KEY = "aware3d_centre"  # object-local position of the generator's centre


class ImportFailed(Exception):
    pass


def build_mesh(name: str, arrays: Any) -> bpy.types.Mesh:
    """A mesh datablock from ``vertices`` [V, 3] float32 and ``faces`` [F, 3] int32 (+ colours, uvs)."""
    verts = np.ascontiguousarray(arrays["vertices"], dtype=np.float32)
    faces = np.ascontiguousarray(arrays["faces"], dtype=np.int32)
    nv, nf = len(verts), len(faces)
    if nv == 0 or nf == 0:
        raise ImportFailed("the backend returned an empty mesh")
    if faces.min() < 0 or faces.max() >= nv:  # cheap numpy check instead of a slow mesh.validate()
        raise ImportFailed("the mesh refers to vertices that do not exist")
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(nv)
    mesh.vertices.foreach_set("co", verts.ravel())
    mesh.loops.add(3 * nf)
    mesh.loops.foreach_set("vertex_index", faces.ravel())
    mesh.polygons.add(nf)
    mesh.polygons.foreach_set("loop_start", np.arange(0, 3 * nf, 3, dtype=np.int32))
    mesh.polygons.foreach_set("use_smooth", np.ones(nf, dtype=bool))
    if "colours" in arrays:
        rgb = np.asarray(arrays["colours"], dtype=np.float32)
        rgba = np.ones((nv, 4), dtype=np.float32)
        rgba[:, :3] = np.clip(rgb[:, :3], 0.0, 1.0)
        attr = mesh.color_attributes.new(COLOUR_ATTRIBUTE, "BYTE_COLOR", "POINT")
        attr.data.foreach_set("color_srgb", rgba.ravel())  # the backend's colours are sRGB
        mesh.color_attributes.active_color = attr
        mesh.color_attributes.render_color_index = mesh.color_attributes.active_color_index
    if "uvs" in arrays:
        uv = np.asarray(arrays["uvs"], dtype=np.float32)
        layer = mesh.uv_layers.new(name=UV_MAP)
        layer.data.foreach_set("uv", uv[faces].reshape(-1))
    mesh.update()
    return mesh


def make_material(name: str, texture: bpy.types.Image | None, vertex_colours: bool) -> bpy.types.Material:
    mat = bpy.data.materials.new(name)
    if mat.node_tree is None:  # Blender < 5.0: node materials are opt-in (5.0 deprecates the switch)
        mat.use_nodes = True
    nt = mat.node_tree
    bsdf = next((n for n in nt.nodes if n.type == "BSDF_PRINCIPLED"), None)
    if bsdf is None:
        bsdf = nt.nodes.new("ShaderNodeBsdfPrincipled")
        out = next(n for n in nt.nodes if n.type == "OUTPUT_MATERIAL")
        nt.links.new(bsdf.outputs["BSDF"], out.inputs["Surface"])
    bsdf.inputs["Roughness"].default_value = 0.6
    if texture is not None:
        tex = nt.nodes.new("ShaderNodeTexImage")
        tex.image = texture
        tex.location = (bsdf.location.x - 350, bsdf.location.y)
        nt.links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
    elif vertex_colours:
        col = nt.nodes.new("ShaderNodeVertexColor")
        col.layer_name = COLOUR_ATTRIBUTE
        col.location = (bsdf.location.x - 300, bsdf.location.y)
        nt.links.new(col.outputs["Color"], bsdf.inputs["Base Color"])
    return mat


def load_texture(path: Path, name: str) -> bpy.types.Image:
    img = bpy.data.images.load(str(path), check_existing=False)
    img.name = name
    img.colorspace_settings.name = "sRGB"
    img.pack()  # the job folder is temporary; the .blend keeps the pixels
    return img


def add_camera(name: str, cam: dict[str, Any], parent: bpy.types.Object,
               collection: bpy.types.Collection) -> bpy.types.Object:
    """A camera at the generator's pose, parented to the head (so it follows the head)."""
    data = bpy.data.cameras.new(name)
    data.type = "PERSP"
    data.lens_unit = "MILLIMETERS"
    data.sensor_fit = str(cam.get("sensor_fit", "HORIZONTAL"))
    data.sensor_width = float(cam["sensor_width_mm"])
    data.lens = float(cam["lens_mm"])
    data.shift_x, data.shift_y = float(cam.get("shift_x", 0.0)), float(cam.get("shift_y", 0.0))
    data.clip_start = 0.01
    obj = bpy.data.objects.new(name, data)
    collection.objects.link(obj)
    obj.parent = parent
    obj.matrix_parent_inverse = Matrix.Identity(4)
    obj.matrix_basis = Matrix([[float(v) for v in row] for row in cam["matrix_world"]])
    return obj


def origin_offset(vertices: np.ndarray, origin: str) -> np.ndarray:
    """Where the object's origin goes, in the generator's frame: (0, 0, 0) for the generator's centre, else the
    lowest point with x/y at the centre of the head's bounding box (so the head stands over the cursor)."""
    if origin == ORIGIN_CENTRE or len(vertices) == 0:
        return np.zeros(3, dtype=np.float64)
    if origin != ORIGIN_BASE:
        raise ValueError(f"origin must be {ORIGIN_BASE!r} or {ORIGIN_CENTRE!r}, got {origin!r}")
    v = np.asarray(vertices, dtype=np.float64)
    lo, hi = v.min(axis=0), v.max(axis=0)
    return np.array([(lo[0] + hi[0]) / 2.0, (lo[1] + hi[1]) / 2.0, lo[2]])


def scale_factor(vertices: np.ndarray, factor: float = 1.0, head_height: float | None = None) -> float:
    """The object's scale: ``head_height`` metres over the mesh's height when given, else ``factor``
    (1 keeps the generator's metric size)."""
    if head_height is not None:
        if head_height <= 0:
            raise ValueError(f"head height must be positive, got {head_height}")
        z = np.asarray(vertices, dtype=np.float64)[:, 2]
        extent = float(z.max() - z.min()) if len(z) else 0.0
        return head_height / extent if extent > 1e-9 else 1.0
    if factor <= 0:
        raise ValueError(f"scale must be positive, got {factor}")
    return float(factor)


def import_head(files: dict[str, str], name: str, location: Any, collection: bpy.types.Collection,
                meta: dict[str, Any] | None = None, with_camera: bool = True, origin: str = ORIGIN_CENTRE,
                scale: float = 1.0, head_height: float | None = None) -> bpy.types.Object:
    """Create the head object (and its camera) from a finished mesh job's files.

    ``origin`` places the object's origin (:func:`origin_offset`); the scale (``scale`` or ``head_height``
    metres) is the object's scale, about that origin, so the generator's camera still frames the head."""
    if "mesh" not in files:
        raise ImportFailed("the backend's result has no mesh file")
    with np.load(files["mesh"]) as npz:
        arrays = {k: npz[k] for k in npz.files}
    offset = origin_offset(arrays["vertices"], origin)
    factor = scale_factor(arrays["vertices"], scale, head_height)
    arrays["vertices"] = (np.asarray(arrays["vertices"], dtype=np.float64) - offset).astype(np.float32)
    mesh = build_mesh(name, arrays)
    texture = load_texture(Path(files["texture"]), f"{name}_texture") if "texture" in files else None
    mesh.materials.append(make_material(name, texture, "colours" in arrays))
    obj = bpy.data.objects.new(name, mesh)
    collection.objects.link(obj)
    obj.location = location
    obj.scale = (factor, factor, factor)
    obj[CENTRE_KEY] = [float(-c) for c in offset]
    if meta:
        obj["aware3d"] = {k: v for k, v in meta.items() if isinstance(v, (int, float, str))}
    if with_camera and "camera" in files:
        cam = json.loads(Path(files["camera"]).read_text())
        camera = add_camera(f"{name}_camera", cam, obj, collection)
        basis = camera.matrix_basis.copy()  # relative to the head: move it with the head's origin
        basis.translation = basis.translation - Vector(offset.tolist())
        camera.matrix_basis = basis
    return obj


def remove_head(obj: bpy.types.Object) -> None:
    """Delete a head made by :func:`import_head` with its cameras, and the mesh, materials and camera data that
    nothing else uses any more (a first head that its refined result replaces)."""
    meshes = [obj.data] if obj.type == "MESH" else []
    materials = [m for m in getattr(obj.data, "materials", []) if m is not None]
    cameras = [c for c in obj.children if c.type == "CAMERA"]
    cam_data = [c.data for c in cameras]
    for o in (*cameras, obj):
        bpy.data.objects.remove(o, do_unlink=True)
    for block, store in ((meshes, bpy.data.meshes), (cam_data, bpy.data.cameras), (materials, bpy.data.materials)):
        for d in block:
            if d.users == 0:
                store.remove(d)


def release_folder(folder: Path) -> int:
    """Pack every image still read from a file inside ``folder``, so removing the folder loses no pixels (the
    importers pack theirs already; this catches any other). Returns how many were packed."""
    root = folder.resolve()
    packed = 0
    for img in bpy.data.images:
        if img.packed_file is not None or img.source not in ("FILE", "SEQUENCE") or not img.filepath:
            continue
        try:
            Path(bpy.path.abspath(img.filepath)).resolve().relative_to(root)
        except ValueError:
            continue
        try:
            img.pack()
            packed += 1
        except RuntimeError as exc:  # unreadable: the image keeps its (soon missing) path
            print(f"Aware3D: could not pack {img.name}: {exc}")
    return packed


def remove_job_folder(job_dir: str | None, root: Path) -> None:
    """Delete a finished job's folder, but only inside our own jobs folder."""
    if not job_dir:
        return
    path = Path(job_dir).resolve()
    try:
        path.relative_to(root.resolve())
    except ValueError:
        return
    if path != root.resolve():
        shutil.rmtree(path, ignore_errors=True)
