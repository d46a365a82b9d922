# SPDX-License-Identifier: GPL-3.0-or-later
"""G_c's hole fill: IVID's noise, or the nearest known colour and depth (UNetConfig.hole_fill), the same in
training and sampling, stored in the model file, and refused where it means nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from backend.diffusion.config import PRESETS, UNetConfig
from backend.diffusion.model_file import load_net, save_net
from backend.diffusion.unet import UNet
from backend.views import rgbd
from backend.views.generate import condition_tensor, load_view_models
from backend.views.holes import network_condition
from backend.views.rgbd import Condition
from train.cli import main as aware3d_train
from train.data.zip_dataset import ZipDataset
from train.diffusion.data import RGBDExamples, condition_input
from train.diffusion.loop import DiffusionTrainer
from train.diffusion.options import DiffusionOptions

RES = 16


def _condition() -> Condition:
    """A head-like blob: colour known on its left half, depth on the whole blob, nothing on the backdrop."""
    cam = rgbd.orbit(0.0, 0.0, RES)
    near, far = cam.depth_range()
    yy, xx = np.mgrid[:RES, :RES]
    blob = (yy - 8) ** 2 + (xx - 8) ** 2 < 30
    rgb = np.zeros((RES, RES, 3), np.float32)
    rgb[..., 0] = xx / RES
    rgb[..., 1] = yy / RES
    rgb_mask = blob & (xx < 8)
    z = np.where(blob, near + 0.5 + 0.01 * xx, far).astype(np.float32)
    return Condition(np.where(rgb_mask[..., None], rgb, 0).astype(np.float32), z, rgb_mask, blob, z.copy(), cam)


def test_noise_fill_is_ivids() -> None:
    cond = _condition()
    noise = np.random.default_rng(0).standard_normal((4, RES, RES)).astype(np.float32)
    x = network_condition(cond, noise)
    plain = cond.to_network()
    known_rgb, known_d = cond.rgb_mask, cond.depth_mask
    np.testing.assert_array_equal(x[1:4][:, known_rgb], plain[1:4][:, known_rgb])
    np.testing.assert_array_equal(x[1:4][:, ~known_rgb], noise[:3][:, ~known_rgb])
    np.testing.assert_array_equal(x[4][known_d], plain[4][known_d])
    np.testing.assert_array_equal(x[4][~known_d], noise[3][~known_d])
    np.testing.assert_array_equal(x[[0, 5]], plain[[0, 5]])  # the masks are untouched


def test_nearest_fill_gives_every_hole_its_nearest_known_value() -> None:
    cond = _condition()
    noise = np.full((4, RES, RES), 9.0, np.float32)  # must not appear anywhere
    x = network_condition(cond, noise, hole_fill="nearest")
    plain = cond.to_network()
    assert not (x == 9.0).any()
    np.testing.assert_array_equal(x[[0, 5]], plain[[0, 5]])
    np.testing.assert_array_equal(x[1:4][:, cond.rgb_mask], plain[1:4][:, cond.rgb_mask])
    np.testing.assert_array_equal(x[4][cond.depth_mask], plain[4][cond.depth_mask])
    known = np.argwhere(cond.rgb_mask)
    for y, xx in [(8, 12), (0, 15), (15, 0), (8, 8)]:  # holes inside the blob, on the backdrop, at corners
        d2 = ((known - [y, xx]) ** 2).sum(1)
        nearest = known[d2 == d2.min()]
        assert any(np.array_equal(x[1:4, y, xx], plain[1:4, ny, nx]) for ny, nx in nearest)
    # a backdrop pixel's depth is the nearest known depth: the blob's, not the far code
    assert x[4, 0, 0] < 0.9


def test_nearest_fill_without_anything_known_falls_back_to_noise() -> None:
    cond = _condition()
    cond.rgb_mask[:] = False
    cond.depth_mask[:] = False
    noise = np.random.default_rng(1).standard_normal((4, RES, RES)).astype(np.float32)
    x = network_condition(cond, noise, hole_fill="nearest")
    np.testing.assert_array_equal(x[1:5], noise)


def test_training_and_sampling_build_the_same_condition() -> None:
    """Same random numbers in, same channels out: what G_c sees at sampling is what it was trained on."""
    cond = _condition()
    for fill in ("noise", "nearest"):
        a = condition_input(cond, torch.Generator().manual_seed(5), backdrop=True, hole_fill=fill)
        b = condition_tensor(cond, torch.Generator().manual_seed(5), backdrop=True, hole_fill=fill)[0].numpy()
        np.testing.assert_array_equal(a, b)


def test_config_validates_and_stores_the_fill(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="hole_fill"):
        UNetConfig(kind="cond", hole_fill="zeros")
    with pytest.raises(ValueError, match="kind 'cond' only"):  # G_u has no condition to fill
        UNetConfig(kind="uncond", hole_fill="nearest")
    cfg = PRESETS["tiny"].replace(kind="cond", hole_fill="nearest")
    save_net(tmp_path / "g.safetensors", UNet(cfg))
    assert load_net(tmp_path / "g.safetensors", expect="cond").net.cfg.hole_fill == "nearest"
    old = PRESETS["tiny"].replace(kind="cond").to_dict()
    del old["hole_fill"]  # a file written before the option: IVID's noise
    assert UNetConfig.from_dict(old).hole_fill == "noise"
    with pytest.raises(ValueError, match="hole_fill"):
        UNetConfig.from_dict({**old, "hole_fill": "../../x"})


def test_sampling_uses_the_models_fill(tmp_path: Path) -> None:
    """A model trained with the nearest fill gets it at sampling; changing only the fill changes the view."""
    torch.manual_seed(0)
    net = UNet(PRESETS["tiny"].replace(kind="cond"))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    paths = {}
    for fill in ("noise", "nearest"):
        net.cfg = net.cfg.replace(hole_fill=fill)
        paths[fill] = tmp_path / f"{fill}.safetensors"
        save_net(paths[fill], net)
    cond = _condition()
    views = {fill: load_view_models(p, steps=2).next_view(cond, seed=3) for fill, p in paths.items()}
    assert not np.array_equal(views["noise"].rgb, views["nearest"].rgb)
    again = load_view_models(paths["nearest"], steps=2).next_view(cond, seed=3)
    np.testing.assert_array_equal(again.rgb, views["nearest"].rgb)


def test_training_with_the_nearest_fill(tiny_head_zips: dict[str, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    data = ZipDataset(tiny_head_zips["train"], extras=True, xflip=True)
    noise_ex = RGBDExamples(data, "cond", seed=3).example(2, step=5)["cond"].numpy()
    near_ex = RGBDExamples(data, "cond", seed=3, hole_fill="nearest").example(2, step=5)["cond"].numpy()
    np.testing.assert_array_equal(noise_ex[[0, 5]], near_ex[[0, 5]])  # same warp, same masks
    holes = near_ex[0] < 0.5
    assert holes.any()
    assert np.abs(near_ex[1:4][:, holes]).max() <= 1.0  # colours, not N(0, 1) draws
    opts = DiffusionOptions(data=str(tiny_head_zips["train"]), out=str(tmp_path / "r"), kind="cond", preset="tiny",
                            steps=2, batch=2, snap_every=2, warmup=1, threads=1, device="cpu",
                            hole_fill="nearest")
    DiffusionTrainer(opts).train(progress=False)
    assert load_net(tmp_path / "r" / "cond-latest.safetensors").net.cfg.hole_fill == "nearest"
    with pytest.raises(Exception, match="--hole-fill"):  # a resume must not switch the fill
        DiffusionTrainer(DiffusionOptions(**{**opts.to_dict(), "hole_fill": "noise", "steps": 4}), resume=True)
    assert aware3d_train(["diffusion", "--data", str(tiny_head_zips["train"]), "--kind", "uncond",
                          "--hole-fill", "nearest", "--out", str(tmp_path / "u")]) == 2
    err = capsys.readouterr().err
    assert "--hole-fill" in err and "Traceback" not in err
