"""Length and repetition shaping: ``overlong`` (DAPO), ``cosine`` (length scaled by correctness),
``repetition`` (n-gram repetition penalty). Lengths are in tokens, from TRL's ``completion_ids``."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from .accuracy import STATUS_SCORES, _validate, column_values, get_verifier, log_counts
from .pool import PoolSettings
from .registry import register_reward
from .text import Completion, completion_texts

__all__ = ["cosine", "overlong", "repetition"]


def _token_lengths(name: str, completion_ids: Sequence[Sequence[int]] | None) -> list[int]:
    if completion_ids is None:
        raise ValueError(
            f"{name} needs completion_ids (TRL passes them; pass completion_ids=... when calling it)"
        )
    return [len(ids) for ids in completion_ids]


def _check_overlong(max_length: int, cache_length: int | None = None) -> None:
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1:
        raise ValueError(f"overlong: max_length must be a positive integer (tokens), got {max_length!r}")
    if cache_length is not None and (not isinstance(cache_length, int) or not 0 < cache_length <= max_length):
        raise ValueError(
            f"overlong: cache_length must be an integer in [1, max_length={max_length}], got {cache_length!r}"
        )


@register_reward("overlong", validate=_check_overlong, reward_range=(-1.0, 0.0))
def overlong(
    completions: Sequence[Completion] | None = None,
    completion_ids: Sequence[Sequence[int]] | None = None,
    *,
    max_length: int,
    cache_length: int | None = None,
    **kwargs: Any,
) -> list[float]:
    """DAPO's soft overlong punishment (Eq. 13 of arXiv 2503.14476), from the length L in tokens:
    0 while ``L <= max_length - cache_length``, then falling linearly to -1 at ``L = max_length``, and -1
    beyond.

    Args:
        max_length: ``L_max``, normally ``GRPOConfig.max_completion_length``.
        cache_length: ``L_cache``, the punished band before ``max_length`` (default ``max_length // 4``).

    Example:
        >>> from bnpo_trl.rewards import overlong
        >>> overlong(completion_ids=[[0] * 70, [0] * 90, [0] * 100, [0] * 120], max_length=100, cache_length=20)
        [0.0, -0.5, -1.0, -1.0]
    """
    _check_overlong(max_length, cache_length)
    cache = max(1, max_length // 4) if cache_length is None else cache_length
    start = max_length - cache
    return [
        0.0 if n <= start else max(-1.0, (start - n) / cache)
        for n in _token_lengths("overlong", completion_ids)
    ]


def _check_cosine(
    max_length: int,
    min_value_wrong: float = -1.0,
    max_value_wrong: float = -0.5,
    min_value_correct: float = 0.5,
    max_value_correct: float = 1.0,
    **accuracy_kwargs: Any,
) -> None:
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1:
        raise ValueError(f"cosine: max_length must be a positive integer (tokens), got {max_length!r}")
    if not min_value_correct <= max_value_correct:
        raise ValueError("cosine: min_value_correct must be <= max_value_correct")
    if not min_value_wrong <= max_value_wrong:
        raise ValueError("cosine: min_value_wrong must be <= max_value_wrong")
    _validate(**accuracy_kwargs)


def _cosine_range(
    min_value_wrong: float = -1.0,
    max_value_wrong: float = -0.5,
    min_value_correct: float = 0.5,
    max_value_correct: float = 1.0,
    **_: Any,
) -> tuple[float, float]:
    values = (min_value_wrong, max_value_wrong, min_value_correct, max_value_correct)
    return min(values), max(values)


@register_reward("cosine", validate=_check_cosine, reward_range=_cosine_range)
def cosine(
    completions: Sequence[Completion],
    completion_ids: Sequence[Sequence[int]] | None = None,
    *,
    max_length: int,
    min_value_wrong: float = -1.0,
    max_value_wrong: float = -0.5,
    min_value_correct: float = 0.5,
    max_value_correct: float = 1.0,
    gold_column: str = "answer",
    workers: int | None = None,
    timeout: float = 5.0,
    cpu_timeout: float | None = None,
    memory_mb: int | None = 4096,
    log_metric: Callable[[str, float], None] | None = None,
    **kwargs: Any,
) -> list[float | None]:
    r"""Correctness-aware cosine length scaling (Appendix C.1 of arXiv 2502.03373).

    With ``p = min(L / max_length, 1)`` (L in tokens) and ``c = (1 + cos(pi p)) / 2`` (1 for an empty
    completion, 0 at ``max_length``): a correct completion gets ``min_value_correct + c * (max_value_correct
    - min_value_correct)`` (shorter is better), a wrong one ``max_value_wrong + c * (min_value_wrong -
    max_value_wrong)`` (a short wrong answer is punished most). Correctness is the ``accuracy`` verdict (same
    pool, same cache, same kwargs); no answer and timeouts count as wrong, an unparseable gold gives ``None``.

    Example:
        >>> from bnpo_trl.rewards import cosine
        >>> cosine([r"\boxed{\frac{1}{3}}", r"\boxed{\frac{1}{2}}"], [[0] * 50, [0] * 50], answer=["1/3", "1/3"],
        ...        max_length=100)
        [0.75, -0.75]
    """
    _check_cosine(max_length, min_value_wrong, max_value_wrong, min_value_correct, max_value_correct)
    texts = completion_texts(completions)
    lengths = _token_lengths("cosine", completion_ids)
    if len(lengths) != len(texts):
        raise ValueError(f"cosine: got {len(lengths)} completion_ids for {len(texts)} completions")
    golds = column_values("cosine", gold_column, len(texts), kwargs)
    settings = PoolSettings(workers, timeout, cpu_timeout, memory_mb)
    statuses = get_verifier(settings).judge(golds, texts)
    log_counts(log_metric, "cosine", statuses)
    rewards: list[float | None] = []
    for status, length in zip(statuses, lengths, strict=True):
        score = STATUS_SCORES[status]
        if score is None:
            rewards.append(None)
            continue
        c = 0.5 * (1.0 + math.cos(math.pi * min(length / max_length, 1.0)))
        if score == 1.0:
            rewards.append(min_value_correct + c * (max_value_correct - min_value_correct))
        else:
            rewards.append(max_value_wrong + c * (min_value_wrong - max_value_wrong))
    return rewards


def _check_repetition(ngram_size: int = 3, max_penalty: float = -1.0, unit: str = "tokens") -> None:
    if not isinstance(ngram_size, int) or isinstance(ngram_size, bool) or ngram_size < 1:
        raise ValueError(f"repetition: ngram_size must be a positive integer, got {ngram_size!r}")
    if not isinstance(max_penalty, int | float) or max_penalty > 0:
        raise ValueError(f"repetition: max_penalty must be <= 0 (it is a penalty), got {max_penalty!r}")
    if unit not in ("tokens", "words"):
        raise ValueError(f"repetition: unit must be 'tokens' (completion_ids) or 'words', got {unit!r}")


def _repetition_range(max_penalty: float = -1.0, **_: Any) -> tuple[float, float]:
    return float(max_penalty), 0.0


@register_reward("repetition", validate=_check_repetition, reward_range=_repetition_range)
def repetition(
    completions: Sequence[Completion] | None = None,
    completion_ids: Sequence[Sequence[int]] | None = None,
    *,
    ngram_size: int = 3,
    max_penalty: float = -1.0,
    unit: str = "tokens",
    **kwargs: Any,
) -> list[float]:
    """N-gram repetition penalty (Appendix C.2 of arXiv 2502.03373): ``(1 - distinct/total n-grams) *
    max_penalty``; 0.0 for a completion with fewer than ``ngram_size`` units or no repeated n-gram.

    Args:
        ngram_size: n.
        max_penalty: The penalty of a completion made of one repeated n-gram in the limit (<= 0).
        unit: ``"tokens"`` (``completion_ids``) or ``"words"`` (whitespace-separated words of the text).

    Example:
        >>> from bnpo_trl.rewards import repetition
        >>> repetition(completion_ids=[[1, 2, 3, 4], [5, 5, 5, 5, 5]], ngram_size=2)
        [0.0, -0.75]
        >>> repetition(["the cat the cat the cat"], unit="words", ngram_size=2)
        [-0.6]
    """
    _check_repetition(ngram_size, max_penalty, unit)
    if unit == "tokens":
        if completion_ids is None:
            raise ValueError("repetition with unit='tokens' needs completion_ids (TRL passes them)")
        sequences: list[Sequence[Any]] = list(completion_ids)
    else:
        if completions is None:
            raise ValueError("repetition with unit='words' needs completions")
        sequences = [text.split() for text in completion_texts(completions)]
    rewards = []
    for seq in sequences:
        ngrams = [tuple(seq[i : i + ngram_size]) for i in range(len(seq) - ngram_size + 1)]
        if not ngrams:
            rewards.append(0.0)
            continue
        rewards.append((1.0 - len(set(ngrams)) / len(ngrams)) * max_penalty + 0.0)  # + 0.0: no -0.0
    return rewards
