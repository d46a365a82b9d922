# SPDX-License-Identifier: GPL-3.0-or-later
"""The backend server the Blender add-on talks to (``python -m backend.server`` / ``aware3d serve``).

Importing this package imports nothing heavy: :mod:`backend.server.protocol` is standard-library only (the
add-on ships a copy of it), and torch is loaded only when the server runs.
"""
