"""The normalizer algebra: presets are bit-identical to the named normalizers; new compositions against
loop references; clear errors for what cannot be composed."""

from __future__ import annotations

import json
import random

import pytest
import torch

from bnpo_trl.normalizers import get_normalizer
from bnpo_trl.normalizers.algebra import CENTERS, POSTS, PRESETS, SCALES, ComposedNormalizer
from bnpo_trl.normalizers.specs import spec_label
from tests.reference_normalizers import (
    EBPORef,
    SequentialWelford,
    beta_fit_ref,
    finalize,
    groups,
    inverse_beta_pdf,
    mean_or_nan,
    rloo_ref,
    scored,
    stdev_or_nan,
)


def batch_of(seed: int, group_size: int, num_funcs: int | None, binary: bool):
    g = torch.Generator().manual_seed(seed)
    num_groups = 1 + seed % 6
    shape = (num_groups * group_size,) if num_funcs is None else (num_groups * group_size, num_funcs)
    rewards = (torch.rand(shape, generator=g) < 0.5).float() if binary else torch.rand(shape, generator=g)
    rewards[torch.rand(shape, generator=g) < 0.1] = float("nan")
    rng = random.Random(seed)
    sources = [s for s in rng.choices(["a", "b"], k=num_groups) for _ in range(group_size)]
    lengths = torch.randint(0, 30, (shape[0],), generator=g)
    weights = None if num_funcs is None else torch.tensor([0.5, 2.0, 1.0][:num_funcs])
    return rewards, sources, lengths, weights


PRESET_OPTIONS = [(name, {}) for name in PRESETS] + [
    ("bnpo", {"ema": 0.5}),
    ("bnpo", {"reward_range": None}),
    ("bnpo", {"per_source": True}),
    ("ebpo", {"per_source": True}),
    ("ebpo", {"standardize": False}),
    ("median", {"window": 2}),
]


def composed_for(name: str, options: dict) -> ComposedNormalizer:
    """The preset's triple with the named normalizer's options moved onto the part that owns them."""
    spec = dict(PRESETS[name])
    options = dict(options)
    if name == "bnpo" and "ema" in options:
        spec["scale"] = {"name": "bnpo", "ema": options.pop("ema")}
    if name == "ebpo" and options.pop("standardize", True) is False:
        spec.pop("post")
    if name == "median" and "window" in options:
        spec["scale"] = {"name": "source_std", "window": options.pop("window")}
    return ComposedNormalizer(**spec, **options)


@pytest.mark.parametrize(
    "name, options", PRESET_OPTIONS, ids=lambda x: json.dumps(x) if isinstance(x, dict) else x
)
@pytest.mark.parametrize("group_size", [1, 2, 4, 8])
@pytest.mark.parametrize("num_funcs", [None, 1, 2])
def test_each_preset_is_bit_identical_to_the_named_normalizer(name, options, group_size, num_funcs):
    named, composed = get_normalizer(name, **options), composed_for(name, options)
    for seed in range(8):  # consecutive calls: the running states evolve alike
        rewards, sources, lengths, weights = batch_of(seed, group_size, num_funcs, binary=seed % 2 == 0)
        call = dict(group_size=group_size, data_sources=sources, reward_weights=weights, lengths=lengths)
        expected, actual = named(rewards, **call), composed(rewards, **call)
        assert torch.equal(expected, actual), (seed, expected, actual)


def test_every_builtin_normalizer_with_a_centre_and_scale_has_a_preset():
    assert set(PRESETS) == {"group", "batch", "none", "rloo", "reinforce_pp", "bnpo", "ebpo", "median", "opo"}
    for spec in PRESETS.values():
        assert spec["center"] in CENTERS and spec["scale"] in SCALES
        assert all(p in POSTS for p in spec.get("post", []))


def test_loo_batch_std_standardize_against_a_loop():
    rewards = [1.0, 0.0, 0.0, 0.5, 1.0, 1.0, float("nan"), 0.25, 0.0, 0.0, 0.0, 1.0]
    centred = rloo_ref(rewards, 4)
    std = stdev_or_nan(rewards)
    scaled = [c / (std + 1e-4) for c in centred]
    m, s = mean_or_nan(scaled), stdev_or_nan(scaled)
    expected = [(x - m) / (s + 1e-4) for x in scaled]
    norm = get_normalizer({"center": "loo", "scale": "batch_std", "post": ["standardize"]})
    torch.testing.assert_close(norm(torch.tensor(rewards), group_size=4), torch.tensor(finalize(expected)))


def test_ebpo_centre_with_bnpo_scale_against_a_loop():
    """The issue's example: EBPO's shrunk baseline, weighted by BNPO's inverse Beta density."""
    norm = get_normalizer({"center": "ebpo", "scale": "bnpo"})
    ref = EBPORef(standardize=False)
    for seed in range(3):
        rewards = batch_of(seed + 3, 4, None, binary=True)[0]
        values = rewards.tolist()
        centred = ref(values, 4)
        p = [mean_or_nan(g) for g in groups(values, 4)]
        alpha, beta = beta_fit_ref(p) or (1.0, 1.0)
        counts = [len(scored(g)) for g in groups(values, 4)]
        at = [
            1 / (2 * n) if q == 0 else 1 - 1 / (2 * n) if q == 1 else q
            for q, n in zip(p, counts, strict=True)
        ]
        weights = [inverse_beta_pdf(q, alpha, beta, 1e6)[0] for q in at for _ in range(4)]
        expected = [c * w for c, w in zip(centred, weights, strict=True)]
        adv = norm(rewards, group_size=4)
        torch.testing.assert_close(adv, torch.tensor(finalize(expected)), rtol=1e-5, atol=1e-5)
        assert norm.last_stats["bnpo/boundary_groups"] == sum(q in (0.0, 1.0) for q in p)


def test_all_fail_and_all_pass_groups_keep_a_moderate_signal_under_an_ebpo_centre():
    """1/f(0) is infinite once alpha > 1: the density is read half a count inside the boundary instead."""
    rewards = torch.tensor([1.0, 0, 1, 0, 1, 1, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0])
    adv = get_normalizer({"center": "ebpo", "scale": "bnpo"})(rewards, group_size=4)
    assert adv.abs().max() < 5 and (adv[8:12] > 0).all() and (adv[12:] < 0).all()


def test_running_mean_centre_against_a_loop():
    norm, seen = get_normalizer({"center": "running_mean", "scale": "none"}), SequentialWelford()
    for seed in range(3):
        rewards = batch_of(seed, 4, None, binary=False)[0]
        for r in scored(rewards.tolist()):
            seen.add(r)
        expected = [r - seen.mean for r in rewards.tolist()]
        torch.testing.assert_close(norm(rewards, group_size=4), torch.tensor(finalize(expected)))
    assert norm.last_stats["running_mean/mean"] == pytest.approx(seen.mean)


def test_clip_and_filter_zero_signal_post_steps():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])  # group 2 has no signal
    norm = get_normalizer(
        {
            "center": "group_mean",
            "scale": "none",
            "post": [{"name": "clip", "max_abs": 0.5}, "filter_zero_signal"],
        }
    )
    adv = norm(rewards, group_size=4)
    assert adv.tolist() == [0.5, -0.25, -0.25, -0.25, 0.0, 0.0, 0.0, 0.0]
    assert norm.last_stats["clip/clipped"] == 1.0 and norm.last_stats["filter_zero_signal/fraction"] == 0.5
    assert norm.filters_zero_signal and not get_normalizer("group").__dict__.get("filters_zero_signal", False)


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"center": "mean"}, "Valid centers: group_mean, loo, ebpo, running_mean, source_median, opo"),
        ({"center": "loo", "scale": "std"}, "Valid scales: none, group_std, batch_std, bnpo, source_std"),
        ({"center": "loo", "post": ["normalize"]}, "Valid post-steps: standardize, clip, filter_zero_signal"),
        ({"center": "loo", "post": ["clip", "clip"]}, "more than once"),
        ({"center": "loo", "post": ["filter_zero_signal", "clip"]}, "must be the last"),
        ({"center": "loo", "per_source": True}, "per_source: true needs a part"),
        ({"center": "loo", "post": [{"name": "clip", "max_abs": -1}]}, "max_abs must be > 0"),
        ({"center": {"name": "ebpo", "window": 3}}, "center 'ebpo'"),
        ({"centre": "loo"}, "A normalizer mapping is"),
        ({"center": 3}, "is a name or"),
    ],
)
def test_invalid_compositions_name_the_valid_choices(spec, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        get_normalizer(spec)


def test_parts_that_need_sources_say_which_field_to_set():
    norm = get_normalizer({"center": "group_mean", "scale": "source_std"})
    assert norm.requires_data_sources
    with pytest.raises(ValueError, match="data_source_column"):
        norm(torch.tensor([1.0, 0.0, 1.0, 1.0]), group_size=2)


def test_composed_state_round_trips_through_json_and_continues_identically():
    spec = {"center": "ebpo", "scale": {"name": "bnpo", "ema": 0.5}, "per_source": True}
    norm = get_normalizer(spec)
    for seed in range(3):
        rewards, sources, _, _ = batch_of(seed, 4, None, binary=True)
        norm(rewards, group_size=4, data_sources=sources)
    state = json.loads(json.dumps(norm.state_dict(), allow_nan=False))
    assert set(state["combined"]) == {"center", "scale"} and "by_source" in state["combined"]["center"]
    restored = get_normalizer(spec)
    restored.load_state_dict(state)
    rewards, sources, _, _ = batch_of(7, 4, None, binary=True)
    assert torch.equal(
        norm(rewards, group_size=4, data_sources=sources),
        restored(rewards, group_size=4, data_sources=sources),
    )
    with pytest.raises(ValueError, match="Unknown key"):
        get_normalizer(spec).load_state_dict({"other": {}})
    assert get_normalizer({"center": "loo", "scale": "group_std"}).state_dict() == {}


def test_a_mapping_with_a_name_is_that_normalizer_with_options():
    norm = get_normalizer({"name": "bnpo", "ema": 0.5})
    assert type(norm).__name__ == "BNPONormalizer" and norm.ema == 0.5
    assert spec_label({"name": "bnpo", "ema": 0.5}) == "bnpo(ema=0.5)"
    assert spec_label({"center": "ebpo", "scale": "bnpo"}) == "center=ebpo,scale=bnpo"
