"""OPO, GDPO and the analytic Pass@k advantage against independent computations: slow loop references
(``tests/reference_normalizers.py``), TRL 1.16's ``normalize_then_sum`` lines rebuilt below, brute force
over the k-subsets of a group, closed forms and hand-computed cases -- never the library's own code."""

from __future__ import annotations

import itertools
import math
import random
import statistics

import pytest
import torch
from trl.trainer.utils import nanstd as trl_nanstd

from bnpo_trl.normalizers import GDPONormalizer, OPONormalizer, PassAtKNormalizer, get_normalizer
from tests.reference_normalizers import NAN, combine, finalize, gdpo_ref, none_ref, opo_ref, passk_ref
from tests.test_normalizers import as_rows, assert_matches, assert_unscored_zero, random_rewards

SEEDS = [0, 1, 2]
GROUP_SIZES = [1, 2, 4, 16]


def random_lengths(seed: int, n: int, zero_fraction: float = 0.1) -> list[int]:
    rng = random.Random(f"lengths-{seed}-{n}")
    return [0 if rng.random() < zero_fraction else rng.randint(1, 4096) for _ in range(n)]


def test_classes_are_exported_and_registered():
    assert type(get_normalizer("opo")) is OPONormalizer
    assert type(get_normalizer("gdpo")) is GDPONormalizer
    assert type(get_normalizer("passk")) is PassAtKNormalizer
    for cls in (OPONormalizer, GDPONormalizer, PassAtKNormalizer):
        assert "arXiv" in cls.__doc__ and cls.__module__ == "bnpo_trl.normalizers.estimators"
    assert GDPONormalizer.decomposes and OPONormalizer.uses_lengths and not PassAtKNormalizer.uses_lengths


# ---------------------------------------------------------------------------------------------------- OPO


@pytest.mark.parametrize("num_funcs", [None, 3])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("group_size", GROUP_SIZES)
def test_opo_matches_loop_reference_with_lengths(group_size, seed, num_funcs):
    rewards = random_rewards(seed, group_size, num_funcs=num_funcs)
    weights = [1.0, 0.5, 2.0] if num_funcs else None
    lengths = random_lengths(seed, rewards.shape[0])
    norm = get_normalizer("opo")
    adv = norm(rewards, group_size=group_size, reward_weights=weights, lengths=lengths)
    expected = finalize(opo_ref(combine(as_rows(rewards), weights), group_size, lengths))
    assert_matches(adv, expected)
    assert_unscored_zero(adv, rewards)
    assert norm.last_stats["opo/no_lengths"] == 0.0


def test_opo_by_hand():
    # b = (10*1 + 30*0 + 20*1 + 40*0) / 100 = 0.3; second group: b = (1*2 + 3*0) / 4 = 0.5 (NaN row left out)
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0, 2.0, NAN, 0.0, 1.0])
    lengths = [10, 30, 20, 40, 1, 1000, 3, 0]
    adv = get_normalizer("opo")(rewards, group_size=4, lengths=lengths)
    assert_matches(adv, [0.7, -0.3, 0.7, -0.3, 1.5, 0.0, -0.5, 0.5], atol=1e-6)


def test_opo_without_lengths_is_the_group_mean_baseline_and_counted():
    rewards = random_rewards(7, 4)
    norm = get_normalizer("opo")
    adv = norm(rewards, group_size=4)
    assert_matches(adv, finalize(none_ref(as_rows(rewards), 4)))
    assert norm.last_stats["opo/no_lengths"] == 1.0 and norm.last_stats["opo/zero_length_groups"] == 0.0
    # equal lengths give the same baseline, and the flag is off again
    same = norm(rewards, group_size=4, lengths=[17] * rewards.shape[0])
    assert_matches(same, finalize(none_ref(as_rows(rewards), 4)))
    assert norm.last_stats["opo/no_lengths"] == 0.0


def test_opo_zero_length_group_falls_back_to_the_mean_and_is_counted():
    # group 1: all lengths 0; group 2: the only positive length is on an unscored row; group 3: normal
    rewards = torch.tensor([1.0, 0.0, 0.0, NAN, 3.0, 1.0, 1.0, 0.0, 0.0])
    lengths = [0, 0, 0, 5, 0, 0, 1, 3, 0]
    norm = get_normalizer("opo")
    adv = norm(rewards, group_size=3, lengths=lengths)
    assert norm.last_stats["opo/zero_length_groups"] == 2.0
    assert_matches(adv, [2 / 3, -1 / 3, -1 / 3, 0.0, 1.0, -1.0, 0.75, -0.25, -0.25], atol=1e-6)


def test_opo_is_invariant_to_the_unit_of_length_and_gives_zero_to_a_lone_scored_completion():
    rewards = random_rewards(3, 4)
    lengths = random_lengths(3, rewards.shape[0], zero_fraction=0.0)
    norm = get_normalizer("opo")
    base = norm(rewards, group_size=4, lengths=lengths)
    assert_matches(norm(rewards, group_size=4, lengths=[4 * x for x in lengths]), base.tolist(), atol=1e-6)
    lone = torch.tensor([NAN, 2.5, NAN, NAN])
    assert norm(lone, group_size=4, lengths=[1, 9, 1, 1]).tolist() == [0.0] * 4


# --------------------------------------------------------------------------------------------------- GDPO


def trl_normalize_then_sum(rewards_per_func: torch.Tensor, weights: torch.Tensor, group_size: int):
    """TRL 1.16 ``GRPOTrainer._generate_and_score_completions`` with
    ``multi_objective_aggregation="normalize_then_sum"`` (its lines, then TRL's final ``nan_to_num``)."""
    num_funcs = rewards_per_func.shape[1]
    unscorable_mask = torch.isnan(rewards_per_func).all(dim=1)
    grouped = rewards_per_func.view(-1, group_size, num_funcs)
    mean_k = torch.nanmean(grouped, dim=1, keepdim=True)
    std_k = trl_nanstd(grouped, dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(mean_k)
    reward_k = (grouped - mean_k) / (std_k + 1e-4)
    reward_k = reward_k.view(-1, num_funcs)
    rewards = (reward_k * weights.unsqueeze(0)).nansum(dim=1)
    rewards[unscorable_mask] = torch.nan
    std_rewards = trl_nanstd(rewards).expand_as(rewards) if rewards.numel() > 1 else torch.zeros_like(rewards)
    advantages = (rewards - torch.nanmean(rewards)) / (std_rewards + 1e-4)
    return torch.nan_to_num(advantages, nan=0.0)


GDPO_WEIGHTS = {1: [0.5], 2: [1.0, -0.5], 3: [1.0, 0.5, 2.0]}


@pytest.mark.parametrize("weighted", [True, False], ids=["weights", "no_weights"])
@pytest.mark.parametrize("num_funcs", [1, 2, 3])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("group_size", GROUP_SIZES)
def test_gdpo_equals_trl_normalize_then_sum_bitwise(group_size, seed, num_funcs, weighted):
    rewards = random_rewards(seed + 50, group_size, num_funcs=num_funcs)
    weights = torch.tensor(GDPO_WEIGHTS[num_funcs]) if weighted else torch.ones(num_funcs)
    expected = trl_normalize_then_sum(rewards, weights, group_size)
    got = get_normalizer("gdpo")(rewards, group_size=group_size, reward_weights=weights if weighted else None)
    assert got.dtype == torch.float32 and torch.equal(got, expected)


@pytest.mark.parametrize("num_funcs", [1, 3])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("group_size", GROUP_SIZES)
def test_gdpo_matches_the_per_group_per_column_loop(group_size, seed, num_funcs):
    rewards = random_rewards(seed + 60, group_size, num_funcs=num_funcs)
    weights = GDPO_WEIGHTS[num_funcs]
    expected = finalize(gdpo_ref(as_rows(rewards), group_size, weights))
    got = get_normalizer("gdpo")(rewards, group_size=group_size, reward_weights=weights)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float32), rtol=1e-6, atol=1e-6)
    assert_unscored_zero(got, rewards)


@pytest.mark.parametrize("weight", [None, 2.0, -0.5])
@pytest.mark.parametrize("group_size", [1, 4])
def test_gdpo_one_dimensional_input_is_one_reward_function(group_size, weight):
    rewards = random_rewards(9, group_size)
    weights = torch.tensor([1.0 if weight is None else weight])
    expected = trl_normalize_then_sum(rewards.unsqueeze(1), weights, group_size)
    got = get_normalizer("gdpo")(
        rewards, group_size=group_size, reward_weights=None if weight is None else [weight]
    )
    assert torch.equal(got, expected)


@pytest.mark.parametrize("eps", [0.0, 1e-2, 0.5])
def test_gdpo_eps_is_configurable(eps):
    rewards = random_rewards(11, 4, num_funcs=2)
    expected = finalize(gdpo_ref(as_rows(rewards), 4, [1.0, 2.0], eps=eps))
    got = get_normalizer("gdpo", eps=eps)(rewards, group_size=4, reward_weights=[1.0, 2.0])
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float32), rtol=1e-6, atol=1e-6)


def test_gdpo_by_hand_and_flat_columns_counted():
    # group 1, column 0: [1, 0] -> +-0.5/(sqrt(1/2) + eps); column 1: [2, 0] -> +-1/(sqrt(2) + eps), weight 2.
    # group 2, column 0: [1, 1] -> 0 (flat); column 1: [NaN, 5] -> one scored value, std NaN: that cell drops
    # out of the sum.
    rewards = torch.tensor([[1.0, 2.0], [0.0, 0.0], [1.0, NAN], [1.0, 5.0]])
    norm = get_normalizer("gdpo")
    adv = norm(rewards, group_size=2, reward_weights=[1.0, 2.0])
    a, b = 0.5 / (math.sqrt(0.5) + 1e-4), 1.0 / (math.sqrt(2.0) + 1e-4)
    summed = [a + 2 * b, -a - 2 * b, 0.0, 0.0]
    mean, std = statistics.fmean(summed), statistics.stdev(summed)
    assert_matches(adv, [(x - mean) / (std + 1e-4) for x in summed], atol=1e-6)
    assert norm.last_stats["gdpo/flat_group_columns"] == 1.0


def test_gdpo_single_row_and_singleton_groups_give_zero():
    assert get_normalizer("gdpo")(torch.tensor([[0.7, 2.0]]), group_size=1).tolist() == [0.0]
    assert get_normalizer("gdpo")(random_rewards(2, 1, num_funcs=2), group_size=1).abs().max() == 0


# ------------------------------------------------------------------------------------------------- Pass@k


def binary_rewards(seed: int, group_size: int, num_groups: int = 6, nans: bool = True) -> torch.Tensor:
    rng = random.Random(f"binary-{seed}-{group_size}")
    values = []
    for _ in range(num_groups):
        p = rng.random()
        values += [float(rng.random() < p) for _ in range(group_size)]
    if nans:
        values = [NAN if rng.random() < 0.15 else v for v in values]
    return torch.tensor(values)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("group_size", [1, 2, 4, 8, 16])
def test_passk_matches_math_comb_loop(group_size, seed, k):
    rewards = binary_rewards(seed, group_size)
    norm = get_normalizer("passk", k=k)
    adv = norm(rewards, group_size=group_size)
    assert_matches(adv, finalize(passk_ref(rewards.tolist(), group_size, k=k)))
    assert_unscored_zero(adv, rewards)
    assert norm.last_stats["passk/non_binary_rewards"] == 0.0


def brute_force_passk(group: list[float], k: int) -> tuple[list[float], float]:
    """From the definition: every k-subset of the scored responses has reward max(subset); R = mean of those,
    sigma = their population std, and A_i = mean over the subsets holding i of (max - R) / sigma."""
    scored = [i for i, r in enumerate(group) if not math.isnan(r)]
    subsets = list(itertools.combinations(scored, min(k, len(scored))))
    maxima = [max(group[i] for i in s) for s in subsets]
    r_bar = statistics.fmean(maxima)
    sigma = statistics.pstdev(maxima)
    adv = []
    for i, r in enumerate(group):
        if math.isnan(r) or sigma == 0:
            adv.append(0.0)
            continue
        holding = [(m - r_bar) / sigma for s, m in zip(subsets, maxima, strict=True) if i in s]
        adv.append(statistics.fmean(holding))
    return adv, r_bar


@pytest.mark.parametrize("k", [1, 2, 3, 5])
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("group_size", [3, 5, 8])
def test_passk_equals_brute_force_over_k_subsets(group_size, seed, k):
    rewards = binary_rewards(seed + 100, group_size)
    rewards[:group_size] = torch.tensor([1.0] + [0.0] * (group_size - 1))  # one informative group at least
    norm = get_normalizer("passk", k=k)
    adv = norm(rewards, group_size=group_size)
    expected, r_bars = [], []
    for start in range(0, rewards.shape[0], group_size):
        group = rewards[start : start + group_size].tolist()
        if all(math.isnan(r) for r in group):
            expected += [0.0] * group_size
            continue
        a, r_bar = brute_force_passk(group, k)
        expected += a
        r_bars.append(r_bar)
    assert_matches(adv, expected)
    assert norm.last_stats["passk/pass_at_k"] == pytest.approx(statistics.fmean(r_bars), rel=1e-9)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("group_size", [2, 4, 16])
def test_passk_with_k_one_is_grpo_with_population_std(group_size, seed):
    rewards = binary_rewards(seed + 200, group_size)
    expected = []
    for start in range(0, rewards.shape[0], group_size):
        group = rewards[start : start + group_size].tolist()
        values = [r for r in group if not math.isnan(r)]
        p = sum(values) / len(values) if values else NAN
        for r in group:
            informative = not math.isnan(r) and 0 < p < 1
            expected.append((r - p) / math.sqrt(p * (1 - p)) if informative else 0.0)
    assert_matches(get_normalizer("passk", k=1)(rewards, group_size=group_size), expected)


def test_passk_by_hand():
    # [1, 0, 0, 1], k = 2: R = 1 - C(2,2)/C(4,2) = 5/6, sigma = sqrt(5)/6, A_pos = (1/6)/sigma = 1/sqrt(5),
    # A_neg = (1/6 - C(1,1)/C(3,1)) / sigma = -1/sqrt(5); [1, 1, 1, 0]: N_neg = 1 < k -> sigma = 0 -> 0
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    norm = get_normalizer("passk")
    adv = norm(rewards, group_size=4)
    s = 1 / math.sqrt(5)
    assert_matches(adv, [s, -s, -s, s] + [0.0] * 8, atol=1e-6)
    assert norm.last_stats["passk/pass_at_k"] == pytest.approx((5 / 6 + 1 + 0) / 3)
    assert norm.last_stats["passk/small_groups"] == 0.0


def test_passk_group_with_fewer_than_k_scored_uses_k_equal_n_and_is_counted():
    # k = 3; group 1 has 2 scored responses -> k' = 2 = N: one subset, sigma = 0, A = 0 (counted);
    # group 2 has 4 scored: C(2,3) = 0 -> R = 1 -> 0; group 3: 5 scored, N_neg = 3 -> informative
    groups = [[1.0, NAN, 0.0, NAN, NAN], [1.0, 0.0, 0.0, 1.0, NAN], [1.0, 0.0, 0.0, 0.0, 1.0]]
    rewards = torch.tensor([r for group in groups for r in group])
    norm = get_normalizer("passk", k=3)
    adv = norm(rewards, group_size=5)
    assert norm.last_stats["passk/small_groups"] == 1.0
    assert adv[:10].abs().max() == 0
    assert_matches(adv, finalize(passk_ref(rewards.tolist(), 5, k=3)))
    assert (adv[10:][rewards[10:] == 1] > 0).all() and (adv[10:][rewards[10:] == 0] < 0).all()


def test_passk_k_at_least_the_group_size_gives_no_signal():
    rewards = binary_rewards(5, 4, nans=False)
    assert get_normalizer("passk", k=4)(rewards, group_size=4).abs().max() == 0
    assert get_normalizer("passk", k=9)(rewards, group_size=4).abs().max() == 0


def test_passk_non_binary_rewards_are_thresholded_and_counted():
    rewards = torch.tensor([0.3, 0.7, 0.0, 0.0, 1.0, 0.5, 0.2, NAN])
    norm = get_normalizer("passk")
    adv = norm(rewards, group_size=4)
    assert norm.last_stats["passk/non_binary_rewards"] == 4.0
    binary = torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, NAN])
    assert torch.equal(adv, get_normalizer("passk")(binary, group_size=4))
    assert_matches(adv, finalize(passk_ref(rewards.tolist(), 4)))


def test_passk_threshold_option():
    rewards = torch.tensor([-1.0, 1.0, -1.0, -1.0, 1.0, 1.0, -1.0, -1.0])
    got = get_normalizer("passk", threshold=0.0)(rewards, group_size=4)
    assert torch.equal(got, get_normalizer("passk")((rewards + 1) / 2, group_size=4))
    assert_matches(got, finalize(passk_ref(rewards.tolist(), 4, threshold=0.0)))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"k": 0}, "k must be an int >= 1"),
        ({"k": 2.5}, "k must"),
        ({"k": True}, "k must"),
        ({"threshold": math.nan}, "threshold must be a finite"),
    ],
)
def test_passk_bad_options_are_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        get_normalizer("passk", **kwargs)
