# SPDX-License-Identifier: GPL-3.0-or-later
"""Training the feed-forward photo encoder (:mod:`backend.invert.encoder`) for one generator."""
