"""The mesh record passed between the pipeline, the exporters, the CLI and the Blender server."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Mesh:
    """A triangle mesh in generator world units (x right, y up, face towards +z).

    ``faces`` wind counter-clockwise seen from outside (normals point out). ``colours`` are per-vertex
    sRGB in [0, 1]; ``uvs`` follow glTF (origin top-left, v down) and index ``texture`` (sRGB uint8).
    ``stats`` holds timings and counts for reports.
    """

    vertices: np.ndarray  # [V, 3] float32
    faces: np.ndarray  # [F, 3] int64
    normals: np.ndarray | None = None  # [V, 3] float32, unit
    colours: np.ndarray | None = None  # [V, 3] float32
    uvs: np.ndarray | None = None  # [V, 2] float32
    texture: np.ndarray | None = None  # [T, T, 3] uint8
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def num_vertices(self) -> int:
        return len(self.vertices)

    @property
    def num_faces(self) -> int:
        return len(self.faces)

    def arrays(self) -> dict[str, np.ndarray]:
        """Flat float32/int32 arrays (what Blender's ``foreach_set`` wants); absent parts left out."""
        out = {"vertices": np.ascontiguousarray(self.vertices, dtype=np.float32),
               "faces": np.ascontiguousarray(self.faces, dtype=np.int32)}
        for name in ("normals", "colours", "uvs"):
            value = getattr(self, name)
            if value is not None:
                out[name] = np.ascontiguousarray(value, dtype=np.float32)
        if self.texture is not None:
            out["texture"] = np.ascontiguousarray(self.texture, dtype=np.uint8)
        return out
