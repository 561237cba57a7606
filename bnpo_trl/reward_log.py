"""The reward log: every generation batch's gathered rewards, one JSON line each (``save_rewards: true``).

The trainer's rank 0 appends one record per generation batch to ``output_dir/rewards.jsonl`` through
:class:`RewardLog` (flushed and fsynced after each line, so a crash loses at most the line being written);
:func:`read_reward_log` reads it back for ``bnpo-trl replay`` (:mod:`bnpo_trl.replay`). One record::

    {"version": 1, "step": 12, "group_size": 4,
     "reward_names": ["accuracy", "boxed_format"], "reward_weights": [1.0, 0.5],
     "reward_ranges": [[0.0, 1.0], null],           # one [lo, hi] or null per column; or null
     "rewards": [[1.0, 1.0], [0.0, null], ...],      # N rows x F columns, null = unscored (NaN, ±inf)
     "data_sources": ["gsm8k", ...],                  # N strings, or null
     "lengths": [311, 57, ...]}                       # N completion token counts, or null

Rewards are stored as the float32 values the normalizer saw (``float`` of each element, exact).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

__all__ = ["REWARD_LOG_FILE", "REWARD_LOG_VERSION", "RewardLog", "read_reward_log"]

logger = logging.getLogger(__name__)

#: The file name inside ``output_dir``.
REWARD_LOG_FILE = "rewards.jsonl"
#: The record format written by :class:`RewardLog` (the ``version`` field).
REWARD_LOG_VERSION = 1
_FIELDS = (
    "step",
    "group_size",
    "reward_names",
    "reward_weights",
    "reward_ranges",
    "rewards",
    "data_sources",
    "lengths",
)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _json_float(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _checked_ranges(ranges: Any, num_funcs: int) -> list[list[float] | None] | None:
    if ranges is None:
        return None
    if isinstance(ranges, str) or not isinstance(ranges, Sequence) or len(ranges) != num_funcs:
        raise ValueError(
            f"reward_ranges must be None or one [lo, hi] (or None) per reward column, got {ranges!r}."
        )
    out: list[list[float] | None] = []
    for pair in ranges:
        if pair is None:
            out.append(None)
            continue
        lo, hi = (float(x) for x in pair)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"reward_ranges entries must be [lo, hi] with finite lo < hi, got {pair!r}.")
        out.append([lo, hi])
    return out


def _check_rows(name: str, values: Sequence[Any] | None, n: int) -> None:
    if values is not None and len(values) != n:
        raise ValueError(f"{name} has {len(values)} entries for {n} rewards; pass one per row (or None).")


def _build_record(
    step: int,
    group_size: int,
    rewards: torch.Tensor,
    reward_names: Sequence[str],
    reward_weights: Sequence[float],
    reward_ranges: Any,
    data_sources: Sequence[str] | None,
    lengths: Sequence[int] | None,
) -> dict[str, Any]:
    """The validated JSON-ready record (see the module docstring); ValueError names what is wrong."""
    if not _is_int(step) or step < 0:
        raise ValueError(f"step must be an int >= 0, got {step!r}.")
    if not _is_int(group_size) or group_size < 1:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}.")
    rewards = torch.as_tensor(rewards).detach()
    if rewards.dim() == 1:
        rewards = rewards.unsqueeze(1)
    if rewards.dim() != 2 or rewards.shape[0] == 0:
        raise ValueError(f"rewards must have shape (N,) or (N, F) with N > 0, got {tuple(rewards.shape)}.")
    n, num_funcs = rewards.shape
    if n % group_size:
        raise ValueError(f"{n} rewards cannot be split into groups of group_size={group_size}.")
    if len(reward_names) != num_funcs or len(reward_weights) != num_funcs:
        raise ValueError(
            f"rewards has {num_funcs} columns but {len(reward_names)} reward_names and "
            f"{len(reward_weights)} reward_weights; pass one of each per reward function."
        )
    weights = [float(w) for w in reward_weights]
    if not all(math.isfinite(w) for w in weights):
        raise ValueError(f"reward_weights must be finite, got {weights}.")
    _check_rows("data_sources", data_sources, n)
    _check_rows("lengths", lengths, n)
    if lengths is not None and not all(not isinstance(x, bool) and int(x) == x >= 0 for x in lengths):
        raise ValueError(f"lengths must be completion token counts (ints >= 0), got {list(lengths)[:5]}...")
    values = rewards.to(device="cpu", dtype=torch.float32).tolist()
    return {
        "version": REWARD_LOG_VERSION,
        "step": step,
        "group_size": group_size,
        "reward_names": [str(x) for x in reward_names],
        "reward_weights": weights,
        "reward_ranges": _checked_ranges(reward_ranges, num_funcs),
        "rewards": [[_json_float(float(x)) for x in row] for row in values],
        "data_sources": None if data_sources is None else [str(s) for s in data_sources],
        "lengths": None if lengths is None else [int(x) for x in lengths],
    }


def repair_tail(path: Path) -> None:
    """Before appending to a JSON-lines file: a last line without its newline is finished (valid JSON) or cut
    off (removed). Also used by scripts/bench_learning.py for its results.jsonl."""
    if not path.exists():
        return
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        start, tail = size, b""
        while start > 0 and b"\n" not in tail:  # scan back for the last newline, 64 KiB at a time
            step = min(start, 1 << 16)
            start -= step
            f.seek(start)
            tail = f.read(step) + tail
        cut = start + tail.rfind(b"\n") + 1 if b"\n" in tail else 0
        f.seek(cut)
        try:
            json.loads(f.read().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            logger.warning("%s: removing its last line, cut off by a crash (%d bytes).", path, size - cut)
            f.truncate(cut)
        else:
            f.seek(0, os.SEEK_END)
            f.write(b"\n")


class RewardLog:
    """Appends one JSON line per generation batch to ``path`` (parent folders created).

    Each :meth:`append` writes the whole line in one write, then flushes and fsyncs, so the file survives a
    crash with at most its last line cut off; opening a file whose last line was cut off removes that line
    first, so a resumed run appends after complete records. Use as a context manager or call :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_tail(self.path)
        self._file = open(self.path, "ab")  # noqa: SIM115 - closed by close() / __exit__

    def append(
        self,
        *,
        step: int,
        group_size: int,
        rewards: torch.Tensor,
        reward_names: Sequence[str],
        reward_weights: Sequence[float],
        reward_ranges: Sequence[Sequence[float] | None] | None,
        data_sources: Sequence[str] | None,
        lengths: Sequence[int] | None,
    ) -> None:
        """Write one record: ``rewards`` (N,) or (N, F) gathered over ranks, groups of ``group_size``
        contiguous; NaN and ±inf are written as null. Raises ValueError on inconsistent shapes."""
        if self._file.closed:
            raise ValueError(f"RewardLog({self.path}) is closed.")
        record = _build_record(
            step, group_size, rewards, reward_names, reward_weights, reward_ranges, data_sources, lengths
        )
        line = json.dumps(record, allow_nan=False, separators=(",", ":")) + "\n"
        self._file.write(line.encode("utf-8"))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> RewardLog:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RewardLog({str(self.path)!r})"


def _parse_record(obj: Any, where: str) -> dict[str, Any]:
    """A decoded line -> record with ``rewards`` as a float32 (N, F) tensor (NaN for null)."""
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: a record must be a JSON object, got {type(obj).__name__}.")
    if obj.get("version") != REWARD_LOG_VERSION:
        raise ValueError(
            f"{where}: unknown reward log version {obj.get('version')!r} (this bnpo-trl reads version "
            f"{REWARD_LOG_VERSION})."
        )
    missing = [k for k in _FIELDS if k not in obj]
    if missing:
        raise ValueError(f"{where}: record lacks {missing}.")
    rows = obj["rewards"]
    num_funcs = len(obj["reward_names"])
    if (
        not isinstance(rows, list)
        or not rows
        or any(not isinstance(r, list) or len(r) != num_funcs for r in rows)
    ):
        raise ValueError(f"{where}: rewards must be a non-empty list of rows of {num_funcs} values.")
    try:
        rewards = torch.tensor(
            [[math.nan if x is None else float(x) for x in row] for row in rows], dtype=torch.float32
        )
        record = _build_record(
            obj["step"],
            obj["group_size"],
            rewards,
            obj["reward_names"],
            obj["reward_weights"],
            obj["reward_ranges"],
            obj["data_sources"],
            obj["lengths"],
        )
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from None
    record["rewards"] = rewards
    return record


def read_reward_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a reward log, in step order, ``rewards`` as a float32 (N, F) tensor (NaN = null).

    - Resumes: a run resumed from a checkpoint appends the steps after that checkpoint again. So when a
      record's ``step`` is <= the step of an earlier record, every earlier record with a step >= it is
      dropped: the later run's records replace them, and the result has strictly increasing steps (an
      uninterrupted run's history).
    - A last line cut off by a crash (not valid JSON) is skipped with a ``logging`` warning; an invalid
      line anywhere else raises ``ValueError`` naming its line number, as does an unknown ``version`` or
      an inconsistent record. Blank lines are ignored.
    """
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        lines = [(i, line) for i, line in enumerate(f, start=1) if line.strip()]
    records: list[dict[str, Any]] = []
    for index, (lineno, line) in enumerate(lines):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            if index == len(lines) - 1:
                logger.warning("%s: skipping line %d, cut off (by a crash?): %s.", path, lineno, err)
                break
            raise ValueError(f"{path}, line {lineno}: not a JSON record ({err}).") from None
        record = _parse_record(obj, f"{path}, line {lineno}")
        while records and records[-1]["step"] >= record["step"]:
            records.pop()  # replaced by a resumed run's record
        records.append(record)
    return records
