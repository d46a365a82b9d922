"""Volume rendering of tri-plane fields: stratified + importance sampling and EG3D's ray marcher.

Determinism: every random number a render uses (the stratified depth jitter and the importance-sampling
``u``) is drawn up front for the whole image, from a seeded generator when one is given, so the result does
not depend on how rays are split into chunks. ``exact=True`` reproduces the official sampler's deterministic
branch: no jitter and ``u = linspace(0, 1, N)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from backend.config import RenderingConfig

# A field maps world points [N, M, 3] to {'sigma': [N, M, 1], 'rgb': [N, M, C]}.
FieldFn = Callable[[torch.Tensor], dict[str, torch.Tensor]]

DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes a whole render may use beyond its inputs (1 GiB)
RANDOM_BLOCK = 1024  # rays per seeded block of random numbers

# Which implementation of the same maths runs. "reference" is the plain eager code the official parity tests
# pin bit for bit (and the baseline the speed benchmarks compare against); "fast" computes the same function
# with fused, reordered operations, equal to it within float rounding (tolerances in tests/test_fast_paths.py
# and tests/test_fast_render.py).
Kernels = Literal["fast", "reference"]
KERNELS: tuple[str, ...] = ("fast", "reference")


@dataclass(frozen=True)
class SamplingSettings:
    """How to draw samples along rays, and how many rays to render at once."""

    exact: bool = False
    seed: int | None = None
    # One seed per sample instead of ``seed``: each sample's jitter then depends on its own seed only.
    sample_seeds: tuple[int, ...] | None = None
    depth_resolution: int | None = None
    depth_resolution_importance: int | None = None
    ray_chunk: int | None = None
    memory_budget: int = DEFAULT_MEMORY_BUDGET
    # Also return each ray's distortion (see ``ray_distortion``); training asks for it, renders do not.
    distortion: bool = False
    kernels: Kernels = "fast"

    def __post_init__(self) -> None:
        if self.kernels not in KERNELS:
            raise ValueError(f"kernels must be one of {', '.join(KERNELS)}, got {self.kernels!r}")

    @property
    def reference(self) -> bool:
        """Whether the reference implementation runs: asked for, or implied by ``exact`` (the official
        sampler's deterministic branch is only ever wanted together with the official arithmetic)."""
        return self.exact or self.kernels == "reference"


@dataclass
class RenderResult:
    """Per-ray results; ``render`` returns them channels-first ([N, C, M]), chunks channels-last."""

    features: torch.Tensor
    depth: torch.Tensor
    weight_sum: torch.Tensor  # accumulated opacity
    distortion: torch.Tensor | None = None  # per-ray spread of the weights along the ray (world units)


def bytes_per_ray(samples: int, feature_channels: int, hidden: int, out_dim: int) -> int:
    """A conservative estimate of the activation memory one ray needs (no autograd)."""
    per_sample = 3 * feature_channels + 2 * hidden + 3 * (1 + out_dim) + 24
    return 4 * samples * per_sample * 2


def ray_limits_box(origins: torch.Tensor, dirs: torch.Tensor, box_side: float) -> tuple[torch.Tensor, ...]:
    """Entry and exit distances of rays through the axis-aligned cube of side ``box_side`` at the origin."""
    half = box_side / 2
    inv = 1.0 / torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
    t0 = (-half - origins) * inv
    t1 = (half - origins) * inv
    t_near = torch.minimum(t0, t1).amax(dim=-1, keepdim=True)
    t_far = torch.maximum(t0, t1).amin(dim=-1, keepdim=True)
    return t_near, t_far


def ray_march(
    colors: torch.Tensor, densities: torch.Tensor, depths: torch.Tensor, opts: RenderingConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EG3D's MipRayMarcher2: midpoint quadrature over consecutive samples.

    Inputs [N, M, S, C] / [N, M, S, 1] / [N, M, S, 1] (sorted by depth). Returns features in [−1, 1]
    (``2·x − 1``), the expected depth and the per-interval weights.
    """
    deltas = depths[:, :, 1:] - depths[:, :, :-1]
    colors_mid = (colors[:, :, :-1] + colors[:, :, 1:]) / 2
    densities_mid = (densities[:, :, :-1] + densities[:, :, 1:]) / 2
    depths_mid = (depths[:, :, :-1] + depths[:, :, 1:]) / 2
    if opts.clamp_mode != "softplus":
        raise ValueError(f"unsupported clamp_mode {opts.clamp_mode!r}")
    densities_mid = F.softplus(densities_mid - 1)
    alpha = 1 - torch.exp(-densities_mid * deltas)
    alpha_shifted = torch.cat([torch.ones_like(alpha[:, :, :1]), 1 - alpha + 1e-10], dim=-2)
    weights = alpha * torch.cumprod(alpha_shifted, dim=-2)[:, :, :-1]
    rgb = torch.sum(weights * colors_mid, dim=-2)
    weight_total = weights.sum(dim=2)
    # The official division gives 0/0 = NaN on rays without weight (then +inf, then the far clamp). Same values
    # here, but through a safe denominator: otherwise the NaN reaches the backward pass, and a depth loss turns
    # every parameter into NaN even where those rays are masked out (a masked NaN gradient is still NaN).
    hit = weight_total > 0
    depth = torch.where(hit, torch.sum(weights * depths_mid, dim=-2) / torch.where(hit, weight_total, 1.0),
                        float("inf"))
    depth = torch.nan_to_num(depth, float("inf"))
    depth = torch.clamp(depth, torch.min(depths), torch.max(depths))
    if opts.white_back:
        rgb = rgb + 1 - weight_total
    return rgb * 2 - 1, depth, weights


def march_weights(densities: torch.Tensor, depths: torch.Tensor, opts: RenderingConfig) -> torch.Tensor:
    """The weights of :func:`ray_march` alone, from densities and depths [..., S, 1] → [..., S−1, 1].

    Why: the weights depend on the 1-channel density and depth only, so the fast path computes them without
    the [.., S, C] colour temporaries (midpoint colours, weighted sums) that ``ray_march`` builds. The same
    operations as ``ray_march``, so the same values.
    """
    if opts.clamp_mode != "softplus":
        raise ValueError(f"unsupported clamp_mode {opts.clamp_mode!r}")
    deltas = depths[..., 1:, :] - depths[..., :-1, :]
    densities_mid = F.softplus((densities[..., :-1, :] + densities[..., 1:, :]) / 2 - 1)
    alpha = 1 - torch.exp(-densities_mid * deltas)
    alpha_shifted = torch.cat([torch.ones_like(alpha[..., :1, :]), 1 - alpha + 1e-10], dim=-2)
    return alpha * torch.cumprod(alpha_shifted, dim=-2)[..., :-1, :]


def sample_weights(weights: torch.Tensor) -> torch.Tensor:
    """Per-sample weights [..., S, 1] from per-interval weights [..., S−1, 1]: ``(w_{i−1} + w_i) / 2``.

    ``sum_i w_i (c_i + c_{i+1}) / 2`` (the marcher's midpoint colours) equals ``sum_i v_i c_i`` with these
    ``v``: the colour becomes one weighted sum of the samples' own colours, with no midpoint tensor.
    """
    half = weights * 0.5
    v = torch.zeros(*weights.shape[:-2], weights.shape[-2] + 1, 1, dtype=weights.dtype, device=weights.device)
    v[..., :-1, :] += half
    v[..., 1:, :] += half
    return v


def expected_depth(weights: torch.Tensor, depths: torch.Tensor) -> torch.Tensor:
    """``ray_march``'s depth (same operations): weighted mean interval midpoint, +inf → far clamp if empty."""
    depths_mid = (depths[..., :-1, :] + depths[..., 1:, :]) / 2
    weight_total = weights.sum(dim=-2)
    hit = weight_total > 0
    depth = torch.where(hit, torch.sum(weights * depths_mid, dim=-2) / torch.where(hit, weight_total, 1.0),
                        float("inf"))
    depth = torch.nan_to_num(depth, float("inf"))
    return torch.clamp(depth, torch.min(depths), torch.max(depths))


def ray_distortion(weights: torch.Tensor, depths: torch.Tensor) -> torch.Tensor:
    """Mip-NeRF 360's distortion of each ray: how far apart along the ray its rendering weights lie.

    ``sum_ij w_i w_j |m_i - m_j| + 1/3 sum_i w_i^2 d_i`` over the ray-march intervals (midpoints ``m``,
    lengths ``d``), in world units. It is small only when a ray's weight sits in one thin interval, so as a
    training loss it turns a semi-transparent shell in front of a denser core (whose expected depth lies
    between the two, behind any level set a mesh could follow) into one surface. The double sum is computed in
    O(S) from running sums of the sorted intervals. ``weights`` [N, M, S-1, 1], ``depths`` [N, M, S, 1].
    """
    w = weights.squeeze(-1)
    mid = 0.5 * (depths[..., 1:, 0] + depths[..., :-1, 0])
    length = depths[..., 1:, 0] - depths[..., :-1, 0]
    w_before = torch.cumsum(w, dim=-1) - w
    wm_before = torch.cumsum(w * mid, dim=-1) - w * mid
    pairs = 2 * (w * (mid * w_before - wm_before)).sum(dim=-1)
    own = (w * w * length).sum(dim=-1) / 3
    return (pairs + own).unsqueeze(-1)


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, u: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Inverse-transform sampling of the piecewise-linear CDF of ``weights`` over ``bins``.

    ``bins`` [R, B], ``weights`` [R, B−2] (the official index arithmetic: the last bin is never used), ``u``
    [R, K] in [0, 1]. Returns [R, K] depths.
    """
    n_rays, n_w = weights.shape
    weights = weights + eps
    pdf = weights / weights.sum(dim=-1, keepdim=True)
    cdf = torch.cumsum(pdf, dim=-1)
    cdf = torch.cat([torch.zeros_like(cdf[:, :1]), cdf], dim=-1)
    u = u.contiguous()
    inds = torch.searchsorted(cdf, u, right=True)
    below = torch.clamp_min(inds - 1, 0)
    above = torch.clamp_max(inds, n_w)
    idx = torch.stack([below, above], dim=-1).reshape(n_rays, -1)
    cdf_g = torch.gather(cdf, 1, idx).reshape(n_rays, -1, 2)
    bins_g = torch.gather(bins, 1, idx).reshape(n_rays, -1, 2)
    denom = cdf_g[..., 1] - cdf_g[..., 0]
    denom = torch.where(denom < eps, torch.ones_like(denom), denom)
    return bins_g[..., 0] + (u - cdf_g[..., 0]) / denom * (bins_g[..., 1] - bins_g[..., 0])


def importance_depths(depths: torch.Tensor, weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Fine sample depths [N, M, K, 1] from the coarse depths [N, M, S, 1] and weights [N, M, S−1, 1]."""
    n, m, s, _ = depths.shape
    z = depths.reshape(n * m, s)
    w = weights.reshape(n * m, 1, -1).float()
    w = F.max_pool1d(w, 2, 1, padding=1)
    w = F.avg_pool1d(w, 2, 1).squeeze(1)
    w = w + 0.01
    z_mid = 0.5 * (z[:, :-1] + z[:, 1:])
    fine = sample_pdf(z_mid, w[:, 1:-1], u.reshape(n * m, -1))
    return fine.detach().reshape(n, m, -1, 1)


def _sort_samples(
    depths: torch.Tensor, colors: torch.Tensor, densities: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    order = torch.argsort(depths, dim=-2)
    depths = torch.gather(depths, -2, order)
    colors = torch.gather(colors, -2, order.expand(-1, -1, -1, colors.shape[-1]))
    densities = torch.gather(densities, -2, order)
    return depths, colors, densities


class ImportanceRenderer:
    """Renders rays through a field: coarse stratified pass, importance pass, ray march over both."""

    def __init__(self, opts: RenderingConfig) -> None:
        self.opts = opts

    def _random_streams(
        self, n: int, ray_slice: slice, n_coarse: int, n_fine: int, settings: SamplingSettings,
        device: torch.device,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Jitter [N, m, n_coarse, 1] and importance ``u`` [N, m, n_fine] for the rays of one chunk.

        Seeded numbers come in blocks of ``RANDOM_BLOCK`` rays, each from a generator seeded by (seed,
        sample, block), so a ray's numbers do not depend on the chunking and no chunk holds more than its
        own share.
        """
        m = ray_slice.stop - ray_slice.start
        if settings.exact:
            return None, torch.linspace(0, 1, n_fine, device=device).expand(n, m, n_fine)
        if settings.sample_seeds is None and settings.seed is None:
            jitter = torch.rand([n, m, n_coarse, 1], device=device)
            return jitter, torch.rand([n, m, n_fine], device=device)
        if settings.sample_seeds is not None:
            if len(settings.sample_seeds) != n:
                raise ValueError(f"{len(settings.sample_seeds)} sample seeds for a batch of {n}")
            seeds = [int(s) for s in settings.sample_seeds]
        else:
            assert settings.seed is not None
            seeds = [int(settings.seed) * 1_000_003 + i for i in range(n)]
        first, last = ray_slice.start // RANDOM_BLOCK, (ray_slice.stop - 1) // RANDOM_BLOCK
        offset = ray_slice.start - first * RANDOM_BLOCK
        jit, us = [], []
        for seed in seeds:
            blocks_j, blocks_u = [], []
            for b in range(first, last + 1):
                g = torch.Generator(device=device).manual_seed((seed * 7_919 + b) % (2**63 - 1))
                blocks_j.append(torch.rand([RANDOM_BLOCK, n_coarse, 1], device=device, generator=g))
                blocks_u.append(torch.rand([RANDOM_BLOCK, n_fine], device=device, generator=g))
            jit.append(torch.cat(blocks_j)[offset : offset + m])
            us.append(torch.cat(blocks_u)[offset : offset + m])
        return torch.stack(jit), torch.stack(us)

    def _coarse_depths(
        self, origins: torch.Tensor, dirs: torch.Tensor, n_coarse: int, jitter: torch.Tensor | None
    ) -> torch.Tensor:
        opts = self.opts
        n, m, _ = origins.shape
        if opts.ray_start == "auto" or opts.ray_end == "auto":
            start, end = ray_limits_box(origins, dirs, opts.box_warp)
            valid = end > start
            if valid.any():
                start = torch.where(valid, start, start[valid].min())
                end = torch.where(valid, end, start[valid].max())
            steps = torch.linspace(0, 1, n_coarse, device=origins.device).reshape(1, 1, -1, 1)
            depths = start.unsqueeze(-2) + (end - start).unsqueeze(-2) * steps
            delta = ((end - start) / (n_coarse - 1)).unsqueeze(-2)
        else:
            start, end = float(opts.ray_start), float(opts.ray_end)
            if opts.disparity_space_sampling:
                # Stratified in the [0, 1] parameter, then mapped linearly in disparity.
                s = torch.linspace(0, 1, n_coarse, device=origins.device).reshape(1, 1, -1, 1)
                s = s.expand(n, m, -1, -1)
                if jitter is not None:
                    s = s + jitter / (n_coarse - 1)
                return 1.0 / (1.0 / start * (1 - s) + 1.0 / end * s)
            depths = torch.linspace(start, end, n_coarse, device=origins.device).reshape(1, 1, -1, 1)
            depths = depths.expand(n, m, -1, -1)
            delta = (end - start) / (n_coarse - 1)
        if jitter is not None:
            depths = depths + jitter * delta
        return depths

    def _render_chunk(
        self,
        field: FieldFn,
        origins: torch.Tensor,
        dirs: torch.Tensor,
        jitter: torch.Tensor | None,
        u: torch.Tensor,
        n_coarse: int,
        n_fine: int,
        distortion: bool = False,
    ) -> RenderResult:
        n, m, _ = origins.shape
        depths = self._coarse_depths(origins, dirs, n_coarse, jitter)
        points = (origins.unsqueeze(-2) + depths * dirs.unsqueeze(-2)).reshape(n, -1, 3)
        out = field(points)
        colors = out["rgb"].reshape(n, m, n_coarse, -1)
        densities = out["sigma"].reshape(n, m, n_coarse, 1)
        if n_fine > 0:
            _, _, weights = ray_march(colors, densities, depths, self.opts)
            fine = importance_depths(depths, weights, u)
            points = (origins.unsqueeze(-2) + fine * dirs.unsqueeze(-2)).reshape(n, -1, 3)
            out = field(points)
            colors_f = out["rgb"].reshape(n, m, n_fine, -1)
            densities_f = out["sigma"].reshape(n, m, n_fine, 1)
            depths, colors, densities = _sort_samples(
                torch.cat([depths, fine], dim=-2),
                torch.cat([colors, colors_f], dim=-2),
                torch.cat([densities, densities_f], dim=-2),
            )
        rgb, depth, weights = ray_march(colors, densities, depths, self.opts)
        spread = ray_distortion(weights, depths) if distortion else None
        return RenderResult(rgb, depth, weights.sum(dim=2), spread)


    def _render_chunk_fast(
        self,
        field: FieldFn,
        origins: torch.Tensor,
        dirs: torch.Tensor,
        jitter: torch.Tensor | None,
        u: torch.Tensor,
        n_coarse: int,
        n_fine: int,
        distortion: bool = False,
    ) -> RenderResult:
        """:meth:`_render_chunk` without [.., S, C] colour temporaries (the fast kernels).

        The coarse pass needs only its weights (from density and depth). The final march sorts the 1-channel
        depth and density, computes per-sample weights in depth order (:func:`sample_weights`), scatters them
        back to the samples' own (coarse, fine) order and forms the colour as two batched products of weights
        [R, 1, S] with the colours [R, S, C] as the field returned them: no concatenation, no sort-gather and
        no midpoints of the colours. Equal to the reference within float rounding.
        """
        n, m, _ = origins.shape
        depths = self._coarse_depths(origins, dirs, n_coarse, jitter)
        points = (origins.unsqueeze(-2) + depths * dirs.unsqueeze(-2)).reshape(n, -1, 3)
        out = field(points)
        colors = out["rgb"]
        c = colors.shape[-1]
        densities = out["sigma"].reshape(n, m, n_coarse, 1)
        parts = [(colors.reshape(n * m, n_coarse, c), n_coarse)]
        if n_fine > 0:
            fine = importance_depths(depths, march_weights(densities, depths, self.opts), u)
            points = (origins.unsqueeze(-2) + fine * dirs.unsqueeze(-2)).reshape(n, -1, 3)
            del out, colors
            out_f = field(points)
            parts.append((out_f["rgb"].reshape(n * m, n_fine, c), n_fine))
            all_depths = torch.cat([depths, fine], dim=-2)
            order = torch.argsort(all_depths, dim=-2)
            depths = torch.gather(all_depths, -2, order)
            densities = torch.gather(
                torch.cat([densities, out_f["sigma"].reshape(n, m, n_fine, 1)], dim=-2), -2, order)
        weights = march_weights(densities, depths, self.opts)
        per_sample = sample_weights(weights)
        if n_fine > 0:
            per_sample = torch.empty_like(per_sample).scatter_(-2, order, per_sample)
        per_sample = per_sample.reshape(n * m, 1, -1)
        rgb: torch.Tensor | None = None
        start = 0
        for cols, k in parts:
            w = per_sample[:, :, start : start + k].to(cols.dtype)
            rgb = torch.bmm(w, cols) if rgb is None else torch.baddbmm(rgb, w, cols)
            start += k
        assert rgb is not None
        rgb = rgb.reshape(n, m, c).to(weights.dtype)
        depth = expected_depth(weights, depths)
        weight_total = weights.sum(dim=2)
        if self.opts.white_back:
            rgb = rgb + 1 - weight_total
        spread = ray_distortion(weights, depths) if distortion else None
        return RenderResult(rgb * 2 - 1, depth, weight_total, spread)

    def chunk_size(self, n: int, m: int, samples: int, settings: SamplingSettings, feature_channels: int,
                   hidden: int, out_channels: int) -> int:
        """Rays per chunk so that the whole render (outputs included) fits ``settings.memory_budget``."""
        if settings.ray_chunk is not None:
            return max(1, settings.ray_chunk)
        fixed = 4 * n * m * (out_channels + 2)
        per_ray = bytes_per_ray(samples, feature_channels, hidden, out_channels) * n
        return max(256, (settings.memory_budget - fixed) // per_ray)

    def render(
        self,
        field: FieldFn,
        origins: torch.Tensor,
        dirs: torch.Tensor,
        settings: SamplingSettings | None = None,
        feature_channels: int = 32,
        hidden: int = 64,
        out_channels: int = 32,
        on_chunk: Callable[[int, int], None] | None = None,
    ) -> RenderResult:
        """Render rays [N, M, 3] in chunks that fit ``settings.memory_budget``.

        Returns channels-first results: features [N, C, M], depth [N, 1, M], accumulated opacity [N, 1, M]
        and, when ``settings.distortion`` is set, the distortion [N, 1, M].
        """
        settings = settings or SamplingSettings()
        n, m, _ = origins.shape
        n_coarse = settings.depth_resolution or self.opts.depth_resolution
        n_fine = (self.opts.depth_resolution_importance if settings.depth_resolution_importance is None
                  else settings.depth_resolution_importance)
        chunk = self.chunk_size(n, m, n_coarse + n_fine, settings, feature_channels, hidden, out_channels)
        n_chunks = (m + chunk - 1) // chunk
        out: RenderResult | None = None
        for i, start in enumerate(range(0, m, chunk)):
            sl = slice(start, min(start + chunk, m))
            jitter, u = self._random_streams(n, sl, n_coarse, n_fine, settings, origins.device)
            render_chunk = self._render_chunk if settings.reference else self._render_chunk_fast
            part = render_chunk(field, origins[:, sl], dirs[:, sl], jitter, u, n_coarse, n_fine,
                                settings.distortion)
            feats, depth, alpha = (t.transpose(1, 2) for t in (part.features, part.depth, part.weight_sum))
            spread = None if part.distortion is None else part.distortion.transpose(1, 2)
            if n_chunks == 1:
                out = RenderResult(feats, depth, alpha, spread)
            else:
                if out is None:  # written chunk by chunk: no list of parts and no concatenation copy
                    out = RenderResult(feats.new_empty(n, feats.shape[1], m), depth.new_empty(n, 1, m),
                                       alpha.new_empty(n, 1, m),
                                       None if spread is None else spread.new_empty(n, 1, m))
                out.features[:, :, sl] = feats
                out.depth[:, :, sl] = depth
                out.weight_sum[:, :, sl] = alpha
                if out.distortion is not None and spread is not None:
                    out.distortion[:, :, sl] = spread
            del part, feats, depth, alpha, spread, jitter, u
            if on_chunk is not None:
                on_chunk(i + 1, n_chunks)
        assert out is not None
        return out
