# SPDX-License-Identifier: GPL-3.0-or-later
"""Public single-head API: the ground-truth field and albedo of a :class:`HeadParams`.

These evaluate exactly what the tracer rendered (same table, same field), so e.g. marching cubes on
:func:`head_sdf` at level 0 gives the ground-truth mesh of a data set image.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from .albedo import albedo_from_parts
from .layout import colours, features, layout
from .params import HeadParams
from .sdf import Tensor, field


def head_table(params: HeadParams) -> dict[str, float]:
    """Geometry and colour table of one head (the row the tracer gives each of its rays)."""
    t = layout(params)
    t.update(colours(params))
    return t


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily use ``n`` torch CPU threads (None: unchanged).

    The field is hundreds of small element-wise kernels; on a busy machine OpenMP threads waiting for
    each other slow it down, while one thread per process runs at full speed.
    """
    old = torch.get_num_threads()
    if n is not None and n != old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


_EVAL_CHUNK = 65536


def _points(points: Tensor) -> Tensor:
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be [N, 3], got {tuple(points.shape)}")
    return points.detach().to(torch.float32)


def head_sdf(params: HeadParams, points: Tensor, threads: int | None = 1) -> Tensor:
    """Signed distance [N] (world units, negative inside) of head ``params`` at ``points`` [N, 3].

    This is the ground-truth geometry of the rendered images (same function the sphere tracer uses), e.g.
    for marching cubes at level 0 and Chamfer distances. It is a distance bound away from the surface.
    Evaluated in chunks (any N fits in memory), on the points' device, with ``threads`` CPU threads.
    """
    p = _points(points)
    P, f = head_table(params), features(params)
    out = torch.empty(p.shape[0], dtype=torch.float32, device=p.device)
    with torch.no_grad(), torch_threads(threads if p.device.type == "cpu" else None):
        for a in range(0, p.shape[0], _EVAL_CHUNK):
            c = p[a:a + _EVAL_CHUNK]
            out[a:a + _EVAL_CHUNK] = field(P, f, c[:, 0], c[:, 1], c[:, 2])
    return out


def head_albedo(params: HeadParams, points: Tensor, threads: int | None = 1) -> Tensor:
    """Linear-RGB albedo [N, 3] in [0, 1] of head ``params`` at (surface) ``points`` [N, 3].

    Meant for points on or near the surface (e.g. mesh vertices); convert with ``c ** (1 / 2.2)`` for sRGB.
    """
    p = _points(points)
    P, f = head_table(params), features(params)
    out = torch.empty(p.shape[0], 3, dtype=torch.float32, device=p.device)
    with torch.no_grad(), torch_threads(threads if p.device.type == "cpu" else None):
        for a in range(0, p.shape[0], _EVAL_CHUNK):
            c = p[a:a + _EVAL_CHUNK]
            parts: dict[str, Tensor] = {}
            field(P, f, c[:, 0], c[:, 1], c[:, 2], parts)
            out[a:a + _EVAL_CHUNK] = albedo_from_parts(P, parts, c[:, 0], c[:, 1], c[:, 2])[0]
    return out


__all__ = ["head_albedo", "head_sdf", "head_table", "torch_threads"]
