# SPDX-License-Identifier: GPL-3.0-or-later
"""The backend's Photo to 3D operations in-process: preview (crop + pose), the full job (mesh in Blender
coordinates, the photo's camera, the avatar), progress through every stage, cancel, and clear errors."""

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

from backend.invert.face import face_extra_missing
from backend.server.server import Server

torch.set_num_threads(1)
FACE = face_extra_missing() is None  # the face extra (part of dev): landmark crops and the pose prior
sys.path.insert(0, str(Path(__file__).parent))
from test_server import Recorder, head_model, send  # noqa: E402

sys.path.pop(0)

FAST = {"preset": "fast", "steps_project": 6, "steps_stage1": 3, "steps_stage2": 4, "views": 3,
        "resolution": 64, "faces": 3000}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(head_model(tmp_path_factory.mktemp("models")))


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from backend.invert.demo_photo import write_photo

    return write_photo(tmp_path_factory.mktemp("photo") / "person.jpg")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path / "jobs", heartbeat_s=5.0)
    yield s
    s.finish(10)


def _result(rec: Recorder, rid: str, timeout: float = 180) -> dict[str, Any]:
    ev = rec.terminal(rid, timeout)
    assert ev["event"] == "result", ev
    return ev


def test_ops_are_listed_by_hello(server: Server) -> None:
    rec = Recorder()
    send(server, rec, "h", "hello")
    data = rec.terminal("h")["data"]
    assert {"invert", "invert_preview"} <= set(data["job_ops"])


def test_preview_gives_the_crop_and_the_pose(server: Server, model: str, photo: Path) -> None:
    rec = Recorder()
    send(server, rec, "p", "invert_preview", image=str(photo), model=model, estimate_pose=True)
    ev = _result(rec, "p")
    d = ev["data"]
    assert d["crop"]["method"] == ("face" if FACE else "auto-face") and len(d["crop"]["box"]) == 3
    assert d["crop"]["photo_size"] == [640, 480]
    assert d["pose"]["source"] == ("landmarks" if FACE else "estimated") and -60 < d["pose"]["yaw_deg"] < 60
    assert d["face"]["found"] == FACE and "refused" not in d
    if FACE:
        assert d["face"]["confidence"] > 0.3 and len(d["face"]["box"]) == 4 and len(d["face"]["landmarks"]) == 5
        assert d["face"]["pose_prior"]["yaw_deg"] == d["pose"]["yaw_deg"]
    assert Path(ev["files"]["crop_preview"]).is_file() and Path(ev["files"]["input"]).is_file()
    previews = [e for e in rec.of("p") if e["event"] == "progress" and e.get("preview")]
    assert previews and previews[0]["stage"] == "crop"


def test_invert_job_gives_mesh_camera_and_avatar(server: Server, model: str, photo: Path) -> None:
    rec = Recorder()
    send(server, rec, "i", "invert", image=str(photo), model=model, orbit_frames=4, formats=["glb"], **FAST)
    ev = _result(rec, "i")
    d, files = ev["data"], ev["files"]
    for role in ("mesh", "camera", "avatar", "preview", "crop_preview", "input", "orbit", "glb", "report",
                 "pseudo_views"):
        assert Path(files[role]).is_file(), role
    with np.load(files["mesh"]) as npz:
        v, f = npz["vertices"], npz["faces"]
        assert v.dtype == np.float32 and f.dtype == np.int32 and len(f) > 100 and "colours" in npz.files
    assert 0.05 < float((v.max(0) - v.min(0)).max()) < 0.6  # metres: a head-sized object
    cam = json.loads(Path(files["camera"]).read_text())
    assert len(cam["matrix_world"]) == 4 and cam["lens_mm"] > 100
    assert d["pose"]["source"] == ("landmarks" if FACE else "estimated")
    assert d["vertices"] == len(v) and d["faces"] == len(f) and d["face"]["found"] == FACE
    assert set(d["timings_s"]) == {"pose", "project", "stage1", "pseudo", "stage2"}
    progress = [e for e in rec.of("i") if e["event"] == "progress"]
    stages = {e["stage"] for e in progress}
    assert {"load", "crop", "pose", "project", "stage1", "pseudo", "stage2", "mesh", "write"} <= stages
    fractions = [e["fraction"] for e in progress if e["fraction"] is not None]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(e["eta_s"] is not None for e in progress if e["stage"] == "stage2")
    from backend.invert.avatar import load_avatar

    G, ws, label = load_avatar(files["avatar"])
    assert ws.shape[1] == G.num_ws and label.shape == (1, 25)


@pytest.mark.skipif(not FACE, reason="needs the face extra (dev installs it)")
def test_no_face_is_shown_by_the_preview_and_refused_by_invert(server: Server, model: str,
                                                               tmp_path: Path) -> None:
    """scikit-image's cat: the preview reports the refusal (the panel shows it); the job fails with it."""
    import imageio.v3 as iio
    import skimage.data

    photo = tmp_path / "chelsea.png"
    iio.imwrite(photo, skimage.data.chelsea())
    rec = Recorder()
    send(server, rec, "p", "invert_preview", image=str(photo), model=model)
    d = _result(rec, "p")["data"]
    assert d["face"]["found"] is False and d["face"]["confidence"] is None
    assert "no face found" in d["refused"] and "--crop full" in d["refused"]
    send(server, rec, "i", "invert", image=str(photo), model=model, **FAST)
    ev = rec.terminal("i", 120)
    assert ev["event"] == "error" and ev["error"]["type"] == "NoFaceError", ev
    assert "no face found" in ev["error"]["message"] and "--crop X,Y,SIZE" in ev["error"]["hint"]


def test_inline_photo_and_given_pose(server: Server, model: str, photo: Path) -> None:
    rec = Recorder()
    b64 = base64.b64encode(photo.read_bytes()).decode()
    send(server, rec, "b", "invert", image_b64=b64, model=model, pose=[12, -4], mode="single-view", mesh=False,
         camera=False, **FAST)
    d = _result(rec, "b")["data"]
    assert d["pose"]["source"] == "given" and d["pose"]["yaw_deg"] == 12.0 and d["mode"] == "single-view"
    assert "vertices" not in d


def test_cancel_stops_within_a_step(server: Server, model: str, photo: Path) -> None:
    rec = Recorder()
    send(server, rec, "c", "invert", image=str(photo), model=model, preset="default", crop="full", pose=[0, 0])
    rec.wait(lambda e: e.get("id") == "c" and e.get("stage") == "project", 120)
    send(server, rec, "x", "cancel", job="c")
    ev = rec.terminal("c", 60)
    assert ev["event"] == "cancelled"


@pytest.mark.parametrize("args,kind,needle", [
    ({"image": "/no/such/photo.png"}, "Aware3DError", "photo not found"),
    ({}, "Aware3DError", "give the photo"),
    ({"image_b64": "!!!"}, "Aware3DError", "not valid base64"),
    ({"image": "x.png", "preset": "turbo"}, "Aware3DError", "unknown preset"),
    ({"image": "x.png", "pose": [1]}, "Aware3DError", "pose must be"),
    ({"image": "x.png", "crop": [1, 2]}, "Aware3DError", "crop must be"),
    ({"image": "x.png", "align": "eg3d"}, "Aware3DError", "unknown align"),
    ({"image": "x.png", "landmarks": 7}, "Aware3DError", "landmarks must be 5 or 68"),
    ({"image": "x.png", "formats": ["fbx"]}, "Aware3DError", "unknown mesh format"),
    ({"image": "x.png", "resolution": "big"}, "BadRequest", "must be int"),
    ({"image": "x.png", "colour": "red"}, "BadRequest", "unknown argument"),
    ({"image": "x.png", "refine": "turbo"}, "Aware3DError", "unknown refinement"),
    # An explicit one-pass refinement with the encoder off asks for two exclusive things; left out, it runs.
    ({"image": "x.png", "encoder": "none", "refine": "fast"}, "Aware3DError", "refine fast refines a photo"),
    ({"image": "x.png", "encoder": "none", "refine": "none"}, "Aware3DError", "encoder is turned off"),
])
def test_bad_requests_are_clear_errors(server: Server, args: dict[str, Any], kind: str, needle: str) -> None:
    rec = Recorder()
    send(server, rec, "e", "invert", **args)
    ev = rec.terminal("e", 60)
    assert ev["event"] == "error" and ev["error"]["type"] == kind and needle in ev["error"]["message"], ev
