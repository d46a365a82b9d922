"""The ``aware3d`` command line."""
