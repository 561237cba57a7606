"""Benchmark evaluation: pass@1 and pass@k on MATH-500, AIME 2024/2025, AMC 2023 (or your own files).

One command (``bnpo-trl eval``, see ``docs/evaluation.md``) and one library function (:func:`evaluate`)
that scores a checkpoint the way training scores it: the prompts are built by the same loaders
(:mod:`bnpo_trl.data`) with the recipe's system prompt and the tokenizer's chat template, and every
completion is judged by the same ``accuracy`` reward (:mod:`bnpo_trl.rewards`, math-verify).

The package, one module per concern (every name below is importable from ``bnpo_trl.evaluation``):

- :mod:`~bnpo_trl.evaluation.metrics`: exact pass@k, the percentile bootstrap, per-benchmark metrics and
  the paired model-vs-baseline difference;
- :mod:`~bnpo_trl.evaluation.benchmarks`: the registered benchmarks and local files;
- :mod:`~bnpo_trl.evaluation.backends`: the ``Backend`` protocol and the transformers backend;
  :mod:`~bnpo_trl.evaluation.vllm_backend`: the vLLM backend, whose workers run
  ``_vllm_worker.py`` as a script;
- :mod:`~bnpo_trl.evaluation.core`: :func:`evaluate`; :mod:`~bnpo_trl.evaluation.scoring`: judging
  the completions; :mod:`~bnpo_trl.evaluation.report`: metadata and markdown tables;
- :mod:`~bnpo_trl.evaluation.callback`: :class:`BenchmarkEvalCallback`, the same evaluation during
  training; :mod:`~bnpo_trl.evaluation.cli`: ``bnpo-trl eval`` (:class:`EvalArguments`, :func:`main`).
"""

from __future__ import annotations

from bnpo_trl.evaluation.backends import (
    Backend,
    GenerationRequest,
    TransformersBackend,
    load_model,
    make_backend,
)
from bnpo_trl.evaluation.benchmarks import (
    BENCHMARKS,
    DEFAULT_BENCHMARKS,
    Benchmark,
    load_benchmarks,
    parse_benchmark_specs,
)
from bnpo_trl.evaluation.callback import BenchmarkEvalCallback
from bnpo_trl.evaluation.cli import EvalArguments, main
from bnpo_trl.evaluation.core import evaluate
from bnpo_trl.evaluation.metrics import benchmark_metrics, bootstrap_ci, compare, default_ks, pass_at_k
from bnpo_trl.evaluation.report import format_comparison, format_table
from bnpo_trl.evaluation.vllm_backend import (
    VLLM_INSTALL_HINT,
    VLLMBackend,
    plan_data_parallel,
    require_vllm,
    vllm_llm_kwargs,
    vllm_sampling_kwargs,
)
from bnpo_trl.models import end_of_turn_token_ids
from bnpo_trl.models import load_tokenizer as load_tokenizer_for

__all__ = [
    "BENCHMARKS",
    "DEFAULT_BENCHMARKS",
    "VLLM_INSTALL_HINT",
    "Backend",
    "Benchmark",
    "BenchmarkEvalCallback",
    "EvalArguments",
    "GenerationRequest",
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
    "make_backend",
    "parse_benchmark_specs",
    "pass_at_k",
    "plan_data_parallel",
    "require_vllm",
    "vllm_llm_kwargs",
    "vllm_sampling_kwargs",
]
