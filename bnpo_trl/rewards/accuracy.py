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
   Only deterministic outcomes are cached; a killed request (a hang, a killed or frozen worker) is retried once
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
        answer = canonical_answer(boxed)
        return "\\boxed{" + answer + "}" if answer else None
    return normalize_number_spacing(text) if text.strip() else None


def _gold_parses(
    todo: Mapping[tuple[str, Any], Any], replies: Sequence[Mapping[str, Any]]
) -> dict[str, bool]:
    """What the replies tell about each gold of ``todo``'s keys: ``False`` if one says ``unparsed_gold``,
    ``True`` if one gives any other answer but a timeout (the worker parsed the gold); golds that only timed
    out are missing."""
    parses: dict[str, bool] = {}
    for (gold, _), reply in zip(todo, replies, strict=True):
        if reply["status"] == "unparsed_gold":
            parses[gold] = False
        elif reply["status"] != "timeout":
            parses.setdefault(gold, True)
    return parses


def _prepare_golds(golds: Sequence[Any]) -> list[str | None]:
    """:func:`prepare_gold` of each gold, computed once per distinct value (a GRPO batch repeats each gold G
    times); keyed by type too, so that ``True`` (an error) is not taken for ``1``."""
    done: dict[tuple[type, Any], str | None] = {}
    out = []
    for gold in golds:
        try:
            key = (type(gold), gold)
            if key not in done:
                done[key] = prepare_gold(gold)
            out.append(done[key])
        except TypeError as error:
            if "unhashable" not in str(error):
                raise
            out.append(prepare_gold(gold))  # raises the clear error for a list, a dict, ...
    return out


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
        self.exact_verdicts = 0  # pairs whose box holds the gold's text exactly
        self.retried = 0  # requests sent a second time after a timeout

    def judge(self, golds: Sequence[Any], texts: Sequence[str]) -> list[str]:
        """One verdict per row: ``correct``, ``wrong``, ``no_answer``, ``timeout`` or ``unparsed_gold``.

        Rows that need math-verify go to the pool in one call (golds not seen before are parsed on the way:
        a worker answers ``unparsed_gold`` for an item whose gold does not parse); the rest are decided here.
        """
        if len(golds) != len(texts):
            raise ValueError(f"got {len(golds)} gold answers for {len(texts)} completions")
        prepared = _prepare_golds(golds)
        predictions = [prediction_text(text) for text in texts]
        with self._lock:
            statuses, todo, requests = self._decide_here(prepared, predictions)
            unknown = {g for g, s in zip(prepared, statuses, strict=True) if s != "unparsed_gold"}
            unknown = {gold for gold in unknown if self._gold_known(gold) is None}
            for gold in sorted(unknown - {gold for gold, _ in todo}):
                todo[(gold, None)] = []  # a gold check alone: no row of this gold needs a worker
                requests.append({"op": "gold", "gold": gold})
            # Requests of one gold go to one worker (its gold cache), unless another worker runs out of work.
            replies = self._run_with_one_retry(requests)
            parses = _gold_parses(todo, replies)
            undecided = sorted(unknown - parses.keys())
            if undecided:  # every request of these golds timed out: the gold itself may still parse
                checks = {(gold, None): [] for gold in undecided}
                more = self._run_with_one_retry([{"op": "gold", "gold": gold} for gold in undecided])
                todo.update(checks)
                replies += more
                parses.update(_gold_parses(checks, more))
            failed = self._learn_golds(unknown, parses)
            for (key, rows), reply in zip(todo.items(), replies, strict=True):
                status = reply["status"]
                if key[1] is not None and status not in ("timeout", "unparsed_gold"):
                    self._verdicts.store(key, status)  # a timeout may be transient (a killed worker)
                for i in rows:
                    statuses[i] = status
            for i, gold in enumerate(prepared if failed else ()):
                if gold in failed:
                    statuses[i] = "unparsed_gold"
        return statuses  # type: ignore[return-value]

    def _gold_known(self, gold: str) -> bool | None:
        """Does this gold parse: known ``True``/``False``, or ``None`` (not seen yet)."""
        return True if _PLAIN_INTEGER.fullmatch(gold) else self._gold_ok.lookup(gold)

    def _decide_here(
        self, prepared: list[str | None], predictions: list[str | None]
    ) -> tuple[list[str | None], dict[tuple[str, Any], list[int]], list[dict[str, Any]]]:
        """Verdicts decided without a worker (known-bad gold, no answer, two integers, the same text, times of
        day, cached verdicts); the rows left for the workers, by ``(gold, prediction key)``; their requests."""
        statuses: list[str | None] = [None] * len(prepared)
        todo: dict[tuple[str, Any], list[int]] = {}
        requests: list[dict[str, Any]] = []
        for i, (gold, pred) in enumerate(zip(prepared, predictions, strict=True)):
            if gold is None or self._gold_known(gold) is False:
                statuses[i] = "unparsed_gold"
            elif pred is None:
                statuses[i] = "no_answer"
            elif (verdict := _integer_verdict(gold, pred)) is not None:  # two integers: no clock
                statuses[i] = verdict
                self.integer_verdicts += 1
            elif _box_content(pred) == gold:  # the same text parses to the same value
                statuses[i] = "correct"
                self.exact_verdicts += 1
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
        return statuses, todo, requests

    def _learn_golds(self, unknown: set[str], parses: dict[str, bool]) -> set[str]:
        """Remember whether each new gold parses (``parses``: from its gold check or its items' replies);
        returns the golds whose rows score as ``unparsed_gold`` in this batch (a gold that only timed out is
        tried again later)."""
        failed = set()
        for gold in unknown:
            ok = parses.get(gold)
            if ok is not None:
                self._gold_ok.store(gold, ok)
            if not ok:
                failed.add(gold)
                reason = "unparsed_gold" if ok is False else "timeout"
                logger.warning(
                    "gold answer %.200r could not be parsed (%s): its rows score None", gold, reason
                )
        return failed

    def _run_with_one_retry(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``pool.run``; requests whose worker was killed under them (a wall-clock hang, a frozen or dead
        worker: ``"killed"`` in the reply) are sent once more, to the replacement workers, before their timeout
        counts. A CPU-budget timeout is the request's own cost and is not sent again."""
        replies = self.pool.run(requests, keys=[request["gold"] for request in requests])
        again = [i for i, reply in enumerate(replies) if reply.get("killed")]
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
