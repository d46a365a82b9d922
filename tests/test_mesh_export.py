"""Exporters: GLB / OBJ / PLY contents, axes, atomic writes, and (marker ``blender``) real Blender imports."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from backend import cameras
from backend.errors import Aware3DError
from backend.mesh.cleanup import vertex_normals
from backend.mesh.data import Mesh
from backend.mesh.export import save_mesh, srgb_to_linear, to_file_axes

# An asymmetric tetrahedron-ish mesh: "nose" towards +z, "top" towards +y, "right" towards +x.
VERTS = np.array([[0.1, 0.0, 0.0], [0.0, 0.2, 0.0], [0.0, 0.0, 0.3], [-0.05, -0.05, -0.05]], np.float32)
FACES = np.array([[0, 1, 2], [0, 3, 1], [1, 3, 2], [0, 2, 3]], np.int64)
COLOURS = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0.5]], np.float32)


def make_mesh(texture: bool = False) -> Mesh:
    m = Mesh(VERTS.copy(), FACES.copy(), vertex_normals(VERTS, FACES), COLOURS.copy())
    if texture:
        m.uvs = np.array([[0.1, 0.1], [0.9, 0.1], [0.5, 0.9], [0.2, 0.7]], np.float32)
        tex = np.zeros((8, 8, 3), np.uint8)
        tex[:4] = (255, 0, 0)
        m.texture = tex
    return m


def read_glb(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    magic, version, total = struct.unpack_from("<4sII", data, 0)
    assert magic == b"glTF" and version == 2 and total == len(data)
    jlen, jtype = struct.unpack_from("<I4s", data, 12)
    assert jtype == b"JSON" and jlen % 4 == 0
    doc = json.loads(data[20 : 20 + jlen])
    blen, btype = struct.unpack_from("<I4s", data, 20 + jlen)
    assert btype == b"BIN\x00" and blen % 4 == 0
    return doc, data[28 + jlen : 28 + jlen + blen]


def accessor(doc: dict, binary: bytes, index: int) -> np.ndarray:
    acc = doc["accessors"][index]
    view = doc["bufferViews"][acc["bufferView"]]
    assert view["byteOffset"] % 4 == 0
    dtype = {5126: np.float32, 5125: np.uint32}[acc["componentType"]]
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3}[acc["type"]]
    arr = np.frombuffer(binary, dtype=dtype, count=acc["count"] * width, offset=view["byteOffset"])
    return arr.reshape(acc["count"], width) if width > 1 else arr


def test_axes_mapping() -> None:
    p = VERTS.astype(np.float64)
    np.testing.assert_allclose(to_file_axes(p, "eg3d", "glb"), p, atol=1e-7)
    # GLB/OBJ for Blender: what Blender's Y-up importers turn into eg3d_to_blender_points(p)
    g = to_file_axes(p, "blender", "glb")
    np.testing.assert_allclose(g, 0.5 * p, atol=1e-7)
    blender_from_file = np.stack([g[:, 0], -g[:, 2], g[:, 1]], axis=1)  # glTF importer: (x, -z, y)
    np.testing.assert_allclose(blender_from_file, cameras.eg3d_to_blender_points(p), atol=1e-7)
    np.testing.assert_allclose(to_file_axes(p, "blender", "ply"), cameras.eg3d_to_blender_points(p), atol=1e-7)
    n = to_file_axes(np.array([[0.0, 0.0, 1.0]]), "blender", "ply", is_normal=True)
    np.testing.assert_allclose(n, [[0.0, -1.0, 0.0]], atol=1e-7)  # the face looks along Blender's −Y


def test_glb_with_vertex_colours(tmp_path: Path) -> None:
    path = tmp_path / "head.glb"
    assert save_mesh(make_mesh(), path, axes="blender") == [path]
    doc, binary = read_glb(path)
    prim = doc["meshes"][0]["primitives"][0]
    pos = accessor(doc, binary, prim["attributes"]["POSITION"])
    np.testing.assert_allclose(pos, 0.5 * VERTS, atol=1e-7)
    acc = doc["accessors"][prim["attributes"]["POSITION"]]
    np.testing.assert_allclose(acc["min"], pos.min(axis=0))
    np.testing.assert_allclose(accessor(doc, binary, prim["attributes"]["COLOR_0"]), srgb_to_linear(COLOURS))
    normals = accessor(doc, binary, prim["attributes"]["NORMAL"])
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-6)
    assert accessor(doc, binary, prim["indices"]).reshape(-1, 3).tolist() == FACES.tolist()
    assert "images" not in doc and "TEXCOORD_0" not in prim["attributes"]
    assert [p.name for p in tmp_path.iterdir()] == ["head.glb"]  # no temporary files left


def test_glb_with_texture(tmp_path: Path) -> None:
    import cv2

    path = tmp_path / "head.glb"
    save_mesh(make_mesh(texture=True), path, axes="eg3d")
    doc, binary = read_glb(path)
    prim = doc["meshes"][0]["primitives"][0]
    np.testing.assert_allclose(accessor(doc, binary, prim["attributes"]["POSITION"]), VERTS)
    assert "COLOR_0" not in prim["attributes"]
    np.testing.assert_allclose(accessor(doc, binary, prim["attributes"]["TEXCOORD_0"]), make_mesh(True).uvs)
    view = doc["bufferViews"][doc["images"][0]["bufferView"]]
    png = binary[view["byteOffset"] : view["byteOffset"] + view["byteLength"]]
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    assert img[0, 0].tolist() == [255, 0, 0] and img[-1, -1].tolist() == [0, 0, 0]
    assert doc["materials"][0]["pbrMetallicRoughness"]["baseColorTexture"]["index"] == 0


def read_obj(path: Path) -> dict[str, np.ndarray]:
    rows: dict[str, list[list[str]]] = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if parts and not parts[0].startswith("#"):
            rows.setdefault(parts[0], []).append(parts[1:])
    out = {k: np.array(v) for k, v in rows.items() if k in ("v", "vn", "vt")}
    out["f"] = np.array([[int(c.split("/")[0]) - 1 for c in r] for r in rows["f"]])
    return {k: (v.astype(np.float64) if k != "f" else v) for k, v in out.items()}


def test_obj_with_colours(tmp_path: Path) -> None:
    path = tmp_path / "head.obj"
    save_mesh(make_mesh(), path, axes="blender")
    obj = read_obj(path)
    np.testing.assert_allclose(obj["v"][:, :3], 0.5 * VERTS, atol=1e-6)
    np.testing.assert_allclose(obj["v"][:, 3:], COLOURS, atol=1e-4)
    assert obj["f"].tolist() == FACES.tolist()
    assert len(obj["vn"]) == len(VERTS)


def test_obj_with_texture(tmp_path: Path) -> None:
    path = tmp_path / "head.obj"
    written = save_mesh(make_mesh(texture=True), path, axes="eg3d")
    assert {p.name for p in written} == {"head.obj", "head.mtl", "head_texture.png"}
    assert "map_Kd head_texture.png" in (tmp_path / "head.mtl").read_text()
    obj = read_obj(path)
    np.testing.assert_allclose(obj["vt"][:, 1], 1.0 - make_mesh(True).uvs[:, 1], atol=1e-6)  # OBJ: v up
    assert "mtllib head.mtl" in path.read_text()


def test_ply(tmp_path: Path) -> None:
    path = tmp_path / "head.ply"
    save_mesh(make_mesh(), path, axes="blender")
    data = path.read_bytes()
    head, body = data.split(b"end_header\n", 1)
    assert b"format binary_little_endian 1.0" in head and b"element vertex 4" in head
    vdt = np.dtype([("p", "<f4", 3), ("n", "<f4", 3), ("c", "u1", 3)])
    vert = np.frombuffer(body, dtype=vdt, count=4)
    np.testing.assert_allclose(vert["p"], cameras.eg3d_to_blender_points(VERTS), atol=1e-7)
    assert vert["c"].tolist()[3] == [128, 128, 128]
    face = np.frombuffer(body, dtype=np.dtype([("n", "u1"), ("v", "<i4", 3)]), offset=4 * vdt.itemsize)
    assert (face["n"] == 3).all() and face["v"].tolist() == FACES.tolist()


def test_bad_requests_write_nothing(tmp_path: Path) -> None:
    with pytest.raises(Aware3DError, match="unknown mesh format"):
        save_mesh(make_mesh(), tmp_path / "head.stl")
    with pytest.raises(Aware3DError, match="texture"):
        save_mesh(make_mesh(texture=True), tmp_path / "head.ply")
    with pytest.raises(Aware3DError, match="axes"):
        save_mesh(make_mesh(), tmp_path / "head.glb", axes="zup")
    assert list(tmp_path.iterdir()) == []


def test_overwrite_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "head.glb"
    path.write_bytes(b"old")
    save_mesh(make_mesh(), path)
    assert path.read_bytes()[:4] == b"glTF"
    assert [p.name for p in tmp_path.iterdir()] == ["head.glb"]


# ----------------------------------------------------------------------------------------------------------
# Real Blender: default importers put the head upright, facing −Y, in metres
# ----------------------------------------------------------------------------------------------------------


def _import_into_blender(path: Path) -> tuple[np.ndarray, object]:
    bpy = pytest.importorskip("bpy")
    bpy.ops.wm.read_factory_settings(use_empty=True)
    if path.suffix == ".glb":
        bpy.ops.import_scene.gltf(filepath=str(path))
    elif path.suffix == ".obj":
        bpy.ops.wm.obj_import(filepath=str(path))
    else:
        bpy.ops.wm.ply_import(filepath=str(path))
    obj = next(o for o in bpy.context.scene.objects if o.type == "MESH")
    mw = np.array(obj.matrix_world)
    co = np.array([v.co[:] for v in obj.data.vertices], dtype=np.float64)
    return co @ mw[:3, :3].T + mw[:3, 3], obj


@pytest.mark.blender
@pytest.mark.parametrize("suffix", [".glb", ".obj", ".ply"])
def test_blender_import_orientation(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"head{suffix}"
    save_mesh(make_mesh(), path, axes="blender")
    world, obj = _import_into_blender(path)
    expect = cameras.eg3d_to_blender_points(VERTS)
    for e in expect:  # importers may reorder or split vertices: match by position
        assert np.linalg.norm(world - e, axis=1).min() < 1e-6
    nose = world[np.argmin(np.linalg.norm(world - expect[2], axis=1))]
    assert nose[1] < -0.1  # the face (+z in the generator) looks towards −Y
    top = world[np.argmin(np.linalg.norm(world - expect[1], axis=1))]
    assert top[2] > 0.05  # +y (up) became +Z
    attrs = obj.data.color_attributes  # type: ignore[attr-defined]
    assert len(attrs) == 1
    grey = [c.color_srgb[:3] for c in attrs[0].data]
    assert min(abs(g[0] - 0.5) for g in grey) < 0.01  # the grey vertex shows as sRGB 0.5


@pytest.mark.blender
def test_blender_imports_the_textured_glb(tmp_path: Path) -> None:
    path = tmp_path / "head.glb"
    save_mesh(make_mesh(texture=True), path, axes="blender")
    _, obj = _import_into_blender(path)
    mat = obj.data.materials[0]  # type: ignore[attr-defined]
    assert any(n.type == "TEX_IMAGE" for n in mat.node_tree.nodes)
    assert obj.data.uv_layers  # type: ignore[attr-defined]
