"""The benchmarks: registered names (MATH-500, AIME 2024/2025, AMC 2023, ...) and local files, loaded with
the training loaders of :mod:`bnpo_trl.data` so that prompts are built exactly as in training."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bnpo_trl.data import DEFAULT_SYSTEM_PROMPT

logger = logging.getLogger(__name__)

__all__ = [
    "BENCHMARKS",
    "DEFAULT_BENCHMARKS",
    "Benchmark",
    "as_benchmarks",
    "load_benchmarks",
    "parse_benchmark_specs",
    "system_prompt_of",
]

#: Benchmark name -> (registry name in bnpo_trl.data, split). Aliases of bnpo_trl.data work as well.
BENCHMARKS: dict[str, tuple[str, str]] = {
    "math500": ("math500", "test"),
    "aime24": ("aime24", "train"),  # HuggingFaceH4/aime_2024 has a single `train` split
    "aime25": ("aime25", "test"),
    "amc23": ("amc23", "test"),
    "gsm8k": ("gsm8k", "test"),
    "math": ("math", "test"),
    "arithmetic": ("arithmetic", "test"),
}
DEFAULT_BENCHMARKS = ("math500", "aime24", "aime25", "amc23")

_LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


@dataclass
class Benchmark:
    """A loaded benchmark: ``dataset`` follows the column contract of :mod:`bnpo_trl.data`."""

    name: str
    dataset: Any
    source: str
    #: Rows of the source left out because they have no problem text or no gold answer.
    dropped: int = 0

    @property
    def problems(self) -> list[str]:
        """The problem text of every row (the last user message)."""
        out = []
        for prompt in self.dataset["prompt"]:
            users = [m["content"] for m in prompt if m["role"] == "user"]
            out.append(users[-1] if users else "")
        return out


def _registry_name(name: str) -> str | None:
    """The :data:`BENCHMARKS` key for a benchmark name or a bnpo_trl.data alias; ``None`` if unknown."""
    from bnpo_trl.data import DATASETS

    key = name.strip().lower()
    if key in BENCHMARKS:
        return key
    for spec in DATASETS.values():
        if key in spec.aliases and spec.name in BENCHMARKS:
            return spec.name
    return None


def _looks_like_path(text: str) -> bool:
    return text.lower().endswith(_LOCAL_SUFFIXES) or os.sep in text or "/" in text or os.path.exists(text)


def _parse_one(item: str) -> tuple[str, str | None, str | None]:
    if "=" in item:
        key, path = (part.strip() for part in item.split("=", 1))
        if not key or not path:
            raise ValueError(f"Benchmark {item!r}: write key=path (e.g. amc23=data/amc23.parquet).")
        return key, _registry_name(key), path
    if _looks_like_path(item):
        stem = Path(item).name.split(".")[0]
        return stem, _registry_name(stem), item
    registered = _registry_name(item)
    if registered is None:
        raise ValueError(
            f"Unknown benchmark {item!r}. Known: {', '.join(BENCHMARKS)}; or give a local "
            "jsonl/json/parquet/csv file with `problem` and `answer` columns (key=path to name it)."
        )
    return registered, registered, None


def parse_benchmark_specs(specs: str | Sequence[str]) -> list[tuple[str, str | None, str | None]]:
    """``--benchmarks`` -> ``[(key, registered name or None, local path or None)]``.

    Accepted items (comma-separated in a string):

    - a benchmark name (``math500``, ``aime24``, ``aime25``, ``amc23``, ``gsm8k``, ``math``, ``arithmetic``,
      or a bnpo_trl.data alias such as ``aime_2024``): the Hub dataset;
    - a path of a ``jsonl``/``json``/``parquet``/``csv`` file: keyed by its stem; read with the schema of
      the benchmark of that name if the stem is one (``amc23.parquet`` -> AMC's ``question`` column),
      else as a ``problem``/``answer`` file;
    - ``key=path``: the file under the name ``key``, with that benchmark's schema if ``key`` is one.

    >>> for item in parse_benchmark_specs("math500,data/amc23.parquet,olympiad=data/ob.jsonl"):
    ...     print(item)
    ('math500', 'math500', None)
    ('amc23', 'amc23', 'data/amc23.parquet')
    ('olympiad', None, 'data/ob.jsonl')
    """
    items = (
        [s.strip() for s in specs.split(",")] if isinstance(specs, str) else [str(s).strip() for s in specs]
    )
    items = [s for s in items if s]
    if not items:
        raise ValueError(
            f"No benchmarks given; name some of {', '.join(BENCHMARKS)} or local files (--benchmarks)."
        )
    out = [_parse_one(item) for item in items]
    keys = [key for key, _, _ in out]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise ValueError(f"Benchmark names must be unique, {duplicates} repeat; name files with key=path.")
    return out


def load_benchmarks(
    specs: str | Sequence[str],
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    limit: int | None = None,
    user_template: str = "{problem}",
    column_map: Mapping[str, str] | None = None,
) -> dict[str, Benchmark]:
    """Load benchmarks (names and/or local files, see :func:`parse_benchmark_specs`) with the
    bnpo_trl.data loaders; ``limit`` keeps the first ``limit`` problems of each. ``column_map`` names the
    columns of local files that are not read with a registered benchmark's schema (``{"problem":
    "question", "answer": "gold"}``, the keys of :func:`bnpo_trl.data.load_dataset_by_name`)."""
    from bnpo_trl.data import DATASETS, load_dataset_by_name

    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 (problems per benchmark), got {limit}.")
    out: dict[str, Benchmark] = {}
    for key, registered, path in parse_benchmark_specs(specs):
        report: dict[str, int] = {}
        common = {
            "system_prompt": system_prompt,
            "limit": limit,
            "user_template": user_template,
            "report": report,
        }
        if registered is not None:
            name, split = BENCHMARKS[registered]
            if name == "arithmetic":  # synthetic: a fixed size (its test split) unless limited
                common["limit"] = limit or 200
            dataset = load_dataset_by_name(name, split=split, path=path, **common)
            spec = DATASETS[name]
            source = str(path) if path else f"{spec.hub_id or name} (split {split})"
        else:
            dataset = load_dataset_by_name(
                "local", path=path, data_source=key, column_map=column_map, **common
            )
            source = str(path)
        dropped = report.get("dropped_unusable", 0)
        if dropped:
            logger.warning("%s: %d rows without a problem or a gold answer are not evaluated.", key, dropped)
        out[key] = Benchmark(key, dataset, source, dropped)
    return out


def as_benchmarks(
    benchmarks: str | Sequence[str] | Mapping[str, Any], system_prompt: str | None, limit: int | None
) -> dict[str, Benchmark]:
    """What :func:`~bnpo_trl.evaluation.evaluate` takes as benchmarks -> loaded :class:`Benchmark` objects.

    Names and files are loaded here (with ``system_prompt``); a mapping of datasets or benchmarks is used
    as it is, only cut to ``limit`` problems.
    """
    if not isinstance(benchmarks, Mapping):
        return load_benchmarks(benchmarks, system_prompt=system_prompt, limit=limit)
    loaded = {
        name: b if isinstance(b, Benchmark) else Benchmark(name, b, "in-memory dataset")
        for name, b in benchmarks.items()
    }
    if limit is not None:
        loaded = {
            name: Benchmark(name, b.dataset.select(range(min(limit, len(b.dataset)))), b.source, b.dropped)
            for name, b in loaded.items()
        }
    return loaded


def system_prompt_of(benchmarks: Mapping[str, Benchmark]) -> str | None:
    """The system message the prompts actually carry (that of the first benchmark's first row)."""
    for bench in benchmarks.values():
        first = bench.dataset[0]["prompt"]
        return first[0]["content"] if first and first[0]["role"] == "system" else None
    return None
