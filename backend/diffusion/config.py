# SPDX-License-Identifier: GPL-3.0-or-later
"""Configuration of the diffusion UNet and its noise schedule (one dataclass, stored in model files)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar

from backend.config_fields import UnknownFieldsError, check_fields

KINDS = ("uncond", "cond", "depth")
COND_CHANNELS = 6  # rgb mask, masked rgb (3), masked depth, depth mask (IVID's G_c input order)
HOLE_FILLS = ("noise", "nearest")
BACKDROP_CHANNELS = 3  # the trajectory's backdrop colour, carried from the first view (backend.views.backdrop)
SHAPE_CHANNELS = 3  # the target view's known geometry: given (0/1), surface mask, depth code (rgbd.Condition)


@dataclass(frozen=True)
class UNetConfig:
    """An ADM-style UNet (IVID §5.1) scaled for CPU: residual blocks with FiLM (scale-shift) GroupNorm
    driven by the time embedding, self-attention at the low resolutions, strided down/up-sampling.

    ``kind`` sets the channels: ``uncond`` maps noisy RGBD (4) to ε (4); ``cond`` adds IVID's 6
    condition channels; ``depth`` is a time-free regressor from RGB (3) to a disparity map (1) that the
    monocular depth network uses.

    ``backdrop`` (``cond`` only) adds 3 channels: the backdrop colour of the trajectory's first view at
    every pixel, so a model trained with it paints the same backdrop in every view instead of a new guess.

    ``shape`` (``cond`` only) adds 3 channels: the target view's geometry where it is known beforehand (a
    mesh being textured, the GAN whose head is turned, a test head's truth), so the model paints inside the
    true silhouette instead of guessing where the head ends (``rgbd.Condition.shape_z``).
    """

    kind: str = "uncond"
    resolution: int = 64
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2, 2)
    blocks_per_level: int = 1
    attention_resolutions: tuple[int, ...] = (16, 8)
    head_channels: int = 32
    groups: int = 8
    dropout: float = 0.0
    # noise schedule (IVID §5.3: T = 1000, linear β from 1e-4 to 0.02) and what the network predicts:
    # IVID's ε, or v = √ᾱ·ε − √(1−ᾱ)·x0 (Salimans & Ho), which weights the high-noise steps - the global
    # layout - more and gives coherent samples after far fewer steps (measured: ε-prediction still gave
    # noise after 1 300 CPU steps); the bundled models use v.
    prediction: str = "eps"
    timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    backdrop: bool = False
    # What fills the condition's holes (``cond`` only): "noise", IVID's N(0, 1) (§4.4), or "nearest", each
    # hole pixel the colour / depth code of the nearest pixel whose colour / depth is known. The masks still
    # say which pixels are known; with "nearest" the network starts every hole from the plain warp + fill
    # baseline (backend.views.holes) instead of from nothing.
    hole_fill: str = "noise"
    shape: bool = False

    # Bounds of the numbers a model file may give (config_fields.check_fields): far beyond the bundled
    # presets, small enough that no layer of a network built from a file is absurdly large.
    FIELD_RANGES: ClassVar[dict[str, tuple[float, float]]] = {
        "resolution": (1, 4096), "base_channels": (1, 2048), "channel_mults": (1, 64),
        "blocks_per_level": (1, 64), "attention_resolutions": (1, 4096), "head_channels": (1, 4096),
        "groups": (1, 1024), "dropout": (0.0, 1.0), "timesteps": (1, 100_000), "beta_start": (0.0, 1.0),
        "beta_end": (0.0, 1.0),
    }

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.prediction not in ("eps", "v"):
            raise ValueError(f"prediction must be 'eps' or 'v', got {self.prediction!r}")
        if self.resolution % (2 ** (len(self.channel_mults) - 1)):
            raise ValueError(f"resolution {self.resolution} is not divisible by 2^{len(self.channel_mults) - 1}")
        if self.backdrop and self.kind != "cond":
            raise ValueError("backdrop channels are for kind 'cond' only")
        if self.shape and self.kind != "cond":
            raise ValueError("shape channels are for kind 'cond' only")
        if self.hole_fill not in HOLE_FILLS:
            raise ValueError(f"hole_fill must be one of {', '.join(HOLE_FILLS)}, got {self.hole_fill!r}")
        if self.hole_fill != "noise" and self.kind != "cond":
            raise ValueError("a hole fill other than noise is for kind 'cond' only (only G_c has a condition)")
        for m in self.channel_mults:
            if (self.base_channels * m) % self.groups:
                raise ValueError(f"channels {self.base_channels * m} are not divisible by groups {self.groups}")

    @property
    def in_channels(self) -> int:
        return {"uncond": 4, "cond": 4 + self.cond_channels, "depth": 3}[self.kind]

    @property
    def cond_channels(self) -> int:
        """Channels of the condition appended to the noisy RGBD (0 for ``uncond`` and ``depth``)."""
        if self.kind != "cond":
            return 0
        return COND_CHANNELS + (BACKDROP_CHANNELS if self.backdrop else 0) + (SHAPE_CHANNELS if self.shape else 0)

    @property
    def out_channels(self) -> int:
        return {"uncond": 4, "cond": 4, "depth": 1}[self.kind]

    @property
    def uses_time(self) -> bool:
        return self.kind != "depth"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channel_mults"] = list(self.channel_mults)
        d["attention_resolutions"] = list(self.attention_resolutions)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UNetConfig:
        """A config from its stored form; unknown keys, wrong types and out-of-range numbers raise
        ``ValueError`` naming the field (a model file's header is untrusted input)."""
        if not isinstance(data, dict):
            raise ValueError(f"the diffusion config must be an object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise UnknownFieldsError(f"unknown diffusion config keys: {sorted(unknown)}")
        check_fields(cls, data, cls.FIELD_RANGES)
        if len(data.get("channel_mults", ())) > 16:
            raise ValueError("channel_mults must have at most 16 levels")
        d = dict(data)
        for k in ("channel_mults", "attention_resolutions"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)

    def replace(self, **changes: Any) -> UNetConfig:
        return replace(self, **changes)


PRESETS: dict[str, UNetConfig] = {
    # the bundled 64 px models: ~1.6 M parameters, sized so that one 25-step DDIM view stays well under the
    # 5 s CPU goal (seconds per view: benchmarks/results/views_cpu.json)
    "views64": UNetConfig(resolution=64, base_channels=32, channel_mults=(1, 2, 2, 2), blocks_per_level=1,
                          attention_resolutions=(16, 8), prediction="v"),
    # tests: a few thousand parameters
    "tiny": UNetConfig(resolution=16, base_channels=8, channel_mults=(1, 2), blocks_per_level=1,
                       attention_resolutions=(8,), head_channels=8, groups=4),
}
