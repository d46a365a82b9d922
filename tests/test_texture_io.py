"""Texturing inputs: cameras.json in generator and Blender form, camera rings, and GLB read-back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from support.spheres import sphere_mesh

from backend import cameras
from backend.errors import Aware3DError
from backend.mesh.data import Mesh
from backend.mesh.export import save_mesh
from backend.texture.cameras_io import (
    camera_to_dict,
    load_cameras,
    parse_camera_arg,
    ring,
    ring_yaws,
    save_cameras,
)
from backend.texture.glb_read import read_glb
from backend.views.rgbd import Camera, orbit


def _same(a: Camera, b: Camera) -> None:
    assert np.allclose(a.cam2world, b.cam2world, atol=1e-9)
    assert np.allclose(a.K, b.K, atol=1e-9)
    assert (a.width, a.height) == (b.width, b.height)


def test_ring_is_frontal_first_then_alternating() -> None:
    assert ring_yaws(8) == [0.0, 45.0, -45.0, 90.0, -90.0, 135.0, -135.0, 180.0]
    assert ring_yaws(3) == [0.0, 120.0, -120.0]
    named = ring(4, pitch=10.0, size=32)
    assert [n for n, _ in named] == ["yaw+000", "yaw+090", "yaw-090", "yaw+180"]
    _same(named[1][1], orbit(90.0, 10.0, 32))
    with pytest.raises(Aware3DError):
        parse_camera_arg("ring:0")
    with pytest.raises(Aware3DError):
        parse_camera_arg("ring:eight")


def test_cameras_json_round_trip_in_both_forms(tmp_path: Path) -> None:
    cams = [("front", orbit(0, 0, 64)), ("side", orbit(70, -15, 64)),
            ("wide", Camera(orbit(20, 5, 64).cam2world, cameras.intrinsics(3.0, 0.45, 0.55, aspect=1.5), 96, 64))]
    save_cameras(tmp_path / "cameras.json", cams)
    back = load_cameras(tmp_path / "cameras.json")
    assert [n for n, _ in back] == ["front", "side", "wide"]
    for (_, a), (_, b) in zip(cams, back, strict=True):
        _same(a, b)
    # The Blender form alone (as the add-on would write it) gives the same generator cameras.
    blender_only = [{"name": n, **camera_to_dict(n, c)["blender"]} for n, c in cams]
    (tmp_path / "blender.json").write_text(json.dumps(blender_only))
    for (_, a), (_, b) in zip(cams, load_cameras(tmp_path / "blender.json"), strict=True):
        _same(a, b)


def test_blender_vertical_sensor_fit() -> None:
    from backend.texture.cameras_io import camera_from_blender_dict

    mw = cameras.eg3d_to_blender_camera(orbit(0, 0, 64).cam2world, 4.0).matrix_world
    d = {"matrix_world": mw.tolist(), "lens": 50.0, "sensor_width": 36.0, "sensor_height": 24.0,
         "sensor_fit": "VERTICAL", "resolution_x": 60, "resolution_y": 120}
    cam = camera_from_blender_dict(d)
    # Vertical fit: the focal in image heights is lens / sensor height.
    assert cam.K[1, 1] == pytest.approx(50.0 / 24.0)
    assert cam.K[0, 0] == pytest.approx(50.0 / 24.0 * 120 / 60)
    auto = camera_from_blender_dict({**d, "sensor_fit": "AUTO"})  # portrait AUTO: sensor_width spans the height
    assert auto.K[1, 1] == pytest.approx(50.0 / 36.0)


@pytest.mark.parametrize("doc, message", [
    ([], "non-empty list"),
    ([{"name": "a", "K": np.eye(3).tolist(), "width": 64, "height": 64, "cam2world": [[1, 2], [3, 4]]}], "4x4"),
    ([{"name": "a", "cam2world": (np.eye(4) * 2).tolist(), "K": np.eye(3).tolist(), "width": 64,
       "height": 64}], "orthonormal"),
    ([{"name": "a", "cam2world": np.eye(4).tolist(), "K": np.eye(3).tolist(), "width": 64}], "'height'"),
    ([{"name": "a", "lens": 50}], "needs cam2world"),
])
def test_bad_camera_files_are_one_line_errors(tmp_path: Path, doc: object, message: str) -> None:
    p = tmp_path / "c.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(Aware3DError, match=message):
        load_cameras(p)


def test_unreadable_camera_files(tmp_path: Path) -> None:
    with pytest.raises(Aware3DError, match="not found"):
        load_cameras(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(Aware3DError, match="cannot read"):
        load_cameras(tmp_path / "bad.json")


@pytest.mark.parametrize("axes", ["blender", "eg3d"])
def test_glb_round_trip_to_generator_world(tmp_path: Path, axes: str) -> None:
    mesh = sphere_mesh(2)
    save_mesh(mesh, tmp_path / "m.glb", axes=axes)
    back = read_glb(tmp_path / "m.glb", axes=axes)
    assert np.allclose(back.vertices, mesh.vertices, atol=1e-6)
    assert np.array_equal(back.faces, mesh.faces)
    assert np.allclose(back.normals, mesh.normals, atol=1e-6)
    assert np.allclose(back.colours, mesh.colours, atol=1e-5)
    assert back.uvs is None and back.texture is None


def test_textured_glb_reads_uvs_and_texture(tmp_path: Path) -> None:
    mesh = sphere_mesh(1)
    tex = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    uvs = np.random.default_rng(1).uniform(0, 1, (mesh.num_vertices, 2)).astype(np.float32)
    save_mesh(Mesh(mesh.vertices, mesh.faces, mesh.normals, None, uvs, tex), tmp_path / "t.glb")
    back = read_glb(tmp_path / "t.glb")
    assert np.array_equal(back.texture, tex) and np.allclose(back.uvs, uvs)
    assert back.colours is None


def test_bad_glb_files(tmp_path: Path) -> None:
    with pytest.raises(Aware3DError, match="not found"):
        read_glb(tmp_path / "none.glb")
    (tmp_path / "m.obj").write_text("v 0 0 0\n")
    with pytest.raises(Aware3DError, match=r"only \.glb"):
        read_glb(tmp_path / "m.obj")
    (tmp_path / "junk.glb").write_bytes(b"not a glb file at all")
    with pytest.raises(Aware3DError, match="not a binary glTF"):
        read_glb(tmp_path / "junk.glb")
