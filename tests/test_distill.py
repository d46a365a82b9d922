"""Distillation training (aware3d-train distill) on CPU: losses against the truth, resume, DDP, the CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from backend.cameras import label_tensor, orbit_camera
from backend.checkpoints.model_file import read_header
from backend.config import RenderingConfig
from backend.registry import load_generator
from backend.render.renderer import ray_march
from train.distill.loop import DistillTrainer, init_from_model
from train.distill.losses import surface_samples, true_occupancy, truth_at, visible_surface
from train.distill.options import PRESETS
from train.distill.targets import RenderedTargets, ZipTargets
from train.gan.snapshot import list_snapshots, load_training_state, save_training_state, stored_options

ROOT = Path(__file__).resolve().parents[1]


def tiny(**changes):  # type: ignore[no-untyped-def]
    settings = {"truth_resolution": 32, "image_kimg": 0, "log_kimg": 1, **changes}
    return dataclasses.replace(PRESETS["tiny"], **settings)


def test_rendered_targets_are_a_function_of_the_step_and_split_across_processes() -> None:
    src = RenderedTargets(res=16, z_dim=67, seed=3, around=0.5)
    a, b = src.batch(5, 4), src.batch(5, 4)
    assert torch.equal(a.image, b.image) and torch.equal(a.z, b.z)
    assert not torch.equal(src.batch(6, 4).z, a.z)
    halves = [src.batch(5, 4, rank=r, world=2) for r in (0, 1)]
    assert torch.equal(torch.cat([h.z for h in halves]), a.z)
    assert torch.equal(torch.cat([h.image for h in halves]), a.image)
    assert a.image.shape == (4, 3, 16, 16) and float(a.image.min()) >= -1 and float(a.image.max()) <= 1


def test_fixed_heads_show_the_same_heads_from_new_cameras() -> None:
    src = RenderedTargets(res=16, z_dim=67, seed=3, fixed_heads=3, balance=0.5)
    heads = {tuple(z.tolist()) for k in range(6) for z in src.batch(k, 4).z}
    assert len(heads) == 3  # only the three fixed heads, however many steps
    assert {tuple(z.tolist()) for z in src.fixed.astype(np.float32)} == heads
    assert not torch.equal(src.batch(0, 4).c, src.batch(1, 4).c)  # new cameras every step
    halves = [src.batch(5, 4, rank=r, world=2) for r in (0, 1)]
    assert torch.equal(torch.cat([h.z for h in halves]), src.batch(5, 4).z)


def test_an_overfitting_run_logs_how_well_it_fits_its_heads(tmp_path: Path) -> None:
    trainer = DistillTrainer(tiny(kimg=0.004, snap_kimg=0.004, fixed_heads=2, truth_resolution=None), tmp_path,
                             command=["test"])
    trainer.run()
    fits = [r["fit/head_psnr"] for r in map(json.loads, (tmp_path / "log.jsonl").read_text().splitlines())
            if "fit/head_psnr" in r]
    assert len(fits) == 2 and all(5 < f < 60 for f in fits)  # before the first step and at the snapshot
    with pytest.raises(ValueError, match="leave out --data"):
        DistillTrainer(tiny(fixed_heads=2), tmp_path / "x", source=OneBatch(), log=False)


def test_rendering_every_pixel_as_rays_gives_the_whole_image_losses() -> None:
    from backend.render.renderer import SamplingSettings

    whole = DistillTrainer(tiny(config="tiny-distilled-direct", perceptual=0.0), "/nonexistent-run", log=False)
    rays = DistillTrainer(tiny(config="tiny-distilled-direct", perceptual=0.0, rays=32 * 32), "/nonexistent-run",
                          log=False)
    rays.G.load_state_dict(whole.G.state_dict())
    t = RenderedTargets(res=32, z_dim=67, seed=1).batch(0, 2)
    exact = SamplingSettings(exact=True)  # no jitter: a ray's samples do not depend on its place in the batch
    a = whole.losses(whole.G, t, exact, whole._item_rngs(2))
    b = rays.losses(rays.G, t, exact, rays._item_rngs(2))
    for term in ("image_l1", "raw_l1", "alpha_l1", "depth_l1"):  # the same pixels, in another order
        assert float(b[term].detach()) == pytest.approx(float(a[term].detach()), rel=1e-4, abs=1e-6), term
    some = DistillTrainer(tiny(config="tiny-distilled-direct", rays=100, kimg=0.004), "/nonexistent-run", log=False)
    stats = some.train_step()
    assert all(np.isfinite(v) for v in stats.values()) and "loss/perceptual" not in stats
    with pytest.raises(ValueError, match="renders its image directly"):
        DistillTrainer(tiny(rays=100), "/nonexistent-run", log=False)  # tiny-distilled super-resolves
    with pytest.raises(ValueError, match="more than the 1024 pixels"):
        DistillTrainer(tiny(config="tiny-distilled-direct", rays=2000), "/nonexistent-run", log=False)


def test_balancing_trains_rare_choices_more_often_and_leaves_the_rest_alone() -> None:
    from train.distill.targets import balance_discrete
    from train.synthetic.latent import INDEX, head_from_latent, latent_bins

    z = np.random.default_rng(0).standard_normal((3000, 67))
    balanced = balance_discrete(np.random.default_rng(1), z, 0.3)
    discrete = [i for i, _ in latent_bins()]
    rest = [i for i in range(67) if i not in discrete]
    assert np.array_equal(balanced[:, rest], z[:, rest])
    changed = (balanced[:, INDEX["hat"]] != z[:, INDEX["hat"]]).mean()
    assert 0.25 < changed < 0.35

    def share(latents: np.ndarray, test) -> float:  # type: ignore[no-untyped-def]
        return float(np.mean([test(head_from_latent(row)) for row in latents]))

    for test in (lambda h: h.hat != "none", lambda h: h.beard == "full", lambda h: h.glasses != "none"):
        assert share(balanced, test) > 1.5 * share(z, test)
    assert balance_discrete(np.random.default_rng(1), z, 0.0) is z
    # The option reaches the rendered targets; the cameras do not depend on it.
    a = RenderedTargets(res=16, z_dim=67, seed=3).batch(4, 8)
    b = RenderedTargets(res=16, z_dim=67, seed=3, balance=1.0).batch(4, 8)
    assert torch.equal(a.c, b.c) and not torch.equal(a.z, b.z)


def test_prefetching_in_a_worker_process_gives_the_same_batches() -> None:
    from train.distill.targets import Prefetching

    src = RenderedTargets(res=16, z_dim=67, seed=3)
    pre = Prefetching(src, workers=1, ahead=2)
    try:
        for k in (0, 1, 2, 5):  # in order, then a jump (a resume)
            a, b = pre.batch(k, 2), src.batch(k, 2)
            assert torch.equal(a.image, b.image) and torch.equal(a.z, b.z) and torch.equal(a.depth, b.depth)
    finally:
        pre.close()


def test_truth_at_the_neural_resolution() -> None:
    depth = torch.full((1, 4, 4), float("inf"))
    depth[0, :2, :2] = 2.5  # one whole low-res pixel of head
    depth[0, 2, 2] = 3.0    # a quarter of another
    image = torch.zeros(1, 3, 4, 4)
    image[:, :, 0, 0] = 1.0
    low = truth_at(image, depth, 2)
    assert low["coverage"][0, 0].tolist() == [[1.0, 0.0], [0.0, 0.25]]
    assert low["depth_valid"][0, 0].tolist() == [[True, False], [False, False]]
    assert float(low["depth"][0, 0, 0, 0]) == pytest.approx(2.5)
    assert float(low["image"][0, 0, 0, 0]) == pytest.approx(0.25)


def test_surface_samples_lie_on_the_true_surface() -> None:
    t = RenderedTargets(res=32, z_dim=67, seed=0).batch(0, 2)
    pts = surface_samples(t.c, t.depth, 200, [np.random.default_rng(i) for i in range(2)], spread=0.0)
    occ, sdf = true_occupancy(t.heads, pts, 0.004)
    assert float(sdf[:, :100].abs().max()) < 0.01  # rays hit the surface the tracer found
    assert float(pts[:, 100:].abs().max()) <= 0.5  # the rest are in the tri-plane box
    assert occ.shape == (2, 200)


def test_visible_surface_points_carry_the_colour_seen_there() -> None:
    from backend import cameras

    t = RenderedTargets(res=32, z_dim=67, seed=2).batch(0, 2)
    pts, colour, seen = visible_surface(t.c, t.depth, t.image, 50, [np.random.default_rng(i) for i in range(2)])
    assert seen.all()
    _, sdf = true_occupancy(t.heads, pts, 0.004)
    assert float(sdf.abs().max()) < 0.01
    for i in range(2):  # each point projects into a pixel whose colour it carries
        c2w, k = cameras.split_label(t.c[i].numpy())
        xy, _ = cameras.project_points(pts[i].double().numpy(), c2w, k, 32, 32)
        cols = np.clip(np.floor(xy[:, 0]).astype(int), 0, 31)
        rows = np.clip(np.floor(xy[:, 1]).astype(int), 0, 31)
        assert torch.allclose(colour[i], t.image[i][:, rows, cols].T)


def test_depth_of_an_empty_ray_has_a_finite_gradient() -> None:
    """The official 0/0 gave NaN gradients that a masked depth loss cannot remove (distill_notes.md)."""
    depths = torch.linspace(2.25, 3.3, 6).reshape(1, 1, 6, 1).repeat(1, 2, 1, 1)
    sigma = torch.full((1, 2, 6, 1), -1e4)
    sigma[0, 0] = 20.0
    sigma.requires_grad_(True)
    _, depth, _ = ray_march(torch.rand(1, 2, 6, 3), sigma, depths, RenderingConfig())
    assert float(depth[0, 1].detach()) == pytest.approx(3.3)  # the empty ray: far plane, as the official code gives
    (depth * torch.tensor([1.0, 0.0]).reshape(1, 2, 1)).sum().backward()
    assert torch.isfinite(sigma.grad).all()


class OneBatch:
    """The same two heads every step: the losses on them must fall."""

    def __init__(self) -> None:
        self.inner = RenderedTargets(res=32, z_dim=67, seed=1)

    def batch(self, index: int, size: int, rank: int = 0, world: int = 1):  # type: ignore[no-untyped-def]
        return self.inner.batch(0, size, rank, world)


def test_tiny_run_fits_its_targets_and_exports_a_model(tmp_path: Path) -> None:
    # density_scale 5: the term's logits move 4x faster than with the default's 20, so 20 steps show it fall.
    opts = tiny(kimg=0.040, snap_kimg=0.020, log_kimg=0.002, lr=0.02, grad_clip=0.0, density_scale=5.0)
    trainer = DistillTrainer(opts, tmp_path, source=OneBatch(), command=["test"])
    trainer.run()
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(v) for r in records for k, v in r.items() if k.startswith("loss/"))
    assert {"loss/image_l1", "loss/raw_l1", "loss/alpha_l1", "loss/depth_l1", "loss/density",
            "loss/colour_l1"} <= set(records[0])
    # Same heads every step (the density's 3D points are drawn afresh each step, so its loss is noisier).
    for term, bound in (("loss/total", 0.8), ("loss/raw_l1", 0.8), ("loss/alpha_l1", 0.8), ("loss/density", 0.9)):
        assert records[-1][term] < bound * records[0][term], term
    assert len(list_snapshots(tmp_path)) == 2
    header = read_header(tmp_path / "latest.safetensors")
    assert header.kind == "gan" and header.provenance["source"] == "aware3d-train distill"
    model = load_generator(str(tmp_path / "latest.safetensors"))
    assert model.generator.cfg.name == "tiny-distilled" and not model.generator.cfg.normalize_z


def test_resume_continues_exactly(tmp_path: Path) -> None:
    opts = tiny(kimg=0.012, snap_kimg=0.004)
    straight = DistillTrainer(opts, tmp_path / "a", log=False)
    straight.run()
    first = DistillTrainer(opts, tmp_path / "b", log=False)
    first.run(stop_after_iterations=3)  # the snapshot after 2 steps survives
    resumed = DistillTrainer(opts, tmp_path / "b", log=False)
    assert resumed.resume() and resumed.progress.iteration == 2
    resumed.run()
    assert resumed.progress.nimg == straight.progress.nimg
    for k, v in straight.G_ema.state_dict().items():
        assert torch.equal(v, resumed.G_ema.state_dict()[k]), k


def test_a_snapshot_restores_the_optimiser_moments_and_keeps_the_rates_it_is_given(tmp_path: Path) -> None:
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    save_training_state(tmp_path / "s.safetensors", {"net": net}, {"net": opt}, {"options": {"lr": 0.1}})
    again = torch.nn.Linear(3, 2)
    opt2 = torch.optim.Adam(again.parameters(), lr=0.01)  # the user asked for another rate on resume
    load_training_state(tmp_path / "s.safetensors", {"net": again}, {"net": opt2})
    assert opt2.param_groups[0]["lr"] == 0.01
    for p, q in zip(net.parameters(), again.parameters()):
        assert torch.equal(opt.state[p]["exp_avg"], opt2.state[q]["exp_avg"])


def test_a_model_without_bin_features_initialises_one_with_them_to_the_same_function() -> None:
    from backend.generator import TriPlaneGenerator

    cfg = PRESETS["tiny"].config
    with_bins = DistillTrainer(tiny(), "/nonexistent-run", log=False).G
    without = TriPlaneGenerator(with_bins.cfg.replace(z_bins=()), seed=5)
    assert with_bins.cfg.name == cfg and with_bins.cfg.z_bins
    skipped = init_from_model(with_bins, without.state_dict(), without.cfg.to_dict())
    assert skipped == []
    z, c = torch.randn(6, 67), torch.zeros(6, 25)
    assert torch.allclose(with_bins.mapping(z, c), without.mapping(z, c), atol=1e-5)
    # Without the source's config the first layer cannot be placed: it is built fresh, and said so.
    assert init_from_model(with_bins, without.state_dict()) == ["backbone.mapping.fc0.weight"]


def test_wider_blocks_more_plane_channels_and_a_finer_plane_start_from_the_source_function() -> None:
    from backend.generator import TriPlaneGenerator

    source = TriPlaneGenerator(DistillTrainer(tiny(), "/nonexistent-run", log=False).cfg, seed=4).eval()
    # Tiny has 8 channels a plane at 32² from blocks of 32 (16 at 32²): 16 channels a plane at 64² from blocks of
    # twice the width add a block and widen every convolution, style, ToRGB and the decoder.
    wider = TriPlaneGenerator(source.cfg.replace(triplane_channels=48, triplane_resolution=64, channel_base=1024,
                                                 channel_max=64), seed=5).eval()
    assert wider.backbone.synthesis.b32.conv1.weight.shape[0] == 2 * source.backbone.synthesis.b32.conv1.weight.shape[0]
    skipped = init_from_model(wider, source.state_dict(), source.cfg.to_dict())
    assert skipped and all(name.startswith("backbone.synthesis.b64.") for name in skipped)
    assert float(wider.backbone.synthesis.b64.torgb.weight.detach().abs().max()) == 0  # the new block adds nothing yet
    z, c = torch.randn(2, 67), label_tensor(np.stack([orbit_camera(0.0, 0.0), orbit_camera(30.0, 10.0)]))
    with torch.no_grad():
        renders = [G.render(G.synthesize_planes(G.mapping(z, c)), G.mapping(z, c), c, run_sr=False)["image"]
                   for G in (source, wider)]
        mse = float(((renders[0] - renders[1]) ** 2).mean())
    assert 10 * np.log10(4 / mse) > 35  # the same heads, up to the finer planes' up-sampling
    with torch.no_grad():
        planes = wider.synthesize_planes(wider.mapping(z, c))[0]
    assert planes.shape[2] == 16 and float(planes[:, :, 8:].abs().mean()) > 0  # new channels carry features


def test_init_from_copies_what_fits() -> None:
    trainer = DistillTrainer(tiny(), "/nonexistent-run", log=False)
    other = {k: torch.full_like(v, 0.5) for k, v in trainer.G.state_dict().items()}
    other["backbone.mapping.fc0.weight"] = torch.zeros(3, 3)  # a GAN's z of another size
    skipped = init_from_model(trainer.G, other)
    assert skipped == ["backbone.mapping.fc0.weight"]
    assert float(trainer.G.state_dict()["decoder.net.0.weight"].mean()) == 0.5


def test_zip_targets_use_the_latents_of_the_data_set(tmp_path: Path) -> None:
    from train.synthetic import build_dataset
    from train.synthetic.latent import head_from_latent

    build_dataset(out=tmp_path / "d.zip", count=3, res=16, seed=2, progress=False)
    src = ZipTargets(tmp_path / "d.zip", z_dim=67)
    t = src.batch(0, 2)
    for z, head in zip(t.z, t.heads):
        again = head_from_latent(z.double().numpy())
        assert again.hair_style == head.hair_style and again.glasses == head.glasses
        assert again.face_width == pytest.approx(head.face_width, abs=1e-4)
    assert torch.isfinite(t.depth).any() and t.image.shape == (2, 3, 16, 16)


def test_cli_runs_resumes_and_refuses_bad_input(tmp_path: Path) -> None:
    exe = str(Path(sys.executable).parent / "aware3d-train")
    base = [exe, "distill", "--preset", "tiny", "--threads", "1", "--device", "cpu", "--perceptual", "0"]
    run = subprocess.run([*base, "--out", str(tmp_path / "r"), "--kimg", "0.004"], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "r" / "latest.safetensors").is_file() and list_snapshots(tmp_path / "r")
    again = subprocess.run([*base, "--out", str(tmp_path / "r"), "--kimg", "0.004"], capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 2 and "--resume" in again.stderr and "Traceback" not in again.stderr
    more = subprocess.run([*base, "--out", str(tmp_path / "r"), "--kimg", "0.008", "--resume", "--lr", "0.001"],
                          capture_output=True, text=True, timeout=300)
    assert more.returncode == 0 and "resumed" in more.stderr
    assert "lr 0.002 -> 0.001" in more.stderr and "kimg 0.004 -> 0.008" in more.stderr
    # A resume without flags keeps the run's recipe (here its lr and --perceptual 0), not the preset's.
    plain = subprocess.run([exe, "distill", "--preset", "tiny", "--threads", "1", "--device", "cpu", "--out",
                            str(tmp_path / "r"), "--resume"], capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0 and "changed options" not in plain.stderr, plain.stderr
    stored = stored_options(tmp_path / "r")
    assert stored is not None and stored["lr"] == 0.001 and stored["perceptual"] == 0 and stored["kimg"] == 0.008
    bad = subprocess.run([*base, "--out", str(tmp_path / "x"), "--around", "2"], capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--around" in bad.stderr
    missing = subprocess.run([*base, "--out", str(tmp_path / "y"), "--data", str(tmp_path / "none.zip")],
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "not found" in missing.stderr


@pytest.mark.slow
def test_two_process_gloo_ddp_matches_one_process(tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun is not None, "torchrun is installed with torch"
    worker = ROOT / "tests" / "support" / "distill_ddp_worker.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    subprocess.run([sys.executable, str(worker), str(one), "1"], check=True, env=env, timeout=600)
    subprocess.run([torchrun, "--nproc-per-node", "2", "--master-port", "29519", str(worker), str(two), "1"],
                   check=True, env=env, timeout=600)
    a, b = load_file(str(one)), load_file(str(two))
    # One Adam step moves each parameter by up to its learning rate (the mapping network's is mapping_lr_mul
    # times larger). Rounding differences of the averaged gradient change that step only for parameters whose
    # gradient is near Adam's eps (a few mapping biases, whose gradients the 0.01 lr multiplier shrinks); a
    # missing average or a different batch would move most parameters by whole steps.
    opts = PRESETS["tiny"]
    total, count = 0.0, 0
    for k in a:
        step = opts.lr * (opts.mapping_lr_mul if k.startswith("backbone.mapping.") else 1.0)
        diff = (a[k] - b[k]).abs() / step
        assert float(diff.max()) < 0.5, f"{k}: 1 and 2 processes differ by {float(diff.max()):.3f} steps"
        total, count = total + float(diff.sum()), count + diff.numel()
    assert total / count < 0.01, f"1 and 2 processes differ by {total / count:.4f} steps on average"


def test_amp_trains_with_finite_losses(tmp_path: Path) -> None:
    trainer = DistillTrainer(tiny(kimg=0.004, snap_kimg=1, amp=True), tmp_path, log=False)
    stats = trainer.train_step()
    stats.update(trainer.train_step())
    assert all(np.isfinite(v) for v in stats.values())
    assert all(torch.isfinite(p).all() for p in trainer.G.parameters())


def test_directions_of_a_distilled_model_come_from_the_true_parameters() -> None:
    """No feature network: each sample's z is its head, so glasses, hat ... are read from z exactly."""
    from train.directions import learn_directions, true_scores
    from train.synthetic.latent import INDEX

    z = np.zeros((2, 67))
    z[1, INDEX["glasses"]] = 3.0  # far in the tail: sunglasses
    assert true_scores(z)["glasses"].tolist() == [0.0, 1.0]
    ds, _ = learn_directions("random:tiny-distilled:3", None, samples=1000, truncation=1.0)
    assert {"glasses", "hat", "beard", "face_width", "skin_tone"} <= set(ds.names())
    assert ds.provenance["features"].startswith("none") and ds.provenance["method"] == "mean_shift"
    # w is a fixed random function of z here (32-d), so the mean shift of a z-coordinate finds some signal
    # (held-out correlation 0.33 over 200 samples; chance alone gives ~0.07).
    assert ds.directions["skin_tone"].quality["test_corr"] > 0.2


def test_true_parameter_directions_follow_how_w_moves_not_what_predicts_it() -> None:
    """A yes/no attribute shifts w along one axis while W's spread is very uneven: the ridge read-out leans on
    W's quiet directions, the mean shift is the class difference itself, and ``amount`` stays in standard
    deviations of the attribute (one full switch = 1 / sd)."""
    from train.directions import fit_direction, fit_mean_shift

    rng = np.random.RandomState(1)
    y = (rng.rand(4000) < 0.25).astype(float)
    shift = np.array([2.0, 1.0, 0.0, 0.0])
    w = y[:, None] * shift + rng.randn(4000, 4) * np.array([3.0, 0.1, 1.0, 1.0])
    unit, step, q = fit_mean_shift(w, y)
    assert float(unit @ shift / np.linalg.norm(shift)) > 0.99
    assert step == pytest.approx(np.linalg.norm(shift) * y.std(), rel=0.05)
    assert q["test_corr"] > 0.3
    ridge_unit, _, _ = fit_direction(w, y)
    assert float(ridge_unit @ shift / np.linalg.norm(shift)) < 0.9  # the read-out is not the change
    off = w[y == 0].mean(0)  # moved by one full switch, the mean head without becomes the mean head with it
    assert off + unit * step / y.std() == pytest.approx(w[y == 1].mean(0), abs=0.15)


def test_sigterm_saves_a_snapshot_and_the_run_resumes_from_it(tmp_path: Path) -> None:
    """``kill`` on a running ``aware3d-train distill`` (its render worker included) keeps the work done."""
    import signal
    import time

    run = tmp_path / "run"
    log = run / "log.jsonl"
    exe = str(Path(sys.executable).parent / "aware3d-train")
    proc = subprocess.Popen([exe, "distill", "--preset", "tiny", "--out", str(run), "--kimg", "10", "--snap", "5",
                             "--threads", "1", "--perceptual", "0"], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not (log.is_file() and log.read_text().strip()):
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted: snapshot saved at" in err
    snaps = list_snapshots(run)
    assert snaps, "no snapshot on SIGTERM (the first interval of 5 kimg was never reached)"
    resumed = DistillTrainer(tiny(kimg=10), run, log=False)
    assert resumed.resume() and resumed.progress.iteration >= 1
