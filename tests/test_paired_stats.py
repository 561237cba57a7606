"""scripts/paired_stats.py: paired t-test p-values, bootstrap intervals, Holm correction and verdicts,
each checked against values worked out independently (closed forms, enumeration, the step-down procedure)."""

from __future__ import annotations

import itertools
import math
import statistics

import numpy as np
import pytest

from tests.script_utils import load_script

paired_stats = load_script("paired_stats")
Comparison = paired_stats.Comparison


def t_statistic(diffs: list[float]) -> float:
    """The paired t statistic, from the standard library."""
    return statistics.mean(diffs) / (statistics.stdev(diffs) / math.sqrt(len(diffs)))


def two_sided_p(t: float, df: int) -> float:
    """Two-sided Student's t p-value from the closed-form CDFs for 1 to 4 degrees of freedom."""
    t = abs(t)
    if df == 1:  # Cauchy
        return 1 - 2 * math.atan(t) / math.pi
    if df == 2:
        return 1 - t / math.sqrt(2 + t * t)
    if df == 3:
        return 1 - 2 / math.pi * (t / (math.sqrt(3) * (1 + t * t / 3)) + math.atan(t / math.sqrt(3)))
    if df == 4:
        u = 1 + t * t / 4
        return 1 - 0.75 * (t / math.sqrt(u)) * (1 - t * t / (12 * u))
    raise AssertionError(df)


def holm_by_hand(pvalues: list[float]) -> list[float]:
    """Holm adjusted p-values written out directly: each p times the number of p-values not below it,
    then the running maximum in ascending order (test helper, no NaN)."""
    m = len(pvalues)
    ranked = sorted(range(m), key=lambda i: pvalues[i])
    scaled = [min(1.0, (m - rank) * pvalues[i]) for rank, i in enumerate(ranked)]
    out = [0.0] * m
    for rank, i in enumerate(ranked):
        out[i] = max(scaled[: rank + 1])
    return out


# --- paired_t_p -----------------------------------------------------------------------------------


def test_paired_t_p_known_value():
    # mean 3, sd sqrt(2.5): t = 3 / (sqrt(2.5) / sqrt(5)) = 4.2426, df = 4
    assert paired_stats.paired_t_p([1, 2, 3, 4, 5]) == pytest.approx(0.01324, abs=1e-4)


@pytest.mark.parametrize(
    "diffs",
    [
        [1.0, 3.0], [0.5, -0.2], [-2.0, -1.9], [0.01, 0.3], [10.0, -30.0],  # df = 1
        [1.0, 2.0, 4.0], [-0.3, 0.1, 0.05], [0.02, 0.03, 0.025], [5.0, -1.0, 0.0],  # df = 2
        [0.1, 0.4, -0.2, 0.3], [2.0, 2.5, 1.5, 3.5],  # df = 3
        [1.0, 2.0, 3.0, 4.0, 5.0], [-0.01, 0.02, 0.005, -0.03, 0.0],  # df = 4
    ],
)  # fmt: skip
def test_paired_t_p_matches_closed_form(diffs):
    expected = two_sided_p(t_statistic(diffs), len(diffs) - 1)
    assert paired_stats.paired_t_p(diffs) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_paired_t_p_is_symmetric_and_scale_free():
    diffs = [0.3, -0.1, 0.25, 0.4, 0.05, 0.2]
    p = paired_stats.paired_t_p(diffs)
    assert paired_stats.paired_t_p([-d for d in diffs]) == pytest.approx(p, rel=1e-12)
    assert paired_stats.paired_t_p([100 * d for d in diffs]) == pytest.approx(p, rel=1e-12)


@pytest.mark.parametrize(
    ("diffs", "expected"),
    [([0.0, 0.0, 0.0], 1.0), ([0.2, 0.2, 0.2, 0.2], 0.0), ([-1.0, -1.0], 0.0)],
)
def test_paired_t_p_without_spread(diffs, expected):
    assert paired_stats.paired_t_p(diffs) == expected


@pytest.mark.parametrize("diffs", [[], [0.3]])
def test_paired_t_p_needs_two_differences(diffs):
    assert math.isnan(paired_stats.paired_t_p(diffs))


@pytest.mark.parametrize("function", ["paired_t_p", "bootstrap_interval"])
def test_nan_differences_raise_naming_the_fix(function):
    with pytest.raises(ValueError, match=r"positions \[1\].*drop those seeds"):
        getattr(paired_stats, function)([0.1, math.nan, 0.2])


# --- bootstrap_interval ---------------------------------------------------------------------------


def test_bootstrap_interval_large_sample_matches_normal_interval():
    sigma, n = 2.0, 400
    diffs = np.random.default_rng(7).normal(0.3, sigma, size=n)
    low, high = paired_stats.bootstrap_interval(diffs, resamples=4000, seed=1)
    half = 1.96 * sigma / math.sqrt(n)
    assert (high - low) / 2 == pytest.approx(half, rel=0.15)
    assert (low + high) / 2 == pytest.approx(diffs.mean(), abs=0.15 * half)


@pytest.mark.parametrize("level", [0.5, 0.8, 0.95])
def test_bootstrap_interval_matches_exact_enumeration_for_three_seeds(level):
    diffs = [0.0, 0.3, 0.6]
    step = 0.1  # every resample mean is a multiple of 0.3 / 3
    means = sorted(sum(pick) / 3 for pick in itertools.product(diffs, repeat=3))  # 27 equally likely

    def quantile(q: float) -> float:
        return means[math.ceil(q * len(means)) - 1]  # smallest mean whose cumulative share reaches q

    tail = (1 - level) / 2
    low, high = paired_stats.bootstrap_interval(diffs, level=level, resamples=200_000, seed=3)
    assert low == pytest.approx(quantile(tail), abs=step + 1e-9)
    assert high == pytest.approx(quantile(1 - tail), abs=step + 1e-9)


@pytest.mark.parametrize(("diffs", "expected"), [([0.04], (0.04, 0.04)), ([0.1, 0.1, 0.1], (0.1, 0.1))])
def test_bootstrap_interval_degenerate(diffs, expected):
    assert paired_stats.bootstrap_interval(diffs) == pytest.approx(expected)


def test_bootstrap_interval_is_reproducible_and_ordered():
    diffs = [0.1, -0.05, 0.2, 0.03, 0.07]
    first = paired_stats.bootstrap_interval(diffs, seed=5)
    assert first == paired_stats.bootstrap_interval(diffs, seed=5)
    assert min(diffs) <= first[0] <= statistics.mean(diffs) <= first[1] <= max(diffs)


@pytest.mark.parametrize(("kwargs", "match"), [({"level": 1.0}, "level"), ({"resamples": 0}, "resamples")])
def test_bootstrap_interval_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        paired_stats.bootstrap_interval([0.1, 0.2], **kwargs)


def test_bootstrap_interval_rejects_no_differences():
    with pytest.raises(ValueError, match="at least one seed"):
        paired_stats.bootstrap_interval([])


# --- holm ------------------------------------------------------------------------------------------


def test_holm_hand_worked_example():
    adjusted = paired_stats.holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005})
    assert list(adjusted) == ["a", "b", "c", "d"]
    assert [adjusted[k] for k in "abcd"] == pytest.approx([0.03, 0.06, 0.06, 0.02])


@pytest.mark.parametrize("seed", range(5))
def test_holm_matches_step_down_rejections(seed):
    rng = np.random.default_rng(seed)
    raw = {f"t{i}": float(p) for i, p in enumerate(rng.uniform(0, 0.2, size=7) ** 2)}
    adjusted = paired_stats.holm(raw)
    assert list(adjusted.values()) == pytest.approx(holm_by_hand(list(raw.values())))
    ordered = sorted(raw, key=raw.get)
    assert all(adjusted[a] <= adjusted[b] for a, b in itertools.pairwise(ordered))  # monotone
    assert all(raw[k] <= adjusted[k] <= 1 for k in raw)
    m = len(raw)
    for alpha in (0.001, 0.01, 0.05, 0.1):
        rejected = set()  # Holm's procedure: reject in ascending order while p_(k) <= alpha / (m - k)
        for k, key in enumerate(ordered):
            if raw[key] > alpha / (m - k):
                break
            rejected.add(key)
        assert {key for key in raw if adjusted[key] <= alpha} == rejected


def test_holm_leaves_nan_out_of_the_count():
    adjusted = paired_stats.holm({"a": 0.01, "b": math.nan, "c": 0.04})
    assert list(adjusted) == ["a", "b", "c"]
    assert adjusted["a"] == pytest.approx(0.02)  # m = 2, not 3
    assert adjusted["c"] == pytest.approx(0.04)
    assert math.isnan(adjusted["b"])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [({}, {}), ({"a": 0.03}, {"a": 0.03}), ({"a": 0.6, "b": 0.7}, {"a": 1.0, "b": 1.0})],
)
def test_holm_small_cases(raw, expected):
    assert paired_stats.holm(raw) == pytest.approx(expected)


# --- Comparison.verdict --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mean", "ci", "p_holm", "verdict"),
    [
        (0.03, (0.01, 0.05), 0.01, "better"),
        (-0.03, (-0.05, -0.01), 0.01, "worse"),
        (0.03, (0.0, 0.05), 0.01, "no difference shown"),  # Holm-significant, interval touches 0
        (0.03, (-0.001, 0.05), 0.01, "no difference shown"),
        (-0.03, (-0.05, 0.0), 0.01, "no difference shown"),
        (0.03, (0.01, 0.05), 0.05, "no difference shown"),  # interval excludes 0, Holm p not below alpha
        (0.03, (0.01, 0.05), math.nan, "no difference shown"),
    ],
)
def test_verdict_needs_holm_and_interval(mean, ci, p_holm, verdict):
    comparison = Comparison("x", "base", 5, mean, ci[0], ci[1], p_holm, p_holm)
    assert comparison.verdict == verdict


# --- compare / compare_family --------------------------------------------------------------------

BASE = [0.50, 0.52, 0.48, 0.51, 0.49, 0.50, 0.53, 0.47]
NOISE = [0.01, -0.01, 0.02, -0.02, 0.015, -0.015, 0.005, -0.005]


def made_up_results() -> dict[str, list[float]]:
    return {
        "better": [b + 0.10 + e for b, e in zip(BASE, NOISE, strict=True)],
        "group": BASE,
        "worse": [b - 0.08 + e for b, e in zip(BASE, NOISE, strict=True)],
        "noise": [b + e for b, e in zip(BASE, NOISE, strict=True)],
    }


def test_compare_verdicts_and_order():
    results = paired_stats.compare(made_up_results(), "group", resamples=4000)
    assert [c.name for c in results] == ["better", "worse", "noise"]
    assert [c.verdict for c in results] == ["better", "worse", "no difference shown"]
    assert all(c.baseline == "group" and c.n == len(BASE) for c in results)


def test_compare_fields_match_hand_computation():
    values = made_up_results()
    results = paired_stats.compare(values, "group", resamples=4000)
    raw = []
    for c in results:
        diffs = [a - b for a, b in zip(values[c.name], values["group"], strict=True)]
        assert c.mean == pytest.approx(statistics.mean(diffs))
        assert c.ci_low <= c.mean <= c.ci_high
        raw.append(c.p)
    assert [c.p_holm for c in results] == pytest.approx(holm_by_hand(raw))


def test_compare_family_is_one_holm_family():
    # three seeds per set: df = 2, so every raw p-value has a closed form
    groups = {
        "G=4": {"group": [0.40, 0.45, 0.50], "ebpo": [0.46, 0.50, 0.57], "bnpo": [0.41, 0.44, 0.52]},
        "G=8": {"ebpo": [0.55, 0.61, 0.60], "group": [0.50, 0.55, 0.52], "bnpo": [0.47, 0.56, 0.50]},
    }
    family = paired_stats.compare_family(groups, "group", resamples=2000)
    assert list(family) == ["G=4", "G=8"]
    assert [c.name for c in family["G=4"]] == ["ebpo", "bnpo"]
    assert [c.name for c in family["G=8"]] == ["ebpo", "bnpo"]
    raw = []
    for key in family:
        for c in family[key]:
            diffs = [a - b for a, b in zip(groups[key][c.name], groups[key]["group"], strict=True)]
            raw.append(two_sided_p(t_statistic(diffs), 2))
    flat = [c for key in family for c in family[key]]
    assert [c.p for c in flat] == pytest.approx(raw, rel=1e-9)
    assert [c.p_holm for c in flat] == pytest.approx(holm_by_hand(raw), rel=1e-9)  # m = 4
    alone = paired_stats.compare(groups["G=4"], "group", resamples=2000)
    assert [c.p_holm for c in alone] == pytest.approx(holm_by_hand(raw[:2]), rel=1e-9)  # m = 2


def test_compare_family_counts_extra_p_values():
    values = made_up_results()
    extra = {"elsewhere": 0.001, "missing": math.nan}
    results = paired_stats.compare(values, "group", resamples=2000, family=extra)
    raw = [c.p for c in results]
    assert [c.p_holm for c in results] == pytest.approx(holm_by_hand([*raw, 0.001])[:3])


def test_compare_one_seed_gives_no_verdict():
    (result,) = paired_stats.compare({"group": [0.5], "ebpo": [0.9]}, "group")
    assert result.n == 1 and (result.ci_low, result.ci_high) == pytest.approx((0.4, 0.4))
    assert math.isnan(result.p) and math.isnan(result.p_holm)
    assert result.verdict == "no difference shown"


@pytest.mark.parametrize(
    ("values", "baseline", "match"),
    [
        ({"group": [0.1, 0.2, 0.3], "ebpo": [0.2, 0.3]}, "group", "'ebpo' has 2 results"),
        ({"group": [0.1, 0.2], "ebpo": [0.2, 0.3]}, "grpo", "baseline 'grpo' not among"),
        ({"group": [0.1, math.nan], "ebpo": [0.2, 0.3]}, "group", "drop those seeds"),
    ],
)
def test_compare_rejects_bad_input(values, baseline, match):
    with pytest.raises(ValueError, match=match):
        paired_stats.compare(values, baseline)


def test_compare_family_names_group_missing_baseline():
    groups = {"G=4": {"group": [0.1, 0.2], "ebpo": [0.2, 0.3]}, "G=8": {"ebpo": [0.2, 0.3]}}
    with pytest.raises(ValueError, match="in group 'G=8'"):
        paired_stats.compare_family(groups, "group")


# --- plain_words ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("comparison", "expected"),
    [
        (
            Comparison("ebpo", "group", 8, 0.031, 0.008, 0.056, 0.004, 0.021),
            "ebpo − group: +3.1 points [+0.8, +5.6], Holm p = 0.021: the data support ebpo being better.",
        ),
        (
            Comparison("bnpo", "group", 8, -0.042, -0.07, -0.013, 0.0001, 0.0003),
            "bnpo − group: −4.2 points [−7.0, −1.3], Holm p < 0.001: the data support bnpo being worse.",
        ),
        (
            Comparison("noise", "group", 8, 0.011, -0.02, 0.041, 0.2, 0.4),
            "noise − group: +1.1 points [−2.0, +4.1], Holm p = 0.400: the data do not show a difference; "
            "differences between −2.0 and +4.1 points are compatible with them.",
        ),
    ],
)
def test_plain_words(comparison, expected):
    assert paired_stats.plain_words(comparison) == expected


def test_plain_words_unit_and_scale():
    c = Comparison("ebpo", "group", 8, 0.5, 0.2, 0.8, 0.01, 0.01)
    text = paired_stats.plain_words(c, unit="tokens", scale=1.0)
    assert text.startswith("ebpo − group: +0.5 tokens [+0.2, +0.8], Holm p = 0.010")
    assert text.endswith("being better.")
