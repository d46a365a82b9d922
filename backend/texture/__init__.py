# SPDX-License-Identifier: GPL-3.0-or-later
"""Camera-aligned textures on meshes (spec §11): generate views around a mesh and project them into UVs.

Modules, one job each: ``cameras_io`` (cameras.json in generator or Blender form, camera rings),
``glb_read`` (our GLB back into generator world), ``project`` (projected UVs, image sampling, textured
renders), ``visibility`` (per-point weights and the generator's condition), ``bake`` (texel geometry and
the sequential blend), ``generators`` (the projection baseline and the diffusion loader) and ``pipeline``
(:func:`texture_mesh` and :func:`write_outputs`). See docs/texture.md.
"""

from __future__ import annotations

from backend.texture.cameras_io import load_cameras, parse_camera_arg, ring
from backend.texture.generators import ViewGenerator, load_generator, projection_generator
from backend.texture.glb_read import read_glb
from backend.texture.pipeline import TextureOptions, TextureResult, texture_mesh, write_outputs

__all__ = [
    "TextureOptions",
    "TextureResult",
    "ViewGenerator",
    "load_cameras",
    "load_generator",
    "parse_camera_arg",
    "projection_generator",
    "read_glb",
    "ring",
    "texture_mesh",
    "write_outputs",
]
