"""Training snapshots as .safetensors (no pickles): networks, optimiser states and progress.

A snapshot holds every tensor of the networks (under ``<name>.<key>``) and of the optimisers (under
``opt.<name>.<param index>.<state key>``), and a JSON header with the options, the progress counters and the
optimisers' hyper-parameters. It is written atomically, so a kill at any moment leaves the previous snapshot
intact; resuming restores the run bit for bit (the training randomness is a function of the step counter).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from backend.fileio import atomic_path

SNAPSHOT_RE = re.compile(r"snapshot-(\d{9})\.safetensors$")
META_KEY = "aware3d_training"
_HYPER = ("lr", "betas", "eps", "weight_decay")


def snapshot_name(nimg: int) -> str:
    return f"snapshot-{nimg:09d}.safetensors"


def save_training_state(
    path: str | os.PathLike[str],
    modules: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    meta: dict[str, Any],
) -> None:
    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        for k, v in module.state_dict().items():
            tensors[f"{name}.{k}"] = v.detach().cpu().contiguous().clone()
    opt_meta: dict[str, Any] = {}
    for name, opt in optimizers.items():
        sd = opt.state_dict()
        opt_meta[name] = {"param_groups": sd["param_groups"], "scalars": {}}
        for idx, state in sd["state"].items():
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"opt.{name}.{idx}.{key}"] = value.detach().cpu().contiguous().clone()
                else:
                    opt_meta[name]["scalars"][f"{idx}.{key}"] = value
    header = {META_KEY: json.dumps({"meta": meta, "optimizers": opt_meta})}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata=header)


def load_training_state(
    path: str | os.PathLike[str],
    modules: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    with safe_open(str(path), framework="pt", device="cpu") as f:
        header = json.loads((f.metadata() or {})[META_KEY])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    fresh = []
    for name, module in modules.items():
        prefix = f"{name}."
        sd = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if not sd:  # a network added since the snapshot (e.g. the patch D of a later imitation stage)
            fresh.append(name)
            continue
        module.load_state_dict(sd, strict=True)
    for name, opt in optimizers.items():
        if name not in header["optimizers"]:
            continue
        om = header["optimizers"][name]
        state: dict[int, dict[str, Any]] = {}
        prefix = f"opt.{name}."
        for k, v in tensors.items():
            if k.startswith(prefix):
                idx, key = k[len(prefix):].split(".", 1)
                state.setdefault(int(idx), {})[key] = v.to(device)
        for k, v in om["scalars"].items():
            idx, key = k.split(".", 1)
            state.setdefault(int(idx), {})[key] = v
        # The moments come from the snapshot, the hyper-parameters from the optimiser as built now: the same
        # values on a plain resume (the options default to the stored ones), and an explicit --lr on resume
        # takes effect instead of being silently replaced by the stored rate.
        built = [{k: g[k] for k in _HYPER if k in g} for g in opt.param_groups]
        opt.load_state_dict({"state": state, "param_groups": om["param_groups"]})
        for group, hyper in zip(opt.param_groups, built):
            group.update(hyper)
    meta = dict(header["meta"])
    meta["fresh_modules"] = fresh
    return meta


def stored_options(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The options the newest snapshot of a run was trained with (None: no snapshot, or none recorded).

    Why: a resumed run must go on with its own recipe; only what the user passes explicitly changes it.
    """
    snaps = list_snapshots(run_dir)
    if not snaps:
        return None
    with safe_open(str(snaps[-1]), framework="pt", device="cpu") as f:
        header = json.loads((f.metadata() or {}).get(META_KEY, "{}"))
    options = header.get("meta", {}).get("options")
    return dict(options) if isinstance(options, dict) else None


def list_snapshots(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Snapshots in a run folder, oldest first."""
    d = Path(run_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := SNAPSHOT_RE.search(p.name))]
    return [p for _, p in sorted(found)]


def prune_snapshots(run_dir: str | os.PathLike[str], keep: int) -> None:
    snaps = list_snapshots(run_dir)
    for p in snaps[: max(len(snaps) - keep, 0)]:
        p.unlink(missing_ok=True)


def save_snapshot(run_dir: str | os.PathLike[str], position: int, modules: dict[str, torch.nn.Module],
                  optimizers: dict[str, torch.optim.Optimizer], meta: dict[str, Any], keep: int) -> Path:
    """Write the snapshot at ``position`` (images or steps) atomically, then keep only the newest ``keep``."""
    path = Path(run_dir) / snapshot_name(position)
    save_training_state(path, modules, optimizers, meta)
    prune_snapshots(run_dir, keep)
    return path


def load_newest_snapshot(run_dir: str | os.PathLike[str], modules: dict[str, torch.nn.Module],
                         optimizers: dict[str, torch.optim.Optimizer],
                         device: torch.device | str = "cpu") -> dict[str, Any] | None:
    """Load the newest snapshot of a run folder into ``modules``/``optimizers``; its meta, or None if none."""
    snaps = list_snapshots(run_dir)
    return load_training_state(snaps[-1], modules, optimizers, device) if snaps else None


def export_generator(path: str | os.PathLike[str], G_ema: torch.nn.Module, config: dict[str, Any],
                     provenance: dict[str, Any]) -> Path:
    """Write a trained generator (its EMA copy) as an ordinary Aware3D model file with its provenance."""
    from backend.checkpoints.model_file import save_model

    path = Path(path)
    save_model(path, G_ema.state_dict(), kind="gan", config=config, provenance=provenance)
    return path


def run_provenance(source: str, command: list[str], data: str, kimg: float, wall_time_s: float,
                   device: torch.device, processes: int, options: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """What an exported model records of the run that made it (shown by ``aware3d info`` and model cards)."""
    from backend.devices import hardware_description

    return {"source": source, "command": " ".join(command), "data": data, "kimg": round(kimg, 3), **extra,
            "wall_time_s": round(wall_time_s, 1), "hardware": hardware_description(device),
            "processes": processes, "options": options, "metrics": {}}
