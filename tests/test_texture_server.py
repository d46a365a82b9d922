"""The backend's ``texture`` operation in-process: Blender-form cameras and rings, the result files, progress
with a preview per view, mesh job results as input, cancel, and one-line errors for bad input."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from support.spheres import sphere_mesh

from backend import cameras
from backend.mesh.export import save_mesh
from backend.server.ops_mesh import blender_arrays
from backend.server.server import Server
from backend.texture.cameras_io import camera_to_dict, ring

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).parent))
from test_server import Recorder, send  # noqa: E402

sys.path.pop(0)

FAST = {"generator": "projection", "size": 32, "texture_size": 128}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path / "jobs", heartbeat_s=5.0)
    yield s
    s.finish(10)


@pytest.fixture
def glb(tmp_path: Path) -> Path:
    path = tmp_path / "head.glb"
    save_mesh(sphere_mesh(2), path)
    return path


def blender_cameras(n: int = 3, offset: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> list[dict[str, Any]]:
    """Blender-form cameras (as the add-on sends them) of an n-camera ring, moved by ``offset`` metres."""
    out = []
    for name, cam in ring(n, 10.0, 48):
        b = camera_to_dict(name, cam)["blender"]
        mw = np.asarray(b["matrix_world"])
        mw[:3, 3] += offset
        out.append({"name": name, **b, "matrix_world": mw.tolist(), "sensor_fit": "AUTO"})
    return out


def _result(rec: Recorder, rid: str, timeout: float = 120) -> dict[str, Any]:
    ev = rec.terminal(rid, timeout)
    assert ev["event"] == "result", ev
    return ev


def _error(server: Server, rid: str, **args: Any) -> dict[str, str]:
    rec = Recorder()
    send(server, rec, rid, "texture", **args)
    ev = rec.terminal(rid, 60)
    assert ev["event"] == "error", ev
    return ev["error"]


def test_texture_is_listed_by_hello(server: Server) -> None:
    rec = Recorder()
    send(server, rec, "h", "hello")
    assert "texture" in rec.terminal("h")["data"]["job_ops"]


def test_texture_job_writes_the_outputs_and_previews(server: Server, glb: Path) -> None:
    rec = Recorder()
    send(server, rec, "t", "texture", mesh=str(glb), cameras=blender_cameras(3), **FAST)
    ev = _result(rec, "t")
    d, files = ev["data"], ev["files"]
    for role in ("glb", "texture", "projection", "cameras", "report", "baked_uv", "view_00", "view_01", "view_02"):
        assert Path(files[role]).is_file(), role
    assert d["generator"] == "projection" and d["cameras"] == ["yaw+000", "yaw+120", "yaw-120"]
    mesh = sphere_mesh(2)
    assert d["faces"] == mesh.num_faces and d["vertices"] == mesh.num_vertices
    assert all(p is not None and p > 30 for p in d["psnr_seen"]), d["psnr_seen"]
    assert set(d["files"]) >= {"textured.glb", "texture.png", "projection.npz", "views/cam_00.png"}
    proj = np.load(files["projection"])
    assert proj["uv"].shape == (3, mesh.num_vertices, 2) and proj["weight"].shape == (3, mesh.num_vertices)
    assert (proj["weight"] > 0).any(axis=0).mean() > 0.5
    corner = np.load(files["baked_uv"])["corner_uv"]
    assert corner.shape == (mesh.num_faces, 3, 2) and corner.min() >= 0 and corner.max() <= 1
    # Progress: one event per view, each with its view's PNG as the preview, in camera order.
    views = [e for e in rec.of("t") if e["event"] == "progress" and e["stage"] == "views" and e.get("preview")]
    assert [Path(e["preview"]).name for e in views] == ["cam_00.png", "cam_01.png", "cam_02.png"]
    assert [e["step"] for e in views] == [1, 2, 3] and all(e["total"] == 3 for e in views)
    fractions = [e["fraction"] for e in rec.of("t") if e["event"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    report = json.loads(Path(files["report"]).read_text())
    assert report["generator"] == "projection" and report["mesh"] == str(glb)


def test_blender_cameras_follow_the_mesh_anywhere(server: Server, tmp_path: Path) -> None:
    """A mesh and its cameras moved together (an object away from the origin) texture the same."""
    mesh = sphere_mesh(2)
    shift = np.array([0.3, -0.2, 0.5])  # metres, Blender axes
    moved = mesh.__class__(cameras.blender_to_eg3d_points(cameras.eg3d_to_blender_points(mesh.vertices) + shift)
                           .astype(np.float32), mesh.faces, mesh.normals, mesh.colours)
    save_mesh(moved, tmp_path / "moved.glb")
    rec = Recorder()
    send(server, rec, "m", "texture", mesh=str(tmp_path / "moved.glb"),
         cameras=blender_cameras(2, tuple(shift)), **FAST)
    d = _result(rec, "m")["data"]
    assert all(p > 30 for p in d["psnr_seen"]) and d["faces_seen_untextured"] == 0


def test_ring_inline_mesh_and_mesh_job_results(server: Server, glb: Path, tmp_path: Path) -> None:
    rec = Recorder()
    send(server, rec, "r", "texture", mesh_b64=base64.b64encode(glb.read_bytes()).decode(),
         cameras={"ring": 2, "pitch": 5}, **FAST)
    assert _result(rec, "r")["data"]["cameras"] == ["yaw+000", "yaw+180"]
    # The mesh.npz of an earlier mesh job (Blender arrays), by the job's id.
    job = tmp_path / "jobs" / "mesh-1"
    job.mkdir(parents=True)
    np.savez(job / "mesh.npz", **blender_arrays(sphere_mesh(2)))
    send(server, rec, "n", "texture", mesh="mesh-1", cameras={"ring": 2}, **FAST)
    d = _result(rec, "n")["data"]
    assert d["faces"] == sphere_mesh(2).num_faces and all(p > 30 for p in d["psnr_seen"])


def test_cancel_stops_between_views(server: Server, glb: Path) -> None:
    rec = Recorder()
    send(server, rec, "c", "texture", mesh=str(glb), cameras={"ring": 24}, generator="projection", size=64,
         texture_size=512)
    rec.wait(lambda e: e.get("id") == "c" and e.get("stage") == "views" and e.get("step", 0) >= 1)
    send(server, rec, "x", "cancel", job="c")
    assert rec.terminal("c", 60)["event"] == "cancelled"


@pytest.mark.parametrize("args, words", [
    ({"mesh": "{tmp}/missing.glb"}, "not found"),
    ({"mesh": "{tmp}/jobs"}, "holds no mesh"),
    ({}, "not both or neither"),
    ({"mesh": "{glb}", "mesh_b64": "abc"}, "not both or neither"),
    ({"mesh_b64": "***"}, "not valid base64"),
    ({"mesh_b64": "aGVsbG8="}, "not a GLB"),
    ({"mesh": "{glb}", "cameras": []}, "non-empty list"),
    ({"mesh": "{glb}", "cameras": {"ring": 0}}, "1 to 360"),
    ({"mesh": "{glb}", "cameras": {"ring": "8"}}, "bad camera ring"),
    ({"mesh": "{glb}", "cameras": [{"name": "a", "lens": 50}]}, "camera 0 (a)"),
    ({"mesh": "{glb}", "cameras": [{"name": "a", "matrix_world": [[1, 0], [0, 1]], "lens": 50,
                                    "sensor_width": 36, "resolution_x": 64, "resolution_y": 64}]}, "4x4"),
    ({"mesh": "{glb}", "generator": "magic"}, "unknown generator"),
    ({"mesh": "{glb}", "generator": "diffusion", "model": "{tmp}/none.safetensors"}, "not found"),
    ({"mesh": "{glb}", "size": 8}, "between 16 and 4096"),
    ({"mesh": "{glb}", "texture_size": 10}, "between 16 and 8192"),
    ({"mesh": "{glb}", "exponent": 0}, "exponent"),
    ({"mesh": "{glb}", "axes": "zup"}, "unknown axes"),
])
def test_bad_input_gives_one_clear_error(server: Server, glb: Path, tmp_path: Path, args: dict[str, Any],
                                         words: str) -> None:
    args = {k: v.format(tmp=tmp_path, glb=glb) if isinstance(v, str) else v for k, v in args.items()}
    args.setdefault("generator", "projection")
    err = _error(server, "e", **args)
    assert words in err["message"], err
    assert err["type"] != "InternalError" and err["hint"] and "\n" not in err["message"]


def test_wrong_argument_types_are_refused(server: Server, glb: Path) -> None:
    err = _error(server, "w", mesh=str(glb), cameras="ring:8")
    assert err["type"] == "BadRequest" and "cameras" in err["message"]


def test_texture_job_with_a_diffusion_model(server: Server, glb: Path, tmp_path: Path) -> None:
    """The generator the add-on uses by default when a view model is installed: a (tiny) G_c file."""
    import torch

    from backend.diffusion.config import PRESETS
    from backend.diffusion.model_file import save_net
    from backend.diffusion.unet import UNet

    torch.manual_seed(0)
    model = tmp_path / "g_c.safetensors"
    save_net(model, UNet(PRESETS["tiny"].replace(kind="cond")))
    rec = Recorder()
    send(server, rec, "d", "texture", mesh=str(glb), cameras={"ring": 2}, generator="diffusion", model=str(model),
         steps=2, size=16, texture_size=64)
    ev = _result(rec, "d")
    assert ev["data"]["generator"] == "diffusion"
    views = [e for e in rec.of("d") if e["event"] == "progress" and e["stage"] == "views" and e.get("preview")]
    assert len(views) == 2 and all(Path(e["preview"]).is_file() for e in views)
