# SPDX-License-Identifier: GPL-3.0-or-later
"""The ``thumbnails`` operation: one page of the seed gallery (:mod:`backend.gallery`) as PNG files.

Registered with :func:`register` (``ops_gallery.register(server)`` in ``Server.__init__``), like
``ops_invert``: the spec lives here, the add-on's client passes the arguments of operations it does not know
through, and the server checks them against this spec.

Why it is fast when warm: the model comes from the server's cache (:func:`backend.server.ops_core.load_model`),
so a second page does not load weights again; each thumbnail is one frontal render. Progress is reported after
every thumbnail with that thumbnail as the ``preview``, and the cancel is checked there, so a cancel takes
effect within one thumbnail. The result lists, per thumbnail, its seed and truncation: the mesh operation
with the same two values makes exactly the head the thumbnail shows (the latent is a function of both).
"""

from __future__ import annotations

from typing import Any

from backend.server import protocol as P
from backend.server.jobs import JobContext, JobResult
from backend.server.ops_core import load_model
from backend.validate import SEED_MAX, bounded_int, within

_NUM = (int, float)

THUMBNAILS_SPEC = P.OpSpec(True, {
    "model": P.MODEL_ARG, "device": P.DEVICE_ARG,
    "start": ((int,), 0), "page": ((int,), 0), "count": ((int,), 8),
    "truncation": (_NUM, 0.7), "image": ((str,), "final"),
}, "seed gallery: a page of fast thumbnails (seeds start + page·count …), one PNG per seed")


def register(server: Any) -> None:
    """Add ``thumbnails`` to a :class:`backend.server.server.Server`."""
    server.register_op("thumbnails", THUMBNAILS_SPEC, op_thumbnails)


def check_thumbnail_args(a: dict[str, Any]) -> tuple[list[int], float, str]:
    """Every argument checked before the model is loaded: (seeds, truncation, image kind)."""
    from backend.gallery import check_image_kind, page_seeds

    count = within("gallery_thumbnails", a["count"], "count", "e.g. 8 thumbnails per page")
    start = within("seed", a["start"], "start", "the first seed of page 0, e.g. 0")
    page = bounded_int(a["page"], 0, SEED_MAX, "page", "pages count from 0")
    truncation = float(within("truncation", a["truncation"]))
    return page_seeds(start, page, count), truncation, check_image_kind(a["image"])


def op_thumbnails(ctx: JobContext) -> JobResult:
    from backend.fileio import write_png
    from backend.gallery import render_page

    a = ctx.args
    seeds, truncation, image = check_thumbnail_args(a)
    n = len(seeds)
    ctx.plan({"load": 1, "thumbnails": n})
    model, cached = load_model(ctx, a["model"], a["device"])
    files = {}
    ctx.progress("thumbnails", 0, n, f"seed {seeds[0]} (1/{n})")

    def done(k: int, seed: int, px: Any) -> None:
        role = f"thumb_{k:02d}"
        files[role] = ctx.job_dir / f"seed{seed:010d}.png"
        write_png(files[role], px)
        ctx.progress("thumbnails", k + 1, n, f"seed {seed} ({k + 1}/{n})", preview=files[role])

    thumbs = render_page(model.generator, seeds, truncation, image, on_thumbnail=done)  # type: ignore[arg-type]
    size = list(thumbs[0].shape[:2])
    return JobResult(data={"model": model.name, "cached": cached, "seeds": seeds, "truncation": truncation,
                           "image": image, "size": size, "start": a["start"], "page": a["page"],
                           "thumbnails": [{"seed": s, "truncation": truncation, "file": f"thumb_{k:02d}"}
                                          for k, s in enumerate(seeds)]},
                     files=files)
