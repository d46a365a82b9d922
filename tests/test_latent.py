"""The fixed map between standard-normal latents and synthetic heads (train/synthetic/latent.py)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from backend.config import HEAD_LATENT_BINS, GeneratorConfig
from backend.configs import get_config
from backend.nets.layers import MappingNetwork
from train.synthetic.latent import (
    GLASSES_P,
    INDEX,
    LATENT_DIMS,
    UNUSED_WHEN,
    hair_style_p,
    head_from_latent,
    latent_bins,
    latent_from_params,
    lighting_from_latent,
    phi,
    phi_inv,
)
from train.synthetic.params import (
    GLASSES_STYLES,
    HAT_STYLES,
    HeadParams,
    sample_head,
    sample_latent,
    sample_scene,
    sample_test_scene,
)


def test_the_distilled_configs_take_exactly_a_head_latent() -> None:
    for name in ("aware3d-heads64-distilled", "tiny-distilled"):
        cfg = get_config(name)
        assert cfg.z_dim == LATENT_DIMS and not cfg.normalize_z and cfg.rendering.c_gen_conditioning_zero
    assert set(UNUSED_WHEN) <= set(INDEX)


def test_phi_inverse() -> None:
    for p in (1e-6, 0.01, 0.3, 0.5, 0.77, 0.999):
        assert phi(phi_inv(p)) == pytest.approx(p, rel=1e-9, abs=1e-12)


def _close(a: HeadParams, b: HeadParams, tol: float) -> list[str]:
    bad = []
    for f in dataclasses.fields(HeadParams):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, (str, int)) and not isinstance(x, float):
            if x != y:
                bad.append(f.name)
        elif isinstance(x, tuple):
            if max(abs(u - v) for u, v in zip(x, y)) > tol:
                bad.append(f.name)
        elif abs(x - y) > tol:
            bad.append(f.name)
    return bad


def test_parameters_map_back_to_their_latent_and_forward_again() -> None:
    """params -> z -> params is the identity (through the JSON rounding of params.json)."""
    for i in range(300):
        head, scene = sample_head(4, i), sample_scene(4, i)
        stored = HeadParams.from_json(head.to_json())
        z = latent_from_params(stored, scene)
        assert _close(head_from_latent(z), head, 2e-3) == [], i
        light = lighting_from_latent(z)
        for key in ("light_dir", "light_rgb", "key", "ambient", "bg_top", "bg_bottom"):
            assert np.allclose(getattr(light, key), getattr(scene, key), atol=2e-3), (i, key)


def test_every_data_head_is_the_head_of_its_latent() -> None:
    for split in (0, 1):
        for i in range(20):
            z = sample_latent(9, i, split)
            assert head_from_latent(z) == sample_head(9, i, split)
            assert lighting_from_latent(z).bg_top == sample_scene(9, i, split).bg_top
    # Test views of one head share its light and background; only the camera moves.
    a, b = sample_test_scene(9, 2, 0.0, 0.0), sample_test_scene(9, 2, 30.0, -10.0)
    assert a.light_dir == b.light_dir and a.bg_top == b.bg_top and a.yaw_deg != b.yaw_deg


def test_interior_coordinates_are_recovered_exactly() -> None:
    rng = np.random.default_rng(0)
    continuous = ["smile", "ear_angle_deg", "skin_tone", "brow_thickness", "fringe", "neckline", "key", "ambient",
                  "masculinity", "face_width"]
    for _ in range(50):
        z = rng.standard_normal(LATENT_DIMS) * 0.8
        back = latent_from_params(head_from_latent(z), lighting_from_latent(z))
        for name in continuous:
            assert back[INDEX[name]] == pytest.approx(z[INDEX[name]], abs=1e-6), name


def test_discrete_choices_follow_their_sampling_probabilities() -> None:
    """Gaussian bins: z ~ N(0, I) gives each style with its probability (hair style given masculinity)."""
    rng = np.random.default_rng(1)
    n = 6000
    heads = [head_from_latent(rng.standard_normal(LATENT_DIMS)) for _ in range(n)]
    glasses = np.array([["none", "round", "square", "sunglasses"].index(h.glasses) for h in heads])
    for k, p in enumerate(GLASSES_P):
        assert abs((glasses == k).mean() - p) < 4 * math.sqrt(p * (1 - p) / n)
    # Hair style: the expected frequency is the mean over heads of the conditional probabilities.
    expected = np.mean([np.array(hair_style_p(h.masculinity)) / sum(hair_style_p(h.masculinity)) for h in heads],
                       axis=0)
    styles = ("bald", "buzz", "short", "bob", "long", "bun", "ponytail")
    seen = np.array([[h.hair_style == s for s in styles] for h in heads]).mean(0)
    assert np.abs(seen - expected).max() < 0.02


def test_zero_is_the_median_head_and_truncation_pulls_towards_it() -> None:
    mid = head_from_latent(np.zeros(LATENT_DIMS))
    assert mid.face_width == pytest.approx(1.0) and mid.head_roll_deg == 0.0 and mid.glasses == "none"
    assert mid.hat == "none" and mid.beard == "none" and mid.skin_tone == pytest.approx(0.5)
    rng = np.random.default_rng(2)
    z = rng.standard_normal((200, LATENT_DIMS))
    spread = np.std([head_from_latent(v).nose_length for v in z])
    truncated = np.std([head_from_latent(0.5 * v).nose_length for v in z])
    assert truncated < 0.6 * spread


def test_unused_coordinates_change_nothing_the_renderer_draws() -> None:
    from train.synthetic.layout import colours, features, layout

    z = np.zeros(LATENT_DIMS)
    z[INDEX["hat"]] = -3.0  # no hat
    base = head_from_latent(z)
    assert base.hat == "none"
    moved = z.copy()
    moved[INDEX["hat_r"]] = 2.5
    other = head_from_latent(moved)
    assert other.hat_rgb != base.hat_rgb  # the parameter moves ...
    assert features(other) == features(base) and layout(other) == layout(base)  # ... but draws nothing new
    assert {k: v for k, v in colours(other).items() if not k.startswith("hat")} == \
        {k: v for k, v in colours(base).items() if not k.startswith("hat")}


def test_a_short_latent_is_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        head_from_latent(np.zeros(10))


def test_the_backend_bins_are_the_latent_maps_bins() -> None:
    ours = latent_bins()
    assert [i for i, _ in ours] == [i for i, _ in HEAD_LATENT_BINS]
    for (_, a), (_, b) in zip(ours, HEAD_LATENT_BINS):
        assert a == pytest.approx(b, abs=1e-9)
    assert get_config("aware3d-heads64-distilled").z_bins == HEAD_LATENT_BINS


def test_the_mapping_network_sees_the_bin_of_every_discrete_choice() -> None:
    rng = np.random.default_rng(3)
    z = rng.standard_normal((400, LATENT_DIMS))
    net = MappingNetwork(LATENT_DIMS, 0, 8, num_ws=None, z_bins=HEAD_LATENT_BINS)
    features = dict(zip([i for i, _ in HEAD_LATENT_BINS], net._bin_features(torch.from_numpy(z).float())))
    heads = [head_from_latent(row) for row in z]
    hat = features[INDEX["hat"]].argmax(1).numpy()
    glasses = features[INDEX["glasses"]].argmax(1).numpy()
    assert all(features[i].sum(1).eq(1).all() for i in features)  # one-hot
    assert [HAT_STYLES[k] for k in hat] == [h.hat for h in heads]
    assert [GLASSES_STYLES[k] for k in glasses] == [h.glasses for h in heads]
    # A choice that depends on masculinity: the bin (with masculinity) tells the style; each bin holds one.
    style_bin = features[INDEX["hair_style"]].argmax(1).numpy()
    masc_bin = np.digitize([h.masculinity for h in heads], [0.2, 0.4, 0.6, 0.8])
    seen: dict[tuple[int, int], set[str]] = {}
    for b, m, h in zip(style_bin, masc_bin, heads):
        seen.setdefault((int(b), int(m)), set()).add(h.hair_style)
    assert sum(len(v) > 1 for v in seen.values()) <= len(seen) // 4


def test_a_model_file_cannot_ask_for_absurd_bins() -> None:
    base = get_config("tiny-distilled").to_dict()
    for bad in ([[999, [0.0]]], [[3, [1.0, 0.0]]], [[3, [0.0] * 1000]], [[3, ["x"]]], [[3]]):
        with pytest.raises(ValueError):
            GeneratorConfig.from_dict({**base, "z_bins": bad})
    again = GeneratorConfig.from_dict(json_round_trip(base))
    assert again.z_bins == get_config("tiny-distilled").z_bins


def json_round_trip(d: dict) -> dict:  # type: ignore[type-arg]
    import json

    return json.loads(json.dumps(d))
