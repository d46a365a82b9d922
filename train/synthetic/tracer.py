# SPDX-License-Identifier: GPL-3.0-or-later
"""Sphere tracer and shading for batches of procedural heads, in plain torch (CPU or CUDA).

Speed comes from doing little per ray rather than from clever kernels:

* the rays of many images travel in one flat tensor; every ray reads its head's parameters from a
  per-batch table (gathered lazily, constants as plain floats), so one call of :func:`.sdf.field` serves
  all heads of the batch;
* rays are clipped to a bounding sphere around the head and a box below it (neck, shoulders, long hair);
  empty space is crossed with :func:`.sdf.bound` (a few ellipsoids, ~10x cheaper than the field), and
  only the last steps use the full field, over-relaxed;
* converged and escaped rays are compacted away every few steps; points are evaluated in cache-sized
  chunks, on one CPU thread per process (see :func:`render`);
* only the optional parts some head of the batch has are evaluated (the writer sorts heads by part set).

Shading: normals from a mirror-symmetric four-point stencil, Lambert key light with a soft shadow
(simplified field), ambient light with two-sample ambient occlusion, Blinn specular per material.

Cameras follow EG3D's FFHQ convention (``backend.cameras``): the ray of pixel (row i, column j) has
``u = (j + 0.5) / R``, ``v = (i + 0.5) / R``, camera direction ``((u - cx) / f, (v - cy) / f, 1)`` rotated
by cam2world and normalised. Depth is the distance ``t`` along that unit ray (EG3D's ``image_depth``
convention), ``inf`` where the ray misses the head.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from backend.cameras import FFHQ_FOCAL, make_label, orbit_camera
from backend.render.rays import camera_rays

from .albedo import albedo_from_parts
from .heads import head_table, torch_threads
from .layout import features
from .params import HeadParams, SceneParams
from .sdf import Tensor, bound, field

HEAD_CENTRE = (0.0, 0.04, 0.07)
HEAD_RADIUS = 0.43  # bounds every head part above the neck (a large, tilted brimmed hat reaches 0.41)
LOW_BOX_TOP = -0.15  # below this height the bound is the tri-plane box (neck, shoulders, long hair)
BOUND_STOP = 0.004  # phase 1 hands a ray to the full field this close to the bounding shapes


@dataclass
class Rendered:
    """A batch of renders: sRGB uint8 images [B, R, R, 3], depth float32 [B, R, R] (inf = background)."""

    images: np.ndarray
    depth: np.ndarray
    labels: np.ndarray  # float32 [B, 25], the EG3D camera labels of the images
    steps: int = 0  # total SDF evaluations (points), for benchmarking


def scene_label(scene: SceneParams) -> np.ndarray:
    """EG3D label (float32 [25]) of a scene's camera: FFHQ orbit (radius 2.7, pivot (0, 0, 0.2))."""
    return make_label(orbit_camera(scene.yaw_deg, scene.pitch_deg), focal=FFHQ_FOCAL)


CHUNK = 32768  # points per field evaluation: keeps the temporaries cache-sized on a CPU


class HeadBatch:
    """The parameter table of a batch of heads, split into per-head constants and per-ray rows.

    Values equal for every head of the batch stay Python floats (cheap scalar operands); the others are a
    [P, B] tensor expanded to one column per ray with ``repeat_interleave`` (rays stay sorted by head).
    """

    def __init__(self, heads: Sequence[HeadParams], device: torch.device) -> None:
        rows = [head_table(h) for h in heads]
        keys = list(rows[0])
        data = np.array([[r[k] for k in keys] for r in rows], dtype=np.float32)  # [B, P]
        same = (data == data[:1]).all(0)
        self.const = {k: float(data[0, i]) for i, k in enumerate(keys) if same[i]}
        self.keys = [k for i, k in enumerate(keys) if not same[i]]
        self.table = torch.from_numpy(np.ascontiguousarray(data[:, ~same].T)).to(device)  # [P, B]
        self.n = len(heads)
        self.feats: frozenset[str] = frozenset().union(*(features(h) for h in heads))

    def rows(self, hid: Tensor) -> Rows:
        """Parameters of each ray (``hid``: head index per ray), expanded lazily per key."""
        return Rows(self, hid)


class Rows(Mapping[str, "Tensor | float"]):
    """Per-ray parameter view: constants as floats, other keys gathered on first use and cached.

    Lazy because a call of the cheap bound touches a tenth of the keys, and only the optional parts a
    batch has are ever read; gathering all ~200 rows per compaction used to cost a third of the time.
    """

    def __init__(self, batch: HeadBatch, hid: Tensor) -> None:
        self.batch, self.hid = batch, hid
        self.cache: dict[str, Tensor] = {}
        self.index = {k: i for i, k in enumerate(batch.keys)}

    def __getitem__(self, k: str) -> Tensor | float:
        c = self.batch.const.get(k)
        if c is not None:
            return c
        v = self.cache.get(k)
        if v is None:
            v = self.batch.table[self.index[k]].index_select(0, self.hid)
            self.cache[k] = v
        return v

    def __iter__(self) -> Iterator[str]:
        yield from self.batch.const
        yield from self.batch.keys

    def __len__(self) -> int:
        return len(self.batch.const) + len(self.batch.keys)

    def chunks(self, size: int = CHUNK) -> list[tuple[slice, Rows]]:
        """Views on consecutive slices of at most ``size`` rays (each with its own cache)."""
        n = self.hid.shape[0]
        if n <= size:
            return [(slice(0, n), self)]
        return [(slice(a, a + size), Rows(self.batch, self.hid[a:a + size])) for a in range(0, n, size)]


def _eval(fn: Callable[..., Tensor], P: Rows | list[tuple[slice, Rows]], feats: frozenset[str], x: Tensor,
          y: Tensor, z: Tensor, **kw: object) -> Tensor:
    """``fn(P, feats, x, y, z)`` chunk by chunk (``P``: rows, or the list of :meth:`Rows.chunks`)."""
    chunks = P.chunks() if isinstance(P, Rows) else P
    if len(chunks) == 1:
        return fn(chunks[0][1], feats, x, y, z, **kw)
    out = torch.empty_like(x)
    for sl, Pc in chunks:
        out[sl] = fn(Pc, feats, x[sl], y[sl], z[sl], **kw)
    return out


def _ray_bounds(o: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
    """Entry and exit distance of each ray through (head sphere ∪ low box) ∩ tri-plane box; t0 > t1: miss.

    ``o``, ``d``: [3, N] (rows x, y, z).
    """
    inf = torch.full_like(d[0], float("inf"))
    inv = 1.0 / torch.where(d.abs() < 1e-9, torch.full_like(d, 1e-9), d)
    lo = (-0.5 - o) * inv
    hi = (0.5 - o) * inv
    tmin = torch.minimum(lo, hi)
    tmax = torch.maximum(lo, hi)
    box0 = tmin.amax(0)
    box1 = tmax.amin(0)
    ly0 = (-0.5 - o[1]) * inv[1]
    ly1 = (LOW_BOX_TOP - o[1]) * inv[1]
    low0 = torch.maximum(torch.maximum(tmin[0], tmin[2]), torch.minimum(ly0, ly1))
    low1 = torch.minimum(torch.minimum(tmax[0], tmax[2]), torch.maximum(ly0, ly1))
    low_hit = low0 <= low1
    c = torch.tensor(HEAD_CENTRE, dtype=o.dtype, device=o.device).unsqueeze(1)
    oc = o - c
    b = (oc * d).sum(0)
    disc = b * b - ((oc * oc).sum(0) - HEAD_RADIUS**2)
    sq = disc.clamp_min(0.0).sqrt()
    s_hit = disc > 0
    t0 = torch.minimum(torch.where(s_hit, -b - sq, inf), torch.where(low_hit, low0, inf))
    t1 = torch.maximum(torch.where(s_hit, -b + sq, -inf), torch.where(low_hit, low1, -inf))
    return torch.maximum(t0, box0), torch.minimum(t1, box1)


def _march(batch: HeadBatch, fn: Callable[..., Tensor], o: Tensor, d: Tensor, hid: Tensor, t: Tensor,
           tend: Tensor, stop: Callable[[Tensor, Tensor], Tensor], max_steps: int,
           compact_every: int = 4, omega: float = 1.6) -> tuple[Tensor, Tensor, Tensor, int]:
    """March rays with distance function ``fn`` until ``stop(dist, t)`` or ``t > tend``.

    Over-relaxed sphere tracing (Keinert et al. 2014): steps are ``omega`` times the distance while the
    unbounding spheres of consecutive points overlap; when they do not (a surface may lie in between),
    the ray steps back to the safe step and continues with plain steps. Returns (t [N], distance at t [N],
    stopped [N] bool, evaluations); rays that leave or run out of steps are not stopped.
    """
    n = t.shape[0]
    t_out = t.clone()
    d_out = torch.full_like(t, float("inf"))
    stopped = torch.zeros(n, dtype=torch.bool, device=t.device)
    idx = torch.arange(n, device=t.device)
    P = batch.rows(hid).chunks()
    prev_d = torch.zeros_like(t)
    prev_step = torch.zeros_like(t)
    w = torch.full_like(t, omega)
    evals = 0
    for step in range(max_steps):
        if idx.numel() == 0:
            break
        x, y, z = o[0] + d[0] * t, o[1] + d[1] * t, o[2] + d[2] * t
        dist = _eval(fn, P, batch.feats, x, y, z)
        evals += idx.numel()
        if omega == 1.0:  # plain sphere tracing: no overshoot bookkeeping
            halt = stop(dist, t)
            t = t + dist.masked_fill(halt, 0.0)
        else:
            over = (prev_step > prev_d) & (dist.abs() + prev_d < prev_step)
            halt = stop(dist, t) & ~over
            # overshoot: back to the plain step from the previous point, no relaxation from now on
            back = prev_d - prev_step
            w = w.masked_fill(over, 1.0)
            stepv = torch.where(over, back, (dist * w).masked_fill_(halt, 0.0))
            t = t + stepv
            prev_d = dist.masked_fill(over, 0.0)
            prev_step = stepv.masked_fill_(over, 0.0)
        if (step + 1) % compact_every == 0 or step == max_steps - 1:
            out = (t > tend) & ~halt
            done = halt | out
            if bool(done.any()):
                t_out[idx[halt]] = t[halt]
                d_out[idx[halt]] = dist[halt]
                stopped[idx[halt]] = True
                keep = ~done
                idx, t, tend, hid = idx[keep], t[keep], tend[keep], hid[keep]
                prev_d, prev_step, w = prev_d[keep], prev_step[keep], w[keep]
                o, d = o[:, keep], d[:, keep]
                P = batch.rows(hid).chunks()
    return t_out, d_out, stopped, evals


def trace(batch: HeadBatch, o: Tensor, d: Tensor, hid: Tensor, pixel_angle: float,
          max_steps: int = 80) -> tuple[Tensor, Tensor, int]:
    """Sphere-trace rays ``o + t d`` ([3, N], d unit) against their heads: (t [N], hit [N], evaluations).

    Phase 1 marches the cheap :func:`.sdf.bound` to within ``BOUND_STOP`` of the bounding shapes; phase 2
    marches the full field until the distance is below half the pixel footprint (``pixel_angle · t``),
    then two plain steps settle the ray on the surface (depth error well below a tenth of a pixel).
    """
    n = o.shape[1]
    t_out = torch.full((n,), float("inf"), dtype=o.dtype, device=o.device)
    hit_out = torch.zeros(n, dtype=torch.bool, device=o.device)
    t0, t1 = _ray_bounds(o, d)
    idx = torch.nonzero(t0 < t1).squeeze(1)
    if idx.numel() == 0:
        return t_out, hit_out, 0
    oo, dd, hh, tend = o[:, idx], d[:, idx], hid[idx], t1[idx]
    t, _, near, ev1 = _march(batch, bound, oo, dd, hh, t0[idx], tend, lambda dist, t: dist < BOUND_STOP,
                          48, 2, omega=1.0)
    idx, t, oo, dd, hh, tend = idx[near], t[near], oo[:, near], dd[:, near], hh[near], tend[near]
    eps_k = 0.5 * pixel_angle
    t, dist, hit, ev2 = _march(batch, field, oo, dd, hh, t, tend, lambda dist, t: dist.abs() < eps_k * t,
                         max_steps, 3, omega=1.6)
    idx, t, dist, oo, dd, hh = idx[hit], t[hit], dist[hit], oo[:, hit], dd[:, hit], hh[hit]
    evals = ev1 + ev2
    if idx.numel():
        # settle on the surface: plain steps, each kept only if it got closer (a ray grazing a
        # silhouette would otherwise slide along it)
        P = batch.rows(hh).chunks()

        def f(t: Tensor) -> Tensor:
            return _eval(field, P, batch.feats, oo[0] + dd[0] * t, oo[1] + dd[1] * t, oo[2] + dd[2] * t)

        for _ in range(2):
            t_new = t + dist
            d_new = f(t_new)
            better = d_new.abs() < dist.abs()
            t, dist = torch.where(better, t_new, t), torch.where(better, d_new, dist)
        evals += 2 * idx.numel()
        t_out[idx] = t
        hit_out[idx] = True
    return t_out, hit_out, evals


# Four-point gradient stencil, mirror-symmetric in x (s1 <-> s2), so that the normals - and hence the
# shading - of a symmetric head are exactly mirrored (a tetrahedral stencil is not, which showed up as
# shading differences around the eyes in the x-flip test): gx ~ f1 - f2, gy ~ f3 - f4,
# gz ~ ((f3 + f4) - (f1 + f2)) / 2, all divided by 2e.
_STENCIL = ((1.0, 0.0, -1.0), (-1.0, 0.0, -1.0), (0.0, 1.0, 1.0), (0.0, -1.0, 1.0))


def shade(batch: HeadBatch, p: Tensor, view: Tensor, hid: Tensor, light: Tensor, light_rgb: Tensor,
          key: Tensor, ambient: Tensor, shadows: bool = True) -> tuple[Tensor, int]:
    """Linear RGB [N, 3] at surface points ``p`` ([3, N]): Lambert key light with soft shadow, ambient
    with ambient occlusion, a little specular. ``view``: unit ray directions [3, N]; ``light`` [3, N];
    ``light_rgb`` [N, 3]; ``key``/``ambient`` [N].
    """
    P = batch.rows(hid).chunks()
    feats = batch.feats
    n = p.shape[1]
    evals = 0
    e = 0.0012
    f1, f2, f3, f4 = (_eval(field, P, feats, p[0] + e * k[0], p[1] + e * k[1], p[2] + e * k[2]) for k in _STENCIL)
    evals += 4 * n
    nrm = torch.stack([f1 - f2, f3 - f4, 0.5 * ((f3 + f4) - (f1 + f2))])
    nrm = nrm / nrm.norm(dim=0, keepdim=True).clamp_min(1e-12)
    alb = torch.empty(n, 3, dtype=p.dtype, device=p.device)
    spec_w = torch.empty_like(p[0])
    for sl, Pc in P:
        parts: dict[str, Tensor] = {}
        field(Pc, feats, p[0, sl], p[1, sl], p[2, sl], parts)
        alb[sl], spec_w[sl] = albedo_from_parts(Pc, parts, p[0, sl], p[1, sl], p[2, sl])
    evals += n
    # ambient occlusion: how much the field falls short of the distance along the normal
    ao = torch.zeros_like(p[0])
    for hdist, w, lod in ((0.012, 0.6, 0), (0.04, 0.4, 1)):  # far sample: details do not matter
        q = p + nrm * hdist
        ao = ao + w * (hdist - _eval(field, P, feats, q[0], q[1], q[2], lod=lod)).clamp_min(0.0) / hdist
    evals += 2 * n
    ao = (1.0 - 0.9 * ao).clamp(0.15, 1.0)
    lam = (nrm * light).sum(0).clamp_min(0.0)
    shadow = torch.ones_like(lam)
    if shadows:
        lit = torch.nonzero(lam > 0).squeeze(1)
        if lit.numel():
            shadow[lit], ev = soft_shadow(batch, hid[lit], p[:, lit] + nrm[:, lit] * 0.004, light[:, lit])
            evals += ev
    half = light - view
    half = half / half.norm(dim=0, keepdim=True).clamp_min(1e-12)
    spec = (nrm * half).sum(0).clamp_min(0.0).pow(40.0) * spec_w
    direct = (key * lam * shadow).unsqueeze(1)
    col = alb * (ambient.unsqueeze(1) * ao.unsqueeze(1) + direct) + (key * spec * shadow).unsqueeze(1)
    return col * light_rgb, evals


def soft_shadow(batch: HeadBatch, hid: Tensor, p: Tensor, light: Tensor, steps: int = 8,
                k: float = 10.0) -> tuple[Tensor, int]:
    """Penumbra factor in [0, 1] by marching the simplified field (lod 1) towards the light.

    Quilez's ``min(k·d/t)`` estimate; rays that have left the head region (``t`` > 0.35) or are already
    fully shadowed are dropped every few steps.
    """
    out = torch.ones_like(p[0])
    idx = torch.arange(p.shape[1], device=p.device)
    P = batch.rows(hid).chunks()
    t = torch.full_like(p[0], 0.004)
    res = torch.ones_like(t)
    evals = 0
    for step in range(steps):
        if idx.numel() == 0:
            break
        q = p + light * t
        dist = _eval(field, P, batch.feats, q[0], q[1], q[2], lod=1)
        evals += q.shape[1]
        res = torch.minimum(res, k * dist / t)
        t = t + dist.clamp(0.012, 0.1)
        if step % 3 == 2 or step == steps - 1:
            done = (t > 0.35) | (res < 0.01) | (step == steps - 1)
            if bool(done.any()):
                out[idx[done]] = res[done]
                keep = ~done
                idx, p, light, t, res, hid = idx[keep], p[:, keep], light[:, keep], t[keep], res[keep], hid[keep]
                P = batch.rows(hid).chunks()
    out = out.clamp(0.0, 1.0)
    return out * out * (3.0 - 2.0 * out), evals


def render(heads: Sequence[HeadParams], scenes: Sequence[SceneParams], res: int,
           device: str | torch.device = "cpu", shadows: bool = True,
           labels: np.ndarray | None = None, threads: int | None = 1) -> Rendered:
    """Render one image per (head, scene) at ``res``² with the FFHQ camera of the scene.

    ``labels`` (float32 [B, 25]) overrides the scenes' cameras with arbitrary EG3D labels. Deterministic:
    the same inputs on the same device give the same bytes (no random numbers here).

    ``threads``: torch CPU threads while rendering (restored afterwards; None = leave as is). One by
    default: the tensors are cache-sized chunks that gain little from intra-op threads, and on a busy
    machine OpenMP threads waiting for each other slow rendering down; use processes to scale
    (``build_dataset`` does).
    """
    if len(heads) != len(scenes) or not heads:
        raise ValueError("render needs one scene per head (and at least one)")
    dev = torch.device(device)
    with torch_threads(threads if dev.type == "cpu" else None):
        return _render(heads, scenes, res, dev, shadows, labels)


def _render(heads: Sequence[HeadParams], scenes: Sequence[SceneParams], res: int, dev: torch.device,
            shadows: bool, labels: np.ndarray | None) -> Rendered:
    b = len(heads)
    batch = HeadBatch(heads, dev)
    if labels is None:
        labels = np.stack([scene_label(s) for s in scenes])
    labels = np.asarray(labels, dtype=np.float32).reshape(b, 25)
    o, d = camera_rays(torch.from_numpy(labels).to(dev), res)
    m = res * res
    o, d = o.reshape(-1, 3).T.contiguous(), d.reshape(-1, 3).T.contiguous()  # [3, N]
    hid = torch.arange(b, device=dev).repeat_interleave(m)
    pixel_angle = 1.0 / (FFHQ_FOCAL * res)
    t, hit, evals = trace(batch, o, d, hid, pixel_angle)

    def per_image(vals: Sequence[Sequence[float]] | Sequence[float]) -> Tensor:
        return torch.tensor(np.asarray(vals, dtype=np.float32), device=dev)

    light = per_image([s.light_dir for s in scenes])
    light = light / light.norm(dim=1, keepdim=True)
    light_rgb = per_image([s.light_rgb for s in scenes])
    key = per_image([s.key for s in scenes])
    amb = per_image([s.ambient for s in scenes])
    # background: vertical gradient in sRGB
    v = (torch.arange(res, device=dev, dtype=torch.float32) + 0.5) / res
    top, bot = per_image([s.bg_top for s in scenes]), per_image([s.bg_bottom for s in scenes])
    bg = top[:, None, :] + (bot - top)[:, None, :] * v[None, :, None]  # [B, R, 3]
    img = bg[:, :, None, :].expand(b, res, res, 3).reshape(-1, 3).clone()
    hidx = torch.nonzero(hit).squeeze(1)
    if hidx.numel():
        hh = hid[hidx]
        p = o[:, hidx] + d[:, hidx] * t[hidx]
        col, ev = shade(batch, p, d[:, hidx], hh, light[hh].T, light_rgb[hh], key[hh], amb[hh],
                        shadows=shadows)
        evals += ev
        img[hidx] = col.clamp(0.0, 1.0).pow(1.0 / 2.2)
    img8 = (img * 255.0 + 0.5).clamp(0, 255).to(torch.uint8).reshape(b, res, res, 3)
    return Rendered(images=img8.cpu().numpy(), depth=t.reshape(b, res, res).cpu().numpy(), labels=labels,
                    steps=evals)
