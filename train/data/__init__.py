# SPDX-License-Identifier: GPL-3.0-or-later
"""Data loading for training and evaluation: EG3D-format zips (:mod:`.zip_dataset`)."""

from .zip_dataset import ZipDataset, ZipDatasetError, mirror_label, open_dataset

__all__ = ["ZipDataset", "ZipDatasetError", "mirror_label", "open_dataset"]
