"""The feed-forward photo encoder (backend/invert/encoder.py) and its trainer (aware3d-train encoder)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from backend.errors import Aware3DError
from backend.invert.encoder import EncoderConfig, PhotoEncoder, check_belongs, encode, load_encoder, save_encoder
from backend.registry import load_generator
from train.encoder.loop import EncoderOptions, EncoderTrainer, HeadExamples


def _distilled():  # type: ignore[no-untyped-def]
    return load_generator("random:tiny-distilled:2").generator


class OneBatch:
    def __init__(self, res: int) -> None:
        self.inner = HeadExamples(res, seed=0)
        self.cached = None

    def batch(self, index: int, size: int, rank: int = 0, world: int = 1):  # type: ignore[no-untyped-def]
        if self.cached is None:
            self.cached = self.inner.batch(0, size, rank, world)
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
