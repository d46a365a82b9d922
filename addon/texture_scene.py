# SPDX-License-Identifier: GPL-3.0-or-later
"""Novel-view textures, the Blender side of the data: mesh and cameras out, projections and material in.

Out: the mesh object is written as a small GLB by :func:`write_glb` (not ``bpy.ops.export_scene.gltf``):
one triangle per ``loop_triangle`` and **one glTF vertex per Blender vertex, in Blender's order**, with the
object's rotation and scale applied and its origin as the origin (the cameras are sent in the same frame:
their ``matrix_world`` minus the object's location). Why our own writer: the glTF exporter splits vertices
at UV and normal seams and reorders them, and writes the object's transform as a node (which the backend
refuses), so its vertex order could not be related to ``projection.npz`` without matching positions. With
this writer the backend's per-vertex arrays (projected UVs, weights) index ``mesh.vertices`` directly and its
per-face arrays (``baked_uv.npz``) index ``mesh.loop_triangles``. The base mesh is used (modifiers are not
applied): the attributes live on it and modifiers carry them along.

In: :func:`apply_projection` adds to the mesh

* ``Aware3D_baked``: a UV map with the baked texture's UVs (per triangle corner, from ``baked_uv.npz``);
* per camera ``A3D_uv_<camera>``: a UV map with the camera's projected UVs (per loop from the per-vertex
  values: the view image maps onto [0, 1]², bottom-left origin) and ``A3D_w_<camera>``: a point colour
  attribute (w, w, w, 1) with the camera's raw weight;

and builds a material: per camera Image Texture (view k, UV map k) × weight k, summed and divided by the
sum of weights, falling back to the baked texture where no camera sees the surface (sum 0); or, with
``bake``, just the baked texture on ``Aware3D_baked``. UV maps are created as 2D corner attributes, which
is what UV maps are since Blender 3.5 (``uv_layers.new`` stops at 8, an 8-camera ring needs 9).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import bpy
import numpy as np
from mathutils import Matrix

from .scene_import import ImportFailed

BAKED_UV = "Aware3D_baked"
UV_PREFIX = "A3D_uv_"
WEIGHT_PREFIX = "A3D_w_"
MAX_NAME = 40  # attribute names are limited to 63 bytes


# ----------------------------------------------------------------------------------------------------------
# Mesh and cameras → the request
# ----------------------------------------------------------------------------------------------------------


def mesh_arrays(obj: bpy.types.Object) -> dict[str, np.ndarray]:
    """Vertices [V, 3] (object rotation and scale applied, origin at the object's origin), triangles [T, 3],
    the loops of every triangle [T, 3], and linear vertex colours [V, 3] when the mesh has a colour attribute."""
    if obj.mode == "EDIT":
        obj.update_from_editmode()
    me = obj.data
    nv = len(me.vertices)
    co = np.empty(3 * nv, np.float32)
    me.vertices.foreach_get("co", co)
    m3 = np.array(obj.matrix_world.to_3x3(), dtype=np.float64)
    verts = (co.reshape(-1, 3).astype(np.float64) @ m3.T).astype(np.float32)
    me.calc_loop_triangles()
    nt = len(me.loop_triangles)
    tris = np.empty(3 * nt, np.int32)
    me.loop_triangles.foreach_get("vertices", tris)
    loops = np.empty(3 * nt, np.int32)
    me.loop_triangles.foreach_get("loops", loops)
    out = {"vertices": verts, "faces": tris.reshape(-1, 3), "loops": loops.reshape(-1, 3)}
    attr = source_colours(me)
    if attr is not None and attr.domain in ("POINT", "CORNER"):
        n = len(attr.data)
        rgba = np.empty(4 * n, np.float32)
        attr.data.foreach_get("color", rgba)  # scene linear
        rgb = rgba.reshape(-1, 4)[:, :3]
        if attr.domain == "CORNER":
            lv = np.empty(len(me.loops), np.int32)
            me.loops.foreach_get("vertex_index", lv)
            acc = np.zeros((nv, 3), np.float64)
            np.add.at(acc, lv, rgb)
            cnt = np.bincount(lv, minlength=nv)[:, None]
            rgb = (acc / np.maximum(cnt, 1)).astype(np.float32)
        out["colours"] = np.clip(rgb, 0.0, 1.0)
    return out


def source_colours(me: bpy.types.Mesh) -> Any:
    """The mesh's own colour attribute (the render one), never one of our weight attributes."""
    cas = [a for a in me.color_attributes if not a.name.startswith(WEIGHT_PREFIX)]
    if not cas:
        return None
    idx = me.color_attributes.render_color_index
    render = me.color_attributes[idx] if 0 <= idx < len(me.color_attributes) else None
    return render if render is not None and render in cas else cas[0]


def write_glb(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """A minimal GLB: POSITION (glTF's Y up: (x, z, −y) of Blender's axes), indices, and linear COLOR_0."""
    v = np.asarray(arrays["vertices"], np.float32)
    f = np.ascontiguousarray(arrays["faces"], np.uint32)
    if len(v) == 0 or len(f) == 0:
        raise ImportFailed("the mesh has no faces")
    pos = np.ascontiguousarray(np.stack([v[:, 0], v[:, 2], -v[:, 1]], axis=1), np.float32)
    blobs = [pos.tobytes(), f.tobytes()]
    accessors = [
        {"bufferView": 0, "componentType": 5126, "count": len(pos), "type": "VEC3",
         "min": pos.min(axis=0).tolist(), "max": pos.max(axis=0).tolist()},
        {"bufferView": 1, "componentType": 5125, "count": int(f.size), "type": "SCALAR"},
    ]
    attributes = {"POSITION": 0}
    if "colours" in arrays:
        blobs.append(np.ascontiguousarray(arrays["colours"], np.float32).tobytes())
        accessors.append({"bufferView": 2, "componentType": 5126, "count": len(pos), "type": "VEC3"})
        attributes["COLOR_0"] = 2
    views, binary, offset = [], b"", 0
    for i, blob in enumerate(blobs):
        views.append({"buffer": 0, "byteOffset": offset, "byteLength": len(blob),
                      "target": 34963 if i == 1 else 34962})
        binary += blob
        offset += len(blob)
    doc = {"asset": {"version": "2.0", "generator": "Aware3D Blender add-on"}, "scene": 0,
           "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0}],
           "meshes": [{"primitives": [{"attributes": attributes, "indices": 1, "mode": 4}]}],
           "accessors": accessors, "bufferViews": views, "buffers": [{"byteLength": len(binary)}]}
    js = json.dumps(doc, separators=(",", ":")).encode()
    js += b" " * (-len(js) % 4)
    binary += b"\0" * (-len(binary) % 4)
    data = (struct.pack("<4sII", b"glTF", 2, 12 + 8 + len(js) + 8 + len(binary))
            + struct.pack("<I4s", len(js), b"JSON") + js + struct.pack("<I4s", len(binary), b"BIN\0") + binary)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def camera_dict(cam: bpy.types.Object, origin: Any, scene: bpy.types.Scene) -> dict[str, Any]:
    """A camera object in the request's Blender form, in the frame of the mesh (origin subtracted)."""
    data = cam.data
    if data.type != "PERSP":
        raise ImportFailed(f"camera {cam.name!r} is {data.type.lower()}; only perspective cameras project")
    mw = Matrix(cam.matrix_world)
    mw.translation = mw.translation - origin
    r = scene.render
    return {"name": cam.name, "matrix_world": [list(row) for row in mw], "lens": float(data.lens),
            "sensor_width": float(data.sensor_width), "sensor_height": float(data.sensor_height),
            "sensor_fit": data.sensor_fit, "shift_x": float(data.shift_x), "shift_y": float(data.shift_y),
            "resolution_x": int(r.resolution_x), "resolution_y": int(r.resolution_y),
            "resolution_percentage": int(r.resolution_percentage)}


# ----------------------------------------------------------------------------------------------------------
# Results → attributes and a material
# ----------------------------------------------------------------------------------------------------------


def _short(name: str) -> str:
    return "".join(c if c.isalnum() or c in "+-_." else "_" for c in name)[:MAX_NAME]


def uv_name(camera: str) -> str:
    return UV_PREFIX + _short(camera)


def weight_name(camera: str) -> str:
    return WEIGHT_PREFIX + _short(camera)


def _replace_attribute(me: bpy.types.Mesh, name: str, kind: str, domain: str) -> Any:
    old = me.attributes.get(name)
    if old is not None:
        me.attributes.remove(old)
    attr = me.attributes.new(name, kind, domain)
    if attr is None:
        raise ImportFailed(f"could not add the attribute {name!r} to {me.name!r}")
    return attr


def _load_image(path: str, name: str, colour: bool = True) -> bpy.types.Image:
    old = bpy.data.images.get(name)
    if old is not None and old.users == 0:
        bpy.data.images.remove(old)
    img = bpy.data.images.load(str(path), check_existing=False)
    img.name = name
    img.colorspace_settings.name = "sRGB" if colour else "Non-Color"
    img.pack()  # the job folder is temporary; the .blend keeps the pixels
    return img


def add_layers(obj: bpy.types.Object, projection: dict[str, np.ndarray], corner_uv: np.ndarray) -> list[str]:
    """The baked UV map and, per camera, its projected UV map and weight attribute; returns the camera names."""
    me = obj.data
    names = [str(n) for n in projection["names"]]
    uv, weight = projection["uv"], projection["weight"]
    nv = len(me.vertices)
    if uv.shape[1] != nv or weight.shape != (len(names), nv):
        raise ImportFailed(f"{obj.name!r} has {nv} vertices but the result is for {uv.shape[1]}: the mesh "
                           "changed while it was being textured; run it again")
    me.calc_loop_triangles()
    nt = len(me.loop_triangles)
    if corner_uv.shape != (nt, 3, 2):
        raise ImportFailed(f"{obj.name!r} has {nt} triangles but the result is for {corner_uv.shape[0]}: "
                           "the mesh changed while it was being textured; run it again")
    tri_loops = np.empty(3 * nt, np.int32)
    me.loop_triangles.foreach_get("loops", tri_loops)
    loop_vert = np.empty(len(me.loops), np.int32)
    me.loops.foreach_get("vertex_index", loop_vert)
    baked = np.zeros((len(me.loops), 2), np.float32)
    baked[tri_loops] = corner_uv.reshape(-1, 2)
    _replace_attribute(me, BAKED_UV, "FLOAT2", "CORNER").data.foreach_set("vector", baked.ravel())
    for k, name in enumerate(names):
        per_loop = np.ascontiguousarray(uv[k][loop_vert], np.float32)
        _replace_attribute(me, uv_name(name), "FLOAT2", "CORNER").data.foreach_set("vector", per_loop.ravel())
        rgba = np.ones((nv, 4), np.float32)
        rgba[:, :3] = np.asarray(weight[k], np.float32)[:, None]
        attr = _replace_attribute(me, weight_name(name), "FLOAT_COLOR", "POINT")
        attr.data.foreach_set("color", rgba.ravel())
    if me.uv_layers.get(BAKED_UV) is not None:
        me.uv_layers.active = me.uv_layers[BAKED_UV]
    me.update()
    return names


def _socket(sockets: Any, identifier: str) -> Any:
    return next(s for s in sockets if s.identifier == identifier)


def build_material(name: str, texture: bpy.types.Image, views: list[tuple[str, bpy.types.Image]],
                   bake: bool) -> bpy.types.Material:
    """The material (module docstring): the camera blend with the baked fallback, or the baked texture."""
    mat = bpy.data.materials.new(name)
    if mat.node_tree is None:  # Blender < 5.0: node materials are opt-in
        mat.use_nodes = True
    nt = mat.node_tree
    nodes, links = nt.nodes, nt.links
    bsdf = next((n for n in nodes if n.type == "BSDF_PRINCIPLED"), None)
    out = next((n for n in nodes if n.type == "OUTPUT_MATERIAL"), None)
    if out is None:
        out = nodes.new("ShaderNodeOutputMaterial")
    if bsdf is None:
        bsdf = nodes.new("ShaderNodeBsdfPrincipled")
        links.new(bsdf.outputs["BSDF"], out.inputs["Surface"])
    bsdf.inputs["Roughness"].default_value = 0.6
    x0 = bsdf.location.x

    def node(kind: str, x: float, y: float, label: str = "", **attrs: Any) -> Any:
        n = nodes.new(kind)
        n.location = (x, y)
        if label:
            n.label = label
        for k, v in attrs.items():
            setattr(n, k, v)
        return n

    baked_uv = node("ShaderNodeUVMap", x0 - 1300, 300, "Baked UVs", uv_map=BAKED_UV)
    baked = node("ShaderNodeTexImage", x0 - 1100, 300, "Baked texture", image=texture)
    links.new(baked_uv.outputs["UV"], baked.inputs["Vector"])
    if bake or not views:
        links.new(baked.outputs["Color"], bsdf.inputs["Base Color"])
        mat["aware3d_mode"] = "baked"
        return mat
    colour_sum = weight_sum = None
    for k, (cam, img) in enumerate(views):
        y = -300.0 * k
        uvn = node("ShaderNodeUVMap", x0 - 1500, y, f"UVs {cam}", uv_map=uv_name(cam))
        tex = node("ShaderNodeTexImage", x0 - 1300, y, f"View {cam}", image=img, extension="EXTEND")
        links.new(uvn.outputs["UV"], tex.inputs["Vector"])
        w = node("ShaderNodeAttribute", x0 - 1300, y - 200, f"Weight {cam}", attribute_type="GEOMETRY",
                 attribute_name=weight_name(cam))
        fac = w.outputs[2]  # "Fac" (4.x) / "Factor" (5.x): the average of the colour, here the weight
        scaled = node("ShaderNodeVectorMath", x0 - 1000, y, f"× weight {cam}", operation="SCALE")
        links.new(tex.outputs["Color"], scaled.inputs[0])
        links.new(fac, scaled.inputs["Scale"])
        if colour_sum is None:
            colour_sum, weight_sum = scaled.outputs["Vector"], fac
            continue
        add_c = node("ShaderNodeVectorMath", x0 - 800, y, "Σ colour·weight", operation="ADD")
        links.new(colour_sum, add_c.inputs[0])
        links.new(scaled.outputs["Vector"], add_c.inputs[1])
        add_w = node("ShaderNodeMath", x0 - 800, y - 200, "Σ weight", operation="ADD")
        links.new(weight_sum, add_w.inputs[0])
        links.new(fac, add_w.inputs[1])
        colour_sum, weight_sum = add_c.outputs["Vector"], add_w.outputs["Value"]
    safe = node("ShaderNodeMath", x0 - 600, 0, "max(Σw, ε)", operation="MAXIMUM")
    links.new(weight_sum, safe.inputs[0])
    safe.inputs[1].default_value = 1e-6
    inv = node("ShaderNodeMath", x0 - 450, 0, "1 / Σw", operation="DIVIDE")
    inv.inputs[0].default_value = 1.0
    links.new(safe.outputs["Value"], inv.inputs[1])
    blend = node("ShaderNodeVectorMath", x0 - 300, 0, "Blend", operation="SCALE")
    links.new(colour_sum, blend.inputs[0])
    links.new(inv.outputs["Value"], blend.inputs["Scale"])
    seen = node("ShaderNodeMath", x0 - 450, 200, "Seen (Σw > 0)", operation="GREATER_THAN")
    links.new(weight_sum, seen.inputs[0])
    seen.inputs[1].default_value = 1e-6
    mix = node("ShaderNodeMix", x0 - 200, 250, "Views, else baked", data_type="RGBA")
    links.new(seen.outputs["Value"], _socket(mix.inputs, "Factor_Float"))
    links.new(baked.outputs["Color"], _socket(mix.inputs, "A_Color"))
    links.new(blend.outputs["Vector"], _socket(mix.inputs, "B_Color"))
    links.new(_socket(mix.outputs, "Result_Color"), bsdf.inputs["Base Color"])
    mat["aware3d_mode"] = "views"
    return mat


def apply_projection(obj: bpy.types.Object, files: dict[str, str], bake: bool) -> bpy.types.Material:
    """Put a finished ``texture`` job on ``obj`` (module docstring); returns the new material."""
    for role in ("projection", "baked_uv", "texture"):
        if role not in files:
            raise ImportFailed(f"the backend's result has no {role} file")
    with np.load(files["projection"]) as z:
        projection = {k: z[k] for k in ("names", "uv", "weight")}
    with np.load(files["baked_uv"]) as z:
        corner_uv = np.asarray(z["corner_uv"], np.float32)
    names = add_layers(obj, projection, corner_uv)
    texture = _load_image(files["texture"], f"A3D {obj.name} baked")
    views: list[tuple[str, bpy.types.Image]] = []
    if not bake:
        for k, cam in enumerate(names):
            role = f"view_{k:02d}"
            if role not in files:
                raise ImportFailed(f"the backend's result has no view for camera {cam!r}")
            views.append((cam, _load_image(files[role], f"A3D {obj.name} {cam}")))
    mat = build_material(f"Aware3D views {obj.name}", texture, views, bake)
    me = obj.data
    if len(me.materials) == 0:
        me.materials.append(mat)
    else:
        for i in range(len(me.materials)):
            me.materials[i] = mat
    return mat
