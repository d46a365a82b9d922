"""What meshing needs from a model: a density and a colour at world points.

Why a protocol: meshing (grids, coarse-to-fine, colours, texture baking) is written and tested against this
small interface, with analytic fields standing in for a trained generator. ``GeneratorField`` adapts the
tri-plane generator; its planes are computed once per latent (``G.synthesize_planes``) and held here, so
every grid chunk and every colour query only runs the cheap plane sampling + decoder.

Conventions: generator world units (x right, y up, face towards +z), the field box is the cube
``[-box_size/2, box_size/2]^3`` centred on the origin, density is *higher inside* (EG3D's raw sigma; its
surface is at level 10), colours are RGB in [0, 1] (sRGB-like, as the generator's images).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

Tensor = torch.Tensor
SDF = Callable[[Tensor], Tensor]

DEFAULT_BYTES_PER_POINT = 256
EG3D_LEVEL = 10.0


@runtime_checkable
class Field(Protocol):
    """A density/colour field over a centred cube (see module docstring).

    ``density(xyz [M, 3]) -> [M]`` and ``colour(xyz [M, 3]) -> [M, 3]``, both on ``device``. Implementations
    may define ``level`` (the density of the field's own surface, which meshes use unless told otherwise;
    :func:`surface_level` supplies EG3D's 10) and
    ``bytes_per_point`` (peak working memory per queried point) so callers size chunks from a
    memory budget; :func:`bytes_per_point` supplies a default.
    """

    box_size: float
    device: torch.device

    def density(self, xyz: Tensor) -> Tensor: ...

    def colour(self, xyz: Tensor) -> Tensor: ...


def surface_level(f: Field) -> float:
    """The density a mesh of ``f`` is made at by default: the field's own ``level``, else EG3D's 10."""
    return float(getattr(f, "level", EG3D_LEVEL))


def bytes_per_point(f: Field) -> int:
    """The field's declared working memory per query point, or a conservative default."""
    return int(getattr(f, "bytes_per_point", DEFAULT_BYTES_PER_POINT))


# ----------------------------------------------------------------------------------------------------------
# Analytic fields (tests, benchmarks, the synthetic-head SDF)
# ----------------------------------------------------------------------------------------------------------


def position_colour(xyz: Tensor, box_size: float = 1.0) -> Tensor:
    """A smooth colour that encodes position (0.5 + xyz / box), easy to check after meshing."""
    return (0.5 + xyz / box_size).clamp(0.0, 1.0)


@dataclass
class SDFField:
    """Density ``level - slope * sdf(p)`` from a signed distance function (negative inside).

    The surface at ``level`` is exactly the SDF's zero set, so a mesh can be checked against ground truth;
    ``slope`` (density per world unit) makes the values look like EG3D's sigma around the surface.
    """

    sdf: SDF
    box_size: float = 1.0
    level: float = EG3D_LEVEL
    slope: float = 200.0
    colour_fn: Callable[[Tensor], Tensor] | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    bytes_per_point: int = 64
    name: str = "sdf"

    def density(self, xyz: Tensor) -> Tensor:
        return self.level - self.slope * self.sdf(xyz.to(torch.float32))

    def colour(self, xyz: Tensor) -> Tensor:
        if self.colour_fn is not None:
            return self.colour_fn(xyz)
        return position_colour(xyz, self.box_size)


def sphere_sdf(radius: float = 0.3, centre: Sequence[float] = (0.0, 0.0, 0.0)) -> SDF:
    def sdf(p: Tensor) -> Tensor:
        c = torch.tensor(centre, dtype=p.dtype, device=p.device)
        return (p - c).norm(dim=-1) - radius

    return sdf


def ellipsoid_sdf(radii: Sequence[float], centre: Sequence[float] = (0.0, 0.0, 0.0)) -> SDF:
    """Distance bound ``k0 (k0 - 1) / k1`` (exact on the surface)."""

    def sdf(p: Tensor) -> Tensor:
        r = torch.tensor(radii, dtype=p.dtype, device=p.device)
        q = p - torch.tensor(centre, dtype=p.dtype, device=p.device)
        k0 = (q / r).norm(dim=-1)
        k1 = (q / (r * r)).norm(dim=-1).clamp_min(1e-9)
        return k0 * (k0 - 1.0) / k1

    return sdf


def bumpy_ellipsoid_sdf(
    radii: Sequence[float] = (0.24, 0.3, 0.22), amplitude: float = 0.012, frequency: float = 25.0
) -> SDF:
    """An ellipsoid with a sin·sin·sin relief: head-sized, with detail at a few voxels of a 256³ grid."""
    base = ellipsoid_sdf(radii)

    def sdf(p: Tensor) -> Tensor:
        bump = torch.sin(frequency * p).prod(dim=-1)
        return base(p) - amplitude * bump

    return sdf


def two_blob_sdf() -> SDF:
    """A head-like ellipsoid plus a small, separate floater (what component filtering must remove)."""
    head = ellipsoid_sdf((0.22, 0.28, 0.22), (0.0, -0.02, 0.0))
    floater = sphere_sdf(0.035, (0.27, 0.27, 0.1))

    def sdf(p: Tensor) -> Tensor:
        return torch.minimum(head(p), floater(p))

    return sdf


def sphere_field(radius: float = 0.3, **kw: Any) -> SDFField:
    return SDFField(sphere_sdf(radius), name="sphere", **kw)


def bumpy_ellipsoid_field(**kw: Any) -> SDFField:
    return SDFField(bumpy_ellipsoid_sdf(), name="bumpy-ellipsoid", **kw)


def two_blob_field(**kw: Any) -> SDFField:
    return SDFField(two_blob_sdf(), name="two-blob", **kw)


ANALYTIC_FIELDS: dict[str, Callable[..., SDFField]] = {
    "sphere": sphere_field,
    "bumpy-ellipsoid": bumpy_ellipsoid_field,
    "two-blob": two_blob_field,
}


class CountingField:
    """Wraps a field and counts the points queried (to measure what coarse-to-fine saves)."""

    def __init__(self, inner: Field) -> None:
        self.inner = inner
        self.box_size = inner.box_size
        self.device = inner.device
        self.level = surface_level(inner)
        self.bytes_per_point = bytes_per_point(inner)
        self.density_points = 0
        self.colour_points = 0
        self.density_calls = 0

    def density(self, xyz: Tensor) -> Tensor:
        self.density_points += int(xyz.shape[0])
        self.density_calls += 1
        return self.inner.density(xyz)

    def colour(self, xyz: Tensor) -> Tensor:
        self.colour_points += int(xyz.shape[0])
        return self.inner.colour(xyz)


# ----------------------------------------------------------------------------------------------------------
# The generator
# ----------------------------------------------------------------------------------------------------------


class GeneratorField:
    """A tri-plane generator's field for one latent: ``G.query(planes, coords)`` on cached planes.

    ``planes``: what ``G.synthesize_planes(ws, noise_mode='const')`` returned (a list of plane sets
    [N, 3, C, S, S], or a single tensor); ``batch_index`` picks the latent. The box is
    ``G.cfg.rendering.box_warp`` (1.0 for FFHQ, 1.6 for ShapeNet).

    ``kernels='fast'`` (default): the planes are laid out once as texel rows (``plane_rows``) for all of a
    mesh's grid chunks and colour queries, and density queries ask for the density alone (the decoder's
    colour outputs are half its work); equal to the reference within float rounding
    (tests/test_fast_render.py). ``kernels='reference'``: ``G.query``'s reference kernels, as before issue 17
    (the benchmark's baseline).
    """

    def __init__(self, G: Any, planes: Tensor | list[Tensor], batch_index: int = 0,
                 kernels: str = "fast") -> None:
        if kernels not in ("fast", "reference"):
            raise ValueError(f"kernels must be 'fast' or 'reference', got {kernels!r}")
        self.G = G
        plane_list = planes if isinstance(planes, (list, tuple)) else [planes]
        self.planes = [p[batch_index : batch_index + 1] for p in plane_list]
        self.box_size = float(G.cfg.rendering.box_warp)
        self.device = self.planes[0].device
        self.level = float(getattr(G.cfg, "mesh_level", EG3D_LEVEL))  # the model's own surface level
        self.kernels = kernels
        self._rows: Any = None
        cfg = G.cfg
        channels = int(getattr(cfg, "plane_channels", 32)) * len(self.planes)
        hidden = int(getattr(cfg, "decoder_hidden", 64))
        if kernels == "fast":
            # The fast query works in fixed blocks (backend.nets.decoder.fast_block) whatever the chunk; per
            # point a chunk holds its coordinates, the outputs and the grid's index temporaries.
            self.bytes_per_point = 4 * (2 * 33 + 3 * 8 + 16)
        else:
            # grid_sample output (3 planes) + decoder hidden/outputs, float32, with headroom for temporaries.
            self.bytes_per_point = 4 * (3 * channels * 2 + 2 * hidden + 2 * 33 + 16)

    def _table(self) -> Any:
        """The planes as texel rows, built on the first fast query and kept for the field's lifetime."""
        if self._rows is None:
            from backend.render.triplane import plane_rows

            with torch.no_grad():
                self._rows = plane_rows(self.planes)
        return self._rows

    def _query(self, xyz: Tensor, density_only: bool = False) -> dict[str, Tensor]:
        coords = xyz.to(self.device, torch.float32)[None]
        with torch.no_grad():
            if self.kernels == "reference":
                return self.G.query(self.planes, coords, kernels="reference")
            return self.G.query(self.planes, coords, kernels="fast", rows=self._table(),
                                density_only=density_only)

    def density(self, xyz: Tensor) -> Tensor:
        return self._query(xyz, density_only=True)["sigma"][0, :, 0].float()

    def colour(self, xyz: Tensor) -> Tensor:
        return self._query(xyz)["rgb"][0, :, :3].float().clamp(0.0, 1.0)


def default_colour_inset(box_size: float, resolution: int) -> float:
    """How far inside the surface to read colours: one voxel of the extraction grid."""
    return box_size / max(resolution - 1, 1)


__all__ = [
    "ANALYTIC_FIELDS",
    "EG3D_LEVEL",
    "CountingField",
    "Field",
    "GeneratorField",
    "SDFField",
    "bumpy_ellipsoid_field",
    "bytes_per_point",
    "default_colour_inset",
    "ellipsoid_sdf",
    "position_colour",
    "sphere_field",
    "sphere_sdf",
    "two_blob_field",
    "two_blob_sdf",
]
