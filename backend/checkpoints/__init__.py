"""Checkpoint readers and converters.

Official EG3D / Mimic3D snapshots are pickles that normally execute embedded source code when loaded; the
modules here read them as data only (see ``official_pickle``), so converting a downloaded file can never
run code from it.
"""
