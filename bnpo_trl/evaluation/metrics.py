"""Metrics of a benchmark run: exact pass@k, percentile-bootstrap intervals, and model-vs-baseline deltas.

Per benchmark, from ``n`` samples per problem with ``c`` of them correct:

- ``pass@k`` for every ``k`` in ``ks`` (default: 1, 2, 4, ... up to ``n``, and ``n``), with the unbiased
  estimator ``1 - C(n - c, k) / C(n, k)`` (Chen et al. 2021, arXiv 2107.03374) averaged over problems;
  ``pass@1`` is the mean accuracy over all ``n`` samples;
- ``maj@n`` when more than one sample per problem (and the majorities are given): the fraction of
  problems whose majority answer is correct (:mod:`bnpo_trl.evaluation.voting`);
- a 95% confidence interval for each: percentile bootstrap over problems (resample the problems with
  replacement ``n_bootstrap`` times with a fixed seed, take the 2.5th and 97.5th percentiles of the mean);
- ``mean_length`` (completion tokens, the stop token included), ``no_answer_rate`` (the reward found
  no final answer), ``truncated_rate`` (hit ``max_new_tokens``), ``timeout_rate`` and ``unscored_rate``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["average_pass_at_k", "benchmark_metrics", "bootstrap_ci", "compare", "default_ks", "pass_at_k"]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct: ``1 - C(n - c, k) / C(n, k)``.

    The probability that at least one of ``k`` samples drawn without replacement from the ``n`` is
    correct (Chen et al. 2021). Computed with exact integers.

    Examples:
        >>> pass_at_k(4, 1, 1), pass_at_k(4, 1, 2), pass_at_k(4, 0, 4), pass_at_k(4, 3, 2)
        (0.25, 0.5, 0.0, 1.0)
    """
    for name, value in (("n", n), ("c", c), ("k", k)):
        if not isinstance(value, int | np.integer) or isinstance(value, bool):
            raise TypeError(f"{name} must be an integer, got {value!r}.")
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}.")
    if n - c < k:
        return 1.0
    return float(1 - Fraction(math.comb(n - c, k), math.comb(n, k)))


def default_ks(n: int) -> list[int]:
    """1, 2, 4, ... up to ``n``, plus ``n`` itself.

    >>> default_ks(1), default_ks(4), default_ks(12)
    ([1], [1, 2, 4], [1, 2, 4, 8, 12])
    """
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    if ks[-1] != n:
        ks.append(n)
    return ks


def _resample_indices(n_items: int, n_bootstrap: int, seed: int) -> np.ndarray:
    """The bootstrap draws: ``n_bootstrap`` rows of ``n_items`` indices drawn with replacement."""
    return np.random.default_rng(seed).integers(0, n_items, size=(n_bootstrap, n_items))


def bootstrap_ci(
    values: Sequence[float] | Sequence[Sequence[float]] | np.ndarray,
    n_bootstrap: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Any:
    """Percentile bootstrap interval of the mean of ``values`` (one value per problem).

    Resamples the problems with replacement ``n_bootstrap`` times (``numpy.random.default_rng(seed)``) and
    returns the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resampled means. With
    ``n_bootstrap=0`` or a single problem the interval is the mean itself.

    A 1-D input gives one ``(lo, hi)``. A 2-D input (rows of per-problem values, e.g. one row per k of
    pass@k) gives a list of ``(lo, hi)``, one per row, all from the same resampled problems: the rows of
    one benchmark share their bootstrap draws.

    >>> bootstrap_ci([1.0, 1.0, 1.0])
    (1.0, 1.0)
    >>> lo, hi = bootstrap_ci([0.0, 1.0] * 50, seed=0)
    >>> 0.39 < lo < 0.5 < hi < 0.61
    True
    >>> bootstrap_ci([[1.0, 1.0], [0.0, 0.0]])
    [(1.0, 1.0), (0.0, 0.0)]
    """
    array = np.asarray(values, dtype=float)
    if array.ndim not in (1, 2) or array.size == 0:
        raise ValueError(
            "bootstrap_ci needs a non-empty 1-D sequence of per-problem values (or a 2-D array of such rows)."
        )
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}.")
    rows = array.reshape(-1, array.shape[-1])
    n_items = rows.shape[1]
    if n_bootstrap <= 0 or n_items == 1:
        out = [(float(row.mean()), float(row.mean())) for row in rows]
    else:
        indices = _resample_indices(n_items, n_bootstrap, seed)
        # Rounded so that level=0.95 gives exactly the 0.025/0.975 quantiles.
        quantiles = [round((1 - level) / 2, 12), round((1 + level) / 2, 12)]
        out = []
        for row in rows:
            lo, hi = np.quantile(row[indices].mean(axis=1), quantiles)
            out.append((float(lo), float(hi)))
    return out[0] if array.ndim == 1 else out


def _check_tables(
    correct: Sequence[Sequence[bool]],
    lengths: Sequence[Sequence[int]],
    verdicts: Sequence[Sequence[str]],
    terminated: Sequence[Sequence[bool]],
    ks: Sequence[int] | None,
) -> None:
    n_problems = len(correct)
    if n_problems == 0:
        raise ValueError("A benchmark needs at least one problem.")
    n = len(correct[0])
    for name, table in (("lengths", lengths), ("verdicts", verdicts), ("terminated", terminated)):
        if len(table) != n_problems:
            raise ValueError(f"{name} has {len(table)} problems, correct has {n_problems}.")
    if n < 1 or any(len(row) != n for table in (correct, lengths, verdicts, terminated) for row in table):
        raise ValueError("Every problem needs the same number (>= 1) of samples in every table.")
    if ks is not None and any(int(k) < 1 for k in ks):
        raise ValueError(f"ks must hold values >= 1, got {list(ks)}.")


def benchmark_metrics(
    correct: Sequence[Sequence[bool]],
    lengths: Sequence[Sequence[int]],
    verdicts: Sequence[Sequence[str]],
    terminated: Sequence[Sequence[bool]],
    ks: Sequence[int] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    majority: Sequence[bool] | None = None,
) -> dict[str, Any]:
    """The metrics of one benchmark from per-problem, per-sample outcomes (``[problem][sample]``).

    ``majority`` (one per problem: is its majority answer correct?) adds ``maj@k`` (``{"maj@<n>": ...}``)
    with its interval in ``ci95``, from the same bootstrap draws as pass@k (when ``n > 1``).

    ``verdicts`` are the reward's verdicts (``correct``, ``wrong``, ``no_answer``, ``timeout``,
    ``unparsed_gold``/``unscored``). ``ks`` above ``n`` are dropped and pass@1 is always included.
    Returns ``n_problems``, ``n_samples`` (per problem), ``pass@k`` (``{"pass@1": ..., ...}``), ``ci95``
    (``{"pass@1": [lo, hi], ...}``), ``mean_length``, ``no_answer_rate``, ``truncated_rate``,
    ``timeout_rate``, ``unscored_rate`` and ``correct_per_problem``.

    >>> m = benchmark_metrics([[True, False], [False, False]], [[3, 5], [4, 4]],
    ...                       [["correct", "wrong"], ["no_answer", "wrong"]], [[True, True], [True, False]])
    >>> m["pass@k"], m["mean_length"], m["no_answer_rate"], m["truncated_rate"]
    ({'pass@1': 0.25, 'pass@2': 0.5}, 4.0, 0.25, 0.25)
    """
    _check_tables(correct, lengths, verdicts, terminated, ks)
    n_problems, n = len(correct), len(correct[0])
    ks = default_ks(n) if ks is None else sorted({1, *(int(k) for k in ks if int(k) <= n)})
    counts = [int(sum(bool(x) for x in row)) for row in correct]
    rows = {f"pass@{k}": [pass_at_k(n, c, k) for c in counts] for k in ks}
    if majority is not None and n > 1:
        if len(majority) != n_problems:
            raise ValueError(f"majority has {len(majority)} problems, correct has {n_problems}.")
        rows[f"maj@{n}"] = [float(bool(m)) for m in majority]
    per_problem = np.array(list(rows.values()))
    intervals = bootstrap_ci(per_problem, n_bootstrap=n_bootstrap, seed=seed)
    means = {key: float(values.mean()) for key, values in zip(rows, per_problem, strict=True)}
    ci = {key: list(interval) for key, interval in zip(rows, intervals, strict=True)}
    pass_k = {key: value for key, value in means.items() if key.startswith("pass@")}
    maj_k = {key: value for key, value in means.items() if key.startswith("maj@")}
    total = n_problems * n
    flat_verdicts = [v for row in verdicts for v in row]
    return {
        "n_problems": n_problems,
        "n_samples": n,
        "pass@k": pass_k,
        **({"maj@k": maj_k} if maj_k else {}),
        "ci95": ci,
        "mean_length": float(sum(sum(row) for row in lengths) / total),
        "no_answer_rate": flat_verdicts.count("no_answer") / total,
        "truncated_rate": sum(not t for row in terminated for t in row) / total,
        "timeout_rate": flat_verdicts.count("timeout") / total,
        "unscored_rate": sum(v in ("unparsed_gold", "unscored") for v in flat_verdicts) / total,
        "correct_per_problem": counts,
    }


def average_pass_at_k(results: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """The unweighted mean over benchmarks of every pass@k they all report; empty for one benchmark.

    >>> average_pass_at_k({"a": {"pass@k": {"pass@1": 0.5}}, "b": {"pass@k": {"pass@1": 0.25}}})
    {'pass@1': 0.375}
    """
    if len(results) <= 1:
        return {}
    ks = sorted({int(key[5:]) for r in results.values() for key in r["pass@k"]})
    return {
        f"pass@{k}": float(np.mean([r["pass@k"][f"pass@{k}"] for r in results.values()]))
        for k in ks
        if all(f"pass@{k}" in r["pass@k"] for r in results.values())
    }


def _paired_ci(
    ours: Mapping[str, Any], theirs: Mapping[str, Any], k: int, n_bootstrap: int, seed: int
) -> list[float] | None:
    """Paired bootstrap interval of model minus baseline pass@k; ``None`` when either run has < k samples."""
    if ours["n_samples"] < k or theirs["n_samples"] < k:
        return None
    a = np.array([pass_at_k(ours["n_samples"], c, k) for c in ours["correct_per_problem"]])
    b = np.array([pass_at_k(theirs["n_samples"], c, k) for c in theirs["correct_per_problem"]])
    return list(bootstrap_ci(a - b, n_bootstrap=n_bootstrap, seed=seed))


def compare(
    report: Mapping[str, Any], baseline: Mapping[str, Any], n_bootstrap: int = 1000, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Per benchmark, model minus baseline: ``{"pass@k": {"pass@1": {"delta", "ci95"}}, "mean_length",
    "no_answer_rate"}``; the interval is a paired bootstrap over problems (both runs must have
    evaluated the same problems, checked by ``problems_sha256``)."""
    out: dict[str, dict[str, Any]] = {}
    for name, ours in report["results"].items():
        theirs = baseline["results"].get(name)
        if theirs is None:
            continue
        entry: dict[str, Any] = {
            "mean_length": ours["mean_length"] - theirs["mean_length"],
            "no_answer_rate": ours["no_answer_rate"] - theirs["no_answer_rate"],
            "pass@k": {},
        }
        paired = ours.get("problems_sha256") == theirs.get("problems_sha256")
        if not paired:
            logger.warning("%s: the two runs evaluated different problems; no paired interval.", name)
        for key, value in ours["pass@k"].items():
            if key not in theirs["pass@k"]:
                continue
            ci = _paired_ci(ours, theirs, int(key[5:]), n_bootstrap, seed) if paired else None
            entry["pass@k"][key] = {"delta": value - theirs["pass@k"][key], "ci95": ci}
        out[name] = entry
    return out
