"""GAN training on CPU: a tiny end-to-end run (with the imitation stage), DDP equivalence, kill and resume."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from backend.checkpoints.model_file import read_header
from backend.registry import load_generator
from tests.support.fake_dataset import BlobDataset
from train.gan.loop import GanTrainer
from train.gan.options import PRESETS
from train.gan.snapshot import list_snapshots

ROOT = Path(__file__).resolve().parents[1]


def tiny_options(**changes):  # type: ignore[no-untyped-def]
    opts = dataclasses.replace(PRESETS["tiny"], batch=4, mbstd_group_size=2, **changes)
    return dataclasses.replace(opts, imitation=dataclasses.replace(opts.imitation, start_kimg=0.008))


def test_tiny_training_runs_end_to_end_with_imitation(tmp_path: Path) -> None:
    opts = tiny_options(kimg=0.016, snap_kimg=0.008, image_kimg=0.008, log_kimg=0.004, opacity_reg=1.0,
                        opacity_entropy=1.0, distortion_reg=1.0)
    trainer = GanTrainer(opts, BlobDataset(), tmp_path, command=["test"])
    before = {k: v.clone() for k, v in trainer.G.state_dict().items()}
    trainer.run()
    assert trainer.progress.nimg == 16 and trainer.progress.iteration == 4
    after = trainer.G.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    log = [line for line in (tmp_path / "log.jsonl").read_text().splitlines() if line]
    import json

    records = [json.loads(line) for line in log]
    assert any("loss/G_imitation" in r for r in records), "the imitation stage never ran"
    assert any("loss/G_opacity" in r for r in records), "the empty-space prior never ran"
    assert any(r.get("loss/G_distortion", 0) > 0 for r in records), "the distortion loss never ran"
    assert all(np.isfinite(v) for r in records for k, v in r.items() if k.startswith("loss/"))
    assert list(tmp_path.glob("grid-*.png"))
    assert len(list_snapshots(tmp_path)) == opts.keep_snapshots
    # The exported EMA generator is an ordinary Aware3D model with provenance.
    header = read_header(tmp_path / "latest.safetensors")
    assert header.provenance["kimg"] == pytest.approx(0.016) and "hardware" in header.provenance
    model = load_generator(str(tmp_path / "latest.safetensors"))
    assert model.generator.cfg.name == "tiny"


def test_resume_continues_exactly_where_the_snapshot_left_off(tmp_path: Path) -> None:
    opts = tiny_options(kimg=0.024, snap_kimg=0.008, image_kimg=0, log_kimg=1)
    straight = GanTrainer(opts, BlobDataset(), tmp_path / "a", log=False)
    straight.run()
    # Interrupted after 3 iterations (the snapshot at 8 images = 2 iterations survives), then resumed.
    first = GanTrainer(opts, BlobDataset(), tmp_path / "b", log=False)
    first.run(stop_after_iterations=3)
    resumed = GanTrainer(opts, BlobDataset(), tmp_path / "b", log=False)
    assert resumed.resume() and resumed.progress.nimg == 8
    resumed.run()
    assert resumed.progress.nimg == straight.progress.nimg
    for k, v in straight.G_ema.state_dict().items():
        assert torch.equal(v, resumed.G_ema.state_dict()[k]), k


@pytest.mark.slow
def test_kill_at_any_moment_loses_at_most_one_snapshot_interval(tmp_path: Path) -> None:
    """SIGKILL a real training process after its first snapshot, then resume it to the end."""
    script = tmp_path / "train.py"
    script.write_text(
        "import dataclasses, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from tests.support.fake_dataset import BlobDataset\n"
        "from tests.test_train_gan import tiny_options\n"
        "from train.gan.loop import GanTrainer\n"
        "opts = tiny_options(kimg=0.2, snap_kimg=0.008, image_kimg=0, log_kimg=1)\n"
        "t = GanTrainer(opts, BlobDataset(), sys.argv[1], log=False)\n"
        "t.resume()\n"
        "t.run()\n")
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(script), str(run)])
    deadline = time.time() + 240
    while not list_snapshots(run) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    snaps = list_snapshots(run)
    assert snaps, "no snapshot was written before the kill"
    # Every file that looks like a snapshot is complete (atomic writes), and no temporary is mistaken for one.
    for s in snaps:
        load_file(str(s))
    trainer = GanTrainer(tiny_options(kimg=0.2, snap_kimg=0.008, image_kimg=0, log_kimg=1), BlobDataset(), run,
                         log=False)
    assert trainer.resume()
    assert trainer.progress.nimg >= 8
    trainer.run(stop_after_iterations=2)
    assert trainer.progress.nimg > 8


@pytest.mark.slow
def test_two_process_gloo_ddp_matches_one_process(tmp_path: Path) -> None:
    if shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("torchrun not found next to the Python interpreter")
    torchrun = str(Path(sys.executable).parent / "torchrun")
    worker = ROOT / "tests" / "support" / "ddp_worker.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = tmp_path / "one.safetensors"
    two = tmp_path / "two.safetensors"
    # One iteration runs every phase (G, imitation, density regulariser, D, R1, patch D). Longer runs drift
    # apart: Adam's first steps are ±lr for every parameter, so float-rounding differences of near-zero
    # gradients are amplified (a property of Adam, not of the data parallelism). The tolerance is 4% of one
    # step (lr 0.0025); a missing gradient average would differ by whole steps.
    subprocess.run([sys.executable, str(worker), str(one), "1"], check=True, env=env, timeout=600)
    subprocess.run([torchrun, "--nproc-per-node", "2", "--master-port", "29517", str(worker), str(two), "1"],
                   check=True, env=env, timeout=600)
    a, b = load_file(str(one)), load_file(str(two))
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-4, f"largest difference between 1 and 2 processes: {worst}"


def test_imitation_stage_can_be_added_when_resuming(tmp_path: Path) -> None:
    plain = dataclasses.replace(tiny_options(kimg=0.008, snap_kimg=0.008, image_kimg=0, log_kimg=1),
                                imitation=dataclasses.replace(PRESETS["tiny"].imitation, start_kimg=None))
    GanTrainer(plain, BlobDataset(), tmp_path, log=False).run()
    later = tiny_options(kimg=0.016, snap_kimg=0.008, image_kimg=0, log_kimg=1)
    trainer = GanTrainer(later, BlobDataset(), tmp_path, log=False)
    assert trainer.resume() and trainer.progress.nimg == 8
    trainer.run()
    assert trainer.imitation_active() and trainer.progress.nimg == 16


def lpips_weights_file(path: Path) -> Path:
    """A weights file in the documented layout (VGG16 features.* + lin0..4), with random values."""
    from safetensors.torch import save_file

    from train.gan.perceptual import LPIPS

    torch.manual_seed(0)
    net = LPIPS.__new__(LPIPS)
    torch.nn.Module.__init__(net)
    layers, in_ch = [], 3
    for v in [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]:
        if v == "M":
            layers.append(torch.nn.MaxPool2d(2, 2))
        else:
            layers += [torch.nn.Conv2d(in_ch, int(v), 3, padding=1), torch.nn.ReLU()]
            in_ch = int(v)
    tensors = {f"features.{k}": v for k, v in torch.nn.Sequential(*layers).state_dict().items()}
    for i, c in enumerate((64, 128, 256, 512, 512)):
        tensors[f"lin{i}.model.1.weight"] = torch.rand(1, c, 1, 1)
    save_file(tensors, str(path))
    return path


def test_user_supplied_lpips_weights_drive_the_imitation_loss(tmp_path: Path) -> None:
    from train.gan.perceptual import LPIPSDistance

    weights = lpips_weights_file(tmp_path / "lpips_vgg.safetensors")
    dist = LPIPSDistance(weights)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert float(dist(x, x)) == pytest.approx(0.0, abs=1e-6)
    assert float(dist(x, torch.flip(x, dims=[-1]))) > 0
    opts = tiny_options(kimg=0.008, snap_kimg=1, image_kimg=0, log_kimg=0.004)
    opts = dataclasses.replace(opts, imitation=dataclasses.replace(opts.imitation, start_kimg=0.0,
                                                                   lpips_weights=str(weights)))
    trainer = GanTrainer(opts, BlobDataset(), tmp_path / "run", log=False)
    assert isinstance(trainer.perceptual, LPIPSDistance)
    stats = trainer.train_step()
    assert np.isfinite(stats["loss/G_imitation"]) and stats["loss/G_imitation"] > 0
    from backend.errors import Aware3DError

    (tmp_path / "bad.safetensors").write_bytes(b"junk")
    with pytest.raises(Aware3DError, match="LPIPS"):
        LPIPSDistance(tmp_path / "bad.safetensors")


def test_opacity_prior_clears_fog_and_sharpens_surfaces() -> None:
    """The empty-space prior lowers a fogged pixel's alpha; its entropy share sends clear pixels to 0 or 1."""
    from train.gan.loop import opacity_prior

    alpha = torch.tensor([0.98, 0.9, 0.5, 0.2], requires_grad=True)
    (grad,) = torch.autograd.grad(opacity_prior(alpha), [alpha])
    assert (grad > 0).all()  # descent lowers every alpha
    (grad,) = torch.autograd.grad(opacity_prior(alpha, entropy_weight=1.0), [alpha])
    assert grad[0] < 0 and grad[1] < 0 and grad[2] > 0 and grad[3] > 0  # opaque → 1, faint → 0
