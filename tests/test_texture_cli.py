"""``aware3d texture`` end to end on a small GLB, and its one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from support.spheres import sphere_mesh

from backend.cli.main import main
from backend.mesh.export import save_mesh
from backend.texture.cameras_io import load_cameras
from backend.texture.glb_read import read_glb

torch.set_num_threads(1)


@pytest.fixture()
def head_glb(tmp_path: Path) -> Path:
    path = tmp_path / "head.glb"
    save_mesh(sphere_mesh(3), path)
    return path


@pytest.fixture()
def no_bundled_diffusion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWARE3D_ASSETS", str(tmp_path / "empty_assets"))


def test_texture_command_writes_the_output_folder(head_glb: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str],
                                                  no_bundled_diffusion: None) -> None:
    out = tmp_path / "out"
    rc = main(["texture", "--mesh", str(head_glb), "--cameras", "ring:4", "--pitch", "10", "--size", "32",
               "--texture-size", "256", "--out", str(out)])
    assert rc == 0
    err = capsys.readouterr().err
    assert "view generator: projection" in err  # auto without a diffusion model
    summary = json.loads((out / "texture.json").read_text())
    assert summary["generator"] == "projection" and summary["faces"] == 1280
    assert summary["faces_seen_untextured"] == 0
    assert len(summary["cameras"]) == 4 and all(c["psnr_seen"] > 40 for c in summary["cameras"])
    for name in summary["files"]:
        assert (out / name).is_file(), name
    for k in range(4):
        img = cv2.imread(str(out / "views" / f"cam_{k:02d}.png"), cv2.IMREAD_UNCHANGED)
        assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    proj = np.load(out / "projection.npz")
    v = sphere_mesh(3).num_vertices
    assert proj["uv"].shape == (4, v, 2) and proj["weight"].shape == (4, v)
    assert proj["cam2world"].shape == (4, 4, 4) and proj["K"].shape == (4, 3, 3)
    assert list(proj["names"]) == ["yaw+000", "yaw+090", "yaw-090", "yaw+180"]
    assert proj["uv"].dtype == np.float32 and proj["weight"].dtype == np.float32
    cams = load_cameras(out / "cameras.json")
    assert [n for n, _ in cams] == list(proj["names"])
    assert np.allclose(cams[1][1].cam2world, proj["cam2world"][1], atol=1e-6)
    textured = read_glb(out / "textured.glb")
    assert textured.texture is not None and textured.texture.shape == (256, 256, 3)
    assert textured.num_faces == 1280
    assert np.abs(textured.vertices - sphere_mesh(3).vertices[0]).min() < 1e-6  # generator world again
    assert not list(out.rglob(".*"))  # no temporary files left behind


def _error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert len(err) == 1 and err[0].startswith("aware3d: error: "), err
    return err[0]


@pytest.mark.parametrize("args, message", [
    (["--mesh", "{tmp}/missing.glb", "--cameras", "ring:4"], "not found"),
    (["--mesh", "{tmp}/head.obj", "--cameras", "ring:4"], "only .glb"),
    (["--mesh", "{glb}", "--cameras", "ring:x"], "bad camera ring"),
    (["--mesh", "{glb}", "--cameras", "ring:0"], "1 to 360"),
    (["--mesh", "{glb}", "--cameras", "{tmp}/none.json"], "not found"),
    (["--mesh", "{glb}", "--cameras", "ring:4", "--size", "8"], "--size"),
    (["--mesh", "{glb}", "--cameras", "ring:4", "--exponent", "0"], "--exponent"),
    (["--mesh", "{glb}", "--cameras", "ring:4", "--max-angle", "95"], "--max-angle"),
    (["--mesh", "{glb}", "--cameras", "ring:4", "--generator", "diffusion"], "not found"),
    (["--mesh", "{glb}", "--cameras", "ring:4", "--pitch", "95"], "--pitch"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str, head_glb: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str], no_bundled_diffusion: None) -> None:
    (tmp_path / "head.obj").write_text("v 0 0 0\n")
    argv = ["texture", *[a.format(tmp=tmp_path, glb=head_glb) for a in args], "--out", str(tmp_path / "o")]
    assert message in _error(argv, capsys)


def test_a_wrong_diffusion_model_is_a_one_line_error(head_glb: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from backend.diffusion.config import PRESETS
    from backend.diffusion.model_file import save_net
    from backend.diffusion.unet import UNet

    model = tmp_path / "uncond.safetensors"
    save_net(model, UNet(PRESETS["tiny"]))  # an unconditional model: not what texturing needs
    line = _error(["texture", "--mesh", str(head_glb), "--cameras", "ring:2", "--generator", "diffusion",
                   "--diffusion-model", str(model), "--out", str(tmp_path / "o")], capsys)
    assert "'cond'" in line


def test_diffusion_generator_at_its_own_resolution(head_glb: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A (random, tiny) conditional view model end to end: it answers at 16 px for 32 px cameras."""
    from backend.diffusion.config import PRESETS
    from backend.diffusion.model_file import save_net
    from backend.diffusion.unet import UNet

    torch.manual_seed(0)
    model = tmp_path / "cond.safetensors"
    save_net(model, UNet(PRESETS["tiny"].replace(kind="cond")))
    out = tmp_path / "out"
    rc = main(["texture", "--mesh", str(head_glb), "--cameras", "ring:2", "--size", "32", "--texture-size", "128",
               "--generator", "diffusion", "--diffusion-model", str(model), "--steps", "2", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert "view generator: diffusion" in capsys.readouterr().err
    summary = json.loads((out / "texture.json").read_text())
    assert summary["generator"] == "diffusion" and summary["steps"] == 2
    assert [c["view_size"] for c in summary["cameras"]] == [[16, 16], [16, 16]]
    assert cv2.imread(str(out / "views" / "cam_01.png")).shape == (16, 16, 3)
    assert read_glb(out / "textured.glb").texture.shape == (128, 128, 3)
