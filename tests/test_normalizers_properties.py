"""Hypothesis property tests of the advantage normalizers: the output contract on arbitrary inputs."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bnpo_trl.normalizers import get_normalizer
from tests.reference_normalizers import (
    batch_ref,
    combine,
    finalize,
    group_ref,
    none_ref,
    opo_ref,
    passk_ref,
    rloo_ref,
)
from tests.test_estimators import trl_normalize_then_sum

SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
NAN = math.nan

# Any float32 up to 2**50 ~ 1e15 in magnitude (squared deviations of weighted sums stay finite in
# float32), plus NaN.
ANY_FLOAT = st.one_of(st.floats(min_value=-(2.0**50), max_value=2.0**50, width=32), st.just(math.nan))
MODERATE = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, width=32)
UNIT = st.floats(min_value=0.0, max_value=1.0, allow_nan=False, width=32)
GRID = st.integers(-16, 16).map(lambda k: k / 8)


@st.composite
def reward_batches(draw, values=ANY_FLOAT, unit: bool = False, max_funcs: int = 3):
    """(rewards (N,) or (N, F), G, weights or None, data sources): NaNs, constants, all-NaN rows and groups."""
    group_size = draw(st.integers(1, 64))
    num_groups = draw(st.integers(1, max(1, min(6, 160 // group_size))))
    n = group_size * num_groups
    num_funcs = draw(st.sampled_from([None, *range(1, max_funcs + 1)]))
    width = num_funcs or 1
    kind = draw(st.sampled_from(["mixed", "mixed", "constant", "binary", "all_nan"]))
    if kind == "constant":
        c = draw(UNIT if unit else values.filter(lambda x: not math.isnan(x)))
        cells = [c] * (n * width)
    elif kind == "binary":
        cells = draw(st.lists(st.sampled_from([0.0, 1.0, NAN]), min_size=n * width, max_size=n * width))
    elif kind == "all_nan":
        cells = [NAN] * (n * width)
    else:
        element = st.one_of(UNIT if unit else values, st.just(NAN), st.sampled_from([0.0, 1.0]))
        cells = draw(st.lists(element, min_size=n * width, max_size=n * width))
    rewards = torch.tensor(cells, dtype=torch.float32).view(n, width)
    if draw(st.booleans()):  # some fully unscored rows
        rows = draw(st.lists(st.integers(0, n - 1), max_size=4))
        rewards[rows] = NAN
    if num_funcs is None:
        rewards = rewards.squeeze(1)
    weights = None
    if num_funcs is not None and draw(st.booleans()):
        weights = draw(
            st.lists(st.sampled_from([0.25, 0.5, 1.0, 2.0]), min_size=num_funcs, max_size=num_funcs)
        )
    sources = []
    for _ in range(num_groups):
        sources += [draw(st.sampled_from(["a", "b", "c"]))] * group_size
    return rewards, group_size, weights, sources


def check_contract(adv: torch.Tensor, rewards: torch.Tensor) -> None:
    assert adv.dtype == torch.float32
    assert adv.shape == (rewards.shape[0],)
    assert adv.device == rewards.device
    assert torch.isfinite(adv).all()
    unscored = torch.isnan(rewards) if rewards.dim() == 1 else torch.isnan(rewards).all(dim=1)
    assert (adv[unscored] == 0).all()


def json_round_trip(norm, name: str, kwargs: dict):
    state = json.loads(json.dumps(norm.state_dict(), allow_nan=False))
    fresh = get_normalizer(name, **kwargs)
    fresh.load_state_dict(state)
    return fresh


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("group", {}),
        ("batch", {}),
        ("none", {}),
        ("rloo", {}),
        ("ebpo", {}),
        ("ebpo", {"standardize": False}),
        ("median", {}),
        ("median", {"window": 2, "center": "source_median"}),
        ("opo", {}),
        ("gdpo", {}),
        ("gdpo", {"eps": 0.0}),
        ("passk", {}),
        ("passk", {"k": 1}),
        ("passk", {"k": 5, "threshold": 0.0}),
        ("reinforce_pp", {}),
        ("ebpo", {"per_source": True}),
        ({"center": "ebpo", "scale": "batch_std", "post": ["standardize", "clip"]}, {}),
        ({"center": "running_mean", "scale": "group_std", "per_source": True}, {}),
        ({"center": "source_median", "scale": "source_std", "post": ["filter_zero_signal"]}, {}),
        ({"center": "loo", "scale": "none"}, {}),
        ({"center": "opo", "scale": "group_std"}, {}),
    ],
    ids=lambda x: json.dumps(x, sort_keys=True) if isinstance(x, dict) else x,
)
@SETTINGS
@given(first=reward_batches(), second=reward_batches())
def test_finite_float32_for_any_rewards(name, kwargs, first, second):
    norm = get_normalizer(name, **kwargs)
    for rewards, group_size, weights, sources in (first, second):
        adv = norm(rewards, group_size=group_size, reward_weights=weights, data_sources=sources)
        check_contract(adv, rewards)
        snapshot = json.dumps(norm.state_dict(), sort_keys=True)
        check_contract(
            norm(rewards, group_size=group_size, reward_weights=weights, data_sources=sources, update=False),
            rewards,
        )
        assert json.dumps(norm.state_dict(), sort_keys=True) == snapshot
        assert all(isinstance(v, float) for v in norm.last_stats.values())
    rewards, group_size, weights, sources = first
    restored = json_round_trip(norm, name, kwargs)
    expected = norm(rewards, group_size=group_size, reward_weights=weights, data_sources=sources)
    got = restored(rewards, group_size=group_size, reward_weights=weights, data_sources=sources)
    assert torch.equal(got, expected)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"alpha": 1.5, "beta": 1.5},
        {"alpha": 0.5, "beta": 3.0},
        {"ema": 0.8},
        {"max_weight": 10.0},
        {"per_source": True},
        {"name": "composed"},
    ],
    ids=["fitted", "three_halves", "fixed_skewed", "ema", "max_weight", "per_source", "ebpo_centre"],
)
@SETTINGS
@given(first=reward_batches(unit=True), second=reward_batches(unit=True))
def test_bnpo_finite_float32_for_unit_rewards(kwargs, first, second):
    name = "bnpo"
    if kwargs.get("name") == "composed":  # the algebra's bnpo scale behind another centre
        name, kwargs = {"center": "ebpo", "scale": {"name": "bnpo", "ema": 0.5}, "per_source": True}, {}
    norm = get_normalizer(name, **kwargs)
    # a single (N, 1) column is not decomposed: keep its weighted value w * r inside [0, 1]
    first, second = (
        (r, g, None if r.dim() == 2 and r.shape[1] == 1 else w, s) for r, g, w, s in (first, second)
    )
    for rewards, group_size, weights, sources in (first, second):
        adv = norm(rewards, group_size=group_size, reward_weights=weights, data_sources=sources)
        check_contract(adv, rewards)
    rewards, group_size, weights, sources = first
    restored = json_round_trip(norm, name, kwargs)
    expected = norm(rewards, group_size=group_size, reward_weights=weights, data_sources=sources)
    got = restored(rewards, group_size=group_size, reward_weights=weights, data_sources=sources)
    assert torch.equal(got, expected)


@SETTINGS
@given(batch=reward_batches(unit=True))
def test_bnpo_finite_with_not_decomposed_sum(batch):
    rewards, group_size, weights, _ = batch
    num_funcs = 1 if rewards.dim() == 1 else rewards.shape[1]
    top = sum(weights) if weights else num_funcs
    norm = get_normalizer("bnpo", decompose=False, reward_range=(0.0, top))
    check_contract(norm(rewards, group_size=group_size, reward_weights=weights), rewards)


REFERENCES = {
    "group": group_ref,
    "batch": batch_ref,
    "none": none_ref,
    "rloo": rloo_ref,
    "opo": opo_ref,  # without lengths: equal lengths
    "passk": passk_ref,  # k = 2, threshold 0.5
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
@SETTINGS
@given(batch=reward_batches(values=GRID))
def test_stateless_normalizers_match_reference(name, batch):
    rewards, group_size, weights, _ = batch
    expected = finalize(REFERENCES[name](combine(rewards.tolist(), weights), group_size))
    adv = get_normalizer(name)(rewards, group_size=group_size, reward_weights=weights)
    torch.testing.assert_close(adv, torch.tensor(expected, dtype=torch.float32), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["none", "rloo"])
@SETTINGS
@given(batch=reward_batches(values=MODERATE))
def test_mean_baselines_sum_to_zero_per_group(name, batch):
    rewards, group_size, weights, _ = batch
    adv = get_normalizer(name)(rewards, group_size=group_size, reward_weights=weights).double()
    num_funcs = 1 if rewards.dim() == 1 else rewards.shape[1]
    total_weight = sum(weights) if weights else num_funcs
    scale = max(1.0, float(torch.nan_to_num(rewards.abs(), nan=0.0).max()) * total_weight)
    for total in adv.view(-1, group_size).sum(dim=1).tolist():
        assert abs(total) <= 1e-5 * scale * group_size


@SETTINGS
@given(batch=reward_batches(values=GRID), data=st.data())
def test_opo_with_lengths_matches_reference(batch, data):
    rewards, group_size, weights, _ = batch
    n = rewards.shape[0]
    lengths = data.draw(st.lists(st.integers(0, 4096), min_size=n, max_size=n))
    norm = get_normalizer("opo")
    adv = norm(rewards, group_size=group_size, reward_weights=weights, lengths=lengths)
    check_contract(adv, rewards)
    expected = finalize(opo_ref(combine(rewards.tolist(), weights), group_size, lengths))
    torch.testing.assert_close(adv, torch.tensor(expected, dtype=torch.float32), rtol=1e-5, atol=1e-5)
    assert norm.last_stats["opo/no_lengths"] == 0.0


@SETTINGS
@given(batch=reward_batches(), data=st.data())
def test_opo_finite_for_any_rewards_and_lengths(batch, data):
    rewards, group_size, weights, _ = batch
    n = rewards.shape[0]
    lengths = data.draw(st.lists(st.integers(0, 2**20), min_size=n, max_size=n))
    check_contract(
        get_normalizer("opo")(rewards, group_size, reward_weights=weights, lengths=lengths), rewards
    )


@pytest.mark.parametrize("k", [1, 2, 4])
@SETTINGS
@given(batch=reward_batches())
def test_passk_matches_reference_for_any_rewards(k, batch):
    rewards, group_size, weights, _ = batch
    expected = finalize(passk_ref(combine(rewards.tolist(), weights), group_size, k=k))
    adv = get_normalizer("passk", k=k)(rewards, group_size=group_size, reward_weights=weights)
    check_contract(adv, rewards)
    torch.testing.assert_close(adv, torch.tensor(expected, dtype=torch.float32), rtol=1e-5, atol=1e-5)


@SETTINGS
@given(batch=reward_batches())
def test_gdpo_equals_trl_normalize_then_sum_for_any_rewards(batch):
    rewards, group_size, weights, _ = batch
    per_func = rewards if rewards.dim() == 2 else rewards.unsqueeze(1)
    w = torch.tensor(weights) if weights else torch.ones(per_func.shape[1])
    adv = get_normalizer("gdpo")(rewards, group_size=group_size, reward_weights=weights)
    check_contract(adv, rewards)
    assert torch.equal(adv, trl_normalize_then_sum(per_func, w, group_size))
