"""A feature network trained on the synthetic data, standing in for Inception when no weights can be downloaded.

It learns to predict each synthetic head's known parameters (pose, colours, hair style, glasses, hat, beard,
face shape, background, light) from the image, so its penultimate layer encodes what makes heads differ;
FID/KID in that space compare generated heads with the data the way Inception features compare photos.
Because it only knows synthetic heads, its FID numbers are comparable between Aware3D models, not with
published FFHQ FIDs.

A feature network must prove itself before its FID is trusted: an undertrained one maps every image to much
the same embedding, and then anything — a blank generator included — scores a small FID. So every network
carries a **held-out record** in its file (``provenance["held_out"]``: how well it predicts the parameters of
heads it never trained on, on which data, how many images), written when it is trained and re-measured with
``aware3d-train features-check``; :func:`trust` compares that record with :data:`TRUST_BAR`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from backend.checkpoints.model_file import load_tensors, read_header, read_header_of_kind, save_model
from backend.errors import Aware3DError

INPUT_RESOLUTION = 64
# The held-out bar a feature network must pass before its FID/KID is presented as trustworthy, set between what
# undertrained networks (yaw error 16-17 degrees, R² ~0; they rate blurred heads as close to real as real ones)
# and the bundled one (7.7 degrees, R² 0.44) score on 1,000 fresh heads (assets/models/aware3d-features64.md).
TRUST_BAR: dict[str, tuple[str, float]] = {"yaw_mae_deg": ("max", 10.0), "regression_r2": ("min", 0.3)}
REGRESSION_KEYS = (
    "yaw", "pitch", "skin_tone", "hair_length", "hair_volume", "face_width", "face_length", "jaw_width",
    "nose_length", "eye_size", "beard_length", "key", "ambient",
)
VECTOR_KEYS = ("skin_rgb", "hair_rgb", "clothes_rgb", "bg_top", "bg_bottom", "light_dir")
CATEGORY_KEYS = ("hair_style", "hair_colour", "glasses", "hat", "beard", "iris_colour")


@dataclass
class FeatureSpec:
    """What the heads predict: regression targets (with their normalisation) and categorical targets."""

    regression: list[str] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    categories: dict[str, list[str]] = field(default_factory=dict)
    embedding_dim: int = 256

    def to_dict(self) -> dict[str, Any]:
        """The model file's config; ``input_resolution`` (every image is resized to it) is recorded for readers
        such as ``aware3d models`` that do not import the training code."""
        return {"regression": self.regression, "mean": self.mean, "std": self.std,
                "categories": self.categories, "embedding_dim": self.embedding_dim,
                "input_resolution": INPUT_RESOLUTION}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureSpec:
        return cls(**{k: v for k, v in d.items() if k != "input_resolution"})


def targets_from_params(params: list[dict[str, Any]]) -> tuple[FeatureSpec, np.ndarray, dict[str, np.ndarray]]:
    names: list[str] = []
    columns: list[np.ndarray] = []
    for k in REGRESSION_KEYS:
        if all(k in p for p in params):
            names.append(k)
            columns.append(np.array([float(p[k]) for p in params]))
    for k in VECTOR_KEYS:
        if all(k in p for p in params):
            vals = np.array([p[k] for p in params], dtype=np.float64)
            for i in range(vals.shape[1]):
                names.append(f"{k}[{i}]")
                columns.append(vals[:, i])
    reg = np.stack(columns, axis=1) if columns else np.zeros((len(params), 0))
    mean, std = reg.mean(0), reg.std(0) + 1e-6
    cats: dict[str, list[str]] = {}
    cat_targets: dict[str, np.ndarray] = {}
    for k in CATEGORY_KEYS:
        if all(k in p for p in params):
            values = sorted({str(p[k]) for p in params})
            cats[k] = values
            cat_targets[k] = np.array([values.index(str(p[k])) for p in params])
    spec = FeatureSpec(names, mean.tolist(), std.tolist(), cats)
    return spec, ((reg - mean) / std).astype(np.float32), cat_targets


class FeatureNet(nn.Module):
    """A small residual CNN: 64² image → 256-d embedding → parameter heads."""

    def __init__(self, spec: FeatureSpec) -> None:
        super().__init__()
        self.spec = spec
        chans = [3, 32, 64, 128, 256]
        layers: list[nn.Module] = []
        for cin, cout in itertools.pairwise(chans):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.GroupNorm(8, cout), nn.SiLU(),
                       nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU()]
        self.trunk = nn.Sequential(*layers)
        self.embed = nn.Linear(256 * 4, spec.embedding_dim)
        self.regress = nn.Linear(spec.embedding_dim, len(spec.regression))
        self.classify = nn.ModuleDict({k: nn.Linear(spec.embedding_dim, len(v)) for k, v in spec.categories.items()})

    @staticmethod
    def prepare(images: torch.Tensor) -> torch.Tensor:
        """uint8 [N, 3, H, W] or float in [−1, 1] → float [−1, 1] at 64²."""
        x = images.float()
        if images.dtype == torch.uint8:
            x = x / 127.5 - 1
        if x.shape[-1] != INPUT_RESOLUTION:
            x = F.interpolate(x, size=(INPUT_RESOLUTION, INPUT_RESOLUTION), mode="bilinear", align_corners=False,
                              antialias=True)
        return x

    def embedding(self, images: torch.Tensor) -> torch.Tensor:
        h = self.trunk(self.prepare(images))
        h = F.adaptive_avg_pool2d(h, 2).flatten(1)
        return self.embed(h)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        e = F.silu(self.embedding(images))
        return self.regress(e), {k: head(e) for k, head in self.classify.items()}


def train_feature_net(
    dataset: Any,
    epochs: int = 3,
    batch: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    device: torch.device | str = "cpu",
    on_progress: Callable[[int, int, float], None] | None = None,
) -> tuple[FeatureNet, dict[str, Any]]:
    """Fit the network on a synthetic zip (with params.json); returns it and its held-out record (the images of
    a seeded 5 % split it never trained on; :func:`held_out_record`)."""
    n = len(dataset)
    params = [dataset.params(i) for i in range(n)]
    spec, reg, cats = targets_from_params(params)
    rng = np.random.RandomState(seed)
    order = rng.permutation(n)
    n_val = max(n // 20, min(n // 2, 64))
    val, tr = order[:n_val], order[n_val:]
    torch.manual_seed(seed)
    net = FeatureNet(spec).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * math.ceil(len(tr) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    images = torch.stack([dataset[i][0] for i in range(n)])
    reg_t = torch.from_numpy(reg)
    cat_t = {k: torch.from_numpy(v) for k, v in cats.items()}
    step = 0
    for _ in range(epochs):
        rng.shuffle(tr)
        for s in range(0, len(tr), batch):
            idx = torch.from_numpy(tr[s : s + batch])
            x = images[idx].to(device)  # no flip augmentation: yaw is a target
            pred_reg, pred_cat = net(x)
            loss = F.smooth_l1_loss(pred_reg, reg_t[idx].to(device))
            for k, logits in pred_cat.items():
                loss = loss + F.cross_entropy(logits, cat_t[k][idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if on_progress is not None:
                on_progress(step, steps, float(loss.detach()))
    net.eval()
    metrics = held_out_metrics(net, images[torch.from_numpy(val)], [params[i] for i in val], device)
    source = getattr(dataset, "path", "the training data")
    return net, held_out_record(metrics, len(val), f"{source}: {len(val)} of its {n} images, never trained on")


@torch.no_grad()
def held_out_metrics(net: FeatureNet, images: torch.Tensor, params: list[dict[str, Any]],
                     device: torch.device | str = "cpu") -> dict[str, float]:
    """How well ``net`` predicts the parameters of heads it did not train on: yaw/pitch error in degrees, R² of
    the normalised regression targets, accuracy per category (a value the network never saw counts as wrong)."""
    spec = net.spec
    columns = []
    for name in spec.regression:  # "skin_rgb[1]" is component 1 of the vector parameter skin_rgb
        key, _, index = name.partition("[")
        columns.append([float(p[key][int(index[:-1])]) if index else float(p[key]) for p in params])
    truth = (torch.tensor(columns, dtype=torch.float64).T - torch.tensor(spec.mean, dtype=torch.float64)) / \
        torch.tensor(spec.std, dtype=torch.float64)
    preds, classes = [], []
    for s in range(0, len(images), 256):
        r, c = net(images[s : s + 256].to(device))
        preds.append(r.double().cpu())
        classes.append({k: v.argmax(1).cpu() for k, v in c.items()})
    pred = torch.cat(preds)
    report: dict[str, float] = {}
    for i, name in enumerate(spec.regression):
        if name in ("yaw", "pitch"):
            report[f"{name}_mae_deg"] = float(((pred[:, i] - truth[:, i]).abs() * spec.std[i]).mean())
    report["regression_r2"] = float(1 - ((pred - truth) ** 2).mean() / truth.var(0).mean())
    for k, values in spec.categories.items():
        want = torch.tensor([values.index(str(p[k])) if str(p[k]) in values else -1 for p in params])
        report[f"{k}_accuracy"] = float((torch.cat([c[k] for c in classes]) == want).double().mean())
    return report


def held_out_record(metrics: dict[str, float], images: int, data: str) -> dict[str, Any]:
    """What goes into ``provenance["held_out"]``."""
    return {"images": images, "data": data, "metrics": {k: round(v, 4) for k, v in metrics.items()}}


def trust(provenance: dict[str, Any]) -> dict[str, Any]:
    """Whether FID/KID in this network's space can be trusted: its held-out record against :data:`TRUST_BAR`.

    Returns ``{"trusted": bool, "reason": str, "bar": ..., "held_out": record or None}`` for eval reports.
    """
    record = provenance.get("held_out")
    bar = {k: f"{'≤' if side == 'max' else '≥'} {v:g}" for k, (side, v) in TRUST_BAR.items()}
    if not isinstance(record, dict) or not isinstance(record.get("metrics"), dict):
        return {"trusted": False, "bar": bar, "held_out": None,
                "reason": "the feature network has no held-out record (measure one with aware3d-train "
                          "features-check --record)"}
    metrics = record["metrics"]
    failed = []
    for key, (side, limit) in TRUST_BAR.items():
        value = metrics.get(key)
        if value is None or not math.isfinite(value) or (value > limit if side == "max" else value < limit):
            failed.append(f"{key} {value} (needs {bar[key]})")
    reason = (f"held-out on {record.get('images')} images: " + ("; ".join(failed) if failed else "passes the bar"))
    return {"trusted": not failed, "bar": bar, "held_out": record, "reason": reason}


def save_feature_net(path: str | Path, net: FeatureNet, provenance: dict[str, Any]) -> None:
    save_model(path, net.state_dict(), kind="features", config=net.spec.to_dict(), provenance=provenance)


def record_held_out(path: str | Path, record: dict[str, Any], command: str) -> None:
    """Store ``record`` as the network's held-out record (weights unchanged; the previous record, if any,
    is kept under ``held_out_previous``)."""
    header = read_header(path)
    if header.kind != "features":
        raise Aware3DError(f"{Path(path).name} is a {header.kind} model, not a feature network", "")
    provenance = dict(header.provenance)
    if "held_out" in provenance:
        provenance["held_out_previous"] = provenance["held_out"]
    provenance["held_out"] = {**record, "command": command}
    config = FeatureSpec.from_dict(header.config).to_dict()  # files from before input_resolution gain it
    save_model(path, load_tensors(path), kind="features", config=config, provenance=provenance)


def load_feature_net(path: str | Path, device: torch.device | str = "cpu") -> FeatureNet:
    header = read_header_of_kind(path, "features", "a feature network", "train one with aware3d-train features")
    net = FeatureNet(FeatureSpec.from_dict(header.config))
    net.load_state_dict(load_tensors(path))
    return net.to(device).eval().requires_grad_(False)
