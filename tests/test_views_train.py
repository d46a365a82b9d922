# SPDX-License-Identifier: GPL-3.0-or-later
"""Training G_u / G_c on tiny synthetic zips (examples, resume, export), eval-views and the CLIs."""

from __future__ import annotations

import json
from pathlib import Path

import imageio
import numpy as np
import pytest
import torch

from backend.cli.main import main as aware3d
from backend.diffusion.config import PRESETS
from backend.diffusion.model_file import load_net, save_net
from backend.diffusion.unet import UNet
from backend.views import rgbd
from backend.views.generate import load_view_models
from train.cli import main as aware3d_train
from train.data.zip_dataset import ZipDataset
from train.diffusion.data import RGBDExamples
from train.diffusion.evaluate import evaluate_views
from train.diffusion.loop import DiffusionTrainer
from train.diffusion.options import DiffusionOptions

RES = 16


@pytest.fixture(scope="module")
def zips(tiny_head_zips: dict[str, Path]) -> dict[str, Path]:
    return tiny_head_zips


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tinymodels")
    out = {}
    for kind in ("uncond", "cond"):
        torch.manual_seed(1)
        net = UNet(PRESETS["tiny"].replace(kind=kind))
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        out[kind] = d / f"tiny-{kind}.safetensors"
        save_net(out[kind], net)
    return out


def test_examples_are_rgbd_targets_and_warped_conditions(zips: dict[str, Path]) -> None:
    data = ZipDataset(zips["train"], extras=True, xflip=True)
    ex = RGBDExamples(data, "cond", seed=3)
    e = ex.example(2, step=5)
    t, c = e["target"].numpy(), e["cond"].numpy()
    assert t.shape == (4, RES, RES) and c.shape == (6, RES, RES)
    assert t.min() >= -1 and t.max() <= 1
    head = t[3] < 0.99  # background is the far code +1
    assert head.any() and (~head).any()
    rgb_mask, depth_mask = c[0] > 0.5, c[5] > 0.5
    assert not (rgb_mask & ~depth_mask).any()  # colour is never trusted where depth is not
    assert not depth_mask[~head].any()  # the backdrop is never a known surface
    # known depth is the target's depth (the warp went there and back)
    assert np.median(np.abs(c[4][depth_mask] - t[3][depth_mask])) < 0.05
    np.testing.assert_array_equal(ex.example(2, step=5)["cond"], e["cond"])  # a function of (seed, step, idx)
    assert not np.array_equal(ex.example(2, step=6)["cond"], e["cond"])


def _opts(zips: dict[str, Path], out: Path, steps: int, kind: str = "cond") -> DiffusionOptions:
    return DiffusionOptions(data=str(zips["train"]), out=str(out), kind=kind, preset="tiny", steps=steps, batch=4,
                            snap_every=2, warmup=1, threads=1, device="cpu")


def test_resume_continues_the_same_run(zips: dict[str, Path], tmp_path: Path) -> None:
    straight = DiffusionTrainer(_opts(zips, tmp_path / "a", 4))
    straight.train(progress=False)
    first = DiffusionTrainer(_opts(zips, tmp_path / "b", 2))
    first.train(progress=False)
    resumed = DiffusionTrainer(_opts(zips, tmp_path / "b", 4), resume=True)
    assert resumed.step == 2
    resumed.train(progress=False)
    for a, b in zip(straight.ema.state_dict().values(), resumed.ema.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    exported = load_net(tmp_path / "b" / "cond-latest.safetensors", expect="cond")
    assert exported.provenance["steps"] == 4 and exported.provenance["data"] == "heads.zip"


def test_training_lowers_the_denoising_loss(zips: dict[str, Path], tmp_path: Path) -> None:
    trainer = DiffusionTrainer(_opts(zips, tmp_path, 60, kind="uncond").__class__(
        **{**_opts(zips, tmp_path, 60, kind="uncond").to_dict(), "lr": 2e-3, "snap_every": 100}))

    def loss() -> float:
        with torch.no_grad():
            return float(np.mean([float(trainer.loss(trainer.batch(10_000 + k), 10_000 + k)) for k in range(6)]))

    before = loss()
    trainer.train(progress=False)
    assert loss() < 0.8 * before


def test_eval_views_reports_model_and_baseline(zips: dict[str, Path], tiny_models: dict[str, Path]) -> None:
    models = load_view_models(tiny_models["cond"], steps=2)
    report = evaluate_views(models, ZipDataset(zips["test"], extras=True), heads=1)
    s = report["summary"]
    for name in ("model", "baseline"):
        for g in ("30", "60"):
            # SSIM lies in [-1, 1]: an untrained tiny model can be slightly anti-correlated with the truth
            assert 0 < s[f"{name}_psnr@±{g}"] < 60 and -1 <= s[f"{name}_ssim@±{g}"] <= 1
    # the first view is the truth, so the plain warp is right where it is known and guesses elsewhere
    assert s["baseline_psnr_seen@±30"] > s["baseline_psnr_unseen@±30"] + 3
    assert report["per_yaw"]["baseline@+30"]["seen_fraction"] > report["per_yaw"]["baseline@+60"]["seen_fraction"]
    assert report["consistency"]["pairs"] == 6


def test_views_cli_writes_views_and_rejects_bad_input(tiny_models: dict[str, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "views"
    rc = aware3d(["views", "--first", "uncond", "--views-model", str(tiny_models["cond"]),
                  "--first-model", str(tiny_models["uncond"]),
                  "--trajectory", "yaw:-20:20:20", "--steps", "2", "--seed", "3", "--out", str(out)])
    assert rc == 0
    meta = json.loads((out / "views.json").read_text())
    assert [v["yaw_deg"] for v in meta["views"]] == [0, 20, -20]
    for v in meta["views"]:
        assert (out / v["image"]).is_file() and np.load(out / v["depth"]).shape == (RES, RES)
    assert (out / "sheet.png").is_file()
    capsys.readouterr()
    assert aware3d(["views", "--views-model", str(tiny_models["cond"]), "--trajectory", "sideways",
                    "--out", str(out)]) == 2
    assert "trajectory" in capsys.readouterr().err
    assert aware3d(["views", "--views-model", str(tiny_models["uncond"]), "--out", str(out)]) == 2
    assert "holds a 'uncond' network" in capsys.readouterr().err


def test_train_cli_errors_are_one_line(zips: dict[str, Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert aware3d_train(["diffusion", "--data", str(tmp_path / "none.zip"), "--kind", "cond",
                          "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "data set not found" in err and "Traceback" not in err
    assert aware3d_train(["diffusion", "--data", str(zips["train"]), "--kind", "cond", "--preset", "huge",
                          "--out", str(tmp_path / "r")]) == 2
    assert "unknown preset" in capsys.readouterr().err
    assert aware3d_train(["diffusion", "--data", str(zips["train"]), "--kind", "cond", "--out", str(tmp_path / "r"),
                          "--preset", "tiny", "--steps", "2", "--batch", "2", "--threads", "1", "--quiet"]) == 0
    assert (tmp_path / "r" / "cond-latest.safetensors").is_file()
    assert aware3d_train(["eval-views", "--test-data", str(zips["train"]), "--views-model",
                          str(tmp_path / "r" / "cond-latest.safetensors"), "--out", str(tmp_path / "e.json")]) == 2
    assert "not a test split" in capsys.readouterr().err


def test_views_cli_first_view_from_a_gan(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "gan"
    rc = aware3d(["views", "--first", "gan", "--model", "random:tiny", "--seed", "1",
                  "--views-model", str(tiny_models["cond"]), "--trajectory", "0,0;25,0", "--steps", "2",
                  "--out", str(out)])
    assert rc == 0
    meta = json.loads((out / "views.json").read_text())
    assert meta["first"] == "gan" and len(meta["views"]) == 2
    assert meta["pull"] == "1,1"  # the default: copy what earlier views saw (docs/views.md)
    z = np.load(out / "view_00_depth.npy")
    cam = meta["views"][0]["camera"]
    assert z.shape == (cam["height"], cam["width"]) and np.isfinite(z).all()


def test_two_process_ddp_matches_one_process(zips: dict[str, Path], tmp_path: Path) -> None:
    import os
    import shutil
    import subprocess
    import sys

    bin_dir = Path(sys.executable).parent
    if shutil.which("torchrun", path=str(bin_dir)) is None or shutil.which("aware3d-train", path=str(bin_dir)) is None:
        pytest.skip("torchrun / aware3d-train not found next to the Python interpreter")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["diffusion", "--data", str(zips["train"]), "--kind", "cond", "--preset", "tiny", "--steps", "3",
              "--batch", "4", "--snap", "100", "--threads", "1", "--quiet", "--device", "cpu"]
    subprocess.run([str(bin_dir / "aware3d-train"), *common, "--out", str(tmp_path / "one")], check=True, env=env,
                   timeout=600, capture_output=True)
    subprocess.run([str(bin_dir / "torchrun"), "--nproc-per-node", "2", "--master-port", "29533",
                    str(bin_dir / "aware3d-train"), *common, "--out", str(tmp_path / "two")], check=True, env=env,
                   timeout=600, capture_output=True)
    one = load_net(tmp_path / "one" / "cond-latest.safetensors").net.state_dict()
    two = load_net(tmp_path / "two" / "cond-latest.safetensors").net.state_dict()
    for k in one:
        torch.testing.assert_close(one[k], two[k], atol=1e-5, rtol=1e-4)
    assert load_net(tmp_path / "two" / "cond-latest.safetensors").provenance["hardware"].endswith("x2")


def test_zips_without_depth_use_the_depth_network(zips: dict[str, Path], tmp_path: Path) -> None:
    import zipfile

    from backend.depth import depth_for_view
    from train.data.zip_dataset import ZipDatasetError

    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(zips["train"]) as src, zipfile.ZipFile(plain, "w") as dst:
        for name in src.namelist():
            if not name.endswith(".depth.npy"):
                dst.writestr(name, src.read(name))
    data = ZipDataset(plain, extras=True)
    assert not data.has_depth
    with pytest.raises(ZipDatasetError, match="no depth maps"):
        RGBDExamples(data, "cond")
    net = load_net(Path(__file__).resolve().parents[1] / "assets" / "models" / "aware3d-depth.safetensors",
                   expect="depth").net
    ex = RGBDExamples(data, "cond", depth_fn=lambda rgb, cam: depth_for_view(net, rgb, cam))
    e = ex.example(0, step=1)
    head = e["target"][3] < 0.99
    assert head.any() and (~head).any() and e["cond"][5].sum() > 0  # the estimated head is warped


def test_pull_option(tiny_models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from backend.views.generate import parse_pull

    assert parse_pull("0.1,0.2") == (0.1, 0.2)
    for bad in ("0.1", "a,b", "1.5,0"):
        assert aware3d(["views", "--first", "uncond", "--views-model", str(tiny_models["cond"]),
                        "--first-model", str(tiny_models["uncond"]), "--pull", bad, "--out", str(tmp_path)]) == 2
        assert "--pull" in capsys.readouterr().err


def test_eval_views_cli_report_records_its_command(zips: dict[str, Path], tiny_models: dict[str, Path],
                                                    tmp_path: Path) -> None:
    out = tmp_path / "eval_views.json"
    argv = ["eval-views", "--test-data", str(zips["test"]), "--views-model", str(tiny_models["cond"]),
            "--heads", "1", "--steps", "2", "--out", str(out)]
    assert aware3d_train(argv) == 0
    command = json.loads(out.read_text())["command"]  # benchmarks/results/eval_views_*.json are cited by docs
    assert command.startswith("aware3d-train eval-views ") and f"--out {out}" in command


def test_first_eta_gives_a_stochastic_first_view_that_a_seed_repeats(tiny_models: dict[str, Path], tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    models = load_view_models(tiny_models["cond"], tiny_models["uncond"], steps=3)
    cam = rgbd.orbit(0.0, 0.0, RES)
    still = models.first_view(cam, 5).rgb
    models.first_eta = 1.0
    noisy = models.first_view(cam, 5).rgb
    assert not np.allclose(still, noisy)  # η adds fresh noise at every step
    np.testing.assert_array_equal(noisy, models.first_view(cam, 5).rgb)  # drawn from the seed's generator
    out = tmp_path / "v"
    assert aware3d(["views", "--first", "uncond", "--views-model", str(tiny_models["cond"]),
                    "--first-model", str(tiny_models["uncond"]), "--trajectory", "0,0", "--steps", "3",
                    "--seed", "5", "--first-eta", "1", "--out", str(out)]) == 0
    assert json.loads((out / "views.json").read_text())["first_eta"] == 1.0
    np.testing.assert_allclose(imageio.v3.imread(out / "view_00.png") / 255.0, noisy, atol=0.5 / 255 + 1e-6)
    capsys.readouterr()
    assert aware3d(["views", "--first", "uncond", "--views-model", str(tiny_models["cond"]),
                    "--first-model", str(tiny_models["uncond"]), "--first-eta", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--first-eta" in err and len(err.splitlines()) == 1
    # η only steers G_u's DDIM: with the GAN's first view or the DDPM sampler it would be silently ignored
    for other in (["--first", "gan"], ["--first", "uncond", "--ddpm"]):
        assert aware3d(["views", *other, "--views-model", str(tiny_models["cond"]), "--first-model",
                        str(tiny_models["uncond"]), "--first-eta", "1", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert "--first-eta" in err and "--first uncond" in err and len(err.splitlines()) == 1
