"""Paired comparisons of benchmark results: each normalizer against a baseline, paired by seed.

For every seed ``i`` the difference ``values[name][i] - values[baseline][i]`` is one observation, so the
seed-to-seed variation both runs share cancels. Each comparison reports the mean difference, a percentile
bootstrap interval of that mean, the two-sided paired t-test p-value and its Holm-adjusted value over
every comparison made together. A result is called "better" or "worse" only when both the Holm-adjusted
p-value is below ``alpha`` and the interval excludes 0; larger values are taken to be better.

>>> results = {"group": [0.50, 0.52, 0.47, 0.55], "ebpo": [0.60, 0.63, 0.56, 0.66]}
>>> [c.verdict for c in compare(results, "group")]
['better']
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import mpmath
import numpy as np

VERDICTS = ("better", "worse", "no difference shown")
K = TypeVar("K", bound=Hashable)


def _as_diffs(diffs: Sequence[float]) -> np.ndarray:
    """``diffs`` as a 1-D float array; NaN or infinite entries raise."""
    array = np.asarray(diffs, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"paired differences must be one-dimensional, got shape {array.shape}")
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise ValueError(
            f"paired differences at positions {bad.tolist()} are NaN or infinite: drop those seeds "
            "(from the normalizer and the baseline alike) before comparing"
        )
    return array


def bootstrap_interval(
    diffs: Sequence[float], level: float = 0.95, resamples: int = 20000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval, at ``level``, of the mean of the paired differences ``diffs``."""
    array = _as_diffs(diffs)
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    n = array.size
    if n == 0:
        raise ValueError("no paired differences: give at least one seed")
    if n == 1:
        return float(array[0]), float(array[0])
    rng = np.random.default_rng(seed)
    means = array[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def paired_t_p(diffs: Sequence[float]) -> float:
    """Two-sided p-value of the paired t-test on ``diffs`` (NaN for fewer than two differences)."""
    array = _as_diffs(diffs)
    n = array.size
    if n < 2:
        return math.nan
    mean = float(array.mean())
    if np.all(array == array[0]):
        return 1.0 if mean == 0 else 0.0
    t = mean / (float(array.std(ddof=1)) / math.sqrt(n))
    df = n - 1
    # P(|T| >= |t|) for Student's t with df degrees of freedom is I_{df/(df+t^2)}(df/2, 1/2).
    return float(mpmath.betainc(df / 2, 0.5, 0, df / (df + t * t), regularized=True))


def _holm(pvalues: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values, in the order given; NaN entries stay NaN and do not count in m."""
    order = sorted((i for i, p in enumerate(pvalues) if not math.isnan(p)), key=lambda i: pvalues[i])
    m = len(order)
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def holm(pvalues: Mapping[str, float]) -> dict[str, float]:
    """Holm step-down adjusted p-values, same keys; NaN p-values are left out of m and returned as NaN."""
    return dict(zip(pvalues, _holm([float(p) for p in pvalues.values()]), strict=True))


@dataclass(frozen=True)
class Comparison:
    """One normalizer against the baseline: mean paired difference (name minus baseline), its bootstrap
    interval at ``level``, the paired t-test p-value and its Holm-adjusted value."""

    name: str
    baseline: str
    n: int
    mean: float
    ci_low: float
    ci_high: float
    p: float
    p_holm: float
    alpha: float = 0.05
    level: float = 0.95

    @property
    def verdict(self) -> str:
        """``better``/``worse`` if Holm p < alpha and the interval excludes 0, else "no difference shown"."""
        if self.p_holm < self.alpha and (self.ci_low > 0 or self.ci_high < 0):
            return "better" if self.mean > 0 else "worse"
        return "no difference shown"


def _compare_groups(
    groups: Mapping[K, Mapping[str, Sequence[float]]],
    baseline: str,
    alpha: float,
    level: float,
    resamples: int,
    seed: int,
    family: Mapping[str, float] | None,
) -> dict[K, list[Comparison]]:
    """Compare every name with ``baseline`` in each group; one Holm family over all groups and ``family``."""
    rows = []
    for group, values in groups.items():
        if baseline not in values:
            where = "" if group is None else f" in group {group!r}"
            raise ValueError(f"baseline {baseline!r} not among the results{where}: {list(values)}")
        base = np.asarray(values[baseline], dtype=float)
        for name, series in values.items():
            if name == baseline:
                continue
            other = np.asarray(series, dtype=float)
            if other.shape != base.shape:
                raise ValueError(
                    f"{name!r} has {other.size} results and baseline {baseline!r} has {base.size}: "
                    "pairing is by seed, so give both the same seeds in the same order"
                )
            diffs = other - base
            rows.append((group, name, diffs, paired_t_p(diffs)))
    extra = [float(p) for p in (family or {}).values()]
    adjusted = _holm([row[3] for row in rows] + extra)
    out: dict[K, list[Comparison]] = {group: [] for group in groups}
    for (group, name, diffs, p), p_holm in zip(rows, adjusted[: len(rows)], strict=True):
        low, high = bootstrap_interval(diffs, level=level, resamples=resamples, seed=seed)
        out[group].append(
            Comparison(name, baseline, diffs.size, float(diffs.mean()), low, high, p, p_holm, alpha, level)
        )
    return out


def compare(
    values: Mapping[str, Sequence[float]],
    baseline: str,
    alpha: float = 0.05,
    level: float = 0.95,
    resamples: int = 20000,
    seed: int = 0,
    family: Mapping[str, float] | None = None,
) -> list[Comparison]:
    """Each name in ``values`` (in order) against ``baseline``, paired by index, Holm-corrected together.

    ``family`` holds p-values of further tests of the same family (e.g. reported elsewhere): they count
    in Holm's m but are not returned. Every interval draws with ``seed``, independent of the other names.
    """
    return _compare_groups({None: values}, baseline, alpha, level, resamples, seed, family)[None]


def compare_family(
    groups: Mapping[str, Mapping[str, Sequence[float]]],
    baseline: str,
    alpha: float = 0.05,
    level: float = 0.95,
    resamples: int = 20000,
    seed: int = 0,
    family: Mapping[str, float] | None = None,
) -> dict[str, list[Comparison]]:
    """:func:`compare` for several sets of results (e.g. G=4 and G=8), corrected as one Holm family."""
    return _compare_groups(groups, baseline, alpha, level, resamples, seed, family)


def _signed(x: float) -> str:
    """``x`` to one decimal with an explicit sign, the minus as U+2212."""
    text = f"{x:+.1f}"
    return "+0.0" if text == "-0.0" else text.replace("-", "−")


def plain_words(c: Comparison, unit: str = "points", scale: float = 100.0) -> str:
    """One sentence stating ``c``'s difference, interval, Holm p-value and verdict, values times ``scale``."""
    if math.isnan(c.p_holm):
        p_text = "= n/a"
    elif c.p_holm < 0.001:
        p_text = "< 0.001"
    else:
        p_text = f"= {c.p_holm:.3f}"
    low, high = _signed(c.ci_low * scale), _signed(c.ci_high * scale)
    head = f"{c.name} − {c.baseline}: {_signed(c.mean * scale)} {unit} [{low}, {high}], Holm p {p_text}"
    if c.verdict == "no difference shown":
        if c.n < 2:
            return f"{head}: the data do not show a difference; one seed allows no test."
        return (
            f"{head}: the data do not show a difference; differences between {low} and {high} {unit} "
            "are compatible with them."
        )
    return f"{head}: the data support {c.name} being {c.verdict}."
