# SPDX-License-Identifier: GPL-3.0-or-later
"""The feed-forward start of an inversion: which photo encoder fits the model, and the first avatar it gives.

Why: optimisation from the average head costs tens of seconds before the avatar looks like anyone; one
forward pass of an encoder (``backend.invert.encoder``) gives a latent and a camera in milliseconds, which
is an avatar already (``--refine none``) and a far better start for the optimisation (``fast``, ``full``).

One place chooses the encoder for the CLI, the server and the benchmark, so that they agree on what
``--encoder auto|none|FILE`` means:

* ``auto``: the first encoder file in the model folders (user folder first, then the bundled
  ``assets/models``) that belongs to the model (``check_belongs``) and predicts a latent of the model's size;
  none: the optimisation pipeline from the average head, and :attr:`EncoderChoice.notice` says why in one
  line;
* ``none``: no encoder (the optimisation pipeline as before);
* a path or a model name: that encoder, or one clear error line when it is missing, not an encoder,
  unreadable, or made for another model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from backend.errors import Aware3DError
from backend.generator import TriPlaneGenerator

ENCODER_MODES = ("auto", "none")
TRAIN_HINT = "train one for this model with aware3d-train encoder --model MODEL --export FILE"


@dataclass
class EncoderChoice:
    """The encoder to use (None: the optimisation pipeline from the average head) and what to tell the user."""

    encoder: Any  # backend.invert.encoder.PhotoEncoder | None
    info: dict[str, Any] = field(default_factory=dict)  # name, path, target, the generator it was trained for
    notice: str = ""  # one line when ``auto`` found nothing that fits, else ''


@dataclass
class Start:
    """An encoder's answer for one framed photo: the first avatar's latent and camera."""

    ws: torch.Tensor  # [1, num_ws, w_dim]
    yaw: float
    pitch: float
    seconds: float  # the forward pass (and the mapping network), not the loading
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"encoder": self.info, "yaw_deg": round(self.yaw, 2), "pitch_deg": round(self.pitch, 2),
                "seconds": round(self.seconds, 4)}


def _latent_fits(enc: Any, G: TriPlaneGenerator) -> tuple[bool, int, int]:
    """(fits, predicted size, model's size): w must match w_dim; a z may be shorter than z_dim (``encode``
    sets the coordinates beyond a head latent to 0)."""
    have = int(enc.cfg.latent_dim)
    if enc.cfg.target == "z":
        return have <= G.cfg.z_dim, have, int(G.cfg.z_dim)
    return have == G.cfg.w_dim, have, int(G.cfg.w_dim)


def _load(path: Path, device: torch.device | str) -> Any:
    """load_encoder with every way a file can be unusable turned into one line."""
    from backend.invert.encoder import load_encoder

    try:
        return load_encoder(path, device)
    except Aware3DError as exc:
        if not path.is_file():
            raise Aware3DError(f"encoder file not found: {path}", "check the path, or use --encoder auto") \
                from None
        raise Aware3DError(exc.message, exc.hint or TRAIN_HINT) from None
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:  # a header or tensors that do not fit
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise Aware3DError(f"{path.name} is not a usable photo encoder ({first})", TRAIN_HINT) from None


def _describe(enc: Any, path: Path) -> dict[str, Any]:
    gen = enc.cfg.generator or {}
    return {"name": path.name.removesuffix(".safetensors"), "path": str(path), "target": enc.cfg.target,
            "trained_for": gen.get("name"), "trained_for_config": gen.get("config")}


def check_fits(enc: Any, path: Path, G: TriPlaneGenerator, base: dict[str, Any]) -> None:
    """Raise one line when the encoder was made for another model (its own check, then the latent's size)."""
    from backend.invert.encoder import check_belongs

    # The config itself, not only its name: a model's architecture may have no registered name.
    check_belongs(enc, {**base, "config": G.cfg.to_dict()})
    fits, have, want = _latent_fits(enc, G)
    if not fits:
        raise Aware3DError(f"{path.name} predicts a {have}-value {enc.cfg.target}, model {base.get('name', '?')} "
                           f"takes {want}", TRAIN_HINT)


def encoder_files() -> list[Path]:
    """Encoder model files in the user folder, then the bundled folder (the order ``auto`` tries them in)."""
    from backend.registry import list_models

    return [e.path for e in list_models() if e.kind == "encoder"]


def choose_encoder(spec: str | Path | None, G: TriPlaneGenerator, base: dict[str, Any],
                   device: torch.device | str = "cpu") -> EncoderChoice:
    """Resolve ``--encoder`` (module docstring). ``base`` identifies the model: ``avatar.base_identity``."""
    spec = "auto" if spec is None else spec
    model = base.get("name", G.cfg.name)
    if spec == "none":
        return EncoderChoice(None)
    if spec == "auto":
        refused: list[str] = []
        for path in encoder_files():
            try:
                enc = _load(path, device)
                check_fits(enc, path, G, base)
            except Aware3DError as exc:
                refused.append(f"{path.name}: {exc.message}")
                continue
            return EncoderChoice(enc, _describe(enc, path))
        why = f"none of {len(refused)} fits it ({refused[0]})" if refused else "none is installed"
        return EncoderChoice(None, notice=f"no photo encoder for {model}: {why}; optimising from the average "
                                          "head (slower)")
    text = str(spec)
    path = Path(text).expanduser()
    if not (path.suffix or "/" in text or "\\" in text or path.exists()):
        from backend.registry import resolve_model  # a name in the model folders

        try:
            path = resolve_model(text)
        except Aware3DError:
            raise Aware3DError(f"no encoder named {text!r}", "give a .safetensors path, 'auto' or 'none' "
                               "(see aware3d models)") from None
    if not path.is_file():
        raise Aware3DError(f"encoder file not found: {path}", "check the path, or use --encoder auto")
    enc = _load(path, device)
    check_fits(enc, path, G, base)
    return EncoderChoice(enc, _describe(enc, path))


def encoder_start(enc: Any, G: TriPlaneGenerator, target: torch.Tensor, info: dict[str, Any] | None = None
                  ) -> Start:
    """One forward pass: the latent (through the mapping network for a z-encoder) and the camera of a framed
    photo [1, 3, R, R] in [−1, 1]."""
    from backend.invert.encoder import encode

    device = next(G.parameters()).device
    t0 = time.perf_counter()
    ws, yaw, pitch = encode(enc, G, target.to(device))
    return Start(ws.detach(), float(yaw), float(pitch), time.perf_counter() - t0, dict(info or {}))

