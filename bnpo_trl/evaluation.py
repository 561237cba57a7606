"""Benchmark evaluation: pass@1 and pass@k on MATH-500, AIME 2024/2025, AMC 2023 (or your own files).

One command (``bnpo-trl eval``, see ``docs/evaluation.md``) and one library function (:func:`evaluate`)
that scores a checkpoint the way training scores it: the prompts are built by the same loaders
(:mod:`bnpo_trl.data`) with the recipe's system prompt and the tokenizer's chat template, and every
completion is judged by the same ``accuracy`` reward (:mod:`bnpo_trl.rewards`, math-verify).

Metrics per benchmark, from ``n`` samples per problem with ``c`` of them correct:

- ``pass@k`` for every ``k`` in ``ks`` (default: 1, 2, 4, ... up to ``n``, and ``n``), with the unbiased
  estimator ``1 - C(n - c, k) / C(n, k)`` (Chen et al. 2021, arXiv 2107.03374) averaged over problems;
  ``pass@1`` is the mean accuracy over all ``n`` samples;
- a 95% confidence interval for each: percentile bootstrap over problems (resample the problems with
  replacement ``n_bootstrap`` times with a fixed seed, take the 2.5th and 97.5th percentiles of the mean);
- ``mean_length`` (completion tokens, the stop token included), ``no_answer_rate`` (the reward found
  no final answer), ``truncated_rate`` (hit ``max_new_tokens``), ``timeout_rate`` and ``unscored_rate``.

Two generation backends: ``transformers`` (batched ``generate``, CPU or GPU; :mod:`bnpo_trl.generation`)
and ``vllm`` (GPU; run in worker processes, one per data-parallel shard). :class:`BenchmarkEvalCallback`
runs the same evaluation during training and logs ``eval/<benchmark>/pass@1``.

This module does not import torch or transformers at import time (the vLLM worker processes run it as
a script); they are imported when needed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import importlib.util
import json
import logging
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from bnpo_trl import models as _models
from bnpo_trl.answers import last_boxed
from bnpo_trl.arguments import parse_list, system_prompt_setting
from bnpo_trl.data import DEFAULT_SYSTEM_PROMPT
from bnpo_trl.models import end_of_turn_token_ids, resolve_model_path
from bnpo_trl.models import load_tokenizer as load_tokenizer_for

logger = logging.getLogger(__name__)

__all__ = [
    "BENCHMARKS",
    "DEFAULT_BENCHMARKS",
    "VLLM_INSTALL_HINT",
    "Benchmark",
    "BenchmarkEvalCallback",
    "TransformersBackend",
    "VLLMBackend",
    "benchmark_metrics",
    "bootstrap_ci",
    "compare",
    "default_ks",
    "end_of_turn_token_ids",
    "evaluate",
    "format_comparison",
    "format_table",
    "load_benchmarks",
    "load_model",
    "load_tokenizer_for",
    "main",
    "parse_benchmark_specs",
    "pass_at_k",
    "plan_data_parallel",
    "require_vllm",
    "vllm_llm_kwargs",
    "vllm_sampling_kwargs",
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

VLLM_INSTALL_HINT = (
    'pip install "bnpo-trl[vllm]" (the `vllm` extra; vLLM needs a CUDA GPU), or use --backend transformers'
)

#: Built on first access (see the module ``__getattr__``): it derives from transformers' TrainerCallback.
BenchmarkEvalCallback: type

_LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


# ------------------------------------------------------------------------------------------- statistics


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
    return np.random.default_rng(seed).integers(0, n_items, size=(n_bootstrap, n_items))


def bootstrap_ci(
    values: Sequence[float] | np.ndarray, n_bootstrap: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (one value per problem).

    Resamples the values with replacement ``n_bootstrap`` times (``numpy.random.default_rng(seed)``) and
    returns the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resampled means. With
    ``n_bootstrap=0`` or a single value the interval is the mean itself.

    >>> bootstrap_ci([1.0, 1.0, 1.0])
    (1.0, 1.0)
    >>> lo, hi = bootstrap_ci([0.0, 1.0] * 50, seed=0)
    >>> 0.39 < lo < 0.5 < hi < 0.61
    True
    """
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError("bootstrap_ci needs a non-empty 1-D sequence of per-problem values.")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}.")
    if n_bootstrap <= 0 or array.size == 1:
        mean = float(array.mean())
        return mean, mean
    means = array[_resample_indices(array.size, n_bootstrap, seed)].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def benchmark_metrics(
    correct: Sequence[Sequence[bool]],
    lengths: Sequence[Sequence[int]],
    verdicts: Sequence[Sequence[str]],
    terminated: Sequence[Sequence[bool]],
    ks: Sequence[int] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """The metrics of one benchmark from per-problem, per-sample outcomes (``[problem][sample]``).

    ``verdicts`` are the reward's verdicts (``correct``, ``wrong``, ``no_answer``, ``timeout``,
    ``unparsed_gold``/``unscored``). ``ks`` above ``n`` are dropped and pass@1 is always included. Returns ``n_problems``, ``n_samples`` (per problem), ``pass@k``
    (``{"pass@1": ..., ...}``), ``ci95`` (``{"pass@1": [lo, hi], ...}``), ``mean_length``,
    ``no_answer_rate``, ``truncated_rate``, ``timeout_rate``, ``unscored_rate`` and
    ``correct_per_problem``.

    >>> m = benchmark_metrics([[True, False], [False, False]], [[3, 5], [4, 4]],
    ...                       [["correct", "wrong"], ["no_answer", "wrong"]], [[True, True], [True, False]])
    >>> m["pass@k"], m["mean_length"], m["no_answer_rate"], m["truncated_rate"]
    ({'pass@1': 0.25, 'pass@2': 0.5}, 4.0, 0.25, 0.25)
    """
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
    ks = default_ks(n) if ks is None else sorted({1, *(int(k) for k in ks if int(k) <= n)})
    counts = [int(sum(bool(x) for x in row)) for row in correct]
    per_problem = {k: np.array([pass_at_k(n, c, k) for c in counts]) for k in ks}
    indices = _resample_indices(n_problems, n_bootstrap, seed) if n_bootstrap > 0 and n_problems > 1 else None
    pass_k, ci = {}, {}
    for k, values in per_problem.items():
        pass_k[f"pass@{k}"] = float(values.mean())
        if indices is None:
            ci[f"pass@{k}"] = [float(values.mean())] * 2
        else:
            ci[f"pass@{k}"] = [float(q) for q in np.quantile(values[indices].mean(axis=1), [0.025, 0.975])]
    total = n_problems * n
    flat_verdicts = [v for row in verdicts for v in row]
    return {
        "n_problems": n_problems,
        "n_samples": n,
        "pass@k": pass_k,
        "ci95": ci,
        "mean_length": float(sum(sum(row) for row in lengths) / total),
        "no_answer_rate": flat_verdicts.count("no_answer") / total,
        "truncated_rate": sum(not t for row in terminated for t in row) / total,
        "timeout_rate": flat_verdicts.count("timeout") / total,
        "unscored_rate": sum(v in ("unparsed_gold", "unscored") for v in flat_verdicts) / total,
        "correct_per_problem": counts,
    }


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
            delta = value - theirs["pass@k"][key]
            ci = None
            if paired and ours["n_samples"] >= int(key[5:]) and theirs["n_samples"] >= int(key[5:]):
                k = int(key[5:])
                a = np.array([pass_at_k(ours["n_samples"], c, k) for c in ours["correct_per_problem"]])
                b = np.array([pass_at_k(theirs["n_samples"], c, k) for c in theirs["correct_per_problem"]])
                ci = list(bootstrap_ci(a - b, n_bootstrap=n_bootstrap, seed=seed))
            entry["pass@k"][key] = {"delta": delta, "ci95": ci}
        out[name] = entry
    return out


# ------------------------------------------------------------------------------------------- benchmarks


@dataclass
class Benchmark:
    """A loaded benchmark: ``dataset`` follows the column contract of :mod:`bnpo_trl.data`."""

    name: str
    dataset: Any
    source: str

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
    out: list[tuple[str, str | None, str | None]] = []
    for item in items:
        if "=" in item:
            key, path = (part.strip() for part in item.split("=", 1))
            if not key or not path:
                raise ValueError(f"Benchmark {item!r}: write key=path (e.g. amc23=data/amc23.parquet).")
            out.append((key, _registry_name(key), path))
        elif _looks_like_path(item):
            stem = Path(item).name.split(".")[0]
            out.append((stem, _registry_name(stem), item))
        else:
            registered = _registry_name(item)
            if registered is None:
                raise ValueError(
                    f"Unknown benchmark {item!r}. Known: {', '.join(BENCHMARKS)}; or give a local "
                    "jsonl/json/parquet/csv file with `problem` and `answer` columns (key=path to name it)."
                )
            out.append((registered, registered, None))
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
) -> dict[str, Benchmark]:
    """Load benchmarks (names and/or local files, see :func:`parse_benchmark_specs`) with the
    bnpo_trl.data loaders; ``limit`` keeps the first ``limit`` problems of each."""
    from bnpo_trl.data import DATASETS, load_dataset_by_name

    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 (problems per benchmark), got {limit}.")
    out: dict[str, Benchmark] = {}
    for key, registered, path in parse_benchmark_specs(specs):
        common = {"system_prompt": system_prompt, "limit": limit, "user_template": user_template}
        if registered is not None:
            name, split = BENCHMARKS[registered]
            if name == "arithmetic":
                common.pop("user_template")
                common["limit"] = limit or 200
            dataset = load_dataset_by_name(name, split=split, path=path, **common)
            spec = DATASETS[name]
            source = str(path) if path else f"{spec.hub_id or name} (split {split})"
        else:
            dataset = load_dataset_by_name("local", path=path, data_source=key, **common)
            source = str(path)
        out[key] = Benchmark(key, dataset, source)
    return out


# ----------------------------------------------------------------------------------- models, tokenizers


def load_model(spec: str, device: str | None = None, **kwargs: Any) -> Any:
    """:func:`bnpo_trl.models.load_model`, moved to ``device`` (default: CUDA if available, else CPU)."""
    return _models.load_model(spec, device=device or "auto", **kwargs)


# ------------------------------------------------------------------------------------------- generation


def _stable_seed(*parts: Any) -> int:
    return zlib.crc32(":".join(str(p) for p in parts).encode()) & 0x7FFFFFFF


@dataclass
class _Request:
    """What a backend generates: templated prompt texts and their token ids, per benchmark."""

    benchmark: str
    texts: list[str]
    token_ids: list[list[int]]
    seed: int
    prompt_seeds: list[int] = field(default_factory=list)


class TransformersBackend:
    """Batched ``model.generate`` (:func:`bnpo_trl.generation.generate`); CPU or GPU.

    Sampling is seeded per benchmark (from the run seed and the benchmark name) inside
    ``torch.random.fork_rng``, so a benchmark's samples do not depend on the other benchmarks of the run
    and the caller's random state (a training run's) is left as it was.
    """

    name = "transformers"

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 16) -> None:
        if isinstance(model, str):
            raise TypeError(
                "TransformersBackend needs a loaded model; use bnpo_trl.evaluation.load_model(path) first."
            )
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size

    def context_length(self) -> int | None:
        return getattr(self.model.config, "max_position_embeddings", None)

    def device(self) -> str:
        device = str(getattr(self.model, "device", "cpu"))
        if device.startswith("cuda"):
            import torch

            return f"{device} ({torch.cuda.get_device_name(self.model.device)})"
        return device

    def generate(
        self,
        requests: Sequence[_Request],
        n: int,
        sampling: Mapping[str, Any],
        progress: Callable[[int], None] | None = None,
    ) -> list[Any]:
        import torch

        from bnpo_trl.generation import generate

        out = []
        devices = [self.model.device] if str(self.model.device).startswith("cuda") else []
        for request in requests:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(request.seed)
                out.append(
                    generate(
                        self.model,
                        self.tokenizer,
                        request.texts,
                        num_samples=n,
                        temperature=sampling["temperature"],
                        top_p=sampling["top_p"],
                        max_new_tokens=sampling["max_new_tokens"],
                        batch_size=self.batch_size,
                        stop_token_ids=sampling["stop_token_ids"],
                        sort_by_length=True,
                        progress=(lambda k: progress(k * n)) if progress is not None else None,
                    )
                )
        return out


def require_vllm() -> str:
    """vLLM's version; a clear ``ImportError`` naming the ``vllm`` extra when it is not installed."""
    if importlib.util.find_spec("vllm") is None:
        raise ImportError(f"--backend vllm needs vLLM, which is not installed: {VLLM_INSTALL_HINT}.")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vllm")
    except PackageNotFoundError:
        import vllm

        return str(getattr(vllm, "__version__", "unknown"))


def vllm_llm_kwargs(
    model: str,
    tokenizer: str | None = None,
    tensor_parallel_size: int = 1,
    dtype: str | None = "auto",
    seed: int = 0,
    gpu_memory_utilization: float = 0.9,
    max_model_len: int | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    enforce_eager: bool = False,
) -> dict[str, Any]:
    """Keyword arguments of ``vllm.LLM(...)`` for one data-parallel shard.

    >>> vllm_llm_kwargs("Qwen/Qwen2.5-Math-7B", tensor_parallel_size=2, max_model_len=4096)["max_model_len"]
    4096
    """
    if tensor_parallel_size < 1:
        raise ValueError(f"tensor_parallel_size must be >= 1, got {tensor_parallel_size}.")
    if not 0 < gpu_memory_utilization <= 1:
        raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}.")
    kwargs: dict[str, Any] = {
        "model": model,
        "tokenizer": tokenizer or model,
        "tensor_parallel_size": tensor_parallel_size,
        "dtype": dtype or "auto",
        "seed": seed,
        "gpu_memory_utilization": gpu_memory_utilization,
        "trust_remote_code": trust_remote_code,
        "enforce_eager": enforce_eager,
    }
    if max_model_len is not None:
        kwargs["max_model_len"] = max_model_len
    if revision is not None:
        kwargs["revision"] = revision
    return kwargs


def vllm_sampling_kwargs(
    n: int, temperature: float, top_p: float, max_new_tokens: int, stop_token_ids: Sequence[int] = ()
) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams(...)`` (a per-prompt ``seed`` is added by the worker);
    the same sampling as the transformers backend: no top-k, no repetition penalty.

    >>> kwargs = vllm_sampling_kwargs(4, 0.6, 0.95, 3072, [151645])
    >>> kwargs["n"], kwargs["temperature"], kwargs["top_p"], kwargs["max_tokens"], kwargs["stop_token_ids"]
    (4, 0.6, 0.95, 3072, [151645])
    """
    if temperature == 0 and n != 1:
        raise ValueError("Greedy decoding (temperature=0) gives identical samples: use n=1.")
    return {
        "n": n,
        "temperature": float(temperature),
        "top_p": float(top_p) if temperature > 0 else 1.0,
        "max_tokens": int(max_new_tokens),
        "stop_token_ids": [int(t) for t in stop_token_ids],
        "skip_special_tokens": True,
    }


def _visible_devices() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        return []


def plan_data_parallel(
    n_prompts: int, data_parallel_size: int, tensor_parallel_size: int, devices: Sequence[str]
) -> list[dict[str, Any]]:
    """Split ``n_prompts`` into ``data_parallel_size`` contiguous shards, each on its own
    ``tensor_parallel_size`` GPUs: ``[{"devices": "0,1", "start": 0, "stop": 250}, ...]``.

    >>> plan_data_parallel(5, 2, 2, ["0", "1", "2", "3"])
    [{'devices': '0,1', 'start': 0, 'stop': 3}, {'devices': '2,3', 'start': 3, 'stop': 5}]
    """
    if data_parallel_size < 1 or tensor_parallel_size < 1:
        raise ValueError("data_parallel_size and tensor_parallel_size must be >= 1.")
    needed = data_parallel_size * tensor_parallel_size
    if len(devices) < needed:
        raise ValueError(
            f"data_parallel_size={data_parallel_size} x tensor_parallel_size={tensor_parallel_size} needs "
            f"{needed} GPUs, {len(devices)} visible ({','.join(devices) or 'none'}); lower one of them."
        )
    shards = min(data_parallel_size, max(n_prompts, 1))
    base, extra = divmod(n_prompts, shards)
    plan, start = [], 0
    for rank in range(shards):
        stop = start + base + (rank < extra)
        group = devices[rank * tensor_parallel_size : (rank + 1) * tensor_parallel_size]
        plan.append({"devices": ",".join(group), "start": start, "stop": stop})
        start = stop
    return plan


class VLLMBackend:
    """vLLM offline inference (GPU), in worker processes: one per data-parallel shard, each on its own
    ``tensor_parallel_size`` GPUs (``CUDA_VISIBLE_DEVICES``). The prompts go in as the same token ids as
    the transformers backend's (chat template applied here, no special tokens added by vLLM), and every
    prompt has its own sampling seed, so samples do not depend on batching or on the number of shards.
    The worker processes exit after generating, which frees the GPUs for a ``--baseline`` model."""

    name = "vllm"

    def __init__(
        self,
        model: str,
        tokenizer_path: str | None = None,
        tensor_parallel_size: int = 1,
        data_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        dtype: str | None = "auto",
        revision: str | None = None,
        trust_remote_code: bool = False,
        enforce_eager: bool = False,
        show_progress: bool = True,
    ) -> None:
        if not isinstance(model, str):
            raise TypeError("The vllm backend takes the model as a Hub id or a folder path (a string).")
        self.version = require_vllm()
        self.model = resolve_model_path(model)
        self.llm_kwargs = vllm_llm_kwargs(
            self.model,
            tokenizer=resolve_model_path(tokenizer_path) if tokenizer_path else None,
            tensor_parallel_size=tensor_parallel_size,
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            revision=revision,
            trust_remote_code=trust_remote_code,
            enforce_eager=enforce_eager,
        )
        self.data_parallel_size = data_parallel_size
        self.tensor_parallel_size = tensor_parallel_size
        self.max_model_len = max_model_len
        self.show_progress = show_progress
        if data_parallel_size > 1:  # fail now, not after the prompts are built, when GPUs are missing
            plan_data_parallel(
                data_parallel_size, data_parallel_size, tensor_parallel_size, _visible_devices()
            )

    def context_length(self) -> int | None:
        if self.max_model_len is not None:
            return self.max_model_len
        try:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(
                self.model, trust_remote_code=self.llm_kwargs["trust_remote_code"]
            )
        except Exception:  # vLLM reads it itself and will complain if it must
            return None
        return getattr(config, "max_position_embeddings", None)

    def device(self) -> str:
        return f"vllm {self.version}, {self.data_parallel_size} x {self.tensor_parallel_size} GPU(s)"

    def worker_specs(
        self, requests: Sequence[_Request], n: int, sampling: Mapping[str, Any], seed: int
    ) -> list[tuple[dict[str, Any], dict[str, str]]]:
        """One (spec, environment changes) per shard; the spec is the worker's JSON input."""
        prompts = [ids for r in requests for ids in r.token_ids]
        seeds = [s for r in requests for s in r.prompt_seeds]
        params = vllm_sampling_kwargs(
            n,
            sampling["temperature"],
            sampling["top_p"],
            sampling["max_new_tokens"],
            sampling["stop_token_ids"],
        )
        if self.data_parallel_size > 1:
            plan = plan_data_parallel(
                len(prompts), self.data_parallel_size, self.tensor_parallel_size, _visible_devices()
            )
        else:  # one worker on the GPUs this process sees
            plan = [{"devices": None, "start": 0, "stop": len(prompts)}]
        out = []
        for rank, shard in enumerate(plan):
            spec = {
                "llm": {**self.llm_kwargs, "seed": seed + rank},
                "sampling": params,
                "seeds": seeds[shard["start"] : shard["stop"]],
                "prompt_token_ids": prompts[shard["start"] : shard["stop"]],
                "progress": self.show_progress and rank == 0,
            }
            env = {"CUDA_VISIBLE_DEVICES": shard["devices"]} if shard["devices"] is not None else {}
            out.append((spec, env))
        return out

    def generate(
        self,
        requests: Sequence[_Request],
        n: int,
        sampling: Mapping[str, Any],
        progress: Callable[[int], None] | None = None,
        seed: int = 0,
    ) -> list[Any]:
        from bnpo_trl.generation import Generations

        shards = self.worker_specs(requests, n, sampling, seed)
        merged = Generations([], [], [])
        with tempfile.TemporaryDirectory(prefix="bnpo_eval_vllm_") as tmp:
            procs = []
            for rank, (spec, env) in enumerate(shards):
                spec_path, out_path = Path(tmp) / f"spec{rank}.json", Path(tmp) / f"out{rank}.json"
                spec_path.write_text(json.dumps(spec))
                command = [
                    sys.executable,
                    "-m",
                    "bnpo_trl.evaluation",
                    "--vllm-worker",
                    str(spec_path),
                    str(out_path),
                ]
                procs.append((subprocess.Popen(command, env={**os.environ, **env}), out_path, env))
            failures = []
            for rank, (proc, out_path, env) in enumerate(procs):
                code = proc.wait()
                if code != 0 or not out_path.is_file():
                    failures.append(f"shard {rank} ({env or 'all visible GPUs'}) exited with code {code}")
                    continue
                part = json.loads(out_path.read_text())
                merged.texts.extend(part["texts"])
                merged.lengths.extend(part["lengths"])
                merged.terminated.extend(part["terminated"])
            if failures:
                raise RuntimeError(
                    "vLLM generation failed: " + "; ".join(failures) + ". Its error is printed above "
                    "(out of memory: lower --gpu_memory_utilization or --max_model_len, or raise "
                    "--tensor_parallel_size)."
                )
        out, start = [], 0
        for request in requests:
            stop = start + len(request.token_ids)
            out.append(
                Generations(
                    merged.texts[start:stop], merged.lengths[start:stop], merged.terminated[start:stop]
                )
            )
            start = stop
        if progress is not None:
            progress(start * n)
        return out


def _vllm_worker(spec_path: str, out_path: str) -> None:
    """Entry point of a vLLM worker process: read the spec, generate, write texts/lengths/terminated."""
    spec = json.loads(Path(spec_path).read_text())
    from vllm import LLM, SamplingParams

    llm = LLM(**spec["llm"])
    params = [SamplingParams(**spec["sampling"], seed=s) for s in spec["seeds"]]
    prompts = [{"prompt_token_ids": ids} for ids in spec["prompt_token_ids"]]
    outputs = llm.generate(prompts, params, use_tqdm=spec.get("progress", True))
    result: dict[str, list] = {"texts": [], "lengths": [], "terminated": []}
    for output in outputs:
        samples = sorted(output.outputs, key=lambda o: o.index)
        result["texts"].append([o.text for o in samples])
        result["lengths"].append([len(o.token_ids) for o in samples])
        result["terminated"].append([o.finish_reason == "stop" for o in samples])
    Path(out_path).write_text(json.dumps(result))


# ------------------------------------------------------------------------------------------- evaluation


def _score(reward_func: Callable[..., Any], prompts: list, golds: list[str], texts: list[str]):
    """Scores and verdicts of completions with a reward function (TRL's calling convention)."""
    captured: dict[str, list] = {}

    def log_extra(key: str, values: list) -> None:
        captured[key] = list(values)

    scores = reward_func(
        prompts=prompts,
        completions=[[{"role": "assistant", "content": t}] for t in texts],
        completion_ids=None,
        answer=golds,
        log_extra=log_extra,
        log_metric=lambda key, value: None,
    )
    if len(scores) != len(texts):
        raise RuntimeError(f"The reward returned {len(scores)} scores for {len(texts)} completions.")
    verdict_keys = [k for k in captured if k.endswith("_verdict")]
    if len(verdict_keys) == 1 and len(captured[verdict_keys[0]]) == len(texts):
        verdicts = [str(v) for v in captured[verdict_keys[0]]]
    else:  # a reward without verdicts: derive them from the scores and the boxed answer
        verdicts = [
            "unscored"
            if s is None
            else "correct"
            if s >= 1.0
            else "no_answer"
            if last_boxed(t) is None
            else "wrong"
            for s, t in zip(scores, texts, strict=True)
        ]
    return scores, verdicts


def _rows(flat: list, n: int) -> list[list]:
    return [flat[i : i + n] for i in range(0, len(flat), n)]


def _extraction(text: str, verdict: str) -> tuple[str | None, str]:
    boxed = last_boxed(text)
    if boxed is not None and boxed.strip():
        return boxed.strip(), "boxed"
    if verdict in ("correct", "wrong"):
        return None, "anchored"  # math-verify found "final answer is ..." / "Answer: ..." (not exposed)
    return None, "none"


def _versions(backend: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    names = ["bnpo-trl", "torch", "transformers", "trl", "datasets", "math-verify"]
    if backend == "vllm":
        names.append("vllm")
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def _resolve_reward(reward: Any) -> tuple[Callable[..., Any], str]:
    if callable(reward):
        return reward, getattr(reward, "__name__", type(reward).__name__)
    from bnpo_trl.rewards import get_reward_funcs

    return get_reward_funcs([reward])[0], json.dumps(reward) if not isinstance(reward, str) else reward


def evaluate(
    model: Any,
    tokenizer: Any,
    benchmarks: str | Sequence[str] | Mapping[str, Any],
    n: int = 4,
    *,
    temperature: float = 0.6,
    top_p: float = 0.95,
    max_new_tokens: int = 3072,
    ks: Sequence[int] | None = None,
    backend: str | Any = "transformers",
    batch_size: int = 16,
    seed: int = 0,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    chat_template_kwargs: Mapping[str, Any] | None = None,
    limit: int | None = None,
    reward: Any = "accuracy",
    samples_path: str | os.PathLike[str] | None = None,
    progress: bool = True,
    n_bootstrap: int = 1000,
    model_name: str | None = None,
    stop_token_ids: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Evaluate a model on benchmarks; returns ``{"metadata", "results", "average"}``.

    Args:
        model: A loaded transformers model (backend ``transformers``) or, for backend ``vllm``, the model's
            Hub id or folder.
        tokenizer: The model's tokenizer; its chat template renders the prompts.
        benchmarks: Names and/or local files (see :func:`parse_benchmark_specs`), or a mapping name ->
            :class:`Benchmark` or ``datasets.Dataset`` in the bnpo_trl.data column contract.
        n: Samples per problem.
        temperature, top_p: Sampling (``temperature=0``: greedy, then ``n`` must be 1).
        max_new_tokens: Completion budget; prompt + budget must fit the model's context.
        ks: The k of pass@k (default :func:`default_ks`; values above ``n`` are dropped; pass@1 is
            always reported).
        backend: ``"transformers"``, ``"vllm"`` or a backend object (:class:`TransformersBackend`,
            :class:`VLLMBackend`).
        batch_size: Prompts per ``generate`` call (transformers backend).
        seed: Sampling and bootstrap seed.
        system_prompt: System message (default: the training default, as in ``ScriptArguments``);
            ``None`` omits it. Only used when ``benchmarks`` are loaded here (names or files).
        chat_template_kwargs: Extra arguments of ``apply_chat_template`` (the recipe's).
        limit: Keep the first ``limit`` problems of each benchmark.
        reward: The reward judging completions: a registry spec (``"accuracy"``,
            ``{"name": "accuracy", "timeout": 10}``) or a function with TRL's reward signature.
        samples_path: Write one JSON line per completion there (see ``docs/evaluation.md``).
        progress: Show a progress bar (stderr).
        n_bootstrap: Bootstrap resamples for the confidence intervals (0: none).
        model_name: Name recorded in the metadata.
        stop_token_ids: Extra stop tokens (default: the chat template's end-of-turn token).
    """
    started = time.perf_counter()
    if n < 1:
        raise ValueError(f"n (samples per problem) must be >= 1, got {n}.")
    if temperature == 0 and n != 1:
        raise ValueError("temperature=0 is greedy decoding, which gives n identical samples: use --n 1.")
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(
            "The tokenizer has no chat template, so the prompts cannot be built as in training; load a "
            "tokenizer that has one (--tokenizer PATH_OR_ID)."
        )
    if isinstance(benchmarks, Mapping):
        loaded = {
            name: b if isinstance(b, Benchmark) else Benchmark(name, b, "in-memory dataset")
            for name, b in benchmarks.items()
        }
        if limit is not None:
            loaded = {
                name: Benchmark(name, b.dataset.select(range(min(limit, len(b.dataset)))), b.source)
                for name, b in loaded.items()
            }
    else:
        loaded = load_benchmarks(benchmarks, system_prompt=system_prompt, limit=limit)
    if isinstance(backend, str):
        if backend == "transformers":
            backend = TransformersBackend(model, tokenizer, batch_size=batch_size)
        elif backend == "vllm":
            backend = VLLMBackend(model, show_progress=progress)
        else:
            raise ValueError(f"Unknown backend {backend!r}; use 'transformers' or 'vllm'.")
    reward_func, reward_name = _resolve_reward(reward)
    stops = end_of_turn_token_ids(tokenizer) if stop_token_ids is None else [int(t) for t in stop_token_ids]
    sampling = {
        "temperature": temperature,
        "top_p": top_p,
        "top_k": 0,
        "repetition_penalty": 1.0,
        "max_new_tokens": max_new_tokens,
        "stop_token_ids": stops,
    }

    requests = []
    context = backend.context_length()
    for name, bench in loaded.items():
        texts = [
            tokenizer.apply_chat_template(
                list(p), tokenize=False, add_generation_prompt=True, **(chat_template_kwargs or {})
            )
            for p in bench.dataset["prompt"]
        ]
        token_ids = [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
        longest = max(len(ids) for ids in token_ids)
        if context is not None and longest + max_new_tokens > context:
            raise ValueError(
                f"{name}: the longest prompt has {longest} tokens; with max_new_tokens={max_new_tokens} it "
                f"exceeds the model's context of {context} tokens. Lower --max_new_tokens to at most "
                f"{context - longest}."
            )
        bench_seed = _stable_seed(seed, name)
        prompt_seeds = [_stable_seed(seed, name, i) for i in range(len(texts))]
        requests.append(_Request(name, texts, token_ids, bench_seed, prompt_seeds))

    total = sum(len(r.texts) for r in requests) * n
    bar = _progress_bar(total, f"generating ({model_name or 'model'})", progress)
    try:
        if isinstance(backend, VLLMBackend):
            generations = backend.generate(requests, n, sampling, progress=bar.update, seed=seed)
        else:
            generations = backend.generate(requests, n, sampling, progress=bar.update)
    finally:
        bar.close()

    results: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        sample_file = (
            stack.enter_context(open(samples_path, "w", encoding="utf-8"))
            if samples_path is not None
            else None
        )
        for request, gens in zip(requests, generations, strict=True):
            bench = loaded[request.benchmark]
            golds = [str(a) for a in bench.dataset["answer"]]
            prompts = list(bench.dataset["prompt"])
            flat_texts = [t for row in gens.texts for t in row]
            flat_golds = [g for g in golds for _ in range(n)]
            flat_prompts = [p for p in prompts for _ in range(n)]
            scores, verdicts = _score(reward_func, flat_prompts, flat_golds, flat_texts)
            correct = [s is not None and s >= 1.0 for s in scores]
            metrics = benchmark_metrics(
                _rows(correct, n), gens.lengths, _rows(verdicts, n), gens.terminated, ks, n_bootstrap, seed
            )
            problems = bench.problems
            digest = hashlib.sha256(json.dumps([problems, golds]).encode()).hexdigest()
            results[request.benchmark] = {"source": bench.source, **metrics, "problems_sha256": digest}
            unscored = metrics["unscored_rate"]
            if unscored:
                logger.warning(
                    "%s: %.1f%% of completions could not be scored (gold answer not parsable); they count as "
                    "wrong.",
                    request.benchmark,
                    100 * unscored,
                )
            if sample_file is not None:
                for i, problem in enumerate(problems):
                    for j in range(n):
                        flat = i * n + j
                        extracted, how = _extraction(flat_texts[flat], verdicts[flat])
                        row = {
                            "model": model_name,
                            "benchmark": request.benchmark,
                            "problem_index": i,
                            "sample_index": j,
                            "problem": problem,
                            "gold": golds[i],
                            "completion": flat_texts[flat],
                            "extracted": extracted,
                            "extraction": how,
                            "verdict": verdicts[flat],
                            "correct": correct[flat],
                            "length": gens.lengths[i][j],
                            "terminated": gens.terminated[i][j],
                        }
                        sample_file.write(json.dumps(row, ensure_ascii=False) + "\n")

    ks_used = sorted({int(key[5:]) for r in results.values() for key in r["pass@k"]})
    average = (
        {
            f"pass@{k}": float(np.mean([r["pass@k"][f"pass@{k}"] for r in results.values()]))
            for k in ks_used
            if all(f"pass@{k}" in r["pass@k"] for r in results.values())
        }
        if len(results) > 1
        else {}
    )
    metadata = {
        "model": model_name or (model if isinstance(model, str) else type(model).__name__),
        "backend": backend.name,
        "device": backend.device(),
        "sampling": {"n": n, **sampling},
        "seed": seed,
        "ks": ks_used,
        "limit": limit,
        "system_prompt": _system_prompt_of(loaded),
        "chat_template_sha256": hashlib.sha256(str(tokenizer.chat_template).encode()).hexdigest(),
        "chat_template_kwargs": dict(chat_template_kwargs or {}),
        "reward": reward_name,
        "ci": {
            "method": "percentile bootstrap over problems",
            "level": 0.95,
            "resamples": n_bootstrap,
            "seed": seed,
        },
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "versions": _versions(backend.name),
        "seconds": round(time.perf_counter() - started, 3),
    }
    return {"metadata": metadata, "results": results, "average": average}


def _system_prompt_of(benchmarks: Mapping[str, Benchmark]) -> str | None:
    """The system message the prompts actually carry (that of the first benchmark's first row)."""
    for bench in benchmarks.values():
        first = bench.dataset[0]["prompt"]
        return first[0]["content"] if first and first[0]["role"] == "system" else None
    return None


def _progress_bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="completion", dynamic_ncols=True, disable=not enabled)


# ------------------------------------------------------------------------------------------- reporting


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}"


def format_table(report: Mapping[str, Any]) -> str:
    """A markdown table of one model's results (percentages; pass@1 with its 95% CI)."""
    results = report["results"]
    ks = report["metadata"]["ks"]
    extra = [k for k in ks if k != 1]
    header = ["benchmark", "problems", "n", "pass@1 (95% CI)", *[f"pass@{k}" for k in extra]]
    header += ["mean length", "no answer %", "truncated %"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for name, r in results.items():
        lo, hi = r["ci95"]["pass@1"]
        cells = [name, str(r["n_problems"]), str(r["n_samples"])]
        cells.append(f"{_pct(r['pass@k']['pass@1'])} [{_pct(lo)}, {_pct(hi)}]")
        cells += [_pct(r["pass@k"].get(f"pass@{k}")) for k in extra]
        cells += [f"{r['mean_length']:.0f}", _pct(r["no_answer_rate"]), _pct(r["truncated_rate"])]
        lines.append("| " + " | ".join(cells) + " |")
    average = report.get("average") or {}
    if average:
        cells = ["average", "", "", _pct(average.get("pass@1"))]
        cells += [_pct(average.get(f"pass@{k}")) for k in extra] + ["", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_comparison(report: Mapping[str, Any], baseline: Mapping[str, Any], difference: Mapping) -> str:
    """A markdown table of two models side by side, with model − baseline and its paired 95% CI."""
    header = ["benchmark", "metric", "model", "baseline", "Δ (95% CI)"]
    lines = [
        f"model: {report['metadata']['model']}    baseline: {baseline['metadata']['model']}",
        "",
        "| " + " | ".join(header) + " |",
        "|---|---|---:|---:|---:|",
    ]
    for name, ours in report["results"].items():
        theirs = baseline["results"].get(name)
        if theirs is None:
            continue
        diff = difference[name]
        for key, value in ours["pass@k"].items():
            if key not in diff["pass@k"]:
                continue
            d = diff["pass@k"][key]
            ci = f" [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}]" if d["ci95"] else ""
            row = [name, key, _pct(value), _pct(theirs["pass@k"][key]), f"{100 * d['delta']:+.1f}{ci}"]
            lines.append("| " + " | ".join(row) + " |")
        lines.append(
            f"| {name} | mean length | {ours['mean_length']:.0f} | {theirs['mean_length']:.0f} | "
            f"{diff['mean_length']:+.0f} |"
        )
        lines.append(
            f"| {name} | no answer % | {_pct(ours['no_answer_rate'])} | {_pct(theirs['no_answer_rate'])} | "
            f"{100 * diff['no_answer_rate']:+.1f} |"
        )
    a, b = report.get("average") or {}, baseline.get("average") or {}
    if "pass@1" in a and "pass@1" in b:
        lines.append(
            f"| average | pass@1 | {_pct(a['pass@1'])} | {_pct(b['pass@1'])} | "
            f"{100 * (a['pass@1'] - b['pass@1']):+.1f} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ training callback


def _make_callback_class() -> type:
    from transformers import Trainer, TrainerCallback

    class BenchmarkEvalCallback(TrainerCallback):
        """Run :func:`evaluate` on a small benchmark subset every ``eval_steps`` training steps.

        Logs ``eval/<benchmark>/pass@1`` (and ``pass@k`` for the other k, ``mean_length``,
        ``no_answer_rate``) through the trainer's loggers when ``trainer`` is given (TRL's own callbacks
        take the trainer the same way), else into ``state.log_history``; the points are kept in
        ``history``. Runs on the main process only, with the transformers backend, on the model as the
        trainer holds it: fine for single-GPU, DDP and ZeRO-1/2, not for ZeRO-3 or FSDP (sharded weights).

        Example::

            cb = BenchmarkEvalCallback(tokenizer, "math500", eval_steps=50, limit=64, max_new_tokens=1024)
            trainer = NormalizedGRPOTrainer(..., callbacks=[cb])
            cb.trainer = trainer   # optional: log to wandb/tensorboard too
        """

        def __init__(
            self,
            tokenizer: Any,
            benchmarks: str | Sequence[str] | Mapping[str, Any],
            eval_steps: int,
            *,
            limit: int | None = 64,
            n: int = 4,
            temperature: float = 0.6,
            top_p: float = 0.95,
            max_new_tokens: int = 1024,
            batch_size: int = 16,
            system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
            chat_template_kwargs: Mapping[str, Any] | None = None,
            seed: int = 0,
            reward: Any = "accuracy",
            ks: Sequence[int] | None = None,
            trainer: Any = None,
        ) -> None:
            if eval_steps < 1:
                raise ValueError(f"eval_steps must be >= 1, got {eval_steps}.")
            self.tokenizer = tokenizer
            self.benchmarks = (
                benchmarks
                if isinstance(benchmarks, Mapping)
                else load_benchmarks(benchmarks, system_prompt=system_prompt, limit=limit)
            )
            self.eval_steps, self.limit, self.trainer = eval_steps, limit, trainer
            self.options = {
                "n": n,
                "temperature": temperature,
                "top_p": top_p,
                "max_new_tokens": max_new_tokens,
                "batch_size": batch_size,
                "system_prompt": system_prompt,
                "chat_template_kwargs": chat_template_kwargs,
                "seed": seed,
                "reward": reward,
                "ks": ks,
            }
            self.history: list[dict[str, Any]] = []

        def run(self, model: Any, step: int) -> dict[str, float]:
            """Evaluate now; returns (and records) the logged metrics."""
            report = evaluate(
                model,
                self.tokenizer,
                self.benchmarks,
                backend="transformers",
                limit=self.limit,
                progress=False,
                n_bootstrap=0,
                model_name=f"step {step}",
                **self.options,
            )
            logs: dict[str, float] = {}
            for name, r in report["results"].items():
                for key, value in r["pass@k"].items():
                    logs[f"eval/{name}/{key}"] = value
                logs[f"eval/{name}/mean_length"] = r["mean_length"]
                logs[f"eval/{name}/no_answer_rate"] = r["no_answer_rate"]
            self.history.append({"step": step, **logs})
            return logs

        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> Any:
            if state.global_step % self.eval_steps or not state.is_world_process_zero:
                return control
            if model is None:
                raise ValueError("BenchmarkEvalCallback needs the model; the trainer passes it as `model`.")
            logs = self.run(model, state.global_step)
            if self.trainer is not None and isinstance(self.trainer, Trainer):
                # The base Trainer.log: loggers + log_history, without flushing GRPOTrainer's train metrics.
                # Its on_log event clears control.should_log, which would drop this step's training log.
                should_log = control.should_log
                Trainer.log(self.trainer, dict(logs))
                control.should_log = should_log
            else:
                state.log_history.append({**logs, "step": state.global_step})
            return control

    BenchmarkEvalCallback.__module__ = __name__
    BenchmarkEvalCallback.__qualname__ = "BenchmarkEvalCallback"
    return BenchmarkEvalCallback


_CALLBACK_CLASS: type | None = None


def __getattr__(name: str) -> Any:
    # Built on first use: the class derives from transformers' TrainerCallback, which this module does not
    # import at import time (the vLLM workers run this module as a script).
    global _CALLBACK_CLASS
    if name == "BenchmarkEvalCallback":
        if _CALLBACK_CLASS is None:
            _CALLBACK_CLASS = _make_callback_class()
        return _CALLBACK_CLASS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------------------- command line


def _read_recipe(path: str) -> dict[str, Any]:
    """The settings of a training recipe that decide how prompts are built and scored."""
    import yaml

    with open(path, encoding="utf-8") as f:
        recipe = yaml.safe_load(f) or {}
    if not isinstance(recipe, dict):
        raise ValueError(f"{path}: a recipe is a YAML mapping of settings, got {type(recipe).__name__}.")
    system_prompt = system_prompt_setting(recipe.get("system_prompt", DEFAULT_SYSTEM_PROMPT))
    reward: Any = "accuracy"
    for entry in parse_list(recipe.get("reward_funcs", ["accuracy"]), "reward_funcs"):
        if isinstance(entry, Mapping) and entry.get("name") == "accuracy":
            reward = {k: v for k, v in entry.items() if k != "gold_column"}  # benchmarks use `answer`
    return {
        "model": recipe.get("model_name_or_path"),
        "system_prompt": system_prompt,
        "chat_template_kwargs": recipe.get("chat_template_kwargs") or {},
        "max_new_tokens": recipe.get("max_completion_length"),
        "dtype": recipe.get("dtype"),
        "attn_implementation": recipe.get("attn_implementation"),
        "revision": recipe.get("model_revision"),
        "trust_remote_code": bool(recipe.get("trust_remote_code", False)),
        "max_model_len": recipe.get("vllm_max_model_length"),
        "reward": reward,
    }


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bnpo-trl eval",
        description="pass@1 / pass@k on math benchmarks, scored by the training `accuracy` reward.",
    )

    def add(*names: str, **kwargs: Any) -> None:
        dashed = [n.replace("_", "-") for n in names if "_" in n]
        parser.add_argument(*names, *dashed, **kwargs)

    add(
        "--model",
        help="Hub id, folder (a PEFT adapter folder is merged) or tiny:<k=v,...>; default: the recipe's.",
    )
    add(
        "--benchmarks", default=",".join(DEFAULT_BENCHMARKS), help="Comma-separated names and/or local files."
    )
    add("--n", type=int, default=4, help="Samples per problem (default 4).")
    add("--temperature", type=float, default=0.6)
    add("--top_p", type=float, default=0.95)
    add(
        "--max_new_tokens",
        type=int,
        default=None,
        help="Default: the recipe's max_completion_length, else 3072.",
    )
    add("--k", default=None, help="pass@k values, e.g. 1,4,16 (default 1, 2, 4, ... up to n).")
    add(
        "--backend",
        choices=["auto", "vllm", "transformers"],
        default="auto",
        help="auto: vllm if installed and a GPU is visible, else transformers.",
    )
    add("--output", default=None, help="Output folder (default eval_results/<model name>).")
    add("--limit", type=int, default=None, help="First K problems of each benchmark.")
    add("--baseline", default=None, help="A second model, evaluated the same way and compared.")
    add(
        "--config",
        default=None,
        help="Training recipe YAML: reuse its system prompt, chat template kwargs, model.",
    )
    add("--system_prompt", default=None, help="Override the system prompt ('none' for none).")
    add(
        "--tokenizer", default=None, help="Take the tokenizer (chat template) from here instead of the model."
    )
    add("--seed", type=int, default=0)
    add("--batch_size", type=int, default=16, help="Prompts per generate call (transformers backend).")
    add(
        "--device", default=None, help="transformers backend: cuda, cuda:1, cpu (default: cuda if available)."
    )
    add("--dtype", default=None, help="Model dtype: auto (default), bfloat16, float16, float32.")
    add("--revision", default=None)
    add("--trust_remote_code", action="store_true")
    add("--tensor_parallel_size", type=int, default=1, help="vllm: GPUs per model copy.")
    add("--data_parallel_size", type=int, default=1, help="vllm: model copies (one worker process each).")
    add("--gpu_memory_utilization", type=float, default=0.9, help="vllm: share of each GPU's memory.")
    add("--max_model_len", type=int, default=None, help="vllm: context length (default: the model's).")
    add("--enforce_eager", action="store_true", help="vllm: no CUDA graphs (slower, less memory).")
    add(
        "--verify_workers",
        type=int,
        default=None,
        help="math-verify worker processes of the accuracy reward (default: the reward's, min(2, CPUs)).",
    )
    add("--bootstrap", type=int, default=1000, help="Bootstrap resamples for the 95%% CIs (0: none).")
    add("--no_progress", action="store_true", help="No progress bar.")
    return parser


def _reward_spec(reward: Any, workers: int | None) -> Any:
    if workers is None:
        return reward
    spec = {"name": "accuracy"} if reward == "accuracy" else dict(reward)
    return {**spec, "workers": workers}


def _slug(model: str) -> str:
    text = model.rstrip("/").replace("tiny:", "tiny-")
    return "".join(c if c.isalnum() or c in "-._" else "-" for c in Path(text).name or text)


def _choose_backend(requested: str) -> str:
    if requested == "vllm":
        require_vllm()
        return "vllm"
    if requested == "transformers":
        return "transformers"
    if importlib.util.find_spec("vllm") is None:
        return "transformers"
    try:
        import torch

        return "vllm" if torch.cuda.is_available() else "transformers"
    except ImportError:
        return "transformers"


def _evaluate_one(model_spec: str, args: argparse.Namespace, recipe: dict[str, Any], output: Path, tag: str):
    backend_name = args.backend
    dtype = args.dtype or recipe.get("dtype") or "auto"
    revision = args.revision or (recipe.get("revision") if model_spec == recipe.get("model") else None)
    trust = args.trust_remote_code or recipe.get("trust_remote_code", False)
    tokenizer = load_tokenizer_for(args.tokenizer or model_spec, revision=revision, trust_remote_code=trust)
    common = {
        "n": args.n,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "max_new_tokens": args.max_new_tokens,
        "ks": args.ks,
        "seed": args.seed,
        "system_prompt": args.system_prompt,
        "chat_template_kwargs": recipe.get("chat_template_kwargs"),
        "limit": args.limit,
        "reward": _reward_spec(recipe.get("reward", "accuracy"), args.verify_workers),
        "samples_path": output / f"samples{tag}.jsonl",
        "progress": not args.no_progress,
        "n_bootstrap": args.bootstrap,
        "model_name": model_spec,
    }
    if backend_name == "vllm":
        backend = VLLMBackend(
            model_spec,
            tokenizer_path=args.tokenizer,
            tensor_parallel_size=args.tensor_parallel_size,
            data_parallel_size=args.data_parallel_size,
            gpu_memory_utilization=args.gpu_memory_utilization,
            max_model_len=args.max_model_len or recipe.get("max_model_len"),
            dtype=dtype,
            revision=revision,
            trust_remote_code=trust,
            enforce_eager=args.enforce_eager,
            show_progress=not args.no_progress,
        )
        return evaluate(model_spec, tokenizer, args.benchmark_data, backend=backend, **common)
    model = load_model(
        model_spec,
        dtype=dtype,
        device=args.device,
        revision=revision,
        trust_remote_code=trust,
        attn_implementation=recipe.get("attn_implementation"),
    )
    try:
        return evaluate(
            model,
            tokenizer,
            args.benchmark_data,
            backend=TransformersBackend(model, tokenizer, args.batch_size),
            **common,
        )
    finally:
        del model
        with contextlib.suppress(ImportError):
            import gc

            import torch

            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``bnpo-trl eval ...``: evaluate, print the markdown table, write ``results.json`` and
    ``samples.jsonl`` (``samples_baseline.jsonl`` with ``--baseline``) into ``--output``."""
    args = _build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    recipe = _read_recipe(args.config) if args.config else {"system_prompt": DEFAULT_SYSTEM_PROMPT}
    args.model = args.model or recipe.get("model")
    if not args.model:
        raise SystemExit(
            "bnpo-trl eval: give --model PATH_OR_ID (or a --config recipe with model_name_or_path)."
        )
    if args.system_prompt is None:
        args.system_prompt = recipe["system_prompt"]
    elif args.system_prompt.strip().lower() in ("", "none", "null"):
        args.system_prompt = None
    if args.max_new_tokens is None:
        args.max_new_tokens = int(recipe.get("max_new_tokens") or 3072)
    args.ks = [int(k) for k in args.k.split(",")] if args.k else None
    if args.ks and (min(args.ks) < 1 or max(args.ks) > args.n):
        raise SystemExit(f"bnpo-trl eval: every --k must be in [1, --n={args.n}], got {args.ks}.")
    try:
        args.backend = _choose_backend(args.backend)
    except ImportError as error:
        raise SystemExit(f"bnpo-trl eval: {error}") from None
    output = Path(args.output or Path("eval_results") / _slug(args.model))
    output.mkdir(parents=True, exist_ok=True)
    args.benchmark_data = load_benchmarks(args.benchmarks, system_prompt=args.system_prompt, limit=args.limit)

    report = _evaluate_one(args.model, args, recipe, output, "")
    report["metadata"]["command"] = "bnpo-trl eval " + " ".join(list(sys.argv[1:] if argv is None else argv))
    final: dict[str, Any] = dict(report)
    text = format_table(report)
    if args.baseline:
        baseline = _evaluate_one(args.baseline, args, recipe, output, "_baseline")
        difference = compare(report, baseline, n_bootstrap=args.bootstrap, seed=args.seed)
        final["baseline"] = baseline
        final["difference"] = difference
        text = (
            f"## {args.model}\n\n{text}\n\n## baseline: {args.baseline}\n\n{format_table(baseline)}\n\n"
            f"## difference\n\n{format_comparison(report, baseline, difference)}"
        )
    (output / "results.json").write_text(json.dumps(final, indent=1) + "\n")
    print(text, flush=True)
    print(f"\nWrote {output / 'results.json'} and the samples in {output}/", flush=True)
    return final


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--vllm-worker":
        _vllm_worker(sys.argv[2], sys.argv[3])
    else:
        main()
