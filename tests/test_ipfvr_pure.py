"""Pure functions of the IP-FVR engine: clip plan, blending, guidance, feedback reward, Face2Text."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from ipfvr_core.diffusion.blending import blend_overlap, blend_weights, crossfade, crossfade_weights, step_fade
from ipfvr_core.diffusion.clips import ClipSpan, plan_clips, unet_frame_evaluations
from ipfvr_core.diffusion.face2text import attribute_negation, face_to_text, merge_attributes
from ipfvr_core.diffusion.feedback import suffix_weighted_reward, suffix_weights
from ipfvr_core.diffusion.guidance import (
    NegativeStream,
    active_streams,
    combine_negative_guidance,
    condition_chunks,
    frame_condition_embeds,
)
from ipfvr_core.errors import ConfigError


# ---------------------------------------------------------------- clips
@pytest.mark.parametrize(
    ("length", "expected"),
    [
        (1, [(0, 1, 0)]),
        (23, [(0, 23, 0)]),
        (24, [(0, 24, 0)]),
        (25, [(0, 24, 0), (16, 25, 8)]),
        (100, [(0, 24, 0), (16, 40, 8), (32, 56, 8), (48, 72, 8), (64, 88, 8), (80, 100, 8)]),
    ],
)
def test_plan_clips(length: int, expected: list[tuple[int, int, int]]) -> None:
    spans = plan_clips(length, 24, 8)
    assert [(s.start, s.stop, s.context) for s in spans] == expected
    covered = sorted({f for s in spans for f in range(s.start, s.stop)})
    assert covered == list(range(length))
    for prev, cur in itertools.pairwise(spans):
        assert prev.stop - cur.start == cur.context == 8  # consecutive clips share exactly m frames
    assert all(s.length <= 24 and s.length > s.context for s in spans)


def test_plan_clips_edge_cases() -> None:
    assert plan_clips(0, 24, 8) == []
    assert plan_clips(48, 24, 0) == [ClipSpan(0, 24, 0), ClipSpan(24, 48, 0)]
    assert unet_frame_evaluations(100, 24, 8) == 24 * 5 + 20
    with pytest.raises(ConfigError) as err:
        plan_clips(10, 24, 24)
    assert err.value.field == "overlap"


# ---------------------------------------------------------------- blending
def test_blend_weights_are_exponential() -> None:
    w = blend_weights(8, 0.5)
    expected = torch.tensor([math.exp(-0.5 * j) for j in range(8)])
    torch.testing.assert_close(w, expected)
    assert w[0] == 1.0 and torch.all(w[1:] < w[:-1])
    torch.testing.assert_close(
        blend_weights(3, 0.5, index_offset=1), torch.tensor([math.exp(-0.5 * j) for j in (1, 2, 3)])
    )
    assert torch.equal(blend_weights(4, 0.0), torch.ones(4))  # beta = 0 copies the whole overlap


def test_beta_infinity_turns_blending_off() -> None:
    current = torch.randn(1, 4, 10, 3, 3)
    previous = torch.randn(1, 4, 4, 3, 3)
    off = blend_overlap(current, previous, blend_weights(4, math.inf, index_offset=1))
    assert torch.equal(off, current)
    # the large-beta limit approaches that result continuously
    near = blend_overlap(current, previous, blend_weights(4, 60.0, index_offset=1))
    torch.testing.assert_close(near, current)
    # with the design's j = 0 start, beta -> inf leaves only the pinned first overlap frame
    pinned = blend_overlap(current, previous, blend_weights(4, math.inf))
    assert torch.equal(pinned[:, :, 0], previous[:, :, 0])
    assert torch.equal(pinned[:, :, 1:], current[:, :, 1:])


def test_blend_overlap_formula() -> None:
    current = torch.randn(1, 2, 6, 2, 2)
    previous = torch.randn(1, 2, 3, 2, 2)
    w = blend_weights(3, 0.7)
    out = blend_overlap(current, previous, w)
    for j in range(3):
        torch.testing.assert_close(out[:, :, j], w[j] * previous[:, :, j] + (1 - w[j]) * current[:, :, j])
    assert torch.equal(out[:, :, 3:], current[:, :, 3:])
    with pytest.raises(ValueError):
        blend_overlap(current, torch.randn(1, 2, 2, 2, 2), w)


def test_step_fade() -> None:
    assert [step_fade(i, 10, 0) for i in range(10)] == [1.0] * 10
    fades = [step_fade(i, 10, 4) for i in range(10)]
    assert fades[:6] == [1.0] * 6
    assert fades[6:] == [0.75, 0.5, 0.25, 0.0]


def test_crossfade() -> None:
    w = crossfade_weights(3)
    np.testing.assert_allclose(w, [0.75, 0.5, 0.25])
    prev, cur = np.ones((3, 2, 2, 3), np.float32), np.zeros((3, 2, 2, 3), np.float32)
    out = crossfade(prev, cur, w)
    np.testing.assert_allclose(out[:, 0, 0, 0], w)


# ---------------------------------------------------------------- guidance
def test_combine_negative_guidance() -> None:
    eps = torch.randn(4, 2, 3, 5, 5)  # positive + 3 negatives
    weights = [1.5, 0.5, 2.0]
    out = combine_negative_guidance(eps, weights)
    expected = eps[0] + sum(w * (eps[0] - eps[1 + s]) for s, w in enumerate(weights))
    torch.testing.assert_close(out, expected)
    # one stream at weight w is classifier-free guidance at scale 1 + w
    cfg = combine_negative_guidance(eps[:2], [2.0])
    torch.testing.assert_close(cfg, eps[1] + 3.0 * (eps[0] - eps[1]))
    assert torch.equal(combine_negative_guidance(eps[:1], []), eps[0])


def test_condition_helpers() -> None:
    assert condition_chunks(4, 0) == [slice(0, 4)]
    assert condition_chunks(4, 1) == [slice(i, i + 1) for i in range(4)]
    assert condition_chunks(5, 2) == [slice(0, 2), slice(2, 4), slice(4, 5)]
    embeds = torch.arange(3).float().view(3, 1, 1).expand(3, 2, 4)
    per_frame = frame_condition_embeds(embeds, 5)
    assert per_frame.shape == (15, 2, 4)
    assert per_frame[:, 0, 0].tolist() == [0.0] * 5 + [1.0] * 5 + [2.0] * 5
    streams = [NegativeStream("q", "blurry", 1.0), NegativeStream("a", "  ", 1.0), NegativeStream("u", "x", 0.0)]
    assert [s.name for s in active_streams(streams)] == ["q"]


# ---------------------------------------------------------------- feedback reward
def test_suffix_weighted_reward() -> None:
    s = torch.tensor([0.2, 0.4, 0.9])
    expected = (s.mean() + s[1:].mean() + s[2:].mean()) / 3
    torch.testing.assert_close(suffix_weighted_reward(s), expected)
    torch.testing.assert_close(suffix_weighted_reward(torch.full((7,), 0.6)), torch.tensor(0.6))
    w = suffix_weights(24)
    assert torch.all(w[1:] > w[:-1]) and math.isclose(float(w.sum()), 1.0, rel_tol=1e-6)
    torch.testing.assert_close(suffix_weighted_reward(s), (suffix_weights(3) * s).sum())
    # later frames weigh more: the same drop costs more at the end
    assert suffix_weighted_reward(torch.tensor([1.0, 1.0, 0.0])) < suffix_weighted_reward(torch.tensor([0.0, 1.0, 1.0]))
    x = s.clone().requires_grad_(True)
    suffix_weighted_reward(x).backward()
    torch.testing.assert_close(x.grad, suffix_weights(3))


# ---------------------------------------------------------------- Face2Text
def test_face2text_from_insightface_and_celeba() -> None:
    attrs = merge_attributes({"gender": 1, "age": 24, "No_Beard": 0.1, "Eyeglasses": True, "Smiling": True})
    result = face_to_text(attrs, template="a close-up video of {description}")
    assert result.prompt == "a close-up video of a young man with a beard and eyeglasses"
    assert "woman" in result.attribute_negative and "clean-shaven" in result.attribute_negative
    assert "smiling" not in result.prompt  # expressions change per frame


def test_face2text_sources_and_user_text() -> None:
    attrs = merge_attributes({"sex": "F"}, {"Male": 0.9, "Young": 0.2, "Wearing_Hat": 0.1})
    assert attrs.male is False  # the explicit attribute wins over the model
    assert attrs.celeba["Young"] is False and attrs.celeba["Wearing_Hat"] is False
    negation = attribute_negation(attrs)
    assert negation.split(", ")[:2] == ["man", "beard"] and "hat" in negation
    unknown = face_to_text(merge_attributes({}), template="{description}")
    assert unknown.prompt == "a person" and unknown.attribute_negative == ""
    extended = face_to_text(attrs, template="{description}", user_text="red scarf")
    assert extended.prompt.endswith(", red scarf")
    overridden = face_to_text(attrs, template="{description}", user_text="red scarf", user_mode="override")
    assert overridden.prompt == "red scarf"
