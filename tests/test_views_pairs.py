# SPDX-License-Identifier: GPL-3.0-or-later
"""True multi-view pairs for G_c and the backdrop carried along a trajectory ([views])."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import imageio
import numpy as np
import pytest
import torch

from backend.diffusion.config import PRESETS
from backend.diffusion.model_file import load_net, save_net
from backend.diffusion.unet import UNet
from backend.errors import Aware3DError
from backend.views import rgbd
from backend.views.backdrop import fit_backdrop
from backend.views.generate import ViewModels, condition_for, generate_views
from backend.views.rgbd import Condition, RGBDView
from train.cli import main as aware3d_train
from train.data.zip_dataset import ZipDataset
from train.diffusion.data import RGBDExamples, view_from_item
from train.diffusion.loop import DiffusionTrainer
from train.diffusion.options import DiffusionOptions
from train.diffusion.pairs import PairSettings, true_pair

RES = 16


@pytest.fixture(scope="module")
def zips(tiny_head_zips: dict[str, Path]) -> dict[str, Path]:
    return tiny_head_zips


def _test_view(zips: dict[str, Path], yaw: float = 30.0) -> RGBDView:
    test = ZipDataset(zips["test"], extras=True)
    return view_from_item(test[test.test_view(test.test_heads[0], yaw, 0.0)])


def test_backdrop_fit_draws_the_data_gradient_behind_the_head_too(zips: dict[str, Path]) -> None:
    view = _test_view(zips)
    far = view.camera.depth_range()[1]
    back = view.z >= far - 1e-4
    assert back.any() and (~back).any()
    fit = fit_backdrop(view)
    assert fit is not None
    drawn = fit.image(RES, RES)
    # the synthetic backdrop is a vertical gradient: every pixel of a row has the row's backdrop colour,
    # including the pixels the head hides
    for row in range(RES):
        if back[row].sum() >= 2:
            colour = view.rgb[row][back[row]].mean(0)
            assert np.abs(drawn[row] - colour).max() < 3 / 255
    # the fit is resolution-free: drawn at 4x it samples the same gradient
    big = fit.image(4 * RES, 4 * RES)
    np.testing.assert_allclose(big[1::4, 1::4].mean(), drawn.mean(), atol=2e-3)


def test_no_backdrop_no_fit() -> None:
    cam = rgbd.orbit(0, 0, RES)
    near = cam.depth_range()[0]
    view = RGBDView(np.full((RES, RES, 3), 0.4, np.float32), np.full((RES, RES), near + 0.3, np.float32), cam)
    assert fit_backdrop(view) is None


def _condition(backdrop: np.ndarray | None) -> Condition:
    cam = rgbd.orbit(0, 0, RES)
    z = np.full((RES, RES), cam.depth_range()[1], np.float32)
    known = np.zeros((RES, RES), bool)
    return Condition(np.zeros((RES, RES, 3), np.float32), z, known, known.copy(), z.copy(), cam, backdrop)


def test_condition_channels_with_and_without_backdrop() -> None:
    colour = np.zeros((RES, RES, 3), np.float32)
    colour[..., 0] = 1.0
    assert _condition(colour).to_network().shape == (6, RES, RES)  # IVID's 6 channels unchanged
    x = _condition(colour).to_network(backdrop=True)
    assert x.shape == (9, RES, RES)
    np.testing.assert_array_equal(x[6], 1.0)
    np.testing.assert_array_equal(x[7], -1.0)
    np.testing.assert_array_equal(_condition(None).to_network(backdrop=True)[6:], 0.0)  # unknown: mid grey


def test_true_pair_warps_other_views_of_the_same_head_into_the_target() -> None:
    s = PairSettings(max_sources=3)
    target, cond = true_pair(np.random.default_rng(4), 32, s)
    target2, cond2 = true_pair(np.random.default_rng(4), 32, s)
    np.testing.assert_array_equal(target.rgb, target2.rgb)  # a function of the generator
    np.testing.assert_array_equal(cond.rgb_mask, cond2.rgb_mask)
    assert 0.05 < cond.rgb_mask.mean() < 0.9  # part of the target is seen by the sources, part is not
    known = cond.depth_mask
    # known depth is the target's own (the sources show the same head)
    assert np.median(np.abs(cond.z[known] - target.z[known]) / target.z[known]) < 0.01
    # seen colours are the target's colours (up to resampling and view-dependent shading)
    assert np.median(np.abs(cond.rgb[cond.rgb_mask] - target.rgb[cond.rgb_mask])) < 0.06
    # the carried backdrop is the target's backdrop
    back = target.z >= target.camera.depth_range()[1] - 1e-4
    assert cond.backdrop is not None and np.abs(cond.backdrop[back] - target.rgb[back]).max() < 3 / 255


def test_examples_with_true_pairs_and_backdrop(zips: dict[str, Path]) -> None:
    data = ZipDataset(zips["train"], extras=True, xflip=True)
    plain = RGBDExamples(data, "cond", seed=3)
    same = RGBDExamples(data, "cond", seed=3, true_pairs=0.0, backdrop=False)
    for k in range(3):  # without the new options the examples are exactly what they were
        np.testing.assert_array_equal(plain.example(k, 5)["cond"], same.example(k, 5)["cond"])
    pairs = RGBDExamples(data, "cond", seed=3, true_pairs=1.0, backdrop=True)
    e = pairs.example(1, 5)
    assert e["cond"].shape == (9, RES, RES) and e["target"].shape == (4, RES, RES)
    np.testing.assert_array_equal(pairs.example(1, 5)["cond"], e["cond"])
    warps = RGBDExamples(data, "cond", seed=3, backdrop=True)
    filled = [warps.example(k, 5)["cond"][6:] for k in range(8)]
    assert any(np.abs(f).sum() > 0 for f in filled)  # the view's own backdrop, dropped now and then


def _opts(zips: dict[str, Path], out: Path, steps: int, **kw: object) -> DiffusionOptions:
    return DiffusionOptions(data=str(zips["train"]), out=str(out), kind="cond", preset="tiny", steps=steps, batch=4,
                            snap_every=2, warmup=1, threads=1, device="cpu", **kw)  # type: ignore[arg-type]


def test_a_backdrop_gc_starts_from_a_trained_gc_and_resumes(zips: dict[str, Path], tmp_path: Path) -> None:
    torch.manual_seed(0)
    old = UNet(PRESETS["tiny"].replace(kind="cond"))
    with torch.no_grad():
        for p in old.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    save_net(tmp_path / "old.safetensors", old)
    opts = _opts(zips, tmp_path / "run", 2, backdrop=True, true_pairs=0.5, init_from=str(tmp_path / "old.safetensors"))
    trainer = DiffusionTrainer(opts)
    assert trainer.net.cfg.in_channels == 13
    x, t = torch.randn(2, 10, RES, RES), torch.tensor([10, 500])
    wide = torch.cat([x, torch.randn(2, 3, RES, RES)], 1)
    with torch.no_grad():  # the new channels start at zero weight: the model starts as the old one
        torch.testing.assert_close(trainer.net(wide, t), old(x, t))
    trainer.train(progress=False)
    exported = load_net(tmp_path / "run" / "cond-latest.safetensors", expect="cond")
    assert exported.net.cfg.backdrop and exported.net.cfg.in_channels == 13
    with pytest.raises(Aware3DError, match="backdrop"):
        DiffusionTrainer(_opts(zips, tmp_path / "run", 4, true_pairs=0.5), resume=True)
    resumed = DiffusionTrainer(_opts(zips, tmp_path / "run", 4, backdrop=True, true_pairs=0.5), resume=True)
    assert resumed.step == 2


def test_generated_views_are_given_the_first_views_backdrop(zips: dict[str, Path]) -> None:
    torch.manual_seed(2)
    net = UNet(PRESETS["tiny"].replace(kind="cond", backdrop=True)).eval()
    models = ViewModels(net, steps=2)
    first = _test_view(zips, 0.0)
    seen: list[Condition] = []
    real_next = models.next_view

    def spy(cond: Condition, seed: int, progress: object = None) -> RGBDView:
        seen.append(cond)
        return real_next(cond, seed)

    models.next_view = spy  # type: ignore[method-assign]
    cams = [rgbd.orbit(y, 0, RES) for y in (0.0, 20.0, -20.0)]
    views = generate_views(models, cams, seed=1, first=first)
    assert len(views) == 3 and len(seen) == 2
    expected = fit_backdrop(first)
    assert expected is not None
    for cond in seen:
        assert cond.backdrop is not None
        np.testing.assert_allclose(cond.backdrop, expected.image(RES, RES))
    assert condition_for(views[:1], cams[1], None).backdrop is None


def test_eval_views_reports_backdrop_drift_and_uncond_fid(zips: dict[str, Path], tmp_path: Path) -> None:
    torch.manual_seed(3)
    paths = {}
    for kind, extra in (("cond", {"backdrop": True}), ("uncond", {})):
        net = UNet(PRESETS["tiny"].replace(kind=kind, **extra))
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        paths[kind] = tmp_path / f"{kind}.safetensors"
        save_net(paths[kind], net)
    out = tmp_path / "report.json"
    assert aware3d_train(["eval-views", "--test-data", str(zips["test"]), "--views-model", str(paths["cond"]),
                          "--first-model", str(paths["uncond"]), "--fid", "6", "--fid-data", str(zips["train"]),
                          "--heads", "1", "--steps", "2", "--fid-sheet", str(tmp_path / "g.png"),
                          "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["backdrop_delta_e"]["max"] >= 0
    assert report["uncond_fid"]["count"] == 6 and np.isfinite(report["uncond_fid"]["fid"])
    # the sheet shows the measured views: six 16 px samples in one row, depth below, not a blank image
    sheet = imageio.v3.imread(tmp_path / "g.png")
    assert sheet.shape == (2 * RES, 6 * RES, 3) and sheet[:RES].std() > 0
    assert report["uncond_fid"]["sheet"] == "g.png"


def test_fid_sheet_and_first_eta_need_fid(zips: dict[str, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    rc = aware3d_train(["eval-views", "--test-data", str(zips["test"]), "--fid-sheet", str(tmp_path / "g.png"),
                        "--out", str(tmp_path / "r.json")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--fid-sheet" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "g.png").exists()
    rc = aware3d_train(["eval-views", "--test-data", str(zips["test"]), "--first-eta", "1",
                        "--out", str(tmp_path / "r.json")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--first-eta" in err and "--fid N" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("argv, message", [
    (["--kind", "cond", "--true-pairs", "2"], "--true-pairs must be between 0 and 1"),
    (["--kind", "uncond", "--backdrop"], "for --kind cond"),
])
def test_pair_options_are_checked(zips: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  argv: list[str], message: str) -> None:
    rc = aware3d_train(["diffusion", "--data", str(zips["train"]), "--out", str(tmp_path / "r"), "--preset", "tiny",
                        *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and len(err.splitlines()) == 1


def test_eval_views_fid_needs_real_images(zips: dict[str, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    rc = aware3d_train(["eval-views", "--test-data", str(zips["test"]), "--fid", "4",
                        "--out", str(tmp_path / "r.json")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--fid-data" in err and len(err.splitlines()) == 1


def test_init_from_continues_a_gu_and_refuses_what_does_not_fit(zips: dict[str, Path], tmp_path: Path) -> None:
    torch.manual_seed(5)
    gu = UNet(PRESETS["tiny"].replace(kind="uncond"))
    save_net(tmp_path / "gu.safetensors", gu)
    trainer = DiffusionTrainer(replace(_opts(zips, tmp_path / "u", 1), kind="uncond",
                                       init_from=str(tmp_path / "gu.safetensors")))
    for a, b in zip(trainer.net.state_dict().values(), gu.state_dict().values()):
        torch.testing.assert_close(a, b)
    gc = UNet(PRESETS["tiny"].replace(kind="cond"))
    save_net(tmp_path / "gc.safetensors", gc)
    with pytest.raises(Aware3DError, match="cannot start"):  # a G_u cannot start from a G_c (more inputs)
        DiffusionTrainer(replace(_opts(zips, tmp_path / "v", 1), kind="uncond",
                                 init_from=str(tmp_path / "gc.safetensors")))


def test_sigterm_saves_a_snapshot_of_a_diffusion_run(zips: dict[str, Path], tmp_path: Path) -> None:
    """``kill`` on a running ``aware3d-train diffusion`` keeps the steps done since the last snapshot."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from train.gan.snapshot import list_snapshots

    run = tmp_path / "run"
    exe = str(Path(sys.executable).parent / "aware3d-train")
    proc = subprocess.Popen([exe, "diffusion", "--data", str(zips["train"]), "--kind", "cond", "--preset", "tiny",
                             "--out", str(run), "--steps", "100000", "--batch", "2", "--snap", "100000",
                             "--threads", "1", "--device", "cpu"], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    assert proc.stderr is not None
    for line in proc.stderr:  # the first progress line: step 10
        if line.startswith("step ") or time.time() > deadline:
            break
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted: snapshot saved at step" in err
    assert list_snapshots(run), "no snapshot on SIGTERM (the snapshot interval was never reached)"
    assert DiffusionTrainer(_opts(zips, run, 100000), resume=True).step >= 10


def test_aggregation_takes_a_surface_from_the_view_that_saw_it_not_from_a_copy(zips: dict[str, Path]) -> None:
    from backend.views.warp import aggregate

    first, side = _test_view(zips, 0.0), _test_view(zips, 30.0)
    target = _test_view(zips, 15.0).camera
    # a "generated" side view whose colours were copied from the first view: here visibly wrong copies
    wrong = RGBDView(np.clip(side.rgb + 0.3, 0, 1), side.z, side.camera)
    alone = aggregate([first], target)
    blended = aggregate([first, wrong], target)
    wrong.copied = np.ones(side.z.shape, bool)
    preferred = aggregate([first, wrong], target)
    both = alone.rgb_mask & preferred.rgb_mask
    assert both.sum() > 10

    def err(c: Condition) -> float:
        return float(np.abs(c.rgb[both] - alone.rgb[both]).mean())

    # the copy no longer overrides the original where both saw it (measured 0.027 against 0.084: what is left
    # is where the first view saw the surface far more obliquely than the side view, by design)
    assert err(preferred) < 0.4 * err(blended)
    np.testing.assert_array_equal(preferred.depth_mask, blended.depth_mask)  # only the weights changed


def test_aggregation_prefers_any_observation_to_an_invention(zips: dict[str, Path]) -> None:
    from backend.views.warp import aggregate

    first, side = _test_view(zips, 0.0), _test_view(zips, 30.0)
    target = _test_view(zips, 30.0).camera
    # a "generated" side view that invented every colour (nothing copied): here visibly wrong guesses
    guess = RGBDView(np.clip(side.rgb + 0.3, 0, 1), side.z, side.camera, copied=np.zeros(side.z.shape, bool))
    alone = aggregate([first], target)
    mixed = aggregate([first, guess], target)
    seen = alone.rgb_mask & mixed.rgb_mask
    assert seen.sum() > 10
    as_original = aggregate([first, RGBDView(guess.rgb, guess.z, guess.camera)], target)

    def err(c: Condition) -> float:
        return float(np.abs(c.rgb[seen] - alone.rgb[seen]).mean())

    # where the first view saw the surface - even 30 degrees more obliquely than the side view - it wins
    # (measured 0.013 against 0.067; what is left: sub-pixels at the first view's edges only the guess covers)
    assert err(mixed) < 0.3 * err(as_original)
    # alone, a guess is still a whole condition (the factor only ranks it below observations)
    lone, lone_original = aggregate([guess], target), aggregate([RGBDView(guess.rgb, guess.z, guess.camera)], target)
    np.testing.assert_allclose(lone.rgb, lone_original.rgb, atol=1e-5)
    np.testing.assert_array_equal(lone.rgb_mask, lone_original.rgb_mask)


def test_sampling_paints_the_carried_backdrop_where_the_view_is_backdrop() -> None:
    from backend.views.generate import refine_hook

    colour = np.zeros((RES, RES, 3), np.float32)
    colour[..., 2] = 1.0  # blue backdrop
    cond = _condition(colour)
    x0 = torch.zeros(1, 4, RES, RES)
    x0[:, 3, :, : RES // 2] = 1.0  # left half: backdrop (far plane); right half: a surface
    out = refine_hook(cond, "cpu", 1.0, 1.0)(x0, 10, False)
    np.testing.assert_allclose(out[0, :3, :, : RES // 2].numpy(), np.array([-1.0, -1.0, 1.0])[:, None, None]
                               * np.ones((1, RES, RES // 2)), atol=1e-5)
    np.testing.assert_array_equal(out[0, :3, :, RES // 2:].numpy(), 0.0)  # a surface keeps its colour
    plain = refine_hook(_condition(None), "cpu", 1.0, 1.0)(x0, 10, False)
    np.testing.assert_array_equal(plain[0, :3].numpy(), 0.0)  # no backdrop carried: nothing painted
    off = refine_hook(cond, "cpu", 1.0, 1.0, backdrop_pull=0.0)(x0, 10, False)
    np.testing.assert_array_equal(off[0, :3].numpy(), 0.0)
