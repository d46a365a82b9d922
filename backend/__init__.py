"""Aware3D backend: 3D-aware generators (EG3D / Mimic3D compatible), rendering, cameras, checkpoints.

The backend runs in its own Python process (never inside Blender). Everything here is importable and
testable without Blender or a GPU.
"""

__version__ = "0.1.0"
