"""``per_source``: score each row with the reward its data source calls for; ``gsm8k``: numeric match.

``per_source`` reads the row's source (column ``source_column``, default ``data_source``), finds the first
pattern of ``mapping`` that matches it (``fnmatch`` patterns, case-insensitive, in the order written) and
scores the row with that entry's reward: a registered name, a ``{name: ..., <kwargs>}`` mapping or
``"package.module:function"``, exactly as in a recipe's ``rewards`` list. Rows of the same reward are
scored together in one call. A row whose source matches no pattern scores ``None`` and is counted as
``rewards/per_source/unmatched``.

Example recipe entry::

    - name: per_source
      mapping:
        "gsm8k*": gsm8k
        "aime*": {name: accuracy, timeout: 10}
        "*": accuracy
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import Any

from bnpo_trl.answers import last_boxed, text_after_hashes

from .accuracy import column_values, log_counts
from .registry import RewardSpec, register_reward, resolve_reward, reward_range_of
from .text import Completion, completion_texts

__all__ = ["DEFAULT_MAPPING", "gsm8k", "parse_number", "per_source"]

logger = logging.getLogger(__name__)

#: Used when a recipe gives no mapping.
DEFAULT_MAPPING: dict[str, RewardSpec] = {"gsm8k*": "gsm8k", "*": "accuracy"}

_WARNED: set[str] = set()
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def parse_number(text: str) -> Fraction | None:
    """The last number in ``text`` as an exact fraction (commas are thousands separators), else ``None``.

    Examples:
        >>> parse_number("She pays $1,200.50 in total"), parse_number("-3"), parse_number("none")
        (Fraction(2401, 2), Fraction(-3, 1), None)
    """
    numbers = _NUMBER.findall(text)
    return Fraction(numbers[-1].replace(",", "")) if numbers else None


def _gsm8k_prediction(text: str, strict: bool) -> Fraction | None:
    boxed = last_boxed(text)
    if boxed is not None:
        return parse_number(boxed)
    after = text_after_hashes(text)
    if after is not None:
        return parse_number(after)
    return None if strict else parse_number(text)


@register_reward("gsm8k", reward_range=(0.0, 1.0))
def gsm8k(
    completions: Sequence[Completion],
    *,
    gold_column: str = "answer",
    strict: bool = False,
    log_metric: Callable[[str, float], None] | None = None,
    **kwargs: Any,
) -> list[float | None]:
    r"""Numeric match for GSM8K-style integer/decimal answers (no math-verify, no worker pool).

    Gold: the last number after ``####`` in the gold column (or the last number of the column's text).
    Prediction: the last number inside the last ``\boxed{}``, else after the last ``####``, else (unless
    ``strict``) the last number in the completion. Equal as exact fractions (``72.00`` = ``72``) -> 1.0, else
    0.0; no number -> 0.0, counted as ``rewards/gsm8k/no_answer``; a gold without a number -> ``None``,
    counted as ``rewards/gsm8k/unparsed_gold``.

    Example:
        >>> from bnpo_trl.rewards import gsm8k
        >>> gsm8k([r"... so \boxed{1,200}", "#### 72.00", "She has 7 apples.", "no idea"],
        ...       answer=["Total 2 * 600.\n#### 1200", "72", "8", "5"])
        [1.0, 1.0, 0.0, 0.0]
    """
    texts = completion_texts(completions)
    golds = column_values("gsm8k", gold_column, len(texts), kwargs)
    statuses = []
    for text, gold in zip(texts, golds, strict=True):
        gold_text = str(gold) if gold is not None else ""
        after = text_after_hashes(gold_text)
        gold_number = parse_number(gold_text if after is None else after)
        pred = _gsm8k_prediction(text, strict)
        if gold_number is None:
            statuses.append("unparsed_gold")
        elif pred is None:
            statuses.append("no_answer")
        else:
            statuses.append("correct" if pred == gold_number else "wrong")
    log_counts(log_metric, "gsm8k", statuses)
    return [None if s == "unparsed_gold" else 1.0 if s == "correct" else 0.0 for s in statuses]


def _mapping(mapping: Mapping[str, RewardSpec] | None) -> list[tuple[str, RewardSpec]]:
    mapping = DEFAULT_MAPPING if mapping is None else mapping
    if not isinstance(mapping, Mapping) or not mapping:
        raise ValueError(
            "per_source: mapping must be a non-empty {source pattern: reward} mapping, e.g. "
            "{'gsm8k*': 'gsm8k', '*': 'accuracy'}"
        )
    for pattern, spec in mapping.items():
        if not isinstance(pattern, str):
            raise ValueError(f"per_source: mapping keys are source patterns (strings), got {pattern!r}")
        if spec == "per_source" or (isinstance(spec, Mapping) and spec.get("name") == "per_source"):
            raise ValueError("per_source: a mapping entry cannot be per_source itself")
    return list(mapping.items())


def _check_per_source(
    source_column: str = "data_source", mapping: Mapping[str, RewardSpec] | None = None
) -> None:
    if not isinstance(source_column, str) or not source_column:
        raise ValueError(f"per_source: source_column must be a column name, got {source_column!r}")
    for _, spec in _mapping(mapping):
        resolve_reward(spec)


def _subset(value: Any, rows: list[int], n: int) -> Any:
    if isinstance(value, list | tuple) and len(value) == n:
        return [value[i] for i in rows]
    return value


def _per_source_range(
    mapping: Mapping[str, RewardSpec] | None = None, **_: Any
) -> tuple[float, float] | None:
    """The union of the mapped rewards' ranges; ``None`` when one of them declares none."""
    ranges = [reward_range_of(resolve_reward(spec)) for _, spec in _mapping(mapping)]
    if any(r is None for r in ranges):
        return None
    return min(lo for lo, _ in ranges), max(hi for _, hi in ranges)


@register_reward("per_source", validate=_check_per_source, reward_range=_per_source_range)
def per_source(
    completions: Sequence[Completion],
    *,
    source_column: str = "data_source",
    mapping: Mapping[str, RewardSpec] | None = None,
    log_metric: Callable[[str, float], None] | None = None,
    log_extra: Callable[[str, list[Any]], None] | None = None,
    **kwargs: Any,
) -> list[float | None]:
    r"""Each row scored by the reward that its data source maps to (see the module docstring).

    Args:
        source_column: Dataset column naming the row's source.
        mapping: ``{pattern: reward entry}``; default ``{"gsm8k*": "gsm8k", "*": "accuracy"}``.

    The chosen rewards get the rows' own columns (``prompts``, ``completion_ids`` and every dataset column,
    restricted to their rows) and ``log_metric``, with their counts logged under
    ``rewards/per_source/<name>/...``; ``log_extra`` is not passed on (its columns must cover every row).

    Example:
        >>> from bnpo_trl.rewards import per_source
        >>> per_source([r"\boxed{0.5}", "#### 12", r"\boxed{3}"], answer=[r"\frac12", "12", "3"],
        ...            data_source=["math", "gsm8k", "unknown"], mapping={"gsm8k*": "gsm8k", "math*": "accuracy"})
        [1.0, 1.0, None]
    """
    entries = _mapping(mapping)
    n = len(completions)
    sources = column_values("per_source", source_column, n, kwargs, setting="source_column")
    kwargs = dict(kwargs, completions=completions)
    rows_of: dict[int, list[int]] = {}
    unmatched = 0
    for row, source in enumerate(sources):
        source_text = "" if source is None else str(source).lower()
        for index, (pattern, _) in enumerate(entries):
            if fnmatch.fnmatchcase(source_text, pattern.lower()):
                rows_of.setdefault(index, []).append(row)
                break
        else:
            unmatched += 1
            if source_text not in _WARNED:
                _WARNED.add(source_text)
                logger.warning(
                    "per_source: %s %r matches no pattern of %s: its rows score None (add a '*' entry)",
                    source_column,
                    source,
                    [pattern for pattern, _ in entries],
                )
    rewards: list[float | None] = [None] * n
    sub_log = None
    if log_metric is not None:

        def sub_log(name: str, value: float) -> None:
            log_metric(name.replace("rewards/", "rewards/per_source/", 1), value)

    for index, rows in rows_of.items():
        func = resolve_reward(entries[index][1])
        sub_kwargs = {key: _subset(value, rows, n) for key, value in kwargs.items()}
        scores = func(**sub_kwargs, log_metric=sub_log)
        if len(scores) != len(rows):
            raise ValueError(
                f"per_source: reward for {entries[index][0]!r} returned {len(scores)} scores for {len(rows)} rows"
            )
        for row, score in zip(rows, scores, strict=True):
            rewards[row] = score
    if log_metric is not None:
        log_metric("rewards/per_source/unmatched", float(unmatched))
    return rewards
