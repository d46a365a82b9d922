# SPDX-License-Identifier: GPL-3.0-or-later
"""Read a mesh back from a GLB (ours, or any single-primitive triangle GLB) into generator world.

Why: ``aware3d texture`` starts from the GLB that ``aware3d mesh`` wrote, and the Blender side exports
GLB too. ``backend.mesh.export`` stores generator points in file axes (``axes='blender'``: the glTF file
holds ``0.5·(x, y, z)``, generator axes in metres; ``axes='eg3d'``: untouched) and colours as *linear*
``COLOR_0``; this module undoes both, so the returned ``Mesh`` has generator-world vertices and normals
and sRGB colours, exactly what ``backend.mesh`` produced. A GLB carries no record of the axes it was
written with, hence the explicit ``axes`` argument (the CLI's ``--axes``, default ``blender`` like
``aware3d mesh``).

Supported: the first mesh's single triangle primitive (``mode`` 4), float positions/normals/UVs, float or
normalised-integer colours (RGB or RGBA, alpha dropped), uint8/16/32 indices or none, interleaved buffer
views, and a PNG/JPEG base-colour texture. Not supported (clear error): node transforms, sparse accessors,
external buffers, several primitives.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from backend import cameras
from backend.errors import Aware3DError
from backend.mesh.cleanup import vertex_normals
from backend.mesh.data import Mesh
from backend.mesh.export import AXES

_COMPONENTS = {5120: np.int8, 5121: np.uint8, 5122: np.int16, 5123: np.uint16, 5125: np.uint32,
               5126: np.float32}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}


def from_file_axes(values: np.ndarray, axes: str, is_normal: bool = False) -> np.ndarray:
    """Numbers stored in a GLB for ``axes`` -> generator-world points (or normals): inverse of
    ``backend.mesh.export.to_file_axes(..., fmt='glb')``."""
    if axes not in AXES:
        raise ValueError(f"axes must be one of {AXES}, got {axes!r}")
    v = np.asarray(values, dtype=np.float64).reshape(-1, 3)
    if axes == "eg3d":
        return v
    b = np.stack([v[:, 0], -v[:, 2], v[:, 1]], axis=1)  # file (X, Z, -Y) -> Blender (X, Y, Z)
    return cameras.blender_to_eg3d_normals(b) if is_normal else cameras.blender_to_eg3d_points(b)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    """Inverse of ``backend.mesh.export.srgb_to_linear`` (values clipped to [0, 1])."""
    c = np.clip(np.asarray(c, dtype=np.float64), 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * np.power(c, 1.0 / 2.4) - 0.055).astype(np.float32)


def _chunks(data: bytes, name: str) -> tuple[dict[str, Any], bytes]:
    if len(data) < 20:
        raise Aware3DError(f"{name} is not a GLB file (too short)", "give a .glb written by 'aware3d mesh'")
    magic, version, total = struct.unpack_from("<4sII", data, 0)
    if magic != b"glTF" or version != 2:
        raise Aware3DError(f"{name} is not a binary glTF 2.0 file", "give a .glb written by 'aware3d mesh'")
    offset, doc, binary = 12, None, b""
    while offset + 8 <= min(total, len(data)):
        length, kind = struct.unpack_from("<I4s", data, offset)
        chunk = data[offset + 8 : offset + 8 + length]
        if kind == b"JSON":
            doc = json.loads(chunk.decode("utf-8"))
        elif kind == b"BIN\x00" and not binary:
            binary = chunk
        offset += 8 + length
    if doc is None:
        raise Aware3DError(f"{name} has no JSON chunk", "the file is damaged; export it again")
    return doc, binary


class _Reader:
    """Accessor and buffer-view access for one GLB document (only the embedded BIN buffer)."""

    def __init__(self, doc: dict[str, Any], binary: bytes) -> None:
        self.doc, self.binary = doc, binary

    def view_bytes(self, index: int) -> tuple[bytes, int | None]:
        view = self.doc["bufferViews"][index]
        if view.get("buffer", 0) != 0 or "uri" in self.doc["buffers"][view.get("buffer", 0)]:
            raise ValueError("external buffers are not supported")
        start = int(view.get("byteOffset", 0))
        return self.binary[start : start + int(view["byteLength"])], view.get("byteStride")

    def accessor(self, index: int) -> np.ndarray:
        acc = self.doc["accessors"][index]
        if "sparse" in acc:
            raise ValueError("sparse accessors are not supported")
        dtype = np.dtype(_COMPONENTS[int(acc["componentType"])]).newbyteorder("<")
        width, count = _WIDTH[acc["type"]], int(acc["count"])
        raw, stride = self.view_bytes(int(acc["bufferView"]))
        offset = int(acc.get("byteOffset", 0))
        item = dtype.itemsize * width
        stride = int(stride or item)
        if count and offset + stride * (count - 1) + item > len(raw):
            raise ValueError("an accessor runs past the end of its buffer view")
        buf = np.frombuffer(raw, dtype=np.uint8, count=max(0, len(raw) - offset), offset=offset)
        rows = np.lib.stride_tricks.as_strided(buf, shape=(count, item), strides=(stride, 1)) if count \
            else np.zeros((0, item), np.uint8)
        out = np.ascontiguousarray(rows).view(dtype).reshape(count, width)
        if acc.get("normalized") and dtype.kind in "ui":
            out = out.astype(np.float64) / float(np.iinfo(dtype).max)
        return out

    def base_colour_texture(self, material: int | None) -> np.ndarray | None:
        if material is None:
            return None
        pbr = self.doc.get("materials", [])[material].get("pbrMetallicRoughness", {})
        info = pbr.get("baseColorTexture")
        if info is None:
            return None
        source = self.doc["textures"][info["index"]].get("source")
        if source is None:
            return None
        image = self.doc["images"][source]
        if "bufferView" not in image:
            raise ValueError("textures must be embedded in the GLB")
        import cv2

        raw, _ = self.view_bytes(int(image["bufferView"]))
        img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError("the base-colour texture could not be decoded")
        return np.ascontiguousarray(img[..., ::-1])


def read_glb_bytes(data: bytes, axes: str = "blender", name: str = "mesh") -> Mesh:
    """Parse GLB bytes into a generator-world ``Mesh`` (module docstring)."""
    doc, binary = _chunks(data, name)
    try:
        meshes = doc.get("meshes") or []
        if not meshes or not meshes[0].get("primitives"):
            raise ValueError("it holds no mesh")
        prims = meshes[0]["primitives"]
        if len(prims) != 1 or len(meshes) != 1:
            raise ValueError("only one mesh with one primitive is supported")
        for node in doc.get("nodes", []):
            if any(k in node for k in ("matrix", "translation", "rotation", "scale")):
                raise ValueError("node transforms are not supported (apply them before export)")
        prim = prims[0]
        if prim.get("mode", 4) != 4:
            raise ValueError("only triangle meshes are supported")
        attrs = prim["attributes"]
        r = _Reader(doc, binary)
        pos = r.accessor(attrs["POSITION"]).astype(np.float64)
        if pos.shape[1] != 3:
            raise ValueError("POSITION must be VEC3")
        faces = (r.accessor(prim["indices"]).reshape(-1) if "indices" in prim
                 else np.arange(len(pos))).astype(np.int64)
        if len(faces) % 3 or len(faces) == 0:
            raise ValueError("the triangle index count is zero or not a multiple of 3")
        faces = faces.reshape(-1, 3)
        if faces.min() < 0 or faces.max() >= len(pos):
            raise ValueError("triangle indices point outside the vertex list")
        verts = from_file_axes(pos, axes).astype(np.float32)
        normals = (from_file_axes(r.accessor(attrs["NORMAL"]), axes, is_normal=True).astype(np.float32)
                   if "NORMAL" in attrs else vertex_normals(verts, faces))
        colours = None
        if "COLOR_0" in attrs:
            colours = linear_to_srgb(r.accessor(attrs["COLOR_0"])[:, :3])
        uvs = r.accessor(attrs["TEXCOORD_0"]).astype(np.float32) if "TEXCOORD_0" in attrs else None
        texture = r.base_colour_texture(prim.get("material"))
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        what = f"missing {exc.args[0]!r}" if isinstance(exc, KeyError) else str(exc)
        raise Aware3DError(f"cannot read the mesh in {name}: {what}",
                           "give a .glb written by 'aware3d mesh' (one triangle mesh)") from None
    if texture is not None and uvs is None:
        texture = None
    return Mesh(verts, faces, normals, colours, uvs if texture is not None else None, texture)


def read_glb(path: str | os.PathLike[str], axes: str = "blender") -> Mesh:
    """Read a ``.glb`` file into a generator-world ``Mesh`` (``axes`` as it was written with)."""
    p = Path(path)
    if not p.is_file():
        raise Aware3DError(f"mesh file {str(p)!r} not found", "give a .glb written by 'aware3d mesh'")
    if p.suffix.lower() != ".glb":
        raise Aware3DError(f"cannot read {p.name!r}: only .glb meshes are supported",
                           "export the mesh as .glb (aware3d mesh --out head.glb)")
    return read_glb_bytes(p.read_bytes(), axes, p.name)
