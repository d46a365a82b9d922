"""``--amp``: bf16 autocast in GAN training (train.amp), on the CPU where PyTorch supports bf16 autocast.

Tolerance: from the same weights and batch, every loss of the first iterations of the tiny preset (all terms:
R1, density regulariser, imitation, patch D) stays within 3 % + 0.002 of float32, and the generator's
parameters after 3 iterations within 1e-3 relative (L2). Measured on a 2-core CPU: at most 2 % (the imitation
loss; 6 % on the density term, whose value is 3e-4) and 3e-5 after 4 iterations.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.support.fake_dataset import BlobDataset
from train.amp import autocast, bf16_autocast_supported, check_amp
from train.gan.loop import GanTrainer
from train.gan.options import PRESETS

LOSS_RTOL, LOSS_ATOL = 0.03, 0.002
PARAM_RTOL = 1e-3
STEPS = 3


def test_autocast_runs_linear_layers_in_bf16_only_when_enabled() -> None:
    layer, x = torch.nn.Linear(4, 4), torch.randn(2, 4)
    with autocast("cpu", enabled=False):
        assert layer(x).dtype == torch.float32
    with autocast("cpu"):
        assert layer(x).dtype == torch.bfloat16
    assert bf16_autocast_supported("cpu")


def test_amp_is_refused_where_bf16_autocast_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="train without --amp"):
        check_amp("cuda")
    with pytest.raises(ValueError, match="bf16 autocast"):
        GanTrainer(dataclasses.replace(PRESETS["tiny"], amp=True), BlobDataset(), "unused", device="cuda")


def _trainer(amp: bool, run_dir: Path) -> GanTrainer:
    # Every term in the first iterations: imitation from the start, R1 and density regularisers every 2nd step.
    o = dataclasses.replace(PRESETS["tiny"], batch=4, mbstd_group_size=2, amp=amp, d_reg_interval=2,
                            g_reg_interval=2)
    o = dataclasses.replace(o, imitation=dataclasses.replace(o.imitation, start_kimg=0.0))
    return GanTrainer(o, BlobDataset(), run_dir, log=False)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Small ops: one thread avoids OpenMP spinning on a shared 2-core machine (minutes instead of seconds)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_amp_training_matches_float32_within_tolerance(tmp_path: Path) -> None:
    runs = {amp: _trainer(amp, tmp_path / str(amp)) for amp in (False, True)}
    stats = {amp: [t.train_step() for _ in range(STEPS)] for amp, t in runs.items()}
    assert {"loss/D_r1", "loss/G_density", "loss/G_imitation", "loss/D_patch"} <= set(stats[True][0])
    for step, (ref, amp) in enumerate(zip(stats[False], stats[True])):
        assert ref.keys() == amp.keys()
        for key, value in amp.items():
            assert math.isfinite(value), (step, key)
            assert abs(value - ref[key]) <= LOSS_RTOL * abs(ref[key]) + LOSS_ATOL, (step, key, ref[key], value)
    assert stats[True] != stats[False], "autocast changed nothing: is it on?"
    ref_g, amp_g = runs[False].G.state_dict(), runs[True].G.state_dict()
    diff = math.sqrt(sum(float((ref_g[k] - amp_g[k]).float().square().sum()) for k in ref_g))
    norm = math.sqrt(sum(float(v.float().square().sum()) for v in ref_g.values()))
    assert diff <= PARAM_RTOL * norm, diff / norm
    assert all(p.dtype == torch.float32 for p in runs[True].G.parameters())  # weights stay float32
