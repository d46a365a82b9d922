# SPDX-License-Identifier: GPL-3.0-or-later
"""Learning attribute directions in W from the synthetic heads' known parameters.

The synthetic data set knows every head's parameters (hair colour and length, glasses, beard, face width,
...), but the generator's latents do not come with them. The bridge is the feature network of
``train/eval/features.py`` (``aware3d-train features``), trained on those images to *predict* the parameters:

1. sample ``samples`` latents (z → W with the frontal conditioning camera, truncation ``psi``), render each
   head frontally and let the feature network score every attribute (a regression output, the lightness of
   the predicted hair colour, or 1 − P(none) for glasses, beard and hat);
2. per attribute, fit a ridge regression of the standardised score on W (InterFaceGAN-style linear
   boundary, but a regression, so continuous attributes need no threshold) on 80 % of the samples;
3. the direction is the unit weight vector; ``step`` = 1 / |weights| is the W distance that moves the
   predicted attribute by one standard deviation, so ``aware3d edit --amount 2`` means "two standard
   deviations more"; the held-out R² says how linear (and how trustworthy) the direction is.

For a distilled model (``aware3d-train distill``) step 1 needs no feature network: ``z`` is the head's latent
(:mod:`train.synthetic.latent`), so each sample's attributes are its *true* parameters, read from ``z``.

Run: ``aware3d-train directions --model M [--features F] [--out FILE]`` (default: beside the model, where
``aware3d edit`` looks). Directions belong to one model's weights (recorded by hash).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from backend.invert.directions import Direction, DirectionSet, directions_path_for, save_directions

# name → (description, how to read it from the feature network)
ATTRIBUTES: dict[str, str] = {
    "hair_colour": "hair lightness: dark → blonde, grey or white (mean of the predicted hair RGB)",
    "hair_length": "hair length (hanging hair, bob, ponytail)",
    "glasses": "glasses (1 − P(no glasses))",
    "beard": "beard (1 − P(no beard))",
    "hat": "hat (1 − P(no hat))",
    "face_width": "face width",
    "jaw_width": "jaw width",
    "skin_tone": "skin tone: light → dark",
    "eye_size": "eye size",
    "nose_length": "nose length",
}


def attribute_scores(net: Any, images: torch.Tensor) -> dict[str, np.ndarray]:
    """Scores of the attributes in :data:`ATTRIBUTES` that the feature network knows, for images [N, 3, H, W]."""
    with torch.no_grad():
        reg, cats = net(images)
    spec = net.spec
    mean, std = torch.tensor(spec.mean), torch.tensor(spec.std)
    values = reg.cpu() * std + mean
    out: dict[str, np.ndarray] = {}
    names = list(spec.regression)
    hair = [names.index(f"hair_rgb[{i}]") for i in range(3) if f"hair_rgb[{i}]" in names]
    if len(hair) == 3:
        out["hair_colour"] = values[:, hair].mean(1).numpy()
    for key in ("hair_length", "face_width", "jaw_width", "skin_tone", "eye_size", "nose_length"):
        if key in names:
            out[key] = values[:, names.index(key)].numpy()
    for key in ("glasses", "beard", "hat"):
        if key in cats and "none" in spec.categories[key]:
            p = torch.softmax(cats[key].cpu(), dim=1)[:, spec.categories[key].index("none")]
            out[key] = (1 - p).numpy()
    return out


def true_scores(z: np.ndarray) -> dict[str, np.ndarray]:
    """The attributes of :data:`ATTRIBUTES` read from the heads' true parameters (latents [N, LATENT_DIMS])."""
    from train.synthetic.latent import head_from_latent

    heads = [head_from_latent(v) for v in z]
    return {
        "hair_colour": np.array([np.mean(h.hair_rgb) for h in heads]),
        "hair_length": np.array([h.hair_length for h in heads]),
        "glasses": np.array([float(h.glasses != "none") for h in heads]),
        "beard": np.array([float(h.beard != "none") for h in heads]),
        "hat": np.array([float(h.hat != "none") for h in heads]),
        **{k: np.array([getattr(h, k) for h in heads])
           for k in ("face_width", "jaw_width", "skin_tone", "eye_size", "nose_length")},
    }


def sample_scores(G: Any, net: Any, samples: int, truncation: float = 0.7, seed: int = 0, batch: int = 32,
                  progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Latents w [N, w_dim] (W, one vector per head) and attribute scores: of their frontal renders by the
    feature network ``net``, or (``net`` None, distilled models) the true parameters of their z."""
    from backend.invert.render import render_views
    from backend.sampling import conditioning_label

    device = next(G.parameters()).device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    c = torch.from_numpy(conditioning_label(G.cfg))[None].to(device)
    ws_all, scores = [], {}
    done = 0
    while done < samples:
        n = min(batch, samples - done)
        z = torch.randn(n, G.cfg.z_dim, generator=gen).to(device)
        with torch.no_grad():
            ws = G.mapping(z, c.expand(n, -1), truncation_psi=truncation)
            if net is None:
                found = true_scores(z.cpu().double().numpy())
            else:
                out = render_views(G, ws, c.expand(n, -1), seed=done, grad=False)
                found = attribute_scores(net, out["image"].clamp(-1, 1))
        for k, v in found.items():
            scores.setdefault(k, []).append(v)
        ws_all.append(ws[:, 0].cpu())
        done += n
        if progress is not None:
            progress(done, samples)
    return torch.cat(ws_all).numpy(), {k: np.concatenate(v) for k, v in scores.items()}


def fit_direction(w: np.ndarray, y: np.ndarray, ridge: float = 1e-2, holdout: float = 0.2,
                  seed: int = 0) -> tuple[np.ndarray, float, dict[str, float]]:
    """Ridge regression of the standardised y on centred w: (unit direction, step, quality)."""
    n = len(y)
    order = np.random.RandomState(seed).permutation(n)
    n_test = max(2, int(holdout * n)) if n >= 10 else 0
    test, train = order[:n_test], order[n_test:]
    mu_w = w[train].mean(0)
    mu_y, sd_y = y[train].mean(), y[train].std() + 1e-8
    X, t = w[train] - mu_w, (y[train] - mu_y) / sd_y
    scale = np.sqrt((X**2).sum(1).mean()) + 1e-8  # ridge relative to W's spread
    a = np.linalg.solve(X.T @ X + ridge * len(train) * scale**2 / X.shape[1] * np.eye(X.shape[1]), X.T @ t)
    norm = float(np.linalg.norm(a))
    quality: dict[str, float] = {"train_r2": float(1 - ((X @ a - t) ** 2).mean() / max(t.var(), 1e-12))}
    if n_test:
        tt = (y[test] - mu_y) / sd_y
        pred = (w[test] - mu_w) @ a
        quality["test_r2"] = float(1 - ((pred - tt) ** 2).mean() / max(tt.var(), 1e-12))
        quality["test_corr"] = float(np.corrcoef(pred, tt)[0, 1]) if tt.std() > 0 and pred.std() > 0 else 0.0
    quality["attribute_std"] = float(sd_y)
    return a / max(norm, 1e-12), 1.0 / max(norm, 1e-12), quality


def fit_mean_shift(w: np.ndarray, y: np.ndarray, holdout: float = 0.2,
                   seed: int = 0) -> tuple[np.ndarray, float, dict[str, float]]:
    """How w moves with the attribute: (unit direction, step, quality), from the regression of w on y.

    Why not :func:`fit_direction` for true parameters: the ridge regression of y on w finds the direction
    that best *predicts* the attribute, which leans on W's low-variance directions (Σ⁻¹·cov(w, y)); moving
    along it changes the regression's score but not the head (on a distilled model, glasses did not appear
    even at +5 standard deviations). ``cov(w, y) / var(y)`` is the mean change of w per unit of the attribute
    — for a yes/no attribute exactly the difference of the two classes' mean w — so moving along it draws
    what heads with more of the attribute look like. Since a head's other parameters are drawn independently
    of it (or through their own coordinates of z), the other attributes average out.

    ``step`` is the W distance of one standard deviation of the attribute, so ``--amount 2`` still means
    "two standard deviations more"; the quality is how well the projection on the direction predicts the
    attribute on held-out samples.
    """
    n = len(y)
    order = np.random.RandomState(seed).permutation(n)
    n_test = max(2, int(holdout * n)) if n >= 10 else 0
    test, train = order[:n_test], order[n_test:]
    mu_w, mu_y, sd_y = w[train].mean(0), y[train].mean(), y[train].std() + 1e-8
    b = ((w[train] - mu_w) * (y[train] - mu_y)[:, None]).mean(0) / sd_y**2  # W per unit of y
    norm = float(np.linalg.norm(b))
    unit = b / max(norm, 1e-12)
    quality: dict[str, float] = {"attribute_std": float(sd_y), "method": 1.0}
    if n_test:
        proj = (w[test] - mu_w) @ unit
        tt = y[test]
        if proj.std() > 0 and tt.std() > 0:
            corr = float(np.corrcoef(proj, tt)[0, 1])
            quality["test_corr"], quality["test_r2"] = corr, corr**2
    return unit, norm * float(sd_y), quality


def fit_directions(w: np.ndarray, scores: dict[str, np.ndarray], ridge: float = 1e-2,
                   layers: tuple[int, int] | None = None, method: str = "ridge") -> dict[str, Direction]:
    """One :class:`Direction` per attribute whose score varies across the samples; ``method`` 'ridge' (scores
    read by a feature network) or 'mean_shift' (true parameters, :func:`fit_mean_shift`)."""
    out = {}
    for name, y in scores.items():
        if np.std(y) < 1e-6:
            continue
        vec, step, quality = fit_direction(w, y, ridge) if method == "ridge" else fit_mean_shift(w, y)
        out[name] = Direction(name, torch.from_numpy(vec).float(), step, layers, quality, ATTRIBUTES.get(name, name))
    return out


def learn_directions(model: str, features: str | None, samples: int = 2000, truncation: float = 0.7, seed: int = 0,
                     device: str = "cpu", ridge: float = 1e-2,
                     progress: Callable[[int, int], None] | None = None) -> tuple[DirectionSet, Any]:
    """Load a model and a feature network, sample, score and fit; returns (directions, the loaded model)."""
    from backend.devices import hardware_description, resolve_device
    from backend.invert.avatar import base_identity
    from backend.registry import load_generator
    from train.eval.features import load_feature_net

    dev = resolve_device(device)
    loaded = load_generator(model, dev)
    from train.synthetic.latent import takes_head_latents

    if takes_head_latents(loaded.generator.cfg):
        net, features = None, "none: the true parameters of each head latent"
    elif features is None:
        from backend.errors import Aware3DError

        raise Aware3DError(f"{loaded.name} is not a distilled model: its samples' attributes must be read by a "
                           "feature network", "pass --features (e.g. the bundled aware3d-features64)")
    else:
        net = load_feature_net(features, dev)
    t0 = time.perf_counter()
    w, scores = sample_scores(loaded.generator, net, samples, truncation, seed, progress=progress)
    method = "ridge" if net is not None else "mean_shift"
    dirs = fit_directions(w, scores, ridge, method=method)
    ident = base_identity(loaded)
    prov = {"source": "train/directions.py", "features": str(features), "samples": samples, "method": method,
            "truncation": truncation, "seed": seed, "ridge": ridge, "seconds": round(time.perf_counter() - t0, 1),
            "hardware": hardware_description(dev), "command": " ".join(sys.argv)}
    return DirectionSet(dirs, {k: ident[k] for k in ("name", "state_sha256", "config")}, prov), loaded


def register(sub: Any) -> None:
    p = sub.add_parser("directions", help="learn attribute directions in W for 'aware3d edit'",
                       description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--model", required=True, help="generator (name or path)")
    p.add_argument("--features", help="feature network from 'aware3d-train features' (not needed for a distilled "
                                      "model: its z gives each head's true parameters)")
    p.add_argument("--out", type=Path, help="output (default: MODEL.directions.safetensors beside the model)")
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--truncation", type=float, default=0.7)
    p.add_argument("--ridge", type=float, default=1e-2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="CPU threads for PyTorch (default: PyTorch's choice)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from backend.cli.common import progress
    from backend.errors import Aware3DError

    if args.samples < 20:
        raise Aware3DError(f"--samples must be at least 20, got {args.samples}", "e.g. --samples 2000")
    if args.threads:
        torch.set_num_threads(max(1, args.threads))
    with progress(args.samples, "directions", "head") as bar:
        ds, loaded = learn_directions(args.model, args.features, args.samples, args.truncation, args.seed,
                                      args.device, args.ridge, lambda i, n: bar.update(i - bar.n))
    out = args.out or directions_path_for(loaded.path)
    if out is None:
        raise Aware3DError("a random model has no folder to put its directions in", "pass --out FILE")
    save_directions(out, ds)
    for name in ds.names():
        d = ds.directions[name]
        print(f"{name}: held-out R² {d.quality.get('test_r2', float('nan')):.3f}, step {d.step:.3f}")
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from backend.errors import Aware3DError

    parser = argparse.ArgumentParser(prog="python -m train.directions")
    sub = parser.add_subparsers(dest="command")
    register(sub)
    args = parser.parse_args(["directions", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except Aware3DError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
