# SPDX-License-Identifier: GPL-3.0-or-later
"""The diffusion UNet, noise schedule, samplers, model files and the view-generation loop (tiny nets)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from backend.diffusion.config import PRESETS, UNetConfig
from backend.diffusion.model_file import load_net, save_net
from backend.diffusion.sampler import ddim_sample, ddpm_sample
from backend.diffusion.schedule import NoiseSchedule
from backend.diffusion.unet import UNet, widen_input
from backend.errors import Aware3DError
from backend.views import rgbd
from backend.views.generate import ViewModels, generate_views, refine_hook
from backend.views.rgbd import Condition

TINY = PRESETS["tiny"]


def _net(kind: str, seed: int = 0, perturb: bool = True) -> UNet:
    torch.manual_seed(seed)
    net = UNet(TINY.replace(kind=kind)).eval()
    if perturb:  # zero-initialised outputs would make every test trivially pass: give them weights
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p) * 0.05)
    return net


def test_unet_channels_per_kind() -> None:
    for kind, cin, cout in (("uncond", 4, 4), ("cond", 10, 4), ("depth", 3, 1)):
        net = _net(kind)
        x = torch.randn(2, cin, 16, 16)
        t = torch.tensor([3, 900]) if kind != "depth" else None
        assert net(x, t).shape == (2, cout, 16, 16)
    with pytest.raises(ValueError):
        UNetConfig(resolution=30, channel_mults=(1, 2, 2))
    with pytest.raises(ValueError):
        UNetConfig(kind="video")
    assert UNetConfig.from_dict(TINY.to_dict()) == TINY


def test_timestep_changes_the_prediction() -> None:
    net = _net("uncond")
    x = torch.randn(1, 4, 16, 16)
    assert not torch.allclose(net(x, torch.tensor([10])), net(x, torch.tensor([900])))


def test_cond_initialised_from_uncond_ignores_the_condition_until_trained() -> None:
    u = _net("uncond", 1)
    c = UNet(TINY.replace(kind="cond")).eval()
    widen_input(c, u.state_dict())
    x, t = torch.randn(2, 4, 16, 16), torch.tensor([5, 500])
    cond = torch.randn(2, 6, 16, 16)
    torch.testing.assert_close(c(torch.cat([x, cond], 1), t), u(x, t))
    with pytest.raises(ValueError):
        widen_input(c, _net("depth").state_dict())


def test_schedule_forward_and_back() -> None:
    s = NoiseSchedule()
    assert s.alphas_cumprod[0] == pytest.approx(1 - 1e-4) and float(s.alphas_cumprod[-1]) < 1e-4
    x0, eps = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    t = torch.tensor([0, 400, 999])
    xt = s.add_noise(x0, eps, t)
    torch.testing.assert_close(s.predict_x0(xt, eps, t), x0, atol=2e-3, rtol=1e-3)
    torch.testing.assert_close(s.predict_eps(xt, x0, t), eps, atol=1e-4, rtol=1e-4)
    ts = s.ddim_timesteps(25)
    assert len(ts) == 25 and ts[0] == 999 and ts[-1] == 0 and ts == sorted(ts, reverse=True)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_samplers_reach_the_clean_image_with_an_oracle_denoiser(sampler: str) -> None:
    s = NoiseSchedule()
    target = torch.rand(1, 4, 8, 8) * 1.6 - 0.8

    def oracle(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return s.predict_eps(x, target, t)

    steps = []
    g = torch.Generator().manual_seed(0)
    if sampler == "ddim":
        out = ddim_sample(oracle, s, (1, 4, 8, 8), steps=10, generator=g, progress=lambda i, n: steps.append(i))
        assert steps == list(range(1, 11))
    else:
        out = ddpm_sample(oracle, s, (1, 4, 8, 8), generator=g)
    torch.testing.assert_close(out, target, atol=1e-4, rtol=0)


def test_x0_hook_steers_every_step() -> None:
    s = NoiseSchedule()
    calls: list[tuple[int, bool]] = []

    def hook(x0: torch.Tensor, t: int, last: bool) -> torch.Tensor:
        calls.append((t, last))
        return torch.full_like(x0, 0.5)

    out = ddim_sample(lambda x, t: torch.zeros_like(x), s, (1, 4, 8, 8), steps=5, x0_hook=hook)
    assert len(calls) == 5 and calls[-1] == (0, True) and not any(last for _, last in calls[:-1])
    torch.testing.assert_close(out, torch.full_like(out, 0.5))


def test_model_file_round_trip_and_kind_check(tmp_path: Path) -> None:
    net = _net("cond")
    path = tmp_path / "g_c.safetensors"
    save_net(path, net, {"steps": 3})
    loaded = load_net(path, expect="cond")
    assert loaded.config == net.cfg and loaded.provenance["steps"] == 3
    x = torch.randn(1, 10, 16, 16)
    torch.testing.assert_close(loaded.net(x, torch.tensor([7])), net(x, torch.tensor([7])))
    with pytest.raises(Aware3DError, match="holds a 'cond' network"):
        load_net(path, expect="uncond")
    with pytest.raises(Aware3DError, match="not found"):
        load_net(tmp_path / "missing.safetensors")


def _condition(size: int = 16) -> Condition:
    cam = rgbd.orbit(20, 0, size)
    _, far = cam.depth_range()
    rgb = np.zeros((size, size, 3), np.float32)
    rgb[..., 0] = 1.0
    z = np.full((size, size), far, np.float32)
    z[4:12, 4:12] = 2.5
    known = z < far
    return Condition(rgb, z, known.copy(), known.copy(), z.copy(), cam)


def test_refine_hook_pulls_towards_the_condition_and_keeps_new_content_behind() -> None:
    cond = _condition()
    hook = refine_hook(cond, "cpu")
    x0 = torch.zeros(1, 4, 16, 16)
    x0[:, 3] = -1.0  # everything claimed at the near plane
    out = hook(x0, 500, False)
    near, far = cond.camera.depth_range()
    code = float(rgbd.encode_depth(np.array([2.5]), near, far)[0])
    assert float(out[0, 0, 8, 8]) == pytest.approx(0.1 * 1.0)  # red pulled 10 % towards +1
    assert float(out[0, 0, 0, 0]) == 0.0  # unknown colour untouched
    assert float(out[0, 3, 8, 8]) == pytest.approx(0.8 * -1 + 0.2 * code, abs=1e-5)
    assert float(out[0, 3, 0, 0]) == pytest.approx(0.5 * 1.0 + 0.5 * -1.0)  # pushed half-way to the backdrop
    last = hook(x0, 0, True)
    assert float(last[0, 0, 8, 8]) == 0.0  # no colour pull at the last step


def test_generate_views_chain_conditions_on_previous_views() -> None:
    torch.set_num_threads(1)
    models = ViewModels(_net("cond", 2), _net("uncond", 3), steps=3)
    cams = [rgbd.orbit(y, 0, 16) for y in (0, 15, -15)]
    seen: list[int] = []
    views = generate_views(models, cams, seed=4, progress=lambda d, n, m, v: seen.append(d))
    assert seen == [1, 2, 3] and len(views) == 3
    for v, cam in zip(views, cams):
        near, far = cam.depth_range()
        assert v.rgb.shape == (16, 16, 3) and v.rgb.min() >= 0 and v.rgb.max() <= 1
        assert near - 1e-4 <= v.z.min() and v.z.max() <= far + 1e-4
        np.testing.assert_allclose(v.camera.cam2world, cam.cam2world)
    again = generate_views(models, cams, seed=4)
    np.testing.assert_array_equal(again[2].rgb, views[2].rgb)  # seeded: reproducible
    other = generate_views(models, cams, seed=5)
    assert not np.array_equal(other[0].rgb, views[0].rgb)


def test_v_prediction_converts_to_the_same_noise_and_image() -> None:
    s = NoiseSchedule()
    x0, eps = torch.rand(2, 4, 8, 8) * 2 - 1, torch.randn(2, 4, 8, 8)
    t = torch.tensor([10, 990])
    xt = s.add_noise(x0, eps, t)
    v = s.v_target(x0, eps, t)
    torch.testing.assert_close(s.eps_from_output(xt, v, t, "v"), eps, atol=1e-5, rtol=0)
    torch.testing.assert_close(s.predict_x0(xt, s.eps_from_output(xt, v, t, "v"), t), x0, atol=1e-3, rtol=0)
    assert s.eps_from_output(xt, eps, t, "eps") is eps
    with pytest.raises(ValueError):
        UNetConfig(prediction="x0")
    assert PRESETS["views64"].prediction == "v"


def test_a_v_predicting_net_samples_like_its_eps_oracle() -> None:
    from backend.views.generate import eps_denoiser

    s = NoiseSchedule()
    target = torch.rand(1, 4, 16, 16) * 1.6 - 0.8

    class VOracle(torch.nn.Module):
        cfg = TINY.replace(prediction="v")

        def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            eps = s.predict_eps(x, target, t)
            return s.v_target(target, eps, t)

    g = torch.Generator().manual_seed(0)
    out = ddim_sample(eps_denoiser(VOracle(), s), s, (1, 4, 16, 16), steps=8, generator=g)
    torch.testing.assert_close(out, target, atol=1e-3, rtol=0)


def test_a_full_pull_copies_the_known_colour_and_depth() -> None:
    cond = _condition()
    hook = refine_hook(cond, "cpu", rgb_pull=1.0, depth_pull=1.0)
    out = hook(torch.zeros(1, 4, 16, 16), 0, True)
    near, far = cond.camera.depth_range()
    assert float(out[0, 0, 8, 8]) == pytest.approx(1.0)  # copied even at the last step
    assert float(out[0, 3, 8, 8]) == pytest.approx(float(rgbd.encode_depth(np.array([2.5]), near, far)[0]), abs=1e-5)
