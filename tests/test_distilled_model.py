"""What the distilled model (the next default, trained by aware3d-train distill) must keep doing.

It is read from the training run's latest export in assets/training/distill64 (the state the next session
resumes); when it ships as aware3d-heads, these tests move to the bundled file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from backend.registry import load_generator
from backend.render.renderer import SamplingSettings
from train.distill.targets import render_targets
from train.eval.reconstruction import _to01, psnr

MODEL = Path(__file__).resolve().parents[1] / "assets" / "training" / "distill64" / "latest.safetensors"


@pytest.fixture(scope="module")
def generator():  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    return load_generator(str(MODEL)).generator.eval()


def test_the_back_of_a_generated_head_is_the_back_of_that_head(generator) -> None:  # type: ignore[no-untyped-def]
    # The colour field must not carry the face through the skull (the GAN's ghost face): from behind, a head
    # from its own z looks like the true back of that head, far more than like its face seen through it.
    z = np.random.default_rng(7).standard_normal((6, 67))
    back = render_targets(z, [(180.0, 0.0)] * 6, generator.cfg.img_resolution, generator.cfg.z_dim)
    front = render_targets(z, [(0.0, 0.0)] * 6, generator.cfg.img_resolution, generator.cfg.z_dim)
    with torch.no_grad():
        ws = generator.mapping(back.z, back.c)
        out = generator.render(generator.synthesize_planes(ws), ws, back.c, sampling=SamplingSettings(seed=0))
    to_back, to_face = [], []
    for i in range(len(z)):
        head = np.isfinite(back.depth[i].numpy())
        image = _to01(out["image"][i])
        to_back.append(psnr(image, _to01(back.image[i]), head))
        to_face.append(psnr(image, _to01(front.image[i].flip(-1)), head))  # the face as seen through the head
    assert np.mean(to_back) >= 15.0
    assert np.mean(to_back) >= np.mean(to_face) + 3.0


def test_the_model_takes_head_latents_with_their_bins(generator) -> None:  # type: ignore[no-untyped-def]
    from backend.config import HEAD_LATENT_BINS, takes_head_latents

    assert takes_head_latents(generator.cfg) and generator.cfg.z_bins == HEAD_LATENT_BINS
