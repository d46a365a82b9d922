# SPDX-License-Identifier: GPL-3.0-or-later
"""Held-out figures of a photo encoder of head latents (``aware3d-train encoder-check``).

Why a command: the model card may only quote measured numbers, so the numbers come from one command that
writes them to a JSON file and, with ``--record``, into the encoder file's own provenance.

On a ``*_test.zip`` made by ``aware3d-train make-dataset`` (held-out heads, each seen from the same views:
yaw 0, ±15, ±30, ±45, ±60 × pitch 0, ±10), every view is one photo:

* latent: RMSE per coordinate against what the picture determines (:func:`.data.identifiable_latents`), over
  all coordinates and per coordinate by name, beside the RMSE of the median head (z = 0) for scale and the
  RMSE against the recorded latent; the accuracy of each discrete parameter decoded from the prediction;
* pose: yaw and pitch errors in degrees (median absolute, mean signed, mean absolute, 90th percentile of the
  absolute), over all views and per test yaw;
* the same once more on the photos changed by :class:`.data.Augmentation` at strength 1 (fixed seed): what
  a crop a few per cent off and a different camera cost;
* the time of one forward pass for one photo (the encoder as shipped, mirror averaging included), on this
  machine with the load it had;
* optionally the latent and pose errors on heads it was trained on (``seen``: a training zip): the gap to the
  held-out figures says whether more training heads would help.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from backend.invert.encoder import PhotoEncoder
from train.encoder.data import Augmentation, identifiable_latents
from train.synthetic.latent import LATENT_DIMS, NAMES, head_from_latent, lighting_from_latent

DISCRETE = ("hair_style", "hair_colour", "iris_colour", "glasses", "hat", "beard")


class TestViews:
    """Every view of a test zip: images uint8 [N, 3, R, R], recorded and identifiable latents, pose, head."""

    def __init__(self, path: str | Path, heads: int | None = None) -> None:
        from train.data.zip_dataset import ZipDataset, ZipDatasetError

        try:
            data = ZipDataset(path, use_labels=False)
        except ZipDatasetError as exc:
            raise ValueError(str(exc)) from None
        if not data.test_heads:
            raise ValueError(f"{path} is not a test split (no test.json): make one with aware3d-train make-dataset "
                             "--test-heads N")
        if "latent" not in data.params(0):
            raise ValueError(f"{path} has no head latents (made by an older aware3d-train make-dataset): remake it")
        keep = set(data.test_heads[:heads] if heads else data.test_heads)
        images, recorded, pose, head = [], [], [], []
        for i in range(len(data)):
            p = data.params(i)
            if p.get("head") not in keep:
                continue
            images.append(torch.from_numpy(data._load_raw_image(data.raw_index(i))))
            recorded.append(np.asarray(p["latent"], dtype=np.float64)[:LATENT_DIMS])
            pose.append((float(p["yaw"]), float(p["pitch"])))
            head.append(int(p["head"]))
        data.close()
        self.images = torch.stack(images)
        self.recorded = np.stack(recorded).astype(np.float32)
        self.latents = identifiable_latents(np.stack(recorded))
        self.pose = np.asarray(pose, dtype=np.float32)
        self.head = np.asarray(head)
        self.path = str(path)


@torch.no_grad()
def predict(enc: PhotoEncoder, images: torch.Tensor, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Latents [N, latent_dim] and poses [N, 2] of uint8 or [-1, 1] images, in batches."""
    lat, pose = [], []
    for k in range(0, images.shape[0], batch):
        a, b = enc(images[k:k + batch])
        lat.append(a.cpu().numpy())
        pose.append(b.cpu().numpy())
    return np.concatenate(lat), np.concatenate(pose)


def _errors(e: np.ndarray) -> dict[str, float]:
    a = np.abs(e)
    return {"median_abs": round(float(np.median(a)), 3), "mean_signed": round(float(np.mean(e)), 3),
            "mean_abs": round(float(np.mean(a)), 3), "p90_abs": round(float(np.percentile(a, 90)), 3)}


def _rmse(d: np.ndarray, axis: int | None = None) -> Any:
    return np.sqrt(np.mean(np.square(d), axis=axis))


def figures(views: TestViews, latent: np.ndarray, pose: np.ndarray) -> dict[str, Any]:
    """The latent and pose figures of predictions for every view of ``views``."""
    n = min(latent.shape[1], LATENT_DIMS)
    truth, d = views.latents[:, :n], latent[:, :n] - views.latents[:, :n]
    per = _rmse(d, 0)
    out: dict[str, Any] = {"views": len(pose), "heads": len(set(views.head.tolist()))}
    out["latent"] = {
        "rmse": round(float(_rmse(d)), 4),
        "rmse_median_head": round(float(_rmse(truth)), 4),
        "rmse_recorded": round(float(_rmse(latent[:, :n] - views.recorded[:, :n])), 4),
        "rmse_per_coordinate": {NAMES[i]: round(float(per[i]), 3) for i in range(n)},
    }
    hits = {k: 0 for k in (*DISCRETE, "plain_background")}
    for z, t in zip(latent, views.latents):
        hp, ht = head_from_latent(z), head_from_latent(t)
        for k in DISCRETE:
            hits[k] += getattr(hp, k) == getattr(ht, k)
        sp, st = lighting_from_latent(z), lighting_from_latent(t)
        hits["plain_background"] += (sp.bg_top == sp.bg_bottom) == (st.bg_top == st.bg_bottom)
    out["discrete_accuracy"] = {k: round(v / len(latent), 4) for k, v in hits.items()}
    err = pose - views.pose
    out["yaw"], out["pitch"] = _errors(err[:, 0]), _errors(err[:, 1])
    out["by_test_yaw"] = {}
    for y in sorted(set(np.abs(views.pose[:, 0]).round().tolist())):
        m = np.abs(views.pose[:, 0]).round() == y
        out["by_test_yaw"][f"{y:g}"] = {"views": int(m.sum()), "yaw": _errors(err[m, 0]),
                                        "pitch": _errors(err[m, 1]), "latent_rmse": round(float(_rmse(d[m])), 4)}
    return out


def perturbed(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The test photos changed by the training augmentation at strength 1 (a fixed draw)."""
    aug = Augmentation()
    x = images.float() / 127.5 - 1
    choices = aug.draw(np.random.default_rng(seed), x.shape[0], 1.0)
    return aug.apply(x, choices)


@torch.no_grad()
def time_per_photo(enc: PhotoEncoder, res: int, repeats: int = 50) -> dict[str, Any]:
    """Median wall time of one forward pass for one photo ([1, 3, res, res] uint8), after a warm-up."""
    x = torch.randint(0, 256, (1, 3, res, res), dtype=torch.uint8)
    for _ in range(5):
        enc(x)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        enc(x)
        times.append(time.perf_counter() - t)
    return {"median_s": round(float(np.median(times)), 5), "repeats": repeats, "torch_threads": torch.get_num_threads(),
            "mirror_average": enc.cfg.mirror_average, "load_average": [round(v, 2) for v in os.getloadavg()]}


def seen_figures(enc: PhotoEncoder, path: str | Path, count: int) -> dict[str, Any]:
    """Latent RMSE and pose errors on the first ``count`` images of a training zip (as they are, unmirrored)."""
    from train.encoder.data import ZipExamples

    data = ZipExamples([path], None, seed=0, mirror=0.0)
    n = min(count, len(data))
    lat, pose = predict(enc, data.images[:n])
    d = lat[:, :LATENT_DIMS] - data.latents[:n].numpy()
    err = pose - data.pose[:n].numpy()
    return {"data": str(path), "images": n, "latent_rmse": round(float(_rmse(d)), 4), "yaw": _errors(err[:, 0]),
            "pitch": _errors(err[:, 1])}


def calibrate(enc: PhotoEncoder, path: str | Path) -> dict[str, Any]:
    """Shrink each latent coordinate of ``enc`` by its least-squares factor on a zip of heads it never saw.

    Why: a coordinate the picture barely shows (eye size at 64², a lip's darkness) is predicted with an error
    larger than its spread, worse than the median head's 0; the factor ``a = <p, t> / <p, p>`` (p the
    prediction, t the truth, at least 0) is what minimises the squared error of ``a·p``, so such coordinates move
    towards 0 and well-predicted ones stay. It is a scale on the output (``latent_std``), with no offset, so the
    mirror averaging stays exact. Use heads neither trained on nor tested on. Changes ``enc`` in place.
    """
    from train.encoder.data import ZipExamples

    if enc.cfg.target != "z" or float(enc.latent_mean.abs().max()) > 0:
        raise ValueError("calibration is for encoders of head latents (z, centred)")
    data = ZipExamples([path], None, seed=0, mirror=0.0)
    lat, _ = predict(enc, data.images)
    truth = data.latents.numpy()
    before = _rmse(lat - truth, 0)
    factor = np.clip((lat * truth).sum(0) / np.maximum((lat * lat).sum(0), 1e-12), 0.0, None)
    factor[[c.index for c in enc.cfg.choices]] = 1.0  # a class decodes to its bin's middle, whatever the scale
    after = _rmse(lat * factor - truth, 0)
    enc.latent_std.mul_(torch.from_numpy(factor.astype(np.float32)).to(enc.latent_std))
    return {"data": str(path), "images": len(data), "rmse_before": round(float(np.sqrt(np.mean(before ** 2))), 4),
            "rmse_after": round(float(np.sqrt(np.mean(after ** 2))), 4),
            "factor": {NAMES[i]: round(float(f), 3) for i, f in enumerate(factor)}}


def check(enc: PhotoEncoder, test: str | Path, heads: int | None = None,
          progress: Callable[[str], None] | None = None, seen: str | Path | None = None,
          seen_count: int = 1000) -> dict[str, Any]:
    """Everything :mod:`this module <train.encoder.check>` describes, as one JSON-ready dict."""
    say = progress or (lambda _m: None)
    if enc.cfg.target != "z" or enc.cfg.trained_on != "heads":
        raise ValueError("encoder-check measures encoders of head latents (trained on synthetic heads); this one "
                         f"predicts {enc.cfg.target} of {enc.cfg.generator.get('name', '?')}")
    load_before = [round(v, 2) for v in os.getloadavg()]
    t0 = time.perf_counter()
    views = TestViews(test, heads)
    say(f"{len(views.pose)} views of {len(set(views.head.tolist()))} held-out heads")
    lat, pose = predict(enc, views.images)
    clean = figures(views, lat, pose)
    say("perturbed photos")
    lat, pose = predict(enc, perturbed(views.images))
    noisy = figures(views, lat, pose)
    say("time per photo")
    timing = time_per_photo(enc, enc.cfg.resolution)
    out = {"test_data": str(test), "clean": clean, "perturbed": {"what": "train.encoder.data.Augmentation at "
                                                                 "strength 1, seed 0", **noisy},
           "time_per_photo": timing}
    if seen is not None:
        say("heads it was trained on")
        out["seen"] = seen_figures(enc, seen, seen_count)
    return {**out, "seconds": round(time.perf_counter() - t0, 1), "load_average_before": load_before}
