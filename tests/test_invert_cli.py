# SPDX-License-Identifier: GPL-3.0-or-later
"""``aware3d invert`` and ``aware3d edit`` end to end on the tiny head model, with the photograph-like picture
(a non-synthetic, off-centre, JPEG-compressed person): every product is written, including a mesh, and bad
input is one line on stderr with exit code 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import imageio
import numpy as np
import pytest
import torch

from backend.invert.face import face_extra_missing

torch.set_num_threads(1)
FACE = face_extra_missing() is None  # the face extra (part of dev): landmark crops and the pose prior
FAST = ["--preset", "fast", "--steps-project", "6", "--steps-stage1", "3", "--steps-stage2", "4", "--views", "3",
        "--orbit", "4", "--mesh-res", "64", "--faces", "3000", "--threads", "1"]


def aware3d(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run an ``aware3d`` command as the entry point does."""
    from backend.cli import main

    code = main.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from test_server import head_model
    finally:
        sys.path.pop(0)
    return head_model(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from backend.invert.demo_photo import write_photo

    return write_photo(tmp_path_factory.mktemp("photo") / "person.jpg")


def test_invert_photo_writes_avatar_renders_video_and_mesh(model: Path, photo: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code, _, stderr = aware3d(["invert", str(photo), "--model", str(model), "--out", str(out), *FAST], capsys)
    assert code == 0, stderr
    for name in ("person.avatar.safetensors", "input.png", "crop_preview.png", "render.png", "render_depth.npy",
                 "view_yaw-30.png", "view_yaw+30.png", "pseudo_views.png", "orbit.mp4", "head.glb", "report.json"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    method, source = ("face", "landmarks") if FACE else ("auto-face", "estimated")
    assert report["source"]["crop_method"] == method and report["source"]["size"] == [640, 480]
    assert report["pose"]["source"] == source and -60 < report["pose"]["yaw_deg"] < 60
    assert report["mesh"]["faces"] > 100 and report["base_model"]["name"] == "head-tiny"
    assert set(report["timings_s"]) == {"pose", "project", "stage1", "pseudo", "stage2"}
    assert "pose: yaw" in stderr and "input view PSNR" in stderr
    assert (out / "head.glb").read_bytes()[:4] == b"glTF"

    # The avatar stands in for a seed: `sample --avatar` at the photo's pose renders what invert rendered.
    av = str(out / "person.avatar.safetensors")
    pose = [f"--yaw={report['pose']['yaw_deg']}", f"--pitch={report['pose']['pitch_deg']}"]
    code, _, stderr = aware3d(["sample", "--avatar", av, *pose, "--out", str(tmp_path / "s")], capsys)
    assert code == 0, stderr
    meta = json.loads((tmp_path / "s" / "person_camera.json").read_text())
    assert meta["avatar"] == av and "seed" not in meta
    assert aware3d(["sample", "--model", str(model), "--seeds", "0", *pose, "--out", str(tmp_path / "s0")],
                   capsys)[0] == 0

    def read(path: Path) -> np.ndarray:
        return np.asarray(imageio.v3.imread(path), dtype=np.float64)

    own = np.abs(read(tmp_path / "s" / "person.png") - read(out / "render.png")).mean()
    other = np.abs(read(tmp_path / "s0" / "seed0000.png") - read(out / "render.png")).mean()
    assert own < 0.5 * other, (own, other)
    code, stdout, stderr = aware3d(["mesh", "--avatar", av, "--res", "64", "--faces", "2000", "--out",
                                    str(tmp_path / "m.glb")], capsys)
    assert code == 0, stderr
    assert "person.avatar avatar" in stdout and (tmp_path / "m.glb").read_bytes()[:4] == b"glTF"


def test_given_pose_single_view_and_edits(model: Path, photo: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sv"
    code, _, stderr = aware3d(["invert", str(photo), "--model", str(model), "--out", str(out), "--pose", "10,-5",
                               "--mode", "single-view", "--space", "w", "--no-mesh", "--orbit", "0",
                               "--name", "me", "--crop", "100,90,240", *FAST[:8]], capsys)
    assert code == 0, stderr
    rep = json.loads((out / "report.json").read_text())
    assert rep["pose"] == {**rep["pose"], "yaw_deg": 10.0, "pitch_deg": -5.0, "source": "given"}
    assert rep["mode"] == "single-view" and rep["latent_space"] == "w" and not (out / "head.glb").exists()
    assert rep["source"]["crop"] == [100.0, 90.0, 240.0]

    # Texture editing needs the stage-1 geometry, which single-view avatars do not have.
    code, _, stderr = aware3d(["edit", "--avatar", str(out / "me.avatar.safetensors"), "--image",
                               str(out / "input.png"), "--out", str(tmp_path / "e")], capsys)
    assert code == 2 and "stage-1 geometry" in stderr
    code, _, stderr = aware3d(["edit", "--avatar", str(out / "me.avatar.safetensors"), "--list"], capsys)
    assert code == 2 and "no attribute directions" in stderr and "aware3d-train directions" in stderr


def test_texture_and_latent_edit(model: Path, photo: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    from backend.invert.avatar import read_avatar
    from backend.invert.directions import Direction, DirectionSet, save_directions

    out = tmp_path / "full"
    code, _, err = aware3d(["invert", str(photo), "--model", str(model), "--out", str(out), "--no-mesh",
                            "--pose", "0,0", *FAST], capsys)
    assert code == 0, err
    av = out / "person.avatar.safetensors"
    code, stdout, err = aware3d(["edit", "--avatar", str(av), "--image", str(out / "input.png"), "--steps-stage2",
                                 "3", "--out", str(tmp_path / "tex"), "--orbit", "0", "--no-mesh"], capsys)
    assert code == 0, err
    assert (tmp_path / "tex" / "person-edit.avatar.safetensors").is_file()
    base = read_avatar(av).base
    w_dim = read_avatar(av).ws.shape[-1]
    dfile = tmp_path / "d.directions.safetensors"
    vec = torch.zeros(w_dim)
    vec[0] = 1.0
    save_directions(dfile, DirectionSet({"beard": Direction("beard", vec, 0.5, None, {"test_r2": 0.8}, "beard")},
                                        {"state_sha256": base["state_sha256"]}))
    code, stdout, err = aware3d(["edit", "--avatar", str(av), "--list", "--directions", str(dfile)], capsys)
    assert code == 0 and stdout.startswith("beard: beard")
    code, stdout, err = aware3d(["edit", "--avatar", str(av), "--direction", "beard", "--amount", "2",
                                 "--directions", str(dfile), "--out", str(tmp_path / "lat"), "--orbit", "0",
                                 "--no-mesh", "--name", "bearded"], capsys)
    assert code == 0, err
    edited = read_avatar(tmp_path / "lat" / "bearded.avatar.safetensors")
    diff = edited.ws - read_avatar(av).ws
    assert torch.allclose(diff[0, :, 0], torch.full((diff.shape[1],), 1.0)) and diff[..., 1:].abs().max() < 1e-6
    assert edited.header.provenance["source"]["edit"]["direction"] == "beard"


@pytest.mark.parametrize("argv,needle", [
    (["invert", "nope.png"], "photo not found"),
    (["invert", "{text}"], "not an image"),
    (["invert", "{photo}", "--pose", "abc"], "cannot read pose"),
    (["invert", "{photo}", "--pose", "120,0"], "outside the generator's range"),
    (["invert", "{photo}", "--crop", "1,2"], "cannot read crop"),
    (["invert", "{photo}", "--matte", "2,2,2"], "--matte"),
    (["invert", "{photo}", "--views", "1"], "--views must be between 2 and 360, got 1"),
    (["invert", "{photo}", "--mesh-res", "8"], "--mesh-res"),
    (["edit", "--avatar", "{photo}", "--out", "x", "--direction", "a"], "not an avatar"),
    (["edit", "--avatar", "x.avatar.safetensors", "--out", "x"], "either --direction"),
])
def test_bad_input_is_one_line(argv: list[str], needle: str, model: Path, photo: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    argv = [a.format(photo=photo, text=text) for a in argv]
    if argv[0] == "invert":
        argv += ["--model", str(model), "--out", str(tmp_path / "o")]
    code, _, stderr = aware3d(argv, capsys)
    assert code == 2 and needle in stderr and stderr.count("\n") == 1, stderr


def test_a_real_photograph_gives_a_mesh(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A real photograph (NASA's public-domain portrait of Eileen Collins, shipped inside scikit-image): the
    automatic crop finds the face, and the whole path runs to an avatar and a mesh."""
    import imageio.v3 as iio
    import skimage.data

    photo = tmp_path / "astronaut.png"
    iio.imwrite(photo, skimage.data.astronaut())
    out = tmp_path / "astro"
    code, _, stderr = aware3d(["invert", str(photo), "--model", str(model), "--out", str(out), *FAST], capsys)
    assert code == 0, stderr
    report = json.loads((out / "report.json").read_text())
    x, y, size = report["source"]["crop"]
    assert report["source"]["crop_method"] == ("face" if FACE else "auto-face")
    assert 120 < x + size / 2 < 330 and 40 < y + size / 2 < 220  # centred on her face, not the suit or flag
    assert report["mesh"]["faces"] > 100 and (out / "head.glb").read_bytes()[:4] == b"glTF"
    if FACE:  # the detection is in the report, and the pose (prior, then refined) is near frontal
        face = report["source"]["face"]
        det = face["detection"]["faces"][0]
        assert det["confidence"] > 0.5 and len(det["box"]) == 4 and len(det["landmarks"]) == 5
        assert abs(face["pose_prior"]["yaw_deg"]) < 15 and abs(face["pose_prior"]["pitch_deg"]) < 15
        assert report["pose"]["source"] == "landmarks"
        assert abs(report["pose"]["yaw_deg"]) < 15 and abs(report["pose"]["pitch_deg"]) < 15
        assert "face 1." in stderr or "face 0." in stderr


@pytest.mark.skipif(not FACE, reason="needs the face extra (dev installs it)")
def test_no_face_no_avatar(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """scikit-image's cat: refused with one line naming the override, and nothing written; the override
    (--crop full) then makes an avatar."""
    import imageio.v3 as iio
    import skimage.data

    photo = tmp_path / "chelsea.png"
    iio.imwrite(photo, skimage.data.chelsea())
    out = tmp_path / "cat"
    code, stdout, stderr = aware3d(["invert", str(photo), "--model", str(model), "--out", str(out), *FAST], capsys)
    assert code == 2 and stderr.count("\n") == 1 and not stdout, stderr
    assert "no face found in chelsea.png" in stderr and "--crop X,Y,SIZE" in stderr and "--crop full" in stderr
    assert not out.exists()
    code, _, stderr = aware3d(["invert", str(photo), "--model", str(model), "--out", str(out), "--crop", "full",
                               "--no-mesh", *FAST], capsys)
    assert code == 0, stderr
    assert json.loads((out / "report.json").read_text())["source"]["crop_method"] == "full"


def test_without_the_face_extra_framing_is_as_before(model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """``pip install -e .`` (no face extra): the skin-colour framing, the grid-search pose, one notice line."""
    import imageio.v3 as iio
    import skimage.data

    import backend.invert.face as face

    notice = "face detection is off: the 'face' extra is not installed (pip install -e \".[face]\")"
    monkeypatch.setattr(face, "face_extra_missing", lambda: notice)
    photo = tmp_path / "astronaut.png"
    iio.imwrite(photo, skimage.data.astronaut())
    out = tmp_path / "astro"
    code, _, stderr = aware3d(["invert", str(photo), "--model", str(model), "--out", str(out), "--no-mesh",
                               *FAST], capsys)
    assert code == 0, stderr
    # (The encoder's note, when no photo encoder fits the model, is another matter: test_invert_encoder.py.)
    notes = [line for line in stderr.splitlines() if line.startswith("note:") and "photo encoder" not in line]
    assert notes == [f"note: {notice}; framing by the landmark-free rule"]
    report = json.loads((out / "report.json").read_text())
    assert report["source"]["crop_method"] == "auto-face" and report["pose"]["source"] == "estimated"
    code, _, stderr = aware3d(["invert", str(photo), "--model", str(model), "--out", str(out), "--align", "ffhq",
                               *FAST], capsys)
    assert code == 2 and "--align ffhq needs the face extra" in stderr
