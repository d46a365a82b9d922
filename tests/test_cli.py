"""The ``aware3d`` command line: outputs users rely on and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import imageio.v2 as imageio
import numpy as np
import pytest

from backend import cameras
from backend.checkpoints.model_file import save_model
from backend.cli.main import main
from backend.configs import TINY
from backend.generator import TriPlaneGenerator


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "backend", *args], capture_output=True, text=True,
                          timeout=300)


def test_sample_writes_images_depth_and_cameras(tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc = main(["sample", "--model", "random:tiny", "--seeds", "2-3", "--yaw", "20", "--pitch", "-5",
               "--out", str(out)])
    assert rc == 0
    for seed in (2, 3):
        stem = out / f"seed{seed:04d}"
        img = cv2.imread(str(stem) + ".png", cv2.IMREAD_UNCHANGED)
        raw = cv2.imread(str(stem) + "_raw.png", cv2.IMREAD_UNCHANGED)
        depth16 = cv2.imread(str(stem) + "_depth.png", cv2.IMREAD_UNCHANGED)
        depth = np.load(str(stem) + "_depth.npy")
        cam = json.loads(Path(str(stem) + "_camera.json").read_text())
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
        assert raw.shape == (32, 32, 3)
        assert depth16.dtype == np.uint16 and depth16.shape == (32, 32)
        assert depth.dtype == np.float32 and np.isfinite(depth).all()
        assert TINY.rendering.ray_start - 1e-3 <= depth.min() <= depth.max() <= TINY.rendering.ray_end + 0.1
        # The 16-bit PNG decodes back to the .npy depth with the documented formula.
        enc = cam["depth"]["png16"]
        decoded = enc["near"] + depth16 / 65535 * (enc["far"] - enc["near"])
        assert np.abs(decoded - depth).max() < (enc["far"] - enc["near"]) / 65535 + 1e-6
        expected = cameras.make_label(cameras.orbit_camera(20, -5))
        assert np.allclose(cam["label"], expected, atol=1e-6)
        assert cam["seed"] == seed and cam["yaw_deg"] == 20


def test_sample_orbit_video(tmp_path: Path) -> None:
    rc = main(["sample", "--model", "random:tiny", "--seeds", "0", "--orbit", "6", "--orbit-format", "gif",
               "--out", str(tmp_path)])
    assert rc == 0
    frames = imageio.mimread(tmp_path / "seed0000_orbit.gif")
    assert len(frames) == 6
    rc = main(["sample", "--model", "random:tiny", "--seeds", "0", "--orbit", "4", "--out", str(tmp_path)])
    assert rc == 0
    assert (tmp_path / "seed0000_orbit.mp4").stat().st_size > 0


def test_same_command_twice_gives_identical_files(tmp_path: Path) -> None:
    for d in ("a", "b"):
        assert main(["sample", "--model", "random:tiny", "--seeds", "5", "--out", str(tmp_path / d)]) == 0
    for name in ("seed0005.png", "seed0005_depth.npy"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sample", "--model", "no-such-model", "--out", "x"], "no model named"),
        (["sample", "--model", "random:tiny", "--seeds", "x", "--out", "x"], "cannot read seeds"),
        (["sample", "--model", "random:tiny", "--fov", "400", "--out", "x"], "field of view"),
        (["sample", "--model", "random:tiny", "--device", "cuda:0", "--out", "x"], "CUDA"),
        (["sample", "--model", "/nonexistent/model.safetensors", "--out", "x"], "not found"),
        (["info", "--config", "nope"], "unknown config"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    if "--device" in args:
        import torch

        if torch.cuda.is_available():
            pytest.skip("CUDA present")
    proc = run_cli(*[a if a != "x" else str(tmp_path / "x") for a in args])
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("aware3d: error:"), proc.stderr
    assert message in lines[0]
    assert "Traceback" not in proc.stderr


def test_info_keys_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    G = TriPlaneGenerator(TINY)
    path = tmp_path / "m.safetensors"
    save_model(path, G.state_dict(), kind="gan", config=TINY.to_dict(), provenance={"source": "test"})
    assert main(["info", str(path), "--keys"]) == 0
    lines = capsys.readouterr().out.splitlines()
    sd = G.state_dict()
    assert lines == [f"{k}\t{'x'.join(map(str, v.shape))}" for k, v in sd.items()]
    assert "backbone.mapping.fc0.weight\t32x64" in lines
    assert main(["info", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["config"]["name"] == "tiny" and info["provenance"]["source"] == "test"


def test_models_lists_user_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AWARE3D_MODELS", str(tmp_path))
    save_model(tmp_path / "mine.safetensors", TriPlaneGenerator(TINY).state_dict(), kind="gan",
               config=TINY.to_dict())
    assert main(["models", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    mine = [m for m in listing["models"] if m["name"] == "mine"]
    assert mine and mine[0]["kind"] == "gan" and mine[0]["resolution"] == 64 and mine[0]["source"] == "user"


def test_models_describes_every_bundled_kind(capsys: pytest.CaptureFixture[str]) -> None:
    """Config and resolution per kind of file, not '?': UNet presets, feature-net input, directions' model."""
    assert main(["models", "--json"]) == 0
    bundled = {m["name"]: m for m in json.loads(capsys.readouterr().out)["models"] if m["source"] == "bundled"}
    described = {name: (m["config"], m["resolution"]) for name, m in bundled.items()}
    assert described["aware3d-views-cond"] == ("views64+backdrop+nearest-fill+shape", 64)
    assert described["aware3d-views-uncond"] == ("views64", 64)
    assert described["aware3d-depth"] == ("small", 64)
    assert described["aware3d-features64"] == ("256-d embedding", 64)
    assert described["aware3d-heads.directions"] == ("directions of aware3d-heads", None)
    assert described["aware3d-heads"][1] == 64 and described["aware3d-heads"][0].startswith("aware3d-heads64")
    assert main(["models"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert not [line for line in table if "bundled" in line and " ? " in line], table


# --threads: every compute command takes it, checks it before any work, and applies it before loading models.
THREADS_COMMANDS: dict[str, list[str]] = {
    "sample": ["sample", "--model", "random:tiny", "--seeds", "0", "--out", "{tmp}/o"],
    "mesh": ["mesh", "--model", "random:tiny", "--res", "64", "--out", "{tmp}/head.glb"],
    "views": ["views", "--steps", "2", "--out", "{tmp}/o"],
    "texture": ["texture", "--mesh", "{tmp}/head.glb", "--cameras", "ring:2", "--out", "{tmp}/o"],
    "invert": ["invert", "{tmp}/photo.png", "--out", "{tmp}/o"],
    "edit": ["edit", "--avatar", "{tmp}/a.avatar.safetensors", "--direction", "smile", "--out", "{tmp}/o"],
}


def _threads_argv(command: str, threads: str, tmp: Path) -> list[str]:
    return [*(a.format(tmp=tmp) for a in THREADS_COMMANDS[command]), "--threads", threads]


@pytest.mark.parametrize("command", list(THREADS_COMMANDS))
def test_every_compute_command_applies_threads_before_loading(command: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """``--threads 1`` passes every check and reaches the process before anything is loaded (the stub stops
    the command there, so no model is loaded)."""
    import backend.devices
    from backend.errors import Aware3DError

    applied: list[int | None] = []

    def stop(threads: int | None) -> None:
        applied.append(threads)
        raise Aware3DError("stopped after --threads")

    monkeypatch.setattr(backend.devices, "set_cpu_threads", stop)
    assert main(_threads_argv(command, "1", tmp_path)) == 2
    assert applied == [1]
    assert "stopped after --threads" in capsys.readouterr().err


@pytest.mark.parametrize("command", list(THREADS_COMMANDS))
@pytest.mark.parametrize("threads", ["0", "-2", "5000"])
def test_bad_threads_is_one_line_and_exit_2(command: str, threads: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_threads_argv(command, threads, tmp_path)) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("aware3d: error: --threads must be between 1 and 1024"), lines
    assert not any((tmp_path / "o").glob("*"))


def test_sample_with_threads_runs_on_that_many(tmp_path: Path) -> None:
    import torch

    before = torch.get_num_threads()
    try:
        assert main([*_threads_argv("sample", "1", tmp_path), "--resolution", "32"]) == 0
        assert torch.get_num_threads() == 1
        assert (tmp_path / "o" / "seed0000.png").is_file()
    finally:
        torch.set_num_threads(before)


def test_set_cpu_threads_twice_does_not_fail() -> None:
    """The inter-op pool can be sized once per process: a second call (another command in the same process,
    a server that already worked) keeps going and still sets the intra-op threads."""
    import torch

    from backend.devices import set_cpu_threads

    before = torch.get_num_threads()
    try:
        set_cpu_threads(2)
        set_cpu_threads(1)
        assert torch.get_num_threads() == 1
        set_cpu_threads(None)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
