"""Aware3D training: synthetic data, GAN / diffusion / depth training loops, evaluation.

Depends on ``backend``; ``backend`` never imports ``train``.
"""
