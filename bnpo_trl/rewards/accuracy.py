"""``accuracy``: is the completion's final answer mathematically equal to the gold answer? (math-verify)

How one row is scored:

1. Gold: the dataset column ``gold_column`` (default ``answer``). A full solution works too: its last
   ``\\boxed{}`` is used (a GSM8K solution: the text after ``####``). The gold is parsed as the content of a
   box, so raw LaTeX keeps its meaning (math-verify's default ``parse`` reads ``2\\sqrt{3}`` as 2 and
   ``[2, 5)`` as 5). Parsed once per worker and remembered.
2. Prediction: the content of the completion's last complete ``\\boxed{}``; without a box, math-verify's
   anchored extraction on the whole completion ("final answer is $x$", "Answer: x"). No unanchored guessing.
3. ``verify(gold, prediction)`` (gold first: math-verify is not symmetric) in a worker process, under a CPU
   budget and a hard wall-clock timeout enforced by this process (:mod:`bnpo_trl.rewards.pool`).
4. Verdicts are cached by ``(gold, extracted answer)``: GRPO groups repeat answers, epochs repeat golds.
   Only deterministic outcomes are cached; a timeout (a hang, a killed or frozen worker) is retried once
   on the replacement worker and never cached.

Fast path: when the gold and the box's content are both plain integers of at most 15 digits (``0``,
``-12``, ``143``: no sign on zero, no leading zeros), the verdict is their equality, decided here without
a worker; it is what math-verify answers for such a pair (a test checks it against the workers).

Scores: 1.0 correct; 0.0 wrong, no answer, or timeout; ``None`` when the gold cannot be parsed (TRL then
ignores the row for this reward). The fallbacks are counted per batch with TRL's ``log_metric`` as
``rewards/<name>/timeouts``, ``rewards/<name>/unparsed_gold`` and ``rewards/<name>/no_answer``.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bnpo_trl.answers import (
    canonical_answer,
    clock_minutes,
    last_boxed,
    normalize_number_spacing,
    prepare_gold,
)

from .pool import PoolSettings, VerifierPool, get_pool
from .registry import register_reward
from .text import Completion, completion_texts

__all__ = ["STATUS_SCORES", "MathVerifier", "accuracy", "column_values", "get_verifier", "prediction_text"]

logger = logging.getLogger(__name__)

#: Score of each verdict.
STATUS_SCORES: dict[str, float | None] = {
    "correct": 1.0,
    "wrong": 0.0,
    "no_answer": 0.0,
    "timeout": 0.0,
    "unparsed_gold": None,
}
#: Verdict -> metric name suffix, logged every batch (zeros included, so every rank logs the same keys).
COUNTED = {"timeout": "timeouts", "unparsed_gold": "unparsed_gold", "no_answer": "no_answer"}
_LONG_KEY = 512  # longer predictions are cached under a digest
_PLAIN_INTEGER = re.compile(r"0|-?[1-9][0-9]{0,14}")  # at most 15 digits: exact even as a float


def _box_content(pred: str) -> str | None:
    """The content of a :func:`prediction_text` that is a box (``\\boxed{...}``), else ``None``."""
    return pred[len("\\boxed{") : -1] if pred.startswith("\\boxed{") and pred.endswith("}") else None


def _integer_verdict(gold: str, pred: str) -> str | None:
    """``correct``/``wrong`` when ``gold`` and the content of ``pred`` (``\\boxed{...}``) are plain integers,
    else ``None`` (the pair goes to math-verify)."""
    if not _PLAIN_INTEGER.fullmatch(gold):
        return None
    answer = _box_content(pred)
    if answer is None or not _PLAIN_INTEGER.fullmatch(answer):
        return None
    return "correct" if answer == gold else "wrong"


def _clock_verdict(gold: str, pred: str) -> str | None:
    """``correct``/``wrong`` when the gold or the boxed answer is a time of day (:func:`clock_minutes`),
    which math-verify would read as a ratio (``4:30`` as 2/15); else ``None``. The a.m./p.m. must agree
    unless one side is unambiguous 24-hour time; a clock answer for a gold that is no clock is wrong."""
    answer = _box_content(pred)
    gold_time = clock_minutes(gold)
    pred_time = clock_minutes(answer) if answer is not None else None
    if gold_time is None:
        return None if pred_time is None else "wrong"
    if pred_time is None:
        return None if answer is None else "wrong"
    (g, g_marked), (p, p_marked) = gold_time, pred_time
    unmarked = p if g_marked else g
    if g_marked == p_marked or not 60 <= unmarked < 13 * 60:  # same notation, or 24-hour time (16:30)
        return "correct" if g == p else "wrong"
    # one side says a.m./p.m., the other a 12-hour reading: only a gold without the marker accepts both
    return "correct" if not g_marked and g % 720 == p % 720 else "wrong"


def prediction_text(text: str) -> str | None:
    """What the worker parses for a completion: ``\\boxed{<last box content>}``, else the whole text;
    ``None`` when there is nothing to parse (empty completion, or an empty last box).

    Examples:
        >>> prediction_text(r"First \\boxed{1}, finally \\boxed{1\\,000}.")
        '\\\\boxed{1000}'
        >>> prediction_text(r"The final answer is $5\\,000$.")
        'The final answer is $5000$.'
        >>> prediction_text(r"\\boxed{ }") is None, prediction_text("  ") is None
        (True, True)
    """
    boxed = last_boxed(text)
    if boxed is not None:
        boxed = canonical_answer(normalize_number_spacing(boxed.strip()))
        return "\\boxed{" + boxed + "}" if boxed else None
    return normalize_number_spacing(text) if text.strip() else None


class _LRU(OrderedDict):
    """A bounded LRU map (not ``functools.lru_cache``: misses are filled in batches by the worker pool)."""

    def __init__(self, maxsize: int) -> None:
        super().__init__()
        self.maxsize = maxsize

    def lookup(self, key: Any) -> Any:
        value = self.get(key)
        if value is not None:
            self.move_to_end(key)
        return value

    def store(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.maxsize:
            self.popitem(last=False)


class MathVerifier:
    """Verdicts for (gold, completion text) pairs, with a gold cache and a verdict cache.

    Args:
        pool: The worker pool that runs math-verify.
        cache_size: Entries in the verdict cache (and in the gold cache).

    Example:
        >>> from bnpo_trl.rewards import PoolSettings, get_verifier
        >>> get_verifier(PoolSettings(workers=1)).judge([r"\\frac{1}{2}", "[2, 5)", "x"], [r"\\boxed{0.5}", r"\\boxed{(2, 5)}", ""])
        ['correct', 'wrong', 'no_answer']
    """

    def __init__(self, pool: VerifierPool, cache_size: int = 1 << 17) -> None:
        self.pool = pool
        self._gold_ok = _LRU(cache_size)
        self._verdicts = _LRU(cache_size)
        self._lock = threading.Lock()
        self.cache_hits = 0
        self.cache_misses = 0
        self.integer_verdicts = 0  # pairs decided by the plain-integer fast path
        self.retried = 0  # requests sent a second time after a timeout

    def judge(self, golds: Sequence[Any], texts: Sequence[str]) -> list[str]:
        """One verdict per row: ``correct``, ``wrong``, ``no_answer``, ``timeout`` or ``unparsed_gold``."""
        if len(golds) != len(texts):
            raise ValueError(f"got {len(golds)} gold answers for {len(texts)} completions")
        prepared = [prepare_gold(gold) for gold in golds]
        predictions = [prediction_text(text) for text in texts]
        statuses: list[str | None] = [None] * len(texts)
        with self._lock:
            gold_ok = self._check_golds({g for g in prepared if g is not None})
            todo: dict[tuple[str, Any], list[int]] = {}
            requests = []
            for i, (gold, pred) in enumerate(zip(prepared, predictions, strict=True)):
                if gold is None or not gold_ok[gold]:
                    statuses[i] = "unparsed_gold"
                elif pred is None:
                    statuses[i] = "no_answer"
                elif (verdict := _integer_verdict(gold, pred)) is not None:  # two integers: no clock
                    statuses[i] = verdict
                    self.integer_verdicts += 1
                elif (verdict := _clock_verdict(gold, pred)) is not None:
                    statuses[i] = verdict
                else:
                    key = (gold, pred if len(pred) <= _LONG_KEY else hashlib.blake2b(pred.encode()).digest())
                    cached = self._verdicts.lookup(key)
                    if cached is not None:
                        statuses[i] = cached
                        self.cache_hits += 1
                    elif key in todo:
                        todo[key].append(i)
                        self.cache_hits += 1
                    else:
                        todo[key] = [i]
                        requests.append({"op": "item", "gold": gold, "pred": pred})
                        self.cache_misses += 1
            # Requests of one gold go to one worker (its gold cache), unless another worker runs out of work.
            replies = self._run_with_one_retry(requests)
            for (key, rows), reply in zip(todo.items(), replies, strict=True):
                if reply["status"] != "timeout":  # a timeout may be transient (a killed or frozen worker)
                    self._verdicts.store(key, reply["status"])
                for i in rows:
                    statuses[i] = reply["status"]
        return statuses  # type: ignore[return-value]

    def _check_golds(self, golds: set[str]) -> dict[str, bool]:
        known = {
            gold: True if _PLAIN_INTEGER.fullmatch(gold) else self._gold_ok.lookup(gold) for gold in golds
        }
        new = sorted(gold for gold, ok in known.items() if ok is None)
        replies = self._run_with_one_retry([{"op": "gold", "gold": gold} for gold in new])
        for gold, reply in zip(new, replies, strict=True):
            ok = reply["status"] == "ok"  # a gold that does not parse in time is unusable for this batch
            if not ok:
                logger.warning(
                    "gold answer %.200r could not be parsed (%s): its rows score None", gold, reply["status"]
                )
            known[gold] = ok
            if reply["status"] != "timeout":  # only a parse result is cached; a timeout is tried again later
                self._gold_ok.store(gold, ok)
        return known  # type: ignore[return-value]

    def _run_with_one_retry(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``pool.run``; requests that timed out (a hang, or a worker killed or frozen under them) are sent
        once more, to the replacement workers, before their timeout counts."""
        replies = self.pool.run(requests, keys=[request["gold"] for request in requests])
        again = [i for i, reply in enumerate(replies) if reply["status"] == "timeout"]
        if again:
            self.retried += len(again)
            second = self.pool.run([requests[i] for i in again], keys=[requests[i]["gold"] for i in again])
            for i, reply in zip(again, second, strict=True):
                replies[i] = reply
        return replies


_VERIFIERS: dict[PoolSettings, MathVerifier] = {}
_VERIFIERS_LOCK = threading.Lock()


def get_verifier(settings: PoolSettings | None = None) -> MathVerifier:
    """The process-wide :class:`MathVerifier` for these pool settings (default ``PoolSettings()``), shared
    by ``accuracy``, ``cosine`` and ``per_source``, so that a verdict computed by one is a cache hit for the
    others."""
    settings = PoolSettings() if settings is None else settings
    with _VERIFIERS_LOCK:
        verifier = _VERIFIERS.get(settings)
        if verifier is None:
            verifier = _VERIFIERS[settings] = MathVerifier(get_pool(settings))
        return verifier


def column_values(
    name: str, column: str, n: int, columns: Mapping[str, Any], setting: str = "gold_column"
) -> Sequence[Any]:
    """The dataset column a reward reads (named by its ``setting`` kwarg), checked: present, one value per
    completion."""
    if not isinstance(column, str):
        raise ValueError(f"{name}: {setting} must be a column name, got {column!r}")
    if column not in columns:
        available = sorted(k for k, v in columns.items() if isinstance(v, list | tuple) and len(v) == n)
        raise ValueError(
            f"{name}: the trainer passed no dataset column {column!r} (columns: {available}); set {setting} "
            f"to the right column, e.g. {{name: {name}, {setting}: <column>}}"
        )
    values = columns[column]
    if isinstance(values, str) or not isinstance(values, Sequence) or len(values) != n:
        raise ValueError(f"{name}: column {column!r} must hold one value per completion ({n})")
    return values


def log_counts(log_metric: Callable[[str, float], None] | None, name: str, statuses: Sequence[str]) -> None:
    """Log this batch's fallback counts as ``rewards/<name>/<timeouts|unparsed_gold|no_answer>``."""
    if log_metric is None:
        return
    counts = Counter(statuses)
    for status, metric in COUNTED.items():
        log_metric(f"rewards/{name}/{metric}", float(counts[status]))


def _validate(gold_column: str = "answer", **pool_fields: Any) -> PoolSettings:
    """Check a recipe's kwargs of ``accuracy`` (and ``cosine``); returns the pool settings they give."""
    if not isinstance(gold_column, str) or not gold_column:
        raise ValueError(f"gold_column must be a dataset column name, got {gold_column!r}")
    return PoolSettings(**pool_fields)


@register_reward("accuracy", validate=_validate, reward_range=(0.0, 1.0))
def accuracy(
    completions: Sequence[Completion],
    *,
    gold_column: str = "answer",
    workers: int | None = None,
    timeout: float = 5.0,
    cpu_timeout: float | None = None,
    memory_mb: int | None = 4096,
    log_metric: Callable[[str, float], None] | None = None,
    log_extra: Callable[[str, list[Any]], None] | None = None,
    **kwargs: Any,
) -> list[float | None]:
    r"""1.0 if the final answer equals the gold answer (math-verify), 0.0 if not, ``None`` if the gold
    cannot be parsed. See the module docstring for the rules and ``docs/rewards.md`` for the kwargs.

    Args:
        completions: TRL completions (strings, or lists of chat messages).
        gold_column: Dataset column with the gold answer (raw LaTeX, or a solution with ``\boxed{}``).
        workers: Worker processes (default ``min(2, CPUs)``).
        timeout: Hard wall-clock seconds per verification (then the worker is killed; the row scores 0).
        cpu_timeout: CPU seconds per verification inside the worker (default ``timeout / 3``).
        memory_mb: Address-space cap per worker in MiB (``None``: no cap).
        log_metric: Passed by TRL; receives the per-batch fallback counts.
        log_extra: Passed by TRL; receives each row's verdict (column ``<name>_verdict``).
        **kwargs: The other dataset columns, ``prompts``, ``completion_ids`` (unused).

    Example:
        >>> from bnpo_trl.rewards import accuracy
        >>> completions = [
        ...     [{"role": "assistant", "content": r"... so $x = \boxed{\dfrac12}$"}],
        ...     [{"role": "assistant", "content": r"The interval is \boxed{(2, 5)}."}],
        ...     [{"role": "assistant", "content": "I am not sure."}],
        ... ]
        >>> accuracy(completions, answer=["0.5", "[2, 5)", "4"])
        [1.0, 0.0, 0.0]
    """
    texts = completion_texts(completions)
    golds = column_values("accuracy", gold_column, len(texts), kwargs)
    settings = PoolSettings(workers, timeout, cpu_timeout, memory_mb)
    statuses = get_verifier(settings).judge(golds, texts)
    log_counts(log_metric, "accuracy", statuses)
    if log_extra is not None:
        log_extra("accuracy_verdict", list(statuses))
    return [STATUS_SCORES[status] for status in statuses]
