"""Meshes from any model: density grid -> marching cubes -> clean-up -> colours/texture -> GLB/OBJ/PLY.

Public API (see docs/mesh.md):

* ``Field`` protocol, ``GeneratorField(G, planes)``, analytic fields (``sphere_field`` ...), ``SDFField``;
* ``MeshSettings`` + ``extract_mesh(field, settings, progress) -> Mesh``;
* ``save_mesh(mesh, path, axes='blender'|'eg3d')``;
* building blocks: ``sample_grid``, ``sample_grid_coarse_to_fine``, ``marching_cubes``, ``cleanup``,
  ``vertex_colours``, ``project_image``, ``unwrap``/``bake_texture``, ``render_depth``.
"""

from backend.mesh.coarse_to_fine import sample_grid_coarse_to_fine
from backend.mesh.colour import project_image, vertex_colours
from backend.mesh.data import Mesh
from backend.mesh.export import AXES, FORMATS, save_mesh
from backend.mesh.field import (
    EG3D_LEVEL,
    CountingField,
    Field,
    GeneratorField,
    SDFField,
    bumpy_ellipsoid_field,
    sphere_field,
    two_blob_field,
)
from backend.mesh.grid import GridSpec, official_border_pad, sample_grid
from backend.mesh.marching_cubes import marching_cubes
from backend.mesh.pipeline import MeshSettings, extract_mesh, mesh_from_grid
from backend.mesh.raster import render_depth
from backend.mesh.texture import bake_texture, unwrap

__all__ = [
    "AXES",
    "EG3D_LEVEL",
    "FORMATS",
    "CountingField",
    "Field",
    "GeneratorField",
    "GridSpec",
    "Mesh",
    "MeshSettings",
    "SDFField",
    "bake_texture",
    "bumpy_ellipsoid_field",
    "extract_mesh",
    "marching_cubes",
    "mesh_from_grid",
    "official_border_pad",
    "project_image",
    "render_depth",
    "sample_grid",
    "sample_grid_coarse_to_fine",
    "save_mesh",
    "sphere_field",
    "two_blob_field",
    "unwrap",
    "vertex_colours",
]
