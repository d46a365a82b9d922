"""The feed-forward photo encoder (backend/invert/encoder.py), its trainer (aware3d-train encoder), its examples
(train/encoder/data.py) and its held-out check (aware3d-train encoder-check)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.checkpoints.model_file import read_header
from backend.config import HEAD_LATENT_DIMS, takes_head_latents
from backend.configs import get_config
from backend.errors import Aware3DError
from backend.invert.avatar import base_identity
from backend.invert.encoder import (
    EncoderConfig,
    PhotoEncoder,
    check_belongs,
    encode,
    load_encoder,
    save_encoder,
)
from backend.registry import load_generator
from train.encoder.data import (
    IGNORE,
    MIRROR_NEGATE,
    Augmentation,
    Augmented,
    Examples,
    MixedExamples,
    ZipExamples,
    choice_targets,
    encoder_choices,
    identifiable_latents,
    mirror_latents,
)
from train.encoder.loop import EncoderOptions, EncoderTrainer, HeadExamples
from train.synthetic.latent import (
    INDEX,
    LATENT_DIMS,
    NAMES,
    UNUSED_WHEN,
    choice_of,
    head_from_latent,
    lighting_from_latent,
)

EXE = str(Path(sys.executable).parent / "aware3d-train")


@pytest.fixture(scope="module")
def heads_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny make-dataset zip at the tiny models' 64² (6 training heads) and its test split (1 head, 27 views)."""
    from train.synthetic.writer import build_dataset

    out = tmp_path_factory.mktemp("heads") / "h.zip"
    build_dataset(out, count=6, res=64, seed=3, test_heads=1, workers=1, progress=False)
    return out


def _distilled():  # type: ignore[no-untyped-def]
    return load_generator("random:tiny-distilled:2").generator


class OneBatch:
    def __init__(self, res: int) -> None:
        self.inner = HeadExamples(res, seed=0)
        self.cached = None

    def batch(self, index: int, size: int, rank: int = 0, world: int = 1):  # type: ignore[no-untyped-def]
        if self.cached is None:  # half the heads and their mirror images (what mirror averaging expects)
            ex = self.inner.batch(0, size // 2, rank, world)
            self.cached = Examples(torch.cat([ex.images, ex.images.flip(-1)]),
                                   torch.cat([ex.latents, mirror_latents(ex.latents)]),
                                   torch.cat([ex.pose, ex.pose * torch.tensor([-1.0, 1.0])]))
        return self.cached


def test_examples_of_a_distilled_model_are_heads_with_their_latent_and_camera() -> None:
    ex = HeadExamples(32, seed=1).batch(3, 4)
    assert ex.images.shape == (4, 3, 32, 32) and ex.latents.shape == (4, 67) and ex.pose.shape == (4, 2)
    again = HeadExamples(32, seed=1).batch(3, 4, rank=1, world=2)
    assert torch.equal(again.latents, ex.latents[2:]) and torch.equal(again.images, ex.images[2:])
    assert float(ex.pose[:, 0].abs().max()) <= 60 and float(ex.pose[:, 1].abs().max()) <= 25


def test_training_fits_latents_and_poses(tmp_path: Path) -> None:
    G = _distilled()
    trainer = EncoderTrainer(EncoderOptions(steps=40, batch=8, lr=3e-3, snap_steps=1000, log_steps=1000), G,
                             {"name": "tiny"}, tmp_path, log=False)
    trainer.source = OneBatch(G.cfg.img_resolution)
    first = trainer.loss(trainer.source.batch(0, 8))
    trainer.run()
    last = trainer.loss(trainer.source.batch(0, 8))
    assert float(last["latent_mse"].detach()) < 0.5 * float(first["latent_mse"].detach())
    assert float(last["pose_l1"].detach()) < 0.5 * float(first["pose_l1"].detach())
    assert float(last["choice_ce"].detach()) < 0.5 * float(first["choice_ce"].detach())
    # the choices it was shown come back as the same heads' choices
    with torch.no_grad():
        lat, _ = trainer.encoder.eval()(trainer.source.cached.images)
    for got, want in zip(lat.numpy(), trainer.source.cached.latents.numpy()):
        a, b = head_from_latent(got), head_from_latent(want)
        assert (a.hair_style, a.hair_colour, a.glasses, a.hat) == (b.hair_style, b.hair_colour, b.glasses, b.hat)


def test_resume_is_exact(tmp_path: Path) -> None:
    G = _distilled()
    opts = EncoderOptions(steps=6, batch=4, snap_steps=2, log_steps=100)
    straight = EncoderTrainer(opts, G, {}, tmp_path / "a", log=False)
    straight.run()
    first = EncoderTrainer(opts, G, {}, tmp_path / "b", log=False)
    first.run(stop_after=3)
    resumed = EncoderTrainer(opts, G, {}, tmp_path / "b", log=False)
    assert resumed.resume() and resumed.step == 2
    resumed.run()
    for k, v in straight.encoder.state_dict().items():
        assert torch.equal(v, resumed.encoder.state_dict()[k]), k


def test_a_gan_encoder_predicts_standardised_w(tmp_path: Path) -> None:
    G = load_generator("random:tiny:4").generator
    trainer = EncoderTrainer(EncoderOptions(steps=2, batch=4, log_steps=100, snap_steps=100), G, {}, tmp_path,
                             log=False)
    assert trainer.encoder.cfg.target == "w" and trainer.encoder.cfg.latent_dim == G.cfg.w_dim
    assert float(trainer.encoder.latent_std.min()) > 0 and float(trainer.encoder.latent_mean.abs().sum()) > 0
    trainer.run()
    ws, yaw, pitch = encode(trainer.encoder.eval(), G, torch.zeros(1, 3, 64, 64))
    assert ws.shape == (1, G.num_ws, G.cfg.w_dim) and isinstance(yaw, float) and isinstance(pitch, float)


def test_file_round_trip_and_the_generator_it_belongs_to(tmp_path: Path) -> None:
    cfg = EncoderConfig(latent_dim=67, resolution=32, channels=(8, 16), embedding=32,
                        generator={"name": "m", "state_sha256": "abc"})
    enc = PhotoEncoder(cfg)
    path = save_encoder(tmp_path / "e.safetensors", enc, {"source": "test"})
    back = load_encoder(path)
    assert back.cfg == dataclasses.replace(cfg)
    x = torch.rand(2, 3, 48, 48) * 2 - 1  # resized to the encoder's input
    assert torch.allclose(back(x)[0], enc.eval()(x)[0])
    check_belongs(back, {"name": "m", "state_sha256": "abc"})
    with pytest.raises(Aware3DError, match="trained for m"):
        check_belongs(back, {"name": "other", "state_sha256": "def"})
    G = _distilled()
    from backend.checkpoints.model_file import save_model

    save_model(tmp_path / "g.safetensors", G.state_dict(), kind="gan", config=G.cfg.to_dict())
    with pytest.raises(Aware3DError, match="not a photo encoder"):
        load_encoder(tmp_path / "g.safetensors")


def test_cli_trains_exports_and_refuses_a_used_folder(tmp_path: Path) -> None:
    exe = str(Path(sys.executable).parent / "aware3d-train")
    base = [exe, "encoder", "--model", "random:tiny-distilled:2", "--out", str(tmp_path / "r"), "--threads", "1",
            "--device", "cpu", "--batch", "4", "--render-workers", "0"]
    run = subprocess.run([*base, "--steps", "2", "--export", str(tmp_path / "e.safetensors")], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    enc = load_encoder(tmp_path / "e.safetensors")
    assert enc.cfg.target == "z" and enc.cfg.generator["config"] == "tiny-distilled"
    again = subprocess.run([*base, "--steps", "2"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "--resume" in again.stderr and "Traceback" not in again.stderr
    bad = subprocess.run([*base, "--steps", "0", "--resume"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--steps must be positive" in bad.stderr


def test_aware3d_models_describes_an_encoder() -> None:
    from backend.registry import describe_config

    cfg = EncoderConfig(generator={"name": "aware3d-heads"}).to_dict()
    assert describe_config("encoder", cfg) == ("encoder for aware3d-heads (z)", 64)


# --------------------------------------------------------------------------------------------------------
# Which generators an encoder fits
# --------------------------------------------------------------------------------------------------------


def test_the_backend_knows_which_configs_take_head_latents() -> None:
    from train.synthetic import latent

    assert HEAD_LATENT_DIMS == LATENT_DIMS and latent.takes_head_latents is takes_head_latents
    for name in ("aware3d-heads64-distilled", "tiny-distilled"):
        assert takes_head_latents(get_config(name)) and takes_head_latents(get_config(name).to_dict())
    for name in ("aware3d-heads64", "tiny", "eg3d-ffhq512-128", "mimic3d-ffhq512-3d"):
        assert not takes_head_latents(get_config(name))
    roomy = get_config("tiny-distilled").replace(z_dim=80)
    assert takes_head_latents(roomy) and not takes_head_latents(roomy.replace(normalize_z=True))
    assert not takes_head_latents(get_config("tiny-distilled").replace(z_dim=LATENT_DIMS - 1))


def _heads_encoder(seed: int = 0) -> PhotoEncoder:
    torch.manual_seed(seed)
    return PhotoEncoder(EncoderConfig(resolution=32, channels=(8, 16), embedding=16, trained_on="heads",
                                      generator={"name": "models that take head latents",
                                                 "config": "tiny-distilled"}, mirror_negate=MIRROR_NEGATE,
                                      mirror_average=True))


def test_a_heads_encoder_fits_every_distilled_snapshot_and_no_gan(tmp_path: Path) -> None:
    enc = load_encoder(save_encoder(tmp_path / "e.safetensors", _heads_encoder(), {}))
    a, b = load_generator("random:tiny-distilled:2"), load_generator("random:tiny-distilled:3")
    assert base_identity(a)["state_sha256"] != base_identity(b)["state_sha256"]
    for model in (a, b):  # identity dicts, loaded models, generator modules: all accepted
        check_belongs(enc, base_identity(model))
        check_belongs(enc, model)
        check_belongs(enc, model.generator)
    roomy = get_config("tiny-distilled").replace(name="my-distilled", z_dim=80)
    check_belongs(enc, {"name": "mine", "config": roomy.to_dict()})
    check_belongs(enc, {"name": "mine", "config": "my-distilled"}, cfg=roomy)
    gan = load_generator("random:tiny:4")
    for given in (base_identity(gan), gan, gan.generator):
        with pytest.raises(Aware3DError, match="is a GAN whose z is not one") as err:
            check_belongs(enc, given)
        assert "\n" not in str(err.value) and "aware3d-train encoder --model" in err.value.hint
    with pytest.raises(Aware3DError, match="cannot tell"):
        check_belongs(enc, {"name": "mine", "config": "my-distilled"})


def test_a_gan_encoder_stays_bound_to_its_weights(tmp_path: Path) -> None:
    gan = load_generator("random:tiny:4")
    trainer = EncoderTrainer(EncoderOptions(steps=1, batch=2, log_steps=100, snap_steps=100), gan.generator,
                             base_identity(gan), tmp_path, log=False)
    enc = trainer.encoder
    assert enc.cfg.trained_on == "generator" and enc.cfg.generator["state_sha256"] == base_identity(gan)["state_sha256"]
    assert not enc.cfg.mirror_average
    check_belongs(enc, base_identity(gan))
    check_belongs(enc, gan)
    for other in (load_generator("random:tiny:5"), load_generator("random:tiny-distilled:2")):
        with pytest.raises(Aware3DError, match="trained for random:tiny:4"):
            check_belongs(enc, base_identity(other))
    with pytest.raises(ValueError, match="is a GAN"):
        EncoderTrainer(EncoderOptions(augment=1.0), gan.generator, base_identity(gan), tmp_path / "b", log=False)


def test_a_distilled_models_encoder_records_heads_and_no_weights(tmp_path: Path) -> None:
    model = load_generator("random:tiny-distilled:2")
    trainer = EncoderTrainer(EncoderOptions(steps=1, batch=2), model.generator, base_identity(model), tmp_path,
                             log=False)
    cfg = trainer.encoder.cfg
    assert cfg.target == "z" and cfg.trained_on == "heads" and "state_sha256" not in cfg.generator
    assert cfg.generator["config"] == "tiny-distilled" and cfg.mirror_average
    assert set(cfg.mirror_negate) == {NAMES.index("light_azimuth"), NAMES.index("head_roll_deg")}


def test_encode_pads_z_for_a_model_with_more_coordinates() -> None:
    from backend.generator import TriPlaneGenerator

    G = TriPlaneGenerator(get_config("tiny-distilled").replace(z_dim=70), seed=1).eval()
    ws, yaw, pitch = encode(_heads_encoder().eval(), G, torch.zeros(1, 3, 32, 32))
    assert ws.shape == (1, G.num_ws, G.cfg.w_dim) and np.isfinite([yaw, pitch]).all()


# --------------------------------------------------------------------------------------------------------
# Examples: latents, mirror images, zips, mixing, augmentation
# --------------------------------------------------------------------------------------------------------


def test_a_mirrored_head_is_the_head_with_the_mirror_coordinates_negated() -> None:
    from train.distill.targets import render_targets

    z = np.random.default_rng(0).standard_normal((2, LATENT_DIMS))
    z[:, NAMES.index("light_azimuth")] = [1.0, -0.7]
    z[:, NAMES.index("head_roll_deg")] = [0.8, -1.2]
    seen = render_targets(z, [(20.0, 5.0), (-35.0, -4.0)], 32, LATENT_DIMS).image
    mirror = render_targets(mirror_latents(z), [(-20.0, 5.0), (35.0, -4.0)], 32, LATENT_DIMS).image
    assert torch.allclose(seen.flip(-1), mirror, atol=1e-6)
    assert not torch.allclose(seen.flip(-1), render_targets(z, [(-20.0, 5.0), (35.0, -4.0)], 32, LATENT_DIMS).image)


def test_identifiable_latents_are_the_same_heads_with_nothing_invisible() -> None:
    z = np.random.default_rng(1).standard_normal((40, LATENT_DIMS))
    c = identifiable_latents(z)
    def same(a: dict, b: dict) -> bool:  # type: ignore[type-arg]
        flat = lambda d: {f"{k}{i}": x for k, v in d.items()  # noqa: E731
                          for i, x in enumerate(v if isinstance(v, list | tuple) else [v])}
        fa, fb = flat(a), flat(b)
        return fa.keys() == fb.keys() and all(
            fa[k] == fb[k] if isinstance(fa[k], str) else abs(fa[k] - fb[k]) < 1e-6 for k in fa)

    for zi, ci in zip(z, c):
        want = head_from_latent(zi).to_json()
        got = head_from_latent(ci).to_json()
        hidden = ({"glasses_base", "glasses_rgb"} if want["glasses"] == "none" else set()) | \
            ({"hat_rgb"} if want["hat"] == "none" else set())  # drawn by no renderer
        assert same({k: got[k] for k in got.keys() - hidden}, {k: want[k] for k in want.keys() - hidden})
        assert same(lighting_from_latent(ci).to_json(), lighting_from_latent(zi).to_json())
    zeroed = {NAMES[i] for i in range(LATENT_DIMS) if np.any((c[:, i] == 0) & (z[:, i] != 0))}
    discrete = {"iris_colour", "hair_style", "hair_colour", "glasses", "glasses_base", "hat", "beard", "bg_same"}
    assert zeroed <= set(UNUSED_WHEN) | discrete
    assert {"hat_r", "glasses_jitter_0"} <= zeroed  # the ones latent_from_params keeps are zeroed here


def test_zip_examples_are_the_data_heads_or_their_mirror_images(heads_zip: Path) -> None:
    from train.data.zip_dataset import ZipDataset

    src = ZipExamples([heads_zip], 64, seed=0, mirror=0.5)
    data = ZipDataset(heads_zip, use_labels=False)
    assert len(src) == 6
    ex = src.batch(0, 16)
    assert ex.images.shape == (16, 3, 64, 64) and ex.latents.shape == (16, LATENT_DIMS)
    truth = {i: (data[i][0].float() / 127.5 - 1, data.params(i)) for i in range(6)}
    flipped = 0
    for img, lat, pose in zip(ex.images, ex.latents, ex.pose):
        hits = [(i, False) for i, (t, _) in truth.items() if torch.equal(t, img)]
        hits += [(i, True) for i, (t, _) in truth.items() if torch.equal(t.flip(-1), img)]
        i, flip = hits[0]
        p = truth[i][1]
        want = identifiable_latents(np.asarray([p["latent"]]))[0]
        assert np.allclose(lat.numpy(), mirror_latents(want) if flip else want, atol=1e-6)
        assert float(pose[0]) == pytest.approx(-p["yaw"] if flip else p["yaw"], abs=1e-4)
        assert float(pose[1]) == pytest.approx(p["pitch"], abs=1e-4)
        flipped += flip
    assert 0 < flipped < 16
    half = src.batch(0, 16, rank=1, world=2)
    assert torch.equal(half.images, ex.images[8:]) and torch.equal(half.latents, ex.latents[8:])
    with pytest.raises(ValueError, match="the encoder takes 32"):
        ZipExamples([heads_zip], 32, seed=0)


def test_mixed_and_augmented_batches_are_the_same_split_over_processes(heads_zip: Path) -> None:
    src = Augmented(MixedExamples(ZipExamples([heads_zip], 64, seed=0), HeadExamples(64, seed=0), fresh=0.25),
                    1.0, seed=0)
    full = src.batch(5, 8)
    parts = [src.batch(5, 8, rank=r, world=4) for r in range(4)]
    assert torch.allclose(torch.cat([p.images for p in parts]), full.images, atol=1e-6)
    assert torch.equal(torch.cat([p.latents for p in parts]), full.latents)
    assert torch.equal(full.latents[:2], HeadExamples(64, seed=0).batch(5, 2).latents)  # 2 of 8 fresh
    assert torch.allclose(src.batch(5, 8).images, full.images)
    assert not torch.allclose(src.batch(6, 8).images, full.images)


def test_augmentation_changes_the_photo_not_the_labels() -> None:
    aug = Augmentation()
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    none = aug.apply(x, aug.draw(np.random.default_rng(0), 4, 0.0))
    assert torch.allclose(none, x, atol=1e-5)
    some = aug.apply(x, aug.draw(np.random.default_rng(0), 4, 1.0))
    assert some.shape == x.shape and float(some.abs().max()) <= 1 and float((some - x).abs().mean()) > 0.01
    shift = {k: np.zeros_like(v) for k, v in aug.draw(np.random.default_rng(0), 1, 1.0).items()}
    shift["shift"][:] = (2 / 32, 0)  # two pixels: the picture moves two columns
    img = torch.zeros(1, 3, 32, 32)
    img[..., 10] = 1.0
    moved = aug.apply(img * 2 - 1, shift)
    assert int(moved[0, 0, 16].argmax()) == 8


def test_mirror_averaging_makes_the_encoder_mirror_equivariant() -> None:
    enc = _heads_encoder().eval()
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    lat, pose = enc(x)
    lat_m, pose_m = enc(x.flip(-1))
    assert torch.allclose(pose_m[:, 0], -pose[:, 0], atol=1e-5) and torch.allclose(pose_m[:, 1], pose[:, 1], atol=1e-5)
    assert torch.allclose(lat_m, mirror_latents(lat), atol=1e-5)


# --------------------------------------------------------------------------------------------------------
# The commands: training from zips, the held-out check
# --------------------------------------------------------------------------------------------------------


def test_cli_trains_from_a_zip_and_the_check_records_its_figures(heads_zip: Path, tmp_path: Path) -> None:
    enc_path = tmp_path / "e.safetensors"
    base = [EXE, "encoder", "--model", "random:tiny-distilled:2", "--threads", "1", "--device", "cpu", "--batch", "4",
            "--render-workers", "0", "--channels", "8,16", "--embedding", "16"]
    run = subprocess.run([*base, "--out", str(tmp_path / "r"), "--steps", "2", "--data", str(heads_zip),
                          "--augment", "0.5", "--fresh", "0.25", "--export", str(enc_path)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    enc = load_encoder(enc_path)
    assert enc.cfg.trained_on == "heads" and enc.cfg.channels == (8, 16)
    options = read_header(enc_path).provenance["options"]
    assert options["data"] == [str(heads_zip)] and options["augment"] == 0.5 and options["fresh"] == 0.25
    test_zip = heads_zip.with_name("h_test.zip")
    check = subprocess.run([EXE, "encoder-check", "--encoder", str(enc_path), "--test-data", str(test_zip),
                            "--out", str(tmp_path / "c.json"), "--record", "--seen-data", str(heads_zip)],
                           capture_output=True, text=True,
                           timeout=300)
    assert check.returncode == 0, check.stderr
    figures = json.loads((tmp_path / "c.json").read_text())
    clean = figures["clean"]
    assert clean["views"] == 27 and clean["heads"] == 1 and len(clean["latent"]["rmse_per_coordinate"]) == 67
    for key in ("median_abs", "mean_signed"):
        assert np.isfinite(clean["yaw"][key]) and np.isfinite(clean["pitch"][key])
    assert set(clean["by_test_yaw"]) == {"0", "15", "30", "45", "60"}
    assert 0 <= clean["discrete_accuracy"]["hair_style"] <= 1 and figures["perturbed"]["views"] == 27
    assert figures["time_per_photo"]["median_s"] > 0 and "encoder-check" in figures["command"]
    assert figures["seen"]["images"] == 6 and np.isfinite(figures["seen"]["latent_rmse"])
    recorded = read_header(enc_path).provenance
    assert recorded["check"]["clean"] == clean and recorded["options"] == options  # the rest kept
    assert load_encoder(enc_path).cfg == enc.cfg


def test_cli_refuses_bad_data_options_in_one_line(heads_zip: Path, tmp_path: Path) -> None:
    base = [EXE, "encoder", "--threads", "1", "--device", "cpu", "--steps", "1", "--render-workers", "0"]
    cases = [
        (["--model", "random:tiny-distilled:2", "--data", str(tmp_path / "missing.zip")], "data set not found"),
        (["--model", "random:tiny-distilled:2", "--fresh", "0.5"], "--fresh is the share"),
        (["--model", "random:tiny-distilled:2", "--mirror", "2"], "--mirror must be in [0, 1]"),
        (["--model", "random:tiny:4", "--data", str(heads_zip)], "is a GAN"),
        (["--model", "random:tiny-distilled:2", "--channels", "8,x"], "comma-separated integers"),
    ]
    for n, (extra, message) in enumerate(cases):
        run = subprocess.run([*base, "--out", str(tmp_path / f"r{n}"), *extra], capture_output=True, text=True,
                             timeout=300)
        assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr, (extra, run.stderr)
    gan_enc = PhotoEncoder(EncoderConfig(target="w", latent_dim=32, resolution=32, channels=(8,), embedding=8,
                                         trained_on="generator"))
    save_encoder(tmp_path / "gan_enc.safetensors", gan_enc, {})
    run = subprocess.run([EXE, "encoder-check", "--encoder", str(tmp_path / "gan_enc.safetensors"), "--test-data",
                          str(heads_zip.with_name("h_test.zip"))], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "head latents" in run.stderr and "Traceback" not in run.stderr


def test_calibration_shrinks_what_the_encoder_cannot_read_and_keeps_the_mirror(heads_zip: Path,
                                                                              tmp_path: Path) -> None:
    from train.encoder.check import calibrate

    enc = _heads_encoder().eval()
    with torch.no_grad():
        enc.head.bias.normal_()  # predictions far from these heads' truth
    test_zip = heads_zip.with_name("h_test.zip")
    result = calibrate(enc, test_zip)
    assert result["rmse_after"] <= result["rmse_before"] and len(result["factor"]) == LATENT_DIMS
    assert float(enc.latent_std.min()) >= 0 and torch.isfinite(enc.latent_std).all()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    (lat, pose), (lat_m, pose_m) = enc(x), enc(x.flip(-1))
    assert torch.allclose(lat_m, mirror_latents(lat), atol=1e-5)
    assert torch.allclose(pose_m[:, 0], -pose[:, 0], atol=1e-5)

    path = save_encoder(tmp_path / "e.safetensors", _heads_encoder(), {"options": {"data": [str(heads_zip)]},
                                                                         "check": {"clean": 1}})
    cmd = [EXE, "encoder-calibrate", "--encoder", str(path), "--data"]
    refused = subprocess.run([*cmd, str(heads_zip)], capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "training sets" in refused.stderr and "Traceback" not in refused.stderr
    done = subprocess.run([*cmd, str(test_zip)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    provenance = read_header(path).provenance
    assert provenance["calibration"]["images"] == 27 and "check" not in provenance
    assert provenance["check_before_calibration"] == {"clean": 1}
    again = subprocess.run([*cmd, str(test_zip)], capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "calibrated already" in again.stderr


# --------------------------------------------------------------------------------------------------------
# Discrete choices as classes
# --------------------------------------------------------------------------------------------------------


def test_a_choice_decodes_inside_its_bin_at_every_masculinity() -> None:
    rng = np.random.default_rng(4)
    for c in encoder_choices():
        name = NAMES[c.index]
        for zm in [*rng.uniform(-3.4, 3.4, 6), -5.0, 5.0]:
            latent = torch.zeros(c.count, LATENT_DIMS, dtype=torch.float64)
            latent[:, INDEX["masculinity"]] = float(zm)
            latent[:, c.index] = c.decode(torch.arange(c.count), latent)
            assert [choice_of(z, name) for z in latent.numpy()] == list(range(c.count)), (name, zm)


def test_class_targets_are_the_heads_choices_and_ignore_what_it_does_not_show() -> None:
    rng = np.random.default_rng(5)
    latents = torch.from_numpy(identifiable_latents(rng.standard_normal((300, LATENT_DIMS))))
    choices = encoder_choices()
    target = choice_targets(latents, choices)
    decoded = latents.clone()
    for k, c in enumerate(choices):
        decoded[:, c.index] = c.decode(target[:, k].clamp_min(0), latents)
    base = next(k for k, c in enumerate(choices) if c.index == INDEX["glasses_base"])
    for z, back, t in zip(latents.numpy(), decoded.numpy(), target):
        a, b = head_from_latent(z), head_from_latent(back)
        assert (a.hair_style, a.hair_colour, a.iris_colour, a.glasses, a.hat, a.beard) == \
            (b.hair_style, b.hair_colour, b.iris_colour, b.glasses, b.hat, b.beard)
        assert (int(t[base]) == IGNORE) == (a.glasses == "none")
        if a.glasses != "none":
            assert a.glasses_base == b.glasses_base


def test_an_encoder_with_classes_round_trips_and_stays_mirror_equivariant(tmp_path: Path) -> None:
    cfg = EncoderConfig(latent_dim=LATENT_DIMS, resolution=32, channels=(8, 16), embedding=32, trained_on="heads",
                        mirror_negate=MIRROR_NEGATE, mirror_average=True, choices=encoder_choices())
    torch.manual_seed(0)
    enc = PhotoEncoder(cfg).eval()
    with torch.no_grad():
        enc.head.bias.normal_()  # distinct classes win
    back = load_encoder(save_encoder(tmp_path / "e.safetensors", enc, {"source": "test"}))
    assert back.cfg == cfg and back.cfg.classes == sum(c.count for c in encoder_choices())
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    lat, pose = back(x)
    assert torch.equal(lat, enc(x)[0])
    for z in lat.double().numpy():  # every choice's coordinate lies inside one of its bins, away from the edges
        for c in encoder_choices():
            k = choice_of(z, NAMES[c.index])
            again = torch.from_numpy(z)[None].clone()
            assert abs(float(c.decode(torch.tensor([k]), again)[0]) - z[c.index]) < 1e-5
    lat_m, pose_m = back(x.flip(-1))
    assert torch.allclose(lat_m, mirror_latents(lat), atol=1e-5) and torch.allclose(pose_m[:, 0], -pose[:, 0])


def _choice(index: int, **changes: object) -> dict:
    return {"index": index, "middles": [[-1.0, 1.0]], "depends_on": -1, "grid": [], **changes}


@pytest.mark.parametrize("choices, message", [
    ([_choice(70)], "choices must name"), ([_choice(3), _choice(3)], "choices must name"),
    ([_choice(3, middles=[[0.0]])], "2-64 numbers"), ([_choice(3, depends_on=0)], "ascending grid"),
    ([_choice(3, depends_on=0, grid=[1.0, 0.0], middles=[[0, 1], [0, 1]])], "ascending grid"),
    ([_choice(MIRROR_NEGATE[0])], "mirror image"),
    ([{**_choice(3), "index": "x"}], r"choices\[0\].index must be an integer"),
    ([_choice(3, colour=1)], "unknown choice fields")])
def test_bad_choices_in_a_file_are_refused_in_one_line(choices: list, message: str) -> None:
    cfg = EncoderConfig(latent_dim=LATENT_DIMS, mirror_negate=MIRROR_NEGATE).to_dict()
    with pytest.raises(ValueError, match=message):
        EncoderConfig.from_dict({**cfg, "choices": choices})


# --------------------------------------------------------------------------------------------------------
# The photo's own thumbnail, and starting from a trained encoder
# --------------------------------------------------------------------------------------------------------


def test_the_thumbnail_hands_the_photos_colour_to_the_embedding(tmp_path: Path) -> None:
    cfg = EncoderConfig(latent_dim=LATENT_DIMS, resolution=32, channels=(8, 16), embedding=32, thumbnail=4)
    torch.manual_seed(0)
    enc = PhotoEncoder(cfg).eval()
    assert enc.embed.in_features == 16 * 4 + 3 * 16
    back = load_encoder(save_encoder(tmp_path / "e.safetensors", enc, {"source": "test"}))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert back.cfg.thumbnail == 4 and torch.equal(back(x)[0], enc(x)[0])
    with torch.no_grad():  # only the thumbnail's inputs: the output follows the picture's mean colour
        enc.embed.weight[:, : 16 * 4] = 0
        assert not torch.allclose(enc.raw(x * 0 + 0.5), enc.raw(x * 0 - 0.5))
    with pytest.raises(ValueError, match="thumbnail must be between"):
        EncoderConfig.from_dict({**cfg.to_dict(), "thumbnail": 64})


def test_training_can_start_from_an_encoder_without_the_thumbnail(tmp_path: Path) -> None:
    G = _distilled()
    small = {"channels": (8, 16), "embedding": 16, "log_steps": 1000, "snap_steps": 1000}
    first = EncoderTrainer(EncoderOptions(steps=2, batch=4, thumbnail=0, **small), G, {}, tmp_path / "a", log=False)
    first.source = OneBatch(G.cfg.img_resolution)
    first.run()
    source = first.export(tmp_path / "a.safetensors")
    grown = EncoderTrainer(EncoderOptions(steps=2, batch=4, thumbnail=4, init_from=str(source), **small), G, {},
                           tmp_path / "b", log=False)
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    with torch.no_grad():  # the added inputs start at zero: the same answers as the source
        assert torch.allclose(grown.encoder.eval()(x)[0], load_encoder(source)(x)[0], atol=1e-5)
    other = EncoderOptions(steps=2, batch=4, init_from=str(source), **{**small, "channels": (16, 16)})
    with pytest.raises(ValueError, match="does not fit this encoder"):
        EncoderTrainer(other, G, {}, tmp_path / "c", log=False)
    save_encoder(tmp_path / "cal.safetensors", load_encoder(source), {"calibration": {}})
    with pytest.raises(ValueError, match="calibrated"):
        EncoderTrainer(dataclasses.replace(other, init_from=str(tmp_path / "cal.safetensors"), channels=(8, 16)),
                       G, {}, tmp_path / "d", log=False)
