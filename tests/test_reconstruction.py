"""aware3d-train eval's reconstruction section: held-out heads rendered from their own latent vs the truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from backend.cameras import label_tensor, orbit_camera
from backend.registry import load_generator
from train.data.zip_dataset import ZipDataset
from train.eval.reconstruction import psnr, reconstruction, ssim


def test_psnr_and_ssim_of_known_images() -> None:
    a = np.zeros((8, 8, 3))
    b = a + 0.1
    assert psnr(a, b) == pytest.approx(20.0)
    mask = np.zeros((8, 8), dtype=bool)
    mask[:2] = True
    c = b.copy()
    c[2:] = 1.0
    assert psnr(a, c, mask) == pytest.approx(20.0)
    assert ssim(b, b) == pytest.approx(1.0)


@pytest.fixture(scope="module")
def test_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from train.synthetic import build_dataset

    out = tmp_path_factory.mktemp("rec") / "d.zip"
    build_dataset(out=out, count=1, res=64, seed=5, test_heads=1, progress=False)
    return out.with_name("d_test.zip")


def test_reconstruction_report_on_a_distilled_model(test_zip: Path) -> None:
    torch.manual_seed(0)
    G = load_generator("random:tiny-distilled:1").generator
    report = reconstruction(G, ZipDataset(test_zip, extras=True), meshes=1)
    assert report["heads"] == 1 and report["views_per_head"] == 21  # yaw 0, ±15, ±30, ±45 x 3 pitches
    assert set(report["by_yaw"]) == {"-45", "-30", "-15", "+0", "+15", "+30", "+45"}
    # An untrained model is far from the truth, and every figure is a finite measurement.
    assert 3 < report["psnr_mean"] < 20 and 0 <= report["ssim_mean"] < 0.9
    for key in ("psnr_head_mean", "back_psnr_head_mean"):
        assert np.isfinite(report[key])
    assert report["chamfer_heads"] == 1 and report["chamfer_no_surface"] == 1  # random weights: no level set
    # Split by the discrete choices, each value with its head count (one head here).
    params = ZipDataset(test_zip, extras=True).params(0)
    for key in ("hat", "glasses", "beard", "hair_style", "hair_colour"):
        assert list(report["by_choice"][key]) == [str(params[key])]
        assert report["by_choice"][key][str(params[key])]["heads"] == 1


def test_reconstruction_of_the_truth_itself_is_perfect(test_zip: Path) -> None:
    """The scores of a render that *is* the truth: infinite PSNR is capped, SSIM 1, no depth error."""
    from train.eval.reconstruction import view_scores

    data = ZipDataset(test_zip, extras=True)
    item = data[0]
    image = item["image"].float() / 127.5 - 1
    depth = item["depth"]
    low = torch.nn.functional.avg_pool2d(torch.isfinite(depth).float()[None, None], 2)
    d = torch.where(torch.isfinite(depth), depth, torch.zeros_like(depth))
    out = {"image": image[None], "image_depth": torch.nn.functional.avg_pool2d(d[None, None], 2) / low.clamp_min(1e-6),
           "image_alpha": low}
    s = view_scores(out, 0, image, depth)
    assert s["psnr"] >= 100 and s["ssim"] == pytest.approx(1.0) and s["depth_error"] == pytest.approx(0.0, abs=1e-4)


def test_a_gan_is_not_scored_by_reconstruction(test_zip: Path) -> None:
    G = load_generator("random:tiny").generator
    assert "skipped" in reconstruction(G, ZipDataset(test_zip, extras=True))


def test_eval_command_reports_reconstruction_and_its_command(test_zip: Path, tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    exe = str(Path(sys.executable).parent / "aware3d-train")
    out = tmp_path / "report.json"
    run = subprocess.run([exe, "eval", "--model", "random:tiny-distilled:1", "--data", str(test_zip),
                          "--test-data", str(test_zip), "--count", "8", "--latents", "1", "--mesh-latents", "0",
                          "--reconstruction-meshes", "0", "--device", "cpu", "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    report = json.loads(out.read_text())
    assert report["command"].startswith("aware3d-train eval --model random:tiny-distilled:1")
    rec = report["reconstruction"]
    assert rec["heads"] == 1 and rec["chamfer_heads"] == 0 and np.isfinite(rec["psnr_head_mean"])


def test_fid_samples_of_a_model_without_super_resolution_are_its_render() -> None:
    from train.eval.report import generate_for_fid

    G = load_generator("random:tiny-distilled-direct:1").generator
    labels = label_tensor(np.stack([orbit_camera(0.0, 0.0), orbit_camera(-20.0, 5.0)]))
    out = generate_for_fid(G, labels, 3, seed=0)
    assert out["image"].shape == (3, 3, 32, 32) and torch.equal(out["image"], out["direct"])
