# SPDX-License-Identifier: GPL-3.0-or-later
"""G_c with shape channels (UNetConfig.shape): the target view's known geometry - a mesh being textured, the
GAN head being turned, a test head's truth - reaches the network in training and sampling alike, sets the
generated depth, and is ignored by models trained without it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.cli.main import main as aware3d
from backend.diffusion.config import COND_CHANNELS, PRESETS, UNetConfig
from backend.diffusion.model_file import load_net, save_net
from backend.diffusion.unet import UNet
from backend.views import rgbd
from backend.views.backdrop import Backdrop
from backend.views.generate import condition_for, condition_tensor, generate_views, load_view_models
from backend.views.holes import network_condition
from backend.views.rgbd import Condition, RGBDView
from train.cli import main as aware3d_train
from train.data.zip_dataset import ZipDataset
from train.diffusion.data import RGBDExamples, condition_input
from train.diffusion.evaluate import evaluate_views, shape_fill
from train.diffusion.loop import DiffusionTrainer
from train.diffusion.options import DiffusionOptions

RES = 16


def _condition() -> Condition:
    """A blob whose left half was seen; the target's geometry is a wider blob (the side nobody saw)."""
    cam = rgbd.orbit(0.0, 0.0, RES)
    near, far = cam.depth_range()
    yy, xx = np.mgrid[:RES, :RES]
    seen_blob = (yy - 8) ** 2 + (xx - 8) ** 2 < 20
    true_blob = (yy - 8) ** 2 + (xx - 8) ** 2 < 40
    rgb = np.zeros((RES, RES, 3), np.float32)
    rgb[..., 0] = xx / RES
    rgb_mask = seen_blob & (xx < 8)
    z = np.where(seen_blob, near + 0.5, far).astype(np.float32)
    backdrop = np.broadcast_to(np.array([0.2, 0.4, 0.9], np.float32), (RES, RES, 3)).copy()
    return Condition(np.where(rgb_mask[..., None], rgb, 0).astype(np.float32), z, rgb_mask, seen_blob, z.copy(),
                     cam, backdrop, np.where(true_blob, near + 0.4 + 0.02 * xx, np.inf).astype(np.float32))


def _random_net(cfg: UNetConfig) -> UNet:
    torch.manual_seed(0)
    net = UNet(cfg)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return net


def test_config_adds_three_channels_for_cond_only(tmp_path: Path) -> None:
    base = PRESETS["tiny"].replace(kind="cond", backdrop=True)
    assert base.replace(shape=True).in_channels == base.in_channels + 3 == 4 + COND_CHANNELS + 6
    with pytest.raises(ValueError, match="kind 'cond' only"):
        UNetConfig(kind="uncond", shape=True)
    save_net(tmp_path / "g.safetensors", UNet(base.replace(shape=True)))
    assert load_net(tmp_path / "g.safetensors", expect="cond").net.cfg.shape
    old = base.to_dict()
    del old["shape"]  # a file written before the option: no shape channels
    assert UNetConfig.from_dict(old).shape is False


def test_shape_channels_say_given_surface_and_depth() -> None:
    cond = _condition()
    near, far = cond.camera.depth_range()
    x = cond.to_network(backdrop=True, shape=True)
    assert x.shape == (COND_CHANNELS + 6, RES, RES)
    given, surface, code = x[-3:]
    assert (given == 1).all()
    np.testing.assert_array_equal(surface.astype(bool), np.isfinite(cond.shape_z))
    np.testing.assert_array_equal(code, rgbd.encode_depth(cond.shape_z, near, far))
    assert (code[~surface.astype(bool)] == 1).all()  # the backdrop is the far plane
    cond.shape_z = None  # unknown geometry (IVID's setting): all zero
    assert (cond.to_network(backdrop=True, shape=True)[-3:] == 0).all()
    np.testing.assert_array_equal(cond.to_network(backdrop=True), x[:-3])  # older models' channels unchanged


def test_nearest_fill_draws_the_backdrop_outside_the_given_silhouette() -> None:
    cond = _condition()
    noise = np.full((4, RES, RES), 9.0, np.float32)
    with_shape = network_condition(cond, noise, backdrop=True, hole_fill="nearest", shape=True)
    without = network_condition(cond, noise, backdrop=True, hole_fill="nearest")
    off = ~np.isfinite(cond.shape_z)
    back = cond.backdrop[0, 0] * 2 - 1
    np.testing.assert_allclose(with_shape[1:4][:, off].T, np.broadcast_to(back, (off.sum(), 3)), atol=1e-6)
    on = ~off
    np.testing.assert_array_equal(with_shape[1:4][:, on], without[1:4][:, on])  # the surface: nearest known colour
    assert not np.allclose(without[1:4][:, off].T, back)  # without the shape the fill knows no silhouette
    # training and sampling still build the same channels
    a = condition_input(cond, torch.Generator().manual_seed(5), backdrop=True, hole_fill="nearest", shape=True)
    b = condition_tensor(cond, torch.Generator().manual_seed(5), True, "nearest", True)[0].numpy()
    np.testing.assert_array_equal(a, b)


def test_a_shape_model_takes_the_given_depth_and_older_models_ignore_it(tmp_path: Path) -> None:
    cond = _condition()
    cfg = PRESETS["tiny"].replace(kind="cond", backdrop=True, hole_fill="nearest")
    save_net(tmp_path / "shape.safetensors", _random_net(cfg.replace(shape=True)))
    save_net(tmp_path / "plain.safetensors", _random_net(cfg))
    view = load_view_models(tmp_path / "shape.safetensors", steps=2).next_view(cond, seed=3)
    np.testing.assert_array_equal(view.z, rgbd.backdrop(cond.shape_z, cond.camera))
    # the carried backdrop is drawn wherever the given geometry says backdrop and no colour is known
    off = ~np.isfinite(cond.shape_z)
    np.testing.assert_allclose(view.rgb[off], cond.backdrop[off], atol=1e-5)
    plain = load_view_models(tmp_path / "plain.safetensors", steps=2)
    a = plain.next_view(cond, seed=3)
    cond.shape_z = None
    b = plain.next_view(cond, seed=3)
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_array_equal(a.z, b.z)


def test_generate_views_asks_for_each_views_shape(tmp_path: Path) -> None:
    cfg = PRESETS["tiny"].replace(kind="cond", backdrop=True, hole_fill="nearest", shape=True)
    save_net(tmp_path / "shape.safetensors", _random_net(cfg))
    models = load_view_models(tmp_path / "shape.safetensors", steps=2)
    cams = [rgbd.orbit(y, 0.0, RES) for y in (0.0, 20.0, -20.0)]
    first = RGBDView(np.full((RES, RES, 3), 0.5, np.float32), np.full((RES, RES), 2.4, np.float32), cams[0])
    asked: list[int] = []

    def shapes(i: int, cam: rgbd.Camera) -> np.ndarray:
        asked.append(i)
        return np.full((cam.height, cam.width), 2.3 + 0.01 * i, np.float32)

    views = generate_views(models, cams, seed=1, first=first, shapes=shapes)
    assert asked == [1, 2]
    for i in (1, 2):
        np.testing.assert_allclose(views[i].z, 2.3 + 0.01 * i)
    with pytest.raises(ValueError, match="shape_z"):
        condition_for(views, cams[1], None, np.zeros((RES + 1, RES), np.float32))


def test_shape_fill_baseline_draws_backdrop_outside_the_truth() -> None:
    cond = _condition()
    cam = cond.camera
    truth = RGBDView(np.zeros((RES, RES, 3), np.float32), rgbd.backdrop(cond.shape_z, cam), cam)
    carried = Backdrop(np.vstack([[0.2, 0.4, 0.9], np.zeros((5, 3))]))  # a constant colour
    base = shape_fill(cond, truth, carried)
    off = ~np.isfinite(cond.shape_z)
    np.testing.assert_allclose(base.rgb[off], np.broadcast_to([0.2, 0.4, 0.9], (off.sum(), 3)), atol=1e-5)
    np.testing.assert_array_equal(base.z, truth.z)


def test_training_eval_and_views_with_shape(tiny_head_zips: dict[str, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    data = ZipDataset(tiny_head_zips["train"], extras=True, xflip=True)
    ex = RGBDExamples(data, "cond", seed=3, backdrop=True, hole_fill="nearest", shape=True)
    given = [ex.example(i, step=5)["cond"].numpy() for i in range(len(data))]
    with_shape = [c for c in given if c[-3].max() == 1]
    assert 0 < len(with_shape) < len(given) or len(given) < 8  # ~15 % are left without (IVID's setting)
    c = with_shape[0]
    target = ex.example(int(np.argmax([g[-3].max() for g in given])), step=5)["target"].numpy()
    np.testing.assert_allclose(c[-1], target[3], atol=1e-6)  # the shape is the target's true depth
    plain = RGBDExamples(data, "cond", seed=3, backdrop=True, hole_fill="nearest").example(2, step=5)["cond"]
    assert plain.shape[0] == COND_CHANNELS + 3

    opts = DiffusionOptions(data=str(tiny_head_zips["train"]), out=str(tmp_path / "r"), kind="cond", preset="tiny",
                            steps=2, batch=2, snap_every=2, warmup=1, threads=1, device="cpu", backdrop=True,
                            hole_fill="nearest", shape=True)
    DiffusionTrainer(opts).train(progress=False)
    model = tmp_path / "r" / "cond-latest.safetensors"
    assert load_net(model).net.cfg.shape
    with pytest.raises(Exception, match="--shape"):  # a resume must not switch it
        DiffusionTrainer(DiffusionOptions(**{**opts.to_dict(), "shape": False, "steps": 4}), resume=True)

    report = evaluate_views(load_view_models(model, steps=2), ZipDataset(tiny_head_zips["test"], extras=True), 1)
    assert report["shape_given"] is True
    s = report["summary"]
    assert s["model_depth_absrel@±30"] == 0.0  # the view's depth is the given truth
    assert s["baseline_shape_psnr_head@±30"] == s["baseline_psnr_head@±30"]  # same fill on the head
    assert s["baseline_shape_psnr@±60"] >= s["baseline_psnr@±60"]  # the backdrop is drawn, not smeared
    assert aware3d_train(["eval-views", "--test-data", str(tiny_head_zips["test"]), "--views-model", str(model),
                          "--heads", "1", "--steps", "2", "--no-shape", "--out", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["shape_given"] is False

    out = tmp_path / "gan"
    assert aware3d(["views", "--first", "gan", "--model", "random:tiny", "--seed", "1", "--views-model", str(model),
                    "--trajectory", "0,0;25,0", "--steps", "2", "--out", str(out)]) == 0
    meta = json.loads((out / "views.json").read_text())
    assert meta["shape"] is True and meta["pull"] == "1,1"  # copy what earlier views saw (docs/views.md)
    assert aware3d_train(["diffusion", "--data", str(tiny_head_zips["train"]), "--kind", "uncond", "--shape",
                          "--out", str(tmp_path / "u")]) == 2
    err = capsys.readouterr().err
    assert "--shape" in err and "Traceback" not in err
