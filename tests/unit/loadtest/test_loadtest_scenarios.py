"""Scenarios: the thinking mix, the reasoning-length hint, and vision requests with screenshots."""

import random

import pytest

from loadtest.scenarios import REASONING_HINT_FIELD, Conversation, Scenario, ScenarioError, load_scenario
from loadtest.vision import decode_data_url, image_tokens, png_size

pytestmark = pytest.mark.unit


def conv(**extra):
    sc = Scenario.from_dict({"name": "t", "prompt_tokens": 10, "output_tokens": 50, **extra})
    return Conversation(sc, "m", random.Random(3))


def test_reasoning_length_goes_to_thinking_requests_as_a_hint_and_widens_max_tokens():
    c = conv(thinking_ratio=0.5, reasoning_tokens={"dist": "uniform", "min": 200, "max": 400})
    reqs = [c.next_request() for _ in range(400)]
    thinking = [r for r in reqs if r.thinking]
    assert 120 < len(thinking) < 280  # about half
    for r in reqs:
        enabled = r.body["chat_template_kwargs"]["enable_thinking"]
        assert enabled == r.thinking
        if r.thinking:
            assert 200 <= r.body[REASONING_HINT_FIELD] <= 400
            assert r.reasoning_tokens_hint == r.body[REASONING_HINT_FIELD]
            assert r.body["max_tokens"] == 50 + r.reasoning_tokens_hint  # thinking, then the 50-token answer
        else:
            assert REASONING_HINT_FIELD not in r.body
            assert r.reasoning_tokens_hint is None
            assert r.body["max_tokens"] == 50


def test_without_a_reasoning_distribution_no_hint_is_sent():
    c = conv(thinking_ratio=1.0)
    r = c.next_request()
    assert r.thinking
    assert REASONING_HINT_FIELD not in r.body
    assert r.body["max_tokens"] == 50


def test_scenario_mean_reasoning_is_thinking_share_times_mean_length():
    sc = Scenario.from_dict(
        {"name": "t", "prompt_tokens": 10, "output_tokens": 50, "thinking_ratio": 0.25, "reasoning_tokens": 400}
    )
    assert sc.mean_reasoning_tokens() == pytest.approx(100.0)
    assert Scenario.from_dict({"name": "t", "prompt_tokens": 1, "output_tokens": 1}).mean_reasoning_tokens() is None


def test_image_tokens_follow_patch_16_and_spatial_merge_2():
    assert image_tokens(32, 32) == 1
    assert image_tokens(33, 32) == 2  # a partial tile costs a whole token
    assert image_tokens(1920, 1080) == 60 * 34
    assert image_tokens(1280, 800) == 40 * 25


def test_vision_requests_carry_png_screenshots_of_the_given_sizes_as_data_urls():
    sizes = [[1280, 800], [333, 77]]
    c = conv(images={"count": {"dist": "uniform", "min": 1, "max": 3}, "sizes": sizes, "variants": 2})
    seen = set()
    for _ in range(12):
        r = c.next_request()
        parts = r.body["messages"][-1]["content"]
        imgs = [p for p in parts if p["type"] == "image_url"]
        texts = [p for p in parts if p["type"] == "text"]
        assert 1 <= len(imgs) == r.images <= 3
        assert len(texts) == 1
        assert texts[0]["text"].strip()
        expected = 0
        for p in imgs:
            w, h = png_size(decode_data_url(p["image_url"]["url"]))
            assert [w, h] in sizes
            seen.add((w, h))
            expected += image_tokens(w, h)
        assert r.image_tokens_expected == expected
    assert seen == {(1280, 800), (333, 77)}


def test_builtin_vision_scenario_loads_and_sends_images():
    sc = load_scenario("vision")
    assert sc.images is not None
    r = Conversation(sc, "m", random.Random(1)).next_request()
    assert r.images >= 1
    assert r.image_tokens_expected > 0


def test_bad_image_sizes_are_refused_naming_the_field():
    with pytest.raises(ScenarioError, match=r"images\.sizes\[0\]"):
        conv(images={"sizes": [[0, 10]]})
    with pytest.raises(ScenarioError, match=r"images: unknown keys"):
        conv(images={"sizes": [[10, 10]], "colour": 1})
