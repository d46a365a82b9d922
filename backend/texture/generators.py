# SPDX-License-Identifier: GPL-3.0-or-later
"""View generators: ``Condition -> RGBDView``. The deterministic projection baseline, and the diffusion one.

Why a plain callable: the texturing loop only needs "given what the mesh says about this view, give me
the view", so the diffusion model (``backend.views.generate.load_view_generator``), the baseline and test
doubles are interchangeable.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from backend.errors import Aware3DError
from backend.views.holes import fill_nearest
from backend.views.rgbd import Condition, RGBDView, backdrop

ViewGenerator = Callable[[Condition], RGBDView]

GENERATORS: tuple[str, ...] = ("auto", "projection", "diffusion")


def projection_generator(condition: Condition) -> RGBDView:
    """The baseline "generator": the condition itself, colour holes filled with the nearest known colour.

    Depth is the condition's where trusted, else its lower bound ``z_convex`` (for a mesh render that is
    the rendered depth, far on the background). Texturing with it re-projects the mesh's own colours, so
    it is both the no-model fallback and the identity the tests check the geometry with.
    """
    rgb = fill_nearest(np.asarray(condition.rgb, dtype=np.float32), np.asarray(condition.rgb_mask, bool))
    z = np.where(condition.depth_mask, condition.z, condition.z_convex)
    return RGBDView(rgb.astype(np.float32), backdrop(z, condition.camera), condition.camera)


def default_diffusion_model() -> Path:
    """The conditional view model ``aware3d-views-cond``: the user models folder, then the bundled one."""
    from backend.views.generate import resolve_view_model

    return resolve_view_model("cond")


def choose_generator(kind: str, model: str | Path | None = None) -> tuple[str, Path | None]:
    """Resolve ``auto``: diffusion when a model file is given or the bundled one exists, else projection."""
    if kind not in GENERATORS:
        raise Aware3DError(f"unknown generator {kind!r}", f"use one of {', '.join(GENERATORS)}")
    path = Path(model) if model is not None else default_diffusion_model()
    if kind == "auto":
        kind = "diffusion" if path.is_file() else "projection"
    if kind == "projection":
        return kind, None
    if not path.is_file():
        raise Aware3DError(f"diffusion view model {str(path)!r} not found",
                           "give --diffusion-model PATH, or use --generator projection")
    return kind, path


def describe_generator(requested: str, kind: str, path: Path | None) -> tuple[str, str | None]:
    """(label, note) saying which generator a run really uses, for the result and the status line.

    Why: "auto" used to fall back to the projection baseline without a word, and a user saw their mesh's
    own colours come back and thought the diffusion model had made them. The note is None when the run
    does what was asked; it explains the fallback when ``auto`` found no diffusion model."""
    if kind == "diffusion":
        return f"diffusion {path.stem if path is not None else ''}".strip(), None
    if requested == "auto":
        return "projection", (f"Auto found no diffusion view model ({default_diffusion_model().name}): it "
                              "re-projected the mesh's own colours; install the model or choose Diffusion")
    return "projection", None


# Texturing keeps the mesh's colour and depth where the mesh is seen well (the diffusion model only fills what
# is missing or seen poorly): measured with the bundled G_c, a full pull keeps 26.2 dB on seen pixels where
# IVID's 0.1/0.2 blurs them to 23.0 dB (docs/views.md).
TEXTURE_PULL = (1.0, 1.0)


def load_generator(kind: str, model: str | Path | None = None, steps: int = 25, seed: int = 0,
                   device: str = "cpu", pull: tuple[float, float] = TEXTURE_PULL) -> tuple[str, ViewGenerator]:
    """(resolved kind, generator) for ``projection``, ``diffusion`` or ``auto`` (see :func:`choose_generator`)."""
    kind, path = choose_generator(kind, model)
    if kind == "projection":
        return kind, projection_generator
    from backend.views.generate import load_view_generator

    return kind, load_view_generator(str(path), steps=steps, seed=seed, device=device, rgb_pull=pull[0],
                                     depth_pull=pull[1])
