"""Mesh files: GLB, OBJ (+MTL +PNG) and binary PLY, written vectorised and atomically.

Why our own writers: each format is a few dozen lines with numpy (no trimesh dependency), and every file
goes through ``backend.fileio`` (temporary file + ``os.replace``), so a crash never leaves half a mesh.

Axes (``axes=``), chosen so that a file imports into Blender upright, head facing −Y, at human size, with
the *default* settings of Blender's importers:

* ``blender``: Blender world = ``backend.cameras.eg3d_to_blender_points`` (metres, Z up:
  ``(X, Y, Z) = 0.5 · (x, −z, y)``). glTF is Y-up by definition and Blender's glTF importer maps a file
  point ``(gx, gy, gz)`` to ``(gx, −gz, gy)``; so the GLB holds ``(X, Z, −Y)`` = ``0.5 · (x, y, z)`` —
  generator axes scaled to metres, which is also plain glTF convention (Y up, the face towards +Z).
  Blender's OBJ importer (forward −Z, up Y) converts the same way, so the OBJ holds the same numbers. Its
  PLY importer (forward Y, up Z) converts nothing, so the PLY holds ``(X, Y, Z)`` directly.
* ``eg3d``: generator world units and axes in every format, untouched (Y up, face +Z; in Blender via glTF
  or OBJ that is a head twice as large, still upright and facing −Y; via PLY lying on its back).

Normals follow the same rotation (all maps are proper rotations: winding is unchanged). GLB colours are
stored as ``COLOR_0`` in *linear* RGB (the glTF rule; Blender shows them as the sRGB colours we had),
PLY colours as sRGB bytes, OBJ colours as sRGB floats after each ``v`` (the common xyzrgb extension).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

from backend import cameras
from backend.errors import Aware3DError
from backend.fileio import write_bytes, write_png
from backend.mesh.data import Mesh

AXES: tuple[str, ...] = ("blender", "eg3d")
FORMATS: tuple[str, ...] = (".glb", ".obj", ".ply")
_Y_UP_FORMATS = ("glb", "obj")


# ----------------------------------------------------------------------------------------------------------
# Axes
# ----------------------------------------------------------------------------------------------------------


def to_file_axes(values: np.ndarray, axes: str, fmt: str, is_normal: bool = False) -> np.ndarray:
    """Generator-world points (or normals) -> the numbers stored in a ``fmt`` file for ``axes``."""
    if axes not in AXES:
        raise ValueError(f"axes must be one of {AXES}, got {axes!r}")
    v = np.asarray(values, dtype=np.float64).reshape(-1, 3)
    if axes == "eg3d":
        return v.astype(np.float32)
    b = cameras.eg3d_to_blender_normals(v) if is_normal else cameras.eg3d_to_blender_points(v)
    if fmt in _Y_UP_FORMATS:  # undo the importer's Y-up -> Z-up conversion: file = (X, Z, -Y)
        b = np.stack([b[:, 0], b[:, 2], -b[:, 1]], axis=1)
    return b.astype(np.float32)


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    c = np.clip(np.asarray(c, dtype=np.float64), 0.0, 1.0)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


def _to_uint8(c: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(c, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def _png_bytes(image: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(np.asarray(image, dtype=np.uint8)[..., ::-1]))
    if not ok:
        raise OSError("could not encode the texture as PNG")
    return buf.tobytes()


# ----------------------------------------------------------------------------------------------------------
# GLB
# ----------------------------------------------------------------------------------------------------------

_ARRAY_BUFFER = 34962
_ELEMENT_ARRAY_BUFFER = 34963
_FLOAT = 5126
_UNSIGNED_INT = 5125


def glb_bytes(
    positions: np.ndarray,
    faces: np.ndarray,
    normals: np.ndarray | None = None,
    colours_linear: np.ndarray | None = None,
    uvs: np.ndarray | None = None,
    texture_png: bytes | None = None,
    name: str = "Aware3D head",
) -> bytes:
    """A binary glTF 2.0 file with one mesh, one node and one material (values already in file axes)."""
    blobs: list[bytes] = []
    views: list[dict] = []
    accessors: list[dict] = []
    offset = 0

    def add_view(data: bytes, target: int | None) -> int:
        nonlocal offset
        view = {"buffer": 0, "byteOffset": offset, "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        views.append(view)
        pad = (-len(data)) % 4
        blobs.append(data + b"\x00" * pad)
        offset += len(data) + pad
        return len(views) - 1

    def add_accessor(arr: np.ndarray, kind: str, component: int, target: int, minmax: bool = False) -> int:
        view = add_view(np.ascontiguousarray(arr).tobytes(), target)
        acc = {"bufferView": view, "componentType": component, "count": int(arr.shape[0]), "type": kind}
        if minmax:
            acc["min"] = [float(x) for x in arr.min(axis=0)]
            acc["max"] = [float(x) for x in arr.max(axis=0)]
        accessors.append(acc)
        return len(accessors) - 1

    pos = np.asarray(positions, dtype=np.float32).reshape(-1, 3)
    attributes = {"POSITION": add_accessor(pos, "VEC3", _FLOAT, _ARRAY_BUFFER, minmax=True)}
    if normals is not None:
        attributes["NORMAL"] = add_accessor(np.asarray(normals, np.float32), "VEC3", _FLOAT, _ARRAY_BUFFER)
    if colours_linear is not None:
        attributes["COLOR_0"] = add_accessor(np.asarray(colours_linear, np.float32), "VEC3", _FLOAT,
                                             _ARRAY_BUFFER)
    if uvs is not None:
        attributes["TEXCOORD_0"] = add_accessor(np.asarray(uvs, np.float32), "VEC2", _FLOAT, _ARRAY_BUFFER)
    idx = np.asarray(faces, dtype=np.uint32).reshape(-1)
    indices = add_accessor(idx, "SCALAR", _UNSIGNED_INT, _ELEMENT_ARRAY_BUFFER)

    pbr: dict = {"baseColorFactor": [1.0, 1.0, 1.0, 1.0], "metallicFactor": 0.0, "roughnessFactor": 1.0}
    doc: dict = {
        "asset": {"version": "2.0", "generator": "Aware3D"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"name": name, "mesh": 0}],
        "meshes": [{"name": name, "primitives": [
            {"attributes": attributes, "indices": indices, "material": 0, "mode": 4}]}],
        "materials": [{"name": "Aware3D", "pbrMetallicRoughness": pbr}],
        "accessors": accessors,
        "bufferViews": views,
    }
    if texture_png is not None:
        image_view = add_view(texture_png, None)
        doc["images"] = [{"bufferView": image_view, "mimeType": "image/png"}]
        doc["samplers"] = [{"magFilter": 9729, "minFilter": 9987, "wrapS": 33071, "wrapT": 33071}]
        doc["textures"] = [{"sampler": 0, "source": 0}]
        pbr["baseColorTexture"] = {"index": 0, "texCoord": 0}
    binary = b"".join(blobs)
    doc["buffers"] = [{"byteLength": len(binary)}]
    js = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    js += b" " * ((-len(js)) % 4)
    total = 12 + 8 + len(js) + 8 + len(binary)
    return b"".join([
        struct.pack("<4sII", b"glTF", 2, total),
        struct.pack("<I4s", len(js), b"JSON"), js,
        struct.pack("<I4s", len(binary), b"BIN\x00"), binary,
    ])


def write_glb(path: str | os.PathLike[str], mesh: Mesh, axes: str = "blender") -> list[Path]:
    pos = to_file_axes(mesh.vertices, axes, "glb")
    nrm = None if mesh.normals is None else to_file_axes(mesh.normals, axes, "glb", is_normal=True)
    textured = mesh.texture is not None and mesh.uvs is not None
    data = glb_bytes(
        pos, mesh.faces, nrm,
        colours_linear=None if textured or mesh.colours is None else srgb_to_linear(mesh.colours),
        uvs=mesh.uvs if textured else None,
        texture_png=_png_bytes(mesh.texture) if textured else None,  # type: ignore[arg-type]
    )
    write_bytes(path, data)
    return [Path(path)]


# ----------------------------------------------------------------------------------------------------------
# OBJ and PLY
# ----------------------------------------------------------------------------------------------------------


def _format_rows(fmt: str, arr: np.ndarray, rows_per_chunk: int = 100_000) -> str:
    """``fmt`` (one row, ending in a newline) applied to every row of ``arr`` with C-level % formatting."""
    parts = []
    for s in range(0, len(arr), rows_per_chunk):
        block = arr[s : s + rows_per_chunk]
        parts.append((fmt * len(block)) % tuple(block.ravel().tolist()))
    return "".join(parts)


def write_obj(path: str | os.PathLike[str], mesh: Mesh, axes: str = "blender") -> list[Path]:
    """OBJ; with a texture also ``NAME.mtl`` and ``NAME_texture.png`` beside it (written first)."""
    path = Path(path)
    pos = to_file_axes(mesh.vertices, axes, "obj").astype(np.float64)
    f = np.asarray(mesh.faces, dtype=np.int64) + 1
    textured = mesh.texture is not None and mesh.uvs is not None
    written: list[Path] = []
    lines = ["# Aware3D mesh\n", f"# axes: {axes}\n"]
    if textured:
        mtl = path.with_suffix(".mtl")
        png = path.with_name(path.stem + "_texture.png")
        write_png(png, np.asarray(mesh.texture, dtype=np.uint8))
        write_bytes(mtl, (
            "# Aware3D material\nnewmtl aware3d\nKa 0 0 0\nKd 1 1 1\nKs 0 0 0\nd 1\nillum 1\n"
            f"map_Kd {png.name}\n").encode())
        written += [png, mtl]
        lines += [f"mtllib {mtl.name}\n"]
    if mesh.colours is not None and not textured:
        lines.append(_format_rows("v %.6f %.6f %.6f %.4f %.4f %.4f\n",
                                  np.hstack([pos, np.clip(mesh.colours, 0, 1).astype(np.float64)])))
    else:
        lines.append(_format_rows("v %.6f %.6f %.6f\n", pos))
    has_n = mesh.normals is not None
    if has_n:
        lines.append(_format_rows("vn %.5f %.5f %.5f\n",
                                  to_file_axes(mesh.normals, axes, "obj", is_normal=True).astype(np.float64)))
    if textured:
        uv = np.asarray(mesh.uvs, dtype=np.float64).copy()
        uv[:, 1] = 1.0 - uv[:, 1]  # OBJ texture origin is bottom-left
        lines.append(_format_rows("vt %.6f %.6f\n", uv))
        lines.append("usemtl aware3d\n")
        rows = np.repeat(f, 3 if has_n else 2, axis=1)
        fmt = "f %d/%d/%d %d/%d/%d %d/%d/%d\n" if has_n else "f %d/%d %d/%d %d/%d\n"
    elif has_n:
        rows = np.repeat(f, 2, axis=1)
        fmt = "f %d//%d %d//%d %d//%d\n"
    else:
        rows = f
        fmt = "f %d %d %d\n"
    lines.append(_format_rows(fmt, rows))
    write_bytes(path, "".join(lines).encode("ascii"))
    return [*written, path]


def write_ply(path: str | os.PathLike[str], mesh: Mesh, axes: str = "blender") -> list[Path]:
    """Binary little-endian PLY with normals and sRGB uchar colours when present (no textures)."""
    if mesh.texture is not None:
        raise Aware3DError("PLY files cannot carry a texture", "write .glb or .obj, or drop --texture")
    pos = to_file_axes(mesh.vertices, axes, "ply")
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    props = ["property float x", "property float y", "property float z"]
    if mesh.normals is not None:
        fields += [("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
        props += ["property float nx", "property float ny", "property float nz"]
    if mesh.colours is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
        props += ["property uchar red", "property uchar green", "property uchar blue"]
    vert = np.empty(len(pos), dtype=np.dtype(fields))
    vert["x"], vert["y"], vert["z"] = pos[:, 0], pos[:, 1], pos[:, 2]
    if mesh.normals is not None:
        n = to_file_axes(mesh.normals, axes, "ply", is_normal=True)
        vert["nx"], vert["ny"], vert["nz"] = n[:, 0], n[:, 1], n[:, 2]
    if mesh.colours is not None:
        c = _to_uint8(mesh.colours)
        vert["red"], vert["green"], vert["blue"] = c[:, 0], c[:, 1], c[:, 2]
    face = np.empty(len(mesh.faces), dtype=np.dtype([("n", "u1"), ("v", "<i4", (3,))]))
    face["n"] = 3
    face["v"] = np.asarray(mesh.faces, dtype=np.int32)
    header = "\n".join([
        "ply", "format binary_little_endian 1.0", f"comment Aware3D mesh, axes {axes}",
        f"element vertex {len(pos)}", *props,
        f"element face {len(face)}", "property list uchar int vertex_indices", "end_header", ""])
    write_bytes(path, header.encode("ascii") + vert.tobytes() + face.tobytes())
    return [Path(path)]


def save_mesh(mesh: Mesh, path: str | os.PathLike[str], axes: str = "blender") -> list[Path]:
    """Write ``mesh`` in the format its suffix names; returns every file written."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise Aware3DError(f"cannot write {Path(path).name!r}: unknown mesh format",
                           f"use one of {', '.join(FORMATS)}")
    if axes not in AXES:
        raise Aware3DError(f"unknown axes {axes!r}", f"use one of {', '.join(AXES)}")
    writer = {".glb": write_glb, ".obj": write_obj, ".ply": write_ply}[suffix]
    return writer(path, mesh, axes)
