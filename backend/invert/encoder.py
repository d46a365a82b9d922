# SPDX-License-Identifier: GPL-3.0-or-later
"""A feed-forward photo encoder: one forward pass from a framed photo to a latent and a camera.

Why: optimisation-based inversion costs tens of seconds per photo on a CPU, and feed-forward encoders (LP3D,
GOAE, TriPlaneNet) reach a first avatar in milliseconds; the optimisation then only refines from a good
start. It predicts the camera's yaw and pitch in degrees and a latent:

* ``z`` of a distilled model, trained on synthetic data heads (``trained_on="heads"``). That z is the head's
  own latent (each coordinate standard normal, a fixed map to the head's parameters), the same for every
  model that takes head latents, so one encoder fits every snapshot of every distilled model
  (:func:`check_belongs` accepts it for any of them and refuses it for a GAN).
* ``w`` of a GAN, trained on that GAN's own renders (``trained_on="generator"``; standardised by the mapping
  network's output statistics). Its w means nothing in another GAN, so it stays bound to the weight hash.

Model files are ``.safetensors`` of kind ``encoder`` with the :class:`EncoderConfig` as their config.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from backend.checkpoints.model_file import check_tensor_layout, load_tensors, read_header_of_kind, save_model
from backend.config import takes_head_latents
from backend.config_fields import UnknownFieldsError, check_fields
from backend.errors import Aware3DError

POSE_SCALE = (30.0, 15.0)  # degrees per output unit for yaw and pitch (their spread in FFHQ-like data)


@dataclass(frozen=True)
class ChoiceCoordinate:
    """A latent coordinate that encodes a discrete choice, and the latent each choice decodes to.

    ``middles[g][k]``: the latent of choice ``k`` (the middle of its Gaussian bin) when the coordinate
    ``depends_on`` has the value ``grid[g]`` (linear in between, held beyond the ends); one row and
    ``depends_on = -1`` for a choice whose bins stay put. For the synthetic heads, hair style and beard move
    with masculinity: a style's bin at one masculinity is another style's at the next.
    """

    index: int
    middles: tuple[tuple[float, ...], ...]
    depends_on: int = -1
    grid: tuple[float, ...] = ()

    FIELD_RANGES: ClassVar[dict[str, tuple[float, float]]] = {
        "index": (0, 1 << 16), "middles": (-1e3, 1e3), "depends_on": (-1, 1 << 16), "grid": (-1e3, 1e3)}

    @property
    def count(self) -> int:
        return len(self.middles[0])

    @classmethod
    def from_dict(cls, d: Any) -> ChoiceCoordinate:
        if isinstance(d, ChoiceCoordinate):
            return d
        if not isinstance(d, dict):
            raise ValueError(f"a choice must be an object, got {type(d).__name__}")
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise UnknownFieldsError(f"unknown choice fields: {sorted(unknown)}")
        check_fields(cls, d, cls.FIELD_RANGES, prefix="choices.")
        middles = tuple(tuple(float(v) for v in row) for row in d.get("middles", ()))
        grid = tuple(float(v) for v in d.get("grid", ()))
        depends_on = int(d.get("depends_on", -1))
        if not middles or not 2 <= len(middles[0]) <= 64 or len({len(r) for r in middles}) != 1:
            raise ValueError("a choice's middles must be rows of 2-64 numbers, all of one length")
        if (depends_on < 0) != (not grid) or len(middles) != max(1, len(grid)) \
                or any(b <= a for a, b in itertools.pairwise(grid)):
            raise ValueError("a choice that depends on a coordinate needs an ascending grid with one row of "
                             "middles per value (and one row without)")
        return cls(index=int(d["index"]), middles=middles, depends_on=depends_on, grid=grid)

    def decode(self, choice: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """The latent [N] of ``choice`` [N] (int), reading ``depends_on`` from ``latent`` [N, latent_dim]."""
        table = torch.tensor(self.middles, dtype=latent.dtype, device=latent.device)  # [G, K]
        if self.depends_on < 0:
            return table[0][choice]
        grid = torch.tensor(self.grid, dtype=latent.dtype, device=latent.device)
        x = latent[:, self.depends_on].clamp(grid[0], grid[-1])
        hi = torch.searchsorted(grid, x.contiguous()).clamp(1, len(grid) - 1)
        t = (x - grid[hi - 1]) / (grid[hi] - grid[hi - 1])
        return torch.lerp(table[hi - 1, choice], table[hi, choice], t)


@dataclass(frozen=True)
class EncoderConfig:
    target: Literal["z", "w"] = "z"          # what the latent output is: the model's z, or w
    latent_dim: int = 67
    resolution: int = 64                     # input size (the framed photo is resized to it)
    channels: tuple[int, ...] = (32, 64, 128, 256)
    embedding: int = 512
    # Side of a thumbnail of the photo itself (area average, RGB) that joins the network's pooled features
    # before the embedding (0: none). Why: the GroupNorm layers normalise away most of the absolute colour
    # and brightness, which backdrop, skin and clothes colours are; the thumbnail hands them to the
    # embedding directly.
    thumbnail: int = 0
    # The generator: name and config, and for a GAN encoder the state_sha256 of the weights it belongs to.
    generator: dict[str, Any] = field(default_factory=dict)
    # Where the examples came from: "heads" (synthetic data heads and their true latents: valid for every model
    # that takes head latents), "generator" (one generator's own renders: valid for those weights only), or ""
    # (files written before this was recorded: treated as bound to the weights).
    trained_on: str = ""
    # Latent coordinates that change sign when the photo is mirrored left-right (for head latents: the light's
    # azimuth and the head's roll; the synthetic heads are otherwise mirror-symmetric). With ``mirror_average``
    # the prediction is the mean of the photo's and its mirror image's (mirrored back), which makes it exactly
    # mirror-equivariant: no yaw bias left or right.
    mirror_negate: tuple[int, ...] = ()
    mirror_average: bool = False
    # Coordinates that encode a discrete choice (hair style, glasses, ...): each gets class logits instead of a
    # regressed value, and its latent is the middle of the most likely choice's bin. Regressing a bin's middle
    # blurs across choices (a photo between two hair styles gets the style in between), and any value inside
    # the bin is the same head.
    choices: tuple[ChoiceCoordinate, ...] = ()

    # Bounds of the numbers a model file may give (config_fields.check_fields).
    FIELD_RANGES: ClassVar[dict[str, tuple[float, float]]] = {
        "latent_dim": (1, 1 << 16), "resolution": (8, 4096), "channels": (8, 4096), "embedding": (1, 1 << 16),
        "thumbnail": (0, 32),
        "mirror_negate": (0, 1 << 16),
    }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EncoderConfig:
        """A config from its stored form; unknown keys, wrong types and out-of-range numbers raise
        ``ValueError`` naming the field, before a network is built from a file's header."""
        if not isinstance(d, dict):
            raise ValueError(f"the encoder config must be an object, got {type(d).__name__}")
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise UnknownFieldsError(f"unknown encoder config fields: {sorted(unknown)}")
        check_fields(cls, d, cls.FIELD_RANGES)
        d = dict(d)
        for key in ("channels", "mirror_negate"):
            if key in d:
                d[key] = tuple(d[key])
        if "choices" in d:
            d["choices"] = tuple(ChoiceCoordinate.from_dict(c) for c in d["choices"])
        channels, latent_dim = d.get("channels", cls.channels), d.get("latent_dim", cls.latent_dim)
        if not 1 <= len(channels) <= 16 or any(c % 8 for c in channels):
            raise ValueError("channels must be 1-16 widths, each a multiple of 8 (GroupNorm of 8 groups)")
        if any(i >= latent_dim for i in d.get("mirror_negate", ())):
            raise ValueError(f"mirror_negate names a coordinate outside the latent (0-{latent_dim - 1})")
        choices = d.get("choices", ())
        named = [c.index for c in choices]
        if len(set(named)) != len(named) or any(not 0 <= i < latent_dim for i in named) \
                or any(c.depends_on >= latent_dim or c.depends_on in named for c in choices):
            raise ValueError(f"choices must name distinct coordinates of the latent (0-{latent_dim - 1}), each "
                             "depending on none or on a regressed one")
        if set(d.get("mirror_negate", ())) & (set(named) | {c.depends_on for c in choices}):
            raise ValueError("a choice's coordinate cannot change sign in the mirror image")
        return cls(**d)

    @property
    def classes(self) -> int:
        """The number of class logits (one per option of every choice)."""
        return sum(c.count for c in self.choices)


class PhotoEncoder(nn.Module):
    """Residual-free CNN (stride-2 stages, GroupNorm, SiLU), with the photo's thumbnail beside its pooled
    features → embedding → latent, (yaw, pitch) and the choices' class logits.

    ``latent_mean``/``latent_std`` (buffers) un-standardise the latent output: zeros and ones for z (already
    standard normal), the mapping network's w statistics for a GAN.
    """

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        for cin, cout in itertools.pairwise((3, *cfg.channels)):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.GroupNorm(8, cout), nn.SiLU(),
                       nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU()]
        self.trunk = nn.Sequential(*layers)
        self.embed = nn.Linear(cfg.channels[-1] * 4 + 3 * cfg.thumbnail**2, cfg.embedding)
        self.head = nn.Linear(cfg.embedding, cfg.latent_dim + 2 + cfg.classes)
        self.register_buffer("latent_mean", torch.zeros(cfg.latent_dim))
        self.register_buffer("latent_std", torch.ones(cfg.latent_dim))
        sign = torch.ones(cfg.latent_dim + 2 + cfg.classes)
        sign[list(cfg.mirror_negate)] = -1
        sign[cfg.latent_dim] = -1  # yaw
        self.register_buffer("mirror_sign", sign, persistent=False)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [N, 3, H, W] or float in [−1, 1] → float [−1, 1] at the encoder's resolution."""
        x = images.float()
        if images.dtype == torch.uint8:
            x = x / 127.5 - 1
        r = self.cfg.resolution
        if x.shape[-1] != r or x.shape[-2] != r:
            x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False, antialias=True)
        return x

    def raw(self, images: torch.Tensor) -> torch.Tensor:
        """Outputs [N, latent_dim + 2 + classes] (what training compares): the standardised latent, yaw and
        pitch in units of ``POSE_SCALE``, then the class logits of the choices."""
        x = self.prepare(images)
        h = F.adaptive_avg_pool2d(self.trunk(x), 2).flatten(1)
        if self.cfg.thumbnail:
            h = torch.cat([h, F.adaptive_avg_pool2d(x, self.cfg.thumbnail).flatten(1)], 1)
        return self.head(F.silu(self.embed(h)))

    def split(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """(standardised latent [N, latent_dim], pose [N, 2], one logits tensor per choice)."""
        n = self.cfg.latent_dim
        sizes = [c.count for c in self.cfg.choices]
        return out[:, :n], out[:, n:n + 2], list(out[:, n + 2:].split(sizes, dim=1)) if sizes else []

    def mirrored(self, out: torch.Tensor) -> torch.Tensor:
        """Standardised outputs of the mirror image (yaw and the ``mirror_negate`` coordinates change sign).

        Only meaningful for latents whose standardisation is centred (z: mean 0), which is when it is used."""
        return out * self.mirror_sign

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(latent [N, latent_dim], pose [N, 2] = yaw and pitch in degrees)."""
        out = self.raw(images)
        if self.cfg.mirror_average:
            out = 0.5 * (out + self.mirrored(self.raw(images.flip(-1))))
        standard, pose, logits = self.split(out)
        latent = standard * self.latent_std + self.latent_mean
        for choice, scores in zip(self.cfg.choices, logits):  # after the coordinates they depend on
            latent[:, choice.index] = choice.decode(scores.argmax(1), latent)
        return latent, pose * torch.tensor(POSE_SCALE, device=out.device)


def save_encoder(path: str | Path, enc: PhotoEncoder, provenance: dict[str, Any]) -> Path:
    save_model(path, enc.state_dict(), kind="encoder", config=enc.cfg.to_dict(), provenance=provenance)
    return Path(path)


def load_encoder(path: str | Path, device: torch.device | str = "cpu") -> PhotoEncoder:
    header = read_header_of_kind(path, "encoder", "a photo encoder", "train one with aware3d-train encoder")
    check_tensor_layout(path)  # names and shapes before the network is built: one line, not a RuntimeError
    enc = PhotoEncoder(EncoderConfig.from_dict(header.config))
    enc.load_state_dict(load_tensors(path))
    return enc.to(device).eval().requires_grad_(False)


def _generator_facts(generator: Any, cfg: Any) -> tuple[str, Any, Any]:
    """(name, config or None, a callable giving the weight hash or None) of what check_belongs was given."""
    if isinstance(generator, dict):
        name = str(generator.get("name") or generator.get("config") or "?")
        if cfg is None:
            named = generator.get("config")
            if isinstance(named, dict):
                cfg = named
            elif isinstance(named, str):
                from backend.configs import CONFIGS

                cfg = CONFIGS.get(named)
        return name, cfg, lambda: generator.get("state_sha256")
    G = getattr(generator, "generator", generator)  # a registry.LoadedModel or the generator module itself
    gcfg = getattr(G, "cfg", None)
    name = str(getattr(generator, "name", None) or getattr(gcfg, "name", "?"))

    def weights() -> str | None:
        from backend.invert.avatar import state_sha256

        return state_sha256(G) if isinstance(G, nn.Module) else None

    return name, cfg if cfg is not None else gcfg, weights


def check_belongs(enc: PhotoEncoder, generator: Any, cfg: Any = None) -> None:
    """Refuse an encoder whose latents would mean nothing in ``generator`` (one clear error line).

    ``generator``: the model's identity dict (``avatar.base_identity``: name, state_sha256, config name or
    dict), a ``registry.LoadedModel`` or the generator module; ``cfg`` (a GeneratorConfig or its dict) when the
    identity's config is not a named one. A z encoder trained on data heads fits every model that takes head
    latents (whatever its weights: distilled snapshots keep improving) and no GAN; any other encoder fits the
    weights it was trained for.
    """
    name, gcfg, weights = _generator_facts(generator, cfg)
    mine = enc.cfg.generator
    if enc.cfg.target == "z" and enc.cfg.trained_on == "heads":
        if gcfg is None:
            raise Aware3DError(f"cannot tell whether {name} takes synthetic-head latents (its config is unknown)",
                               "pass the generator's config to check_belongs")
        if not takes_head_latents(gcfg):
            raise Aware3DError(f"this encoder predicts synthetic-head latents, and {name} is a GAN whose z is "
                               "not one", f"train an encoder for it: aware3d-train encoder --model {name}")
        return
    wanted = mine.get("state_sha256")
    if wanted and weights() != wanted:
        raise Aware3DError(f"this encoder was trained for {mine.get('name', '?')}, not {name}",
                           "train an encoder for this model with aware3d-train encoder")


@torch.no_grad()
def encode(enc: PhotoEncoder, G: Any, image: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    """ws [1, num_ws, w_dim] of a framed photo ([1, 3, H, W] in [−1, 1]) and its (yaw, pitch) in degrees."""
    latent, pose = enc(image)
    if enc.cfg.target == "z":
        z = latent.new_zeros(latent.shape[0], G.cfg.z_dim)
        n = min(latent.shape[1], G.cfg.z_dim)
        z[:, :n] = latent[:, :n]  # coordinates beyond the head latent carry nothing: 0
        c = torch.zeros(latent.shape[0], G.cfg.c_dim, device=latent.device)
        ws = G.mapping(z, c)
    else:
        ws = latent.unsqueeze(1).repeat(1, G.num_ws, 1)
    return ws, float(pose[0, 0]), float(pose[0, 1])
